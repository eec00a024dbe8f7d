#include "eigh_refine.cuh"

#include <math.h>

extern "C" {
#include "eigh_pair.h" /* the pair rule and correction, shared with the CPU */
}

#define TILE 32

__global__ void couple(const double *s, const double *g, int64_t n, int64_t ld,
                       const double *lam, sg_pair_rule t, int64_t *hi)
{
    __shared__ long long best[256 / 32];
    for (int64_t i = blockIdx.x; i < n; i += gridDim.x) {
        long long mine = (long long)i;
        for (int64_t j = i + 1 + threadIdx.x; j < n; j += blockDim.x) {
            double c, sij = 0.5 * (s[i * ld + j] + s[j * ld + i]);
            double gij = g ? 0.5 * (g[i * ld + j] + g[j * ld + i]) : 0.0;
            if (sg_pair_kind(sij, gij, lam[i], lam[j], t, &c) == 2 && j > mine)
                mine = (long long)j;
        }
        for (int o = 16; o > 0; o >>= 1) {
            long long other = __shfl_down_sync(0xffffffffu, mine, o);
            mine = other > mine ? other : mine;
        }
        __syncthreads();
        if (threadIdx.x % 32 == 0)
            best[threadIdx.x / 32] = mine;
        __syncthreads();
        if (threadIdx.x == 0) {
            for (int w = 1; w < blockDim.x / 32; w++)
                mine = best[w] > mine ? best[w] : mine;
            hi[i] = mine;
        }
    }
}

int sg_cuda_couple(cudaStream_t st, const double *s, const double *g, int64_t n, int64_t ld,
                   const double *lam, const double t[3], int64_t *hi)
{
    sg_pair_rule r = {t[0], t[1], t[2]};
    unsigned grid = (unsigned)(n < 65535 * 4 ? n : 65535 * 4);
    couple<<<grid, 256, 0, st>>>(s, g, n, ld, lam, r, hi);
    return CU_LAUNCHED();
}

/* atomic max of non-negative doubles through their bit patterns, which
 * order like the values */
__device__ static inline void max_into(double *where, double v)
{
    atomicMax((unsigned long long *)where, (unsigned long long)__double_as_longlong(v));
}

__device__ static inline double mag(double v) { return isnan(v) ? INFINITY : fabs(v); }

__global__ void correction(double *s, const double *g, int64_t n, int64_t ld,
                           const double *lam, sg_pair_rule t, double *stat)
{
    __shared__ double red[3][TILE * 8 / 32];
    const int64_t bi = blockIdx.y, bj = blockIdx.x;
    double me = 0, mc = 0, mo = 0;
    if (bj >= bi) {
        for (int k = threadIdx.y; k < TILE; k += blockDim.y) {
            const int64_t i = bi * TILE + k, j = bj * TILE + threadIdx.x;
            if (i >= n || j >= n || j < i)
                continue;
            if (i == j) {
                double eii = (1.0 - g[i * ld + i]) / 2;
                s[i * ld + i] = eii;
                me = fmax(me, mag(eii));
                mo = fmax(mo, mag(2 * eii));
                continue;
            }
            double c, gij, eij, eji;
            sg_pair_correction(s, g, ld, i, j, lam, t, &eij, &eji, &gij, &c);
            s[i * ld + j] = eij;
            s[j * ld + i] = eji;
            me = fmax(me, fmax(mag(eij), mag(eji)));
            mc = fmax(mc, mag(c));
            mo = fmax(mo, mag(gij));
        }
    }
    for (int o = 16; o > 0; o >>= 1) {
        me = fmax(me, __shfl_down_sync(0xffffffffu, me, o));
        mc = fmax(mc, __shfl_down_sync(0xffffffffu, mc, o));
        mo = fmax(mo, __shfl_down_sync(0xffffffffu, mo, o));
    }
    const int tid = threadIdx.y * blockDim.x + threadIdx.x, warps = blockDim.x * blockDim.y / 32;
    if (tid % 32 == 0) {
        red[0][tid / 32] = me;
        red[1][tid / 32] = mc;
        red[2][tid / 32] = mo;
    }
    __syncthreads();
    if (tid == 0) {
        for (int w = 1; w < warps; w++) {
            me = fmax(me, red[0][w]);
            mc = fmax(mc, red[1][w]);
            mo = fmax(mo, red[2][w]);
        }
        max_into(stat, me);
        max_into(stat + 1, mc);
        max_into(stat + 2, mo);
    }
}

int sg_cuda_correction(cudaStream_t st, double *s, const double *g, int64_t n, int64_t ld,
                       const double *lam, const double t[3], double *stat)
{
    sg_pair_rule r = {t[0], t[1], t[2]};
    int err = CU(cudaMemsetAsync(stat, 0, 3 * sizeof(double), st));
    if (err)
        return err;
    unsigned tiles = (unsigned)((n + TILE - 1) / TILE);
    if (tiles > 65535)
        return sg_fail(SG_EUNSUPPORTED, "eigenproblem of %lld is too large", (long long)n);
    correction<<<dim3(tiles, tiles), dim3(TILE, 8), 0, st>>>(s, g, n, ld, lam, r, stat);
    return CU_LAUNCHED();
}
