/* RMSNorm / LayerNorm over rows, as src/forward.c sg_norm_rows. */
#ifndef SG_CUDA_NORM_CUH
#define SG_CUDA_NORM_CUH

#include "cuda_common.cuh"

/* x (rows, d) in place; RMS divides by norm_dim; w, b (d) or NULL. */
int sg_cuda_norm_rows(cudaStream_t st, float *x, int64_t rows, int64_t d, sg_norm_kind kind,
                      int64_t norm_dim, double eps, const float *w, const float *b);

#endif
