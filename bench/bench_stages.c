/* The slicing stages' kernels against bare BLAS/LAPACK, side by side.
 *
 *   bench/bench_stages [N ...]      (default: 576 1024 2048 4096)
 *
 * For each width N: our eigensolve (damping, dsyevd, descending sort)
 * against a bare LAPACKE_dsyevd on the same matrix; our covariance
 * accumulation against the GFLOP/s a bare dsyrk reaches; our reader
 * rotation (float64 W·Q_d) against a bare dgemm of the same shape. Ratios
 * near 1 mean the stage adds nothing to the library call. Not a test. */
#include <cblas.h>
#include <lapacke.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"
#include "blas_check.h"
#include "evaluate.h"

static double frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (double)(*s >> 11) / 9007199254740992.0 - 0.5;
}

static void bench(int64_t n)
{
    uint64_t seed = 1;
    int64_t rows = 4096;
    float *x = malloc(rows * n * sizeof(float));
    for (int64_t i = 0; i < rows * n; i++)
        x[i] = (float)frand(&seed);

    /* covariance: ours (float32 chunks widened, dsyrk) vs bare dsyrk */
    sg_backend *cpu = sg_backend_cpu();
    double *h = calloc(n * n, sizeof(double));
    double t = sg_now();
    cpu->ops->cov_accumulate(cpu, h, n, x, rows, 0);
    double t_cov = sg_now() - t;
    double *xd = malloc(rows * n * sizeof(double)), *h2 = calloc(n * n, sizeof(double));
    for (int64_t i = 0; i < rows * n; i++)
        xd[i] = x[i];
    t = sg_now();
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)n, (int)rows, 1.0, xd, (int)n, 0.0,
                h2, (int)n);
    double t_syrk = sg_now() - t;

    /* eigensolve: ours vs bare dsyevd on copies of the same matrix */
    double *a = malloc(n * n * sizeof(double)), *q = malloc(n * n * sizeof(double));
    double *w = malloc(n * sizeof(double));
    memcpy(a, h, n * n * sizeof(double));
    t = sg_now();
    sg_eigh_descending(a, n, 0.01, q, w);
    double t_eig = sg_now() - t;
    memcpy(a, h, n * n * sizeof(double));
    t = sg_now();
    LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int)n, a, (lapack_int)n, w);
    double t_bare = sg_now() - t;

    /* rotation of a reader (n, n) weight by Q[:, :3n/4] vs bare dgemm */
    int64_t d = n * 3 / 4;
    float *wm = malloc(n * n * sizeof(float));
    for (int64_t i = 0; i < n * n; i++)
        wm[i] = (float)frand(&seed);
    t = sg_now();
    sg_rotate_reader(&wm, n, n, q, d);
    double t_rot = sg_now() - t;
    double *c = malloc(n * d * sizeof(double));
    t = sg_now();
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)d, (int)n, 1.0, xd,
                (int)n, q, (int)n, 0.0, c, (int)d);
    double t_gemm = sg_now() - t;

    printf("n %5lld | eigensolve %7.3f s, bare dsyevd %7.3f s, ratio %.2f | covariance of %lld "
           "rows %6.3f s vs bare dsyrk %6.3f s, ratio %.2f | rotate %6.3f s vs bare dgemm %6.3f s "
           "(%.1f GFLOP/s), ratio %.2f\n",
           (long long)n, t_eig, t_bare, t_eig / t_bare, (long long)rows, t_cov, t_syrk,
           t_cov / t_syrk, t_rot, t_gemm, 2.0 * n * n * d / t_gemm / 1e9, t_rot / t_gemm);
    fflush(stdout);
    free(h);
    free(x); free(xd); free(h2); free(a); free(q); free(w); free(wm); free(c);
}

int main(int argc, char **argv)
{
    /* measure the kernels the program runs, not a fallback it would replace */
    sg_blas_ensure_fast(argv);
    char blas[512];
    sg_blas_describe(blas, sizeof blas);
    printf("%s\n", blas);
    if (argc > 1)
        for (int i = 1; i < argc; i++)
            bench(atoll(argv[i]));
    else {
        const int64_t ns[] = {576, 1024, 2048, 4096};
        for (int i = 0; i < 4; i++)
            bench(ns[i]);
    }
    return 0;
}
