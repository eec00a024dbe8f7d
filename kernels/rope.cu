/* One thread per (token, pair): the angle in float64 and its cos/sin cast
 * to float, as the CPU loop, then the same rotation for every head. The
 * inverse frequencies travel in the kernel's parameters (2 KiB at most),
 * so nothing is uploaded per call. */
#include "rope.cuh"

typedef struct {
    double f[SG_CUDA_ROPE_MAX_PAIRS];
} inv_freqs;

__global__ void rope(float *x, int64_t n, int64_t n_heads, int64_t head_dim, int64_t half,
                     int pairs, int64_t pos0, inv_freqs inv)
{
    for (int64_t k = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; k < n * half;
         k += (int64_t)gridDim.x * blockDim.x) {
        int64_t t = k / half, i = k % half;
        double a = (double)(pos0 + t) * inv.f[i];
        float cs = (float)cos(a), sn = (float)sin(a);
        int64_t i0 = pairs ? 2 * i : i, i1 = pairs ? 2 * i + 1 : i + half;
        float *row = x + t * n_heads * head_dim;
        for (int64_t h = 0; h < n_heads; h++) {
            float *v = row + h * head_dim, x0 = v[i0], x1 = v[i1];
            v[i0] = x0 * cs - x1 * sn;
            v[i1] = x0 * sn + x1 * cs;
        }
    }
}

int sg_cuda_rope(cudaStream_t st, float *x, int64_t n, int64_t n_heads, int64_t head_dim,
                 int64_t rope_dim, sg_rope_layout layout, int64_t pos0, const double *inv_freq)
{
    if (layout == SG_ROPE_NONE || n <= 0)
        return 0;
    if (rope_dim > head_dim || rope_dim % 2 || rope_dim / 2 > SG_CUDA_ROPE_MAX_PAIRS)
        return sg_fail(SG_EARG, "rope over %lld of %lld head coordinates", (long long)rope_dim,
                       (long long)head_dim);
    inv_freqs inv;
    int64_t half = rope_dim / 2;
    for (int64_t i = 0; i < half; i++)
        inv.f[i] = inv_freq[i];
    rope<<<sg_blocks(n * half, 256), 256, 0, st>>>(x, n, n_heads, head_dim, half,
                                                  layout == SG_ROPE_PAIRS, pos0, inv);
    return CU_LAUNCHED();
}
