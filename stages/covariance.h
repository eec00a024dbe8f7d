/* Stage "covariance": H = Σ xᵀx over every calibration token x of a signal.
 * Fed chunk by chunk, so no stage needs all of a block's activations at
 * once; each chunk is widened to float64 and added with dsyrk, so the sum
 * is as exact as the reference's float64 accumulation. */
#ifndef SG_STAGE_COVARIANCE_H
#define SG_STAGE_COVARIANCE_H

#include <stdint.h>

typedef struct {
    int64_t d;      /* signal width */
    double *h;      /* (d, d) row-major, upper triangle accumulated */
    double *chunk;  /* scratch: (SG_COV_CHUNK, d) */
    int64_t tokens; /* rows accumulated so far */
} sg_cov;

#define SG_COV_CHUNK 1024

int sg_cov_init(sg_cov *cov, int64_t d);
/* H += Xᵀ X for x (rows, d) float32 row-major. */
int sg_cov_accumulate(sg_cov *cov, const float *x, int64_t rows);
/* The same into a caller's h (d, d), upper triangle, with scratch chunk
 * (SG_COV_CHUNK, d) float64: what the CPU backend's op calls. */
void sg_cov_accumulate_upper(double *h, double *chunk, int64_t d, const float *x, int64_t rows);
/* Mixed precision, for hardware whose float64 is slow: every slice of
 * SG_COV_MIXED_ROWS rows multiplied in float32 (ssyrk) into s (d, d)
 * float32 scratch, then widened and added to h's upper triangle. A
 * slice's float32 sum carries a relative error of ~√rows·2⁻²⁴; the
 * slices' errors are independent, so over a whole signal they average
 * down to the size of the inputs' own float32 rounding
 * (tests/test_backend.c measures it against the float64 sum). */
#define SG_COV_MIXED_ROWS 1024
void sg_cov_accumulate_upper_mixed(double *h, float *s, int64_t d, const float *x,
                                   int64_t rows);

/* Mirrors the upper triangle so h is a full symmetric matrix. */
void sg_cov_finish(sg_cov *cov);
/* The same on a caller's h (d, d): what the CPU backend's ops end with. */
void sg_cov_mirror_upper(double *h, int64_t d);
void sg_cov_free(sg_cov *cov);

#endif
