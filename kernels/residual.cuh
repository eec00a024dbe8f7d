/* y += x: the residual stream (x a matrix) or a bias (x one row). */
#ifndef SG_CUDA_RESIDUAL_CUH
#define SG_CUDA_RESIDUAL_CUH

#include "cuda_common.cuh"

/* y (rows, cols) += x, x's rows x_stride apart (0: broadcast one row). */
int sg_cuda_add(cudaStream_t st, float *y, const float *x, int64_t rows, int64_t cols,
                int64_t x_stride);

#endif
