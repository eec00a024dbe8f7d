#include "cpu_kernels.h"

#include <cblas.h>


void sg_cov_accumulate_upper(double *h, double *chunk, int64_t d, const float *x, int64_t rows)
{
    for (int64_t r0 = 0; r0 < rows; r0 += SG_COV_CHUNK) {
        int64_t n = rows - r0 < SG_COV_CHUNK ? rows - r0 : SG_COV_CHUNK;
        for (int64_t i = 0; i < n * d; i++)
            chunk[i] = x[r0 * d + i];
        /* H (d, d) += chunkᵀ (d, n) · chunk (n, d), upper triangle */
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)n, 1.0, chunk, (int)d,
                    1.0, h, (int)d);
    }
}

void sg_cov_accumulate_upper_mixed(double *h, float *s, int64_t d, const float *x,
                                   int64_t rows)
{
    for (int64_t r0 = 0; r0 < rows; r0 += SG_COV_MIXED_ROWS) {
        int64_t n = rows - r0 < SG_COV_MIXED_ROWS ? rows - r0 : SG_COV_MIXED_ROWS;
        /* S (d, d) = X_sliceᵀ·X_slice in float32, upper triangle */
        cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)d, (int)n, 1.0f, x + r0 * d,
                    (int)d, 0.0f, s, (int)d);
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = i; j < d; j++)
                h[i * d + j] += s[i * d + j];
    }
}

void sg_cov_mirror_upper(double *h, int64_t d)
{
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < i; j++)
            h[i * d + j] = h[j * d + i];
}


