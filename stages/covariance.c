/* Stage "covariance": H = Σ xᵀx over every calibration token x of a
 * signal, accumulated chunk by chunk on the backend. */
#include "covariance.h"

#include <string.h>

int sg_slice_cov_init(sg_slice_cov *cov, sg_backend *be, int64_t d, int mixed)
{
    memset(cov, 0, sizeof *cov);
    cov->be = be;
    cov->d = d;
    cov->mixed = mixed;
    return be->ops->alloc(be, d * d * sizeof(double), (void **)&cov->h);
}

void sg_slice_cov_free(sg_slice_cov *cov)
{
    if (cov->h)
        cov->be->ops->release(cov->be, cov->h);
    memset(cov, 0, sizeof *cov);
}

int sg_slice_cov_begin(sg_slice_cov *cov)
{
    cov->tokens = 0;
    return cov->be->ops->zero(cov->be, cov->h, cov->d * cov->d * sizeof(double));
}

int sg_slice_cov_add(sg_slice_cov *cov, const float *x, int64_t rows)
{
    sg_backend *be = cov->be;
    int err = be->ops->cov_accumulate(be, cov->h, cov->d, x, rows, cov->mixed);
    if (!err)
        cov->tokens += rows;
    return err;
}
