/* Rotary position embedding in place, both pairings (model_config.h). */
#ifndef SG_CUDA_ROPE_CUH
#define SG_CUDA_ROPE_CUH

#include "cuda_common.cuh"

#define SG_CUDA_ROPE_MAX_PAIRS 256 /* rope_dim up to 512: passed by value */

/* x (n, n_heads·head_dim), token t at position pos0 + t; inv_freq (host,
 * rope_dim/2). */
int sg_cuda_rope(cudaStream_t st, float *x, int64_t n, int64_t n_heads, int64_t head_dim,
                 int64_t rope_dim, sg_rope_layout layout, int64_t pos0, const double *inv_freq);

#endif
