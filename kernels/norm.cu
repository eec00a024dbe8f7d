/* One block per row; sums in float64 like the CPU loop, so both backends
 * agree to float32 rounding of the final products. */
#include "norm.cuh"

#define THREADS 256

__device__ static double block_sum(double v, double *shared)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_down_sync(0xffffffffu, v, o);
    int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    __syncthreads(); /* shared may still be read from a previous call */
    if (lane == 0)
        shared[warp] = v;
    __syncthreads();
    v = threadIdx.x < blockDim.x / 32 ? shared[threadIdx.x] : 0.0;
    if (warp == 0)
        for (int o = 16; o > 0; o >>= 1)
            v += __shfl_down_sync(0xffffffffu, v, o);
    if (threadIdx.x == 0)
        shared[0] = v;
    __syncthreads();
    return shared[0];
}

__global__ void norm_rows(float *x, int64_t rows, int64_t d, int layer, int64_t norm_dim,
                          double eps, const float *w, const float *b)
{
    __shared__ double shared[THREADS / 32];
    for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
        float *v = x + r * d;
        double mean = 0, acc = 0;
        if (layer) {
            for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
                acc += v[i];
            mean = block_sum(acc, shared) / d;
            acc = 0;
            for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
                acc += (v[i] - mean) * (v[i] - mean);
            float inv = (float)(1.0 / sqrt(block_sum(acc, shared) / d + eps));
            for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
                float y = (float)(v[i] - mean) * inv;
                if (w)
                    y *= w[i];
                if (b)
                    y += b[i];
                v[i] = y;
            }
        } else {
            for (int64_t i = threadIdx.x; i < d; i += blockDim.x)
                acc += (double)v[i] * v[i];
            float inv = (float)(1.0 / sqrt(block_sum(acc, shared) / norm_dim + eps));
            for (int64_t i = threadIdx.x; i < d; i += blockDim.x) {
                float y = v[i] * inv;
                if (w)
                    y *= w[i];
                if (b)
                    y += b[i];
                v[i] = y;
            }
        }
    }
}

int sg_cuda_norm_rows(cudaStream_t st, float *x, int64_t rows, int64_t d, sg_norm_kind kind,
                      int64_t norm_dim, double eps, const float *w, const float *b)
{
    if (rows <= 0)
        return 0;
    unsigned grid = (unsigned)(rows < 65535 * 8 ? rows : 65535 * 8);
    norm_rows<<<grid, THREADS, 0, st>>>(x, rows, d, kind == SG_NORM_LAYER, norm_dim, eps, w, b);
    return CU_LAUNCHED();
}
