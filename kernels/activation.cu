#include "activation.cuh"

__device__ static inline float act_apply(sg_act act, float x)
{
    switch (act) {
    case SG_ACT_SILU: return x / (1.0f + expf(-x));
    case SG_ACT_RELU: return x > 0 ? x : 0;
    case SG_ACT_GELU_TANH:
        return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case SG_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    }
    return x;
}

__global__ void activation(sg_act act, float *up, const float *gate, int64_t n)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        up[i] = gate ? up[i] * act_apply(act, gate[i]) : act_apply(act, up[i]);
}

int sg_cuda_activation(cudaStream_t st, sg_act act, float *up, const float *gate, int64_t n)
{
    if (n <= 0)
        return 0;
    activation<<<sg_blocks(n, 256), 256, 0, st>>>(act, up, gate, n);
    return CU_LAUNCHED();
}
