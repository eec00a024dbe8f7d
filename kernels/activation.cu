#include "activation.cuh"

/* sg_activation (forward.h, through backend.h) is the CPU's formula */

__global__ void activation(sg_act act, float *up, const float *gate, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        up[i] = gate ? up[i] * sg_activation(act, gate[i]) : sg_activation(act, up[i]);
}

int sg_cuda_activation(cudaStream_t st, sg_act act, float *up, const float *gate, int64_t n)
{
    if (n <= 0)
        return 0;
    activation<<<sg_blocks(n, 256), 256, 0, st>>>(act, up, gate, n);
    return CU_LAUNCHED();
}
