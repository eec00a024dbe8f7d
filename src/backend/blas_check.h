/* Which BLAS kernels run, and whether they are the ones the CPU deserves.
 *
 * OpenBLAS built with DYNAMIC_ARCH (every distribution's) picks its kernels
 * once, when the library loads, from the CPU's family and model. A release
 * older than the CPU does not know the model and falls back to generic SSE
 * kernels ("Prescott", "Core2", ...), about four times slower, without a
 * word (Debian 12's 0.3.21 on family 6 model 207 is such a pair). The CPU's
 * features say what it can do (CPUID: AVX2 + FMA, AVX-512), so a fallback is
 * visible: then OPENBLAS_CORETYPE=Haswell or SkylakeX, set before the
 * library loads, i.e. in the environment of a re-executed program, selects
 * the right kernels. Results stay within float32 rounding: only the order of
 * the additions inside a dot product changes. */
#ifndef SG_BLAS_CHECK_H
#define SG_BLAS_CHECK_H

#ifdef __cplusplus
extern "C" {
#endif

/* What the CPU offers, from CPUID (and the OS's saved register state). */
typedef struct {
    int avx2_fma; /* AVX2 and FMA: OpenBLAS's Haswell kernels */
    int avx512;   /* AVX-512 F, BW, DQ, VL: its SkylakeX kernels */
} sg_cpu_features;

void sg_cpu_features_get(sg_cpu_features *f);

/* The kernel set the loaded OpenBLAS runs ("Zen", "Haswell", "Prescott"...). */
const char *sg_blas_corename(void);

/* 1 when `core` names one of OpenBLAS's kernel sets with AVX2 kernels
 * (Haswell, Zen, SkylakeX, Cooperlake, SapphireRapids), 0 otherwise. */
int sg_blas_core_is_fast(const char *core);

/* The OPENBLAS_CORETYPE that would run faster kernels than `core` on a CPU
 * with `f`, or NULL when `core` is already as good as the CPU allows. */
const char *sg_blas_better_coretype(const char *core, const sg_cpu_features *f);

/* Environment variable set on the re-executed program, so it never loops. */
#define SG_BLAS_REEXEC_ENV "SLICEGPT_BLAS_REEXEC"

/* Called first thing in main(), before any BLAS call: when the loaded
 * OpenBLAS runs a fallback kernel that the CPU can beat, and neither
 * OPENBLAS_CORETYPE nor the re-exec marker is set, sets both and re-executes
 * /proc/self/exe with argv (does not return on success). Returns 0 when
 * nothing was to be done, or a negative code when the re-exec failed (the
 * program goes on, on the slow kernels). */
int sg_blas_ensure_fast(char **argv);

/* One line (no newline) naming the kernels in use and the CPU's features,
 * e.g. "BLAS: OpenBLAS 0.3.21 kernels Zen (CPU: AVX2+FMA)", with
 * " -- generic fallback, N times slower than the CPU allows" when
 * sg_blas_better_coretype says so. Returns 1 in that case, else 0. */
int sg_blas_describe(char *buf, unsigned long size);

#ifdef __cplusplus
}
#endif

#endif
