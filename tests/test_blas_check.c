/* The BLAS kernels in use are the ones the CPU deserves.
 *
 * 1. The rule: which OpenBLAS cores count as fallbacks, and what replaces
 *    them on an AVX2 or an AVX-512 CPU.
 * 2. The program as built and run here (slicegpt-stream --version, which
 *    re-executes itself when the kernels are a fallback) does not run a
 *    generic kernel on a CPU with AVX2 or AVX-512: this is the check that
 *    fails in CI when a distribution's OpenBLAS does not know the CPU and
 *    the fix does not apply.
 * 3. The re-exec itself, wherever the CPU has AVX2: with
 *    tests/fake_corename.so preloaded, openblas_get_corename() reports
 *    "Prescott" unless OPENBLAS_CORETYPE is set, as a release that does not
 *    know the CPU would; the program must come back on Haswell or SkylakeX,
 *    once.
 * 4. A core the user chose stays, with a warning naming the fix. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blas_check.h"
#include "tap.h"

/* stdout of `env ... slicegpt-stream --version` (and stderr if err2out) */
static int run(const char *env, int err2out, char *out, size_t size)
{
    const char *build = getenv("SG_BUILDDIR") ? getenv("SG_BUILDDIR") : ".";
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "env -u OPENBLAS_CORETYPE -u %s %s '%s/slicegpt-stream' --version%s",
             SG_BLAS_REEXEC_ENV, env, build, err2out ? " 2>&1" : "");
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = fread(out, 1, size - 1, p);
    out[n] = 0;
    return pclose(p);
}

/* the word after "kernels " in the BLAS line */
static void kernel_of(const char *out, char *core, size_t size)
{
    const char *k = strstr(out, "kernels ");
    snprintf(core, size, "%.*s", k ? (int)strcspn(k + 8, " \n") : 0, k ? k + 8 : "");
}

int main(void)
{
    sg_cpu_features none = {0, 0}, avx2 = {1, 0}, avx512 = {1, 1};
    static const char *const generic[] = {"Prescott", "Core2", "Penryn", "Dunnington",
                                          "Nehalem", "Atom", "Katmai", "Sandybridge",
                                          "Barcelona", "Bulldozer", "Opteron"};
    for (size_t i = 0; i < sizeof generic / sizeof *generic; i++) {
        const char *a = sg_blas_better_coretype(generic[i], &avx2);
        const char *b = sg_blas_better_coretype(generic[i], &avx512);
        tap_ok(a && !strcmp(a, "Haswell") && b && !strcmp(b, "SkylakeX") &&
                   !sg_blas_better_coretype(generic[i], &none),
               "%s: Haswell on AVX2, SkylakeX on AVX-512, kept without AVX2", generic[i]);
    }
    static const char *const fast[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake", "ZEN"};
    for (size_t i = 0; i < sizeof fast / sizeof *fast; i++)
        tap_ok(!sg_blas_better_coretype(fast[i], &avx512), "%s is kept", fast[i]);

    sg_cpu_features cpu;
    sg_cpu_features_get(&cpu);
    tap_diag("this CPU: %s; this process's OpenBLAS kernels: %s",
             cpu.avx512 ? "AVX-512" : cpu.avx2_fma ? "AVX2+FMA" : "no AVX2", sg_blas_corename());

    char out[8192], core[64];
    int rc = run("", 0, out, sizeof out);
    kernel_of(out, core, sizeof core);
    tap_diag("slicegpt-stream --version: %s", strchr(out, '\n') ? strchr(out, '\n') + 1 : out);
    tap_ok(rc == 0 && core[0], "slicegpt-stream --version names its BLAS kernels (%s)", core);
    tap_ok(!(cpu.avx2_fma && !sg_blas_core_is_fast(core)),
           "the program runs fast kernels (%s) on a CPU with %s", core,
           cpu.avx512 ? "AVX-512" : cpu.avx2_fma ? "AVX2+FMA" : "no AVX2");

    const char *build = getenv("SG_BUILDDIR") ? getenv("SG_BUILDDIR") : ".";
    char env[4200];
    snprintf(env, sizeof env, "LD_PRELOAD='%s/tests/fake_corename.so'", build);
    if (!cpu.avx2_fma) {
        tap_skip("a fallback is re-executed on the fast kernels", "no AVX2 on this CPU");
    } else {
        rc = run(env, 0, out, sizeof out);
        kernel_of(out, core, sizeof core);
        const char *want = cpu.avx512 ? "SkylakeX" : "Haswell";
        tap_ok(rc == 0 && !strcmp(core, want) && strstr(out, "set by slicegpt-stream"),
               "a Prescott fallback is re-executed once on %s (got %s)", want, core);
    }
    char env2[4300];
    snprintf(env2, sizeof env2, "%s OPENBLAS_CORETYPE=Prescott", env);
    rc = run(env2, 1, out, sizeof out);
    kernel_of(out, core, sizeof core);
    tap_ok(rc == 0 && !strcmp(core, "Prescott") &&
               (!cpu.avx2_fma || strstr(out, "generic fallback")),
           "a core the user set stays (%s), with a warning on an AVX2 CPU", core);
    return tap_done();
}
