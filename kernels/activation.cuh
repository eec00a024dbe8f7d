/* MLP activations, elementwise: up = up·act(gate), or act(up). */
#ifndef SG_CUDA_ACTIVATION_CUH
#define SG_CUDA_ACTIVATION_CUH

#include "cuda_common.cuh"

int sg_cuda_activation(cudaStream_t st, sg_act act, float *up, const float *gate, int64_t n);

#endif
