/* softmax(q·kᵀ/√hd)·v with the causal mask, flash-attention style: scores
 * never reach memory.
 *
 * A block takes QTILE consecutive queries of one head (WARPS warps,
 * QPW queries each) and walks the keys up to its last query in tiles of
 * 32, staged in shared memory: K with rows padded to hd + 1 floats so
 * lane j reading key j's row hits a distinct bank, V unpadded (lanes read
 * consecutive columns). Per query a warp keeps the running maximum m, the
 * running sum l and its slice of the output (dims lane, lane + 32, ...):
 * lane j scores key j of the tile, the warp takes the tile's maximum,
 * rescales l and the output by exp(m_old − m_new), then adds p_j·v_j for
 * each key, p_j broadcast from lane j. */
#include "attention.cuh"

#include <math.h>

#define WARPS 4
#define QPW 4
#define QTILE (WARPS * QPW)
#define KTILE 32

__device__ static inline float warp_max(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

__device__ static inline float warp_sum(float v)
{
    for (int o = 16; o > 0; o >>= 1)
        v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

/* DPL: output dims per lane, hd ≤ 32·DPL */
template <int DPL>
__global__ void __launch_bounds__(WARPS * 32)
attention(const float *q, const float *k, const float *v, float *out, int n, int nh, int nkv,
          int hd, float scale)
{
    extern __shared__ float smem[];
    float *qs = smem;                       /* (QTILE, hd) */
    float *ks = qs + QTILE * hd;            /* (KTILE, hd + 1) */
    float *vs = ks + KTILE * (hd + 1);      /* (KTILE, hd) */
    const int h = blockIdx.y, g = h / (nh / nkv), lane = threadIdx.x % 32,
              warp = threadIdx.x / 32;
    const int q0 = blockIdx.x * QTILE, qlast = min(q0 + QTILE, n) - 1;
    const int64_t qstride = (int64_t)nh * hd, kvstride = (int64_t)nkv * hd;

    for (int e = threadIdx.x; e < QTILE * hd; e += blockDim.x) {
        int r = e / hd, c = e % hd;
        qs[e] = q0 + r < n ? q[(int64_t)(q0 + r) * qstride + (int64_t)h * hd + c] * scale : 0.0f;
    }

    float m[QPW], l[QPW], acc[QPW][DPL];
#pragma unroll
    for (int a = 0; a < QPW; a++) {
        m[a] = -INFINITY;
        l[a] = 0.0f;
#pragma unroll
        for (int t = 0; t < DPL; t++)
            acc[a][t] = 0.0f;
    }

    for (int kt = 0; kt <= qlast; kt += KTILE) {
        __syncthreads(); /* the previous tile is consumed (and qs written) */
        for (int e = threadIdx.x; e < KTILE * hd; e += blockDim.x) {
            int r = e / hd, c = e % hd;
            bool in = kt + r < n;
            int64_t src = (int64_t)(kt + r) * kvstride + (int64_t)g * hd + c;
            ks[r * (hd + 1) + c] = in ? k[src] : 0.0f;
            vs[r * hd + c] = in ? v[src] : 0.0f;
        }
        __syncthreads();
#pragma unroll
        for (int a = 0; a < QPW; a++) {
            const int qi = q0 + warp * QPW + a;
            if (qi >= n || kt > qi) /* warp-uniform */
                continue;
            const int j = kt + lane;
            const float *qr = qs + (warp * QPW + a) * hd, *kr = ks + lane * (hd + 1);
            float s = 0.0f;
            for (int c = 0; c < hd; c++)
                s += qr[c] * kr[c];
            s = j <= qi ? s : -INFINITY;
            float mnew = fmaxf(m[a], warp_max(s));
            float p = j <= qi ? expf(s - mnew) : 0.0f, corr = expf(m[a] - mnew);
            l[a] = l[a] * corr + warp_sum(p);
#pragma unroll
            for (int t = 0; t < DPL; t++)
                acc[a][t] *= corr;
            const int last = min(KTILE - 1, qi - kt);
            for (int jj = 0; jj <= last; jj++) {
                float pj = __shfl_sync(0xffffffffu, p, jj);
                const float *vr = vs + jj * hd;
#pragma unroll
                for (int t = 0; t < DPL; t++) {
                    int c = lane + 32 * t;
                    if (c < hd)
                        acc[a][t] += pj * vr[c];
                }
            }
            m[a] = mnew;
        }
    }

#pragma unroll
    for (int a = 0; a < QPW; a++) {
        const int qi = q0 + warp * QPW + a;
        if (qi >= n)
            continue;
        float inv = 1.0f / l[a];
        float *o = out + (int64_t)qi * qstride + (int64_t)h * hd;
#pragma unroll
        for (int t = 0; t < DPL; t++) {
            int c = lane + 32 * t;
            if (c < hd)
                o[c] = acc[a][t] * inv;
        }
    }
}

template <int DPL>
static int launch(cudaStream_t st, const float *q, const float *k, const float *v, float *out,
                  int64_t n, int64_t nh, int64_t nkv, int64_t hd)
{
    size_t smem = (size_t)(QTILE * hd + KTILE * (hd + 1) + KTILE * hd) * sizeof(float);
    static int attribute_set; /* per instantiation: beyond 48 KiB needs opting in */
    if (smem > 48 * 1024 && !attribute_set) {
        int err = CU(cudaFuncSetAttribute(attention<DPL>,
                                          cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
        if (err)
            return err;
        attribute_set = 1;
    }
    dim3 grid((unsigned)((n + QTILE - 1) / QTILE), (unsigned)nh);
    attention<DPL><<<grid, WARPS * 32, smem, st>>>(q, k, v, out, (int)n, (int)nh, (int)nkv,
                                                   (int)hd, 1.0f / sqrtf((float)hd));
    return CU_LAUNCHED();
}

int sg_cuda_attention(cudaStream_t st, const float *q, const float *k, const float *v,
                      float *out, int64_t n, int64_t nh, int64_t nkv, int64_t hd)
{
    if (nkv <= 0 || nh % nkv)
        return sg_fail(SG_EARG, "%lld query heads do not group over %lld key/value heads",
                       (long long)nh, (long long)nkv);
    if (hd <= 0 || hd > 256 || n > 2147483647 || nh > 65535)
        return sg_fail(SG_EUNSUPPORTED, "attention with head dim %lld, %lld heads, %lld tokens",
                       (long long)hd, (long long)nh, (long long)n);
    if (n <= 0)
        return 0;
    if (hd <= 32)
        return launch<1>(st, q, k, v, out, n, nh, nkv, hd);
    if (hd <= 64)
        return launch<2>(st, q, k, v, out, n, nh, nkv, hd);
    if (hd <= 128)
        return launch<4>(st, q, k, v, out, n, nh, nkv, hd);
    return launch<8>(st, q, k, v, out, n, nh, nkv, hd);
}
