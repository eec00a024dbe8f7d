/* Causal grouped-query attention over one sequence (no KV cache: the
 * calibration pass sees whole sequences). */
#ifndef SG_CUDA_ATTENTION_CUH
#define SG_CUDA_ATTENTION_CUH

#include "cuda_common.cuh"

/* q (n, nh·hd), k and v (n, nkv·hd), out (n, nh·hd); hd ≤ 256. */
int sg_cuda_attention(cudaStream_t st, const float *q, const float *k, const float *v,
                      float *out, int64_t n, int64_t nh, int64_t nkv, int64_t hd);

#endif
