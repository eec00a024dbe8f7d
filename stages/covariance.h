/* Stage "covariance": H = Σ xᵀx over every calibration token x of a signal.
 * Fed chunk by chunk in chunk order, so no stage needs all of a block's
 * activations at once; each row is widened to float64 before it is
 * multiplied (or, in mixed mode for GPUs whose float64 is slow, float32
 * slices of SG_COV_MIXED_ROWS rows are summed in float64), so the sum is
 * as exact as the reference's float64 accumulation. */
#ifndef SG_STAGE_COVARIANCE_H
#define SG_STAGE_COVARIANCE_H

#include <stdint.h>

#include "backend.h"

/* A signal's covariance H (D, D) float64 in backend memory, fed chunk by
 * chunk in chunk order (the backend's cov_accumulate: rows widened to
 * float64, H kept symmetric). */
typedef struct {
    sg_backend *be;
    int64_t d;
    int mixed;       /* 1: float32 slices added in float64 (cov_accumulate mixed) */
    double *h;       /* backend memory */
    int64_t tokens;  /* rows accumulated since begin */
} sg_slice_cov;
int sg_slice_cov_init(sg_slice_cov *cov, sg_backend *be, int64_t d, int mixed);
void sg_slice_cov_free(sg_slice_cov *cov);
/* H = 0 */
int sg_slice_cov_begin(sg_slice_cov *cov);
/* H += XᵀX for x (rows, d) in backend memory (the stage filters run on
 * the CPU backend, whose memory is the host's). */
int sg_slice_cov_add(sg_slice_cov *cov, const float *x, int64_t rows);

#endif
