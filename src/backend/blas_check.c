#include "blas_check.h"

#include <cblas.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "sg_error.h"

void sg_cpu_features_get(sg_cpu_features *f)
{
    memset(f, 0, sizeof *f);
#if defined(__x86_64__) || defined(__i386__)
    /* libgcc's CPUID reading also checks XGETBV: a feature counts only when
     * the OS saves its registers */
    __builtin_cpu_init();
    f->avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    f->avx512 = f->avx2_fma && __builtin_cpu_supports("avx512f") &&
                __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
                __builtin_cpu_supports("avx512vl");
#endif
}

const char *sg_blas_corename(void)
{
    const char *core = openblas_get_corename();
    return core ? core : "unknown";
}

int sg_blas_core_is_fast(const char *core)
{
    static const char *const fast[] = {"Haswell", "Zen", "SkylakeX", "Cooperlake",
                                       "SapphireRapids"};
    for (size_t i = 0; i < sizeof fast / sizeof *fast; i++)
        if (!strcasecmp(core, fast[i]))
            return 1;
    return 0;
}

const char *sg_blas_better_coretype(const char *core, const sg_cpu_features *f)
{
    /* Zen runs Haswell's kernels; an AVX-512 CPU is better served by
     * SkylakeX's, but a core OpenBLAS chose on purpose (Zen, Haswell on a
     * CPU it knows) is left alone: only fallbacks are replaced. */
    if (sg_blas_core_is_fast(core))
        return NULL;
    if (f->avx512)
        return "SkylakeX";
    if (f->avx2_fma)
        return "Haswell";
    return NULL;
}

int sg_blas_ensure_fast(char **argv)
{
    if (getenv("OPENBLAS_CORETYPE") || getenv(SG_BLAS_REEXEC_ENV))
        return 0; /* the user's choice, or already re-executed once */
    sg_cpu_features f;
    sg_cpu_features_get(&f);
    const char *want = sg_blas_better_coretype(sg_blas_corename(), &f);
    if (!want)
        return 0;
    if (setenv("OPENBLAS_CORETYPE", want, 1) || setenv(SG_BLAS_REEXEC_ENV, want, 1))
        return sg_fail(-errno, "cannot set OPENBLAS_CORETYPE: %s", strerror(errno));
    execv("/proc/self/exe", argv);
    int err = errno;
    unsetenv("OPENBLAS_CORETYPE"); /* children get what this process runs */
    return sg_fail(-err, "cannot re-execute /proc/self/exe with OPENBLAS_CORETYPE=%s: %s",
                   want, strerror(err));
}

int sg_blas_describe(char *buf, unsigned long size)
{
    sg_cpu_features f;
    sg_cpu_features_get(&f);
    const char *core = sg_blas_corename();
    const char *better = sg_blas_better_coretype(core, &f);
    /* openblas_get_config(): "OpenBLAS 0.3.21 DYNAMIC_ARCH NO_AFFINITY Zen ..." */
    const char *config = openblas_get_config();
    char ver[32] = "OpenBLAS";
    if (config && !strncmp(config, "OpenBLAS ", 9))
        snprintf(ver, sizeof ver, "OpenBLAS %.*s", (int)strcspn(config + 9, " "), config + 9);
    const char *set = getenv("OPENBLAS_CORETYPE");
    int n = snprintf(buf, size, "BLAS: %s kernels %s (CPU: %s)%s%s%s", ver, core,
                     f.avx512 ? "AVX-512" : f.avx2_fma ? "AVX2+FMA" : "no AVX2",
                     set ? ", OPENBLAS_CORETYPE=" : "", set ? set : "",
                     getenv(SG_BLAS_REEXEC_ENV) ? " set by slicegpt-stream" : "");
    if (better && n >= 0 && (unsigned long)n < size)
        snprintf(buf + n, size - n,
                 " -- a generic fallback on a CPU with %s: OPENBLAS_CORETYPE=%s runs the "
                 "fast kernels",
                 f.avx512 ? "AVX-512" : "AVX2+FMA", better);
    return better != NULL;
}
