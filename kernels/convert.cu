#include "convert.cuh"

#define TILE 32

template <typename S, typename D>
__global__ void convert_2d(D *dst, int64_t ldd, const S *src, int64_t lds, int64_t rows,
                           int64_t cols)
{
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
        for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < cols;
             c += (int64_t)gridDim.x * blockDim.x)
            dst[r * ldd + c] = (D)src[r * lds + c];
}

template <typename S, typename D>
static int convert(cudaStream_t st, D *dst, int64_t ldd, const S *src, int64_t lds, int64_t rows,
                   int64_t cols)
{
    if (rows <= 0 || cols <= 0)
        return 0;
    dim3 grid(sg_blocks(cols, 256) > 64 ? 64 : sg_blocks(cols, 256),
              (unsigned)(rows < 65535 ? rows : 65535));
    convert_2d<S, D><<<grid, 256, 0, st>>>(dst, ldd, src, lds, rows, cols);
    return CU_LAUNCHED();
}

int sg_cuda_f32_to_f64(cudaStream_t st, double *dst, int64_t ldd, const float *src, int64_t lds,
                       int64_t rows, int64_t cols)
{
    return convert(st, dst, ldd, src, lds, rows, cols);
}

int sg_cuda_f64_to_f32(cudaStream_t st, float *dst, int64_t ldd, const double *src, int64_t lds,
                       int64_t rows, int64_t cols)
{
    return convert(st, dst, ldd, src, lds, rows, cols);
}

/* x[i][j] = v[(n-1-j)·n + i]: a transpose with reversed order, through a
 * shared tile so both sides stay coalesced. */
template <typename S>
__global__ void eigvecs(double *x, const S *v, int64_t n)
{
    __shared__ double tile[TILE][TILE + 1];
    int64_t i0 = (int64_t)blockIdx.y * TILE, j0 = (int64_t)blockIdx.x * TILE;
    /* read rows r = n-1-j of v (contiguous in i) */
    for (int k = threadIdx.y; k < TILE; k += blockDim.y) {
        int64_t j = j0 + k, i = i0 + threadIdx.x;
        if (j < n && i < n)
            tile[k][threadIdx.x] = (double)v[(n - 1 - j) * n + i];
    }
    __syncthreads();
    for (int k = threadIdx.y; k < TILE; k += blockDim.y) {
        int64_t i = i0 + k, j = j0 + threadIdx.x;
        if (i < n && j < n)
            x[i * n + j] = tile[threadIdx.x][k];
    }
}

template <typename S>
static int eigvecs_launch(cudaStream_t st, double *x, const S *v, int64_t n)
{
    dim3 grid((unsigned)((n + TILE - 1) / TILE), (unsigned)((n + TILE - 1) / TILE)), block(TILE, 8);
    eigvecs<S><<<grid, block, 0, st>>>(x, v, n);
    return CU_LAUNCHED();
}

int sg_cuda_eigvecs_f64(cudaStream_t st, double *x, const double *v, int64_t n)
{
    return eigvecs_launch(st, x, v, n);
}

int sg_cuda_eigvecs_f32(cudaStream_t st, double *x, const float *v, int64_t n)
{
    return eigvecs_launch(st, x, v, n);
}

/* h[i][j] = h[j][i] for j < i, tile by tile below the diagonal */
__global__ void mirror_upper(double *h, int64_t d)
{
    __shared__ double tile[TILE][TILE + 1];
    int64_t bi = blockIdx.y, bj = blockIdx.x;
    if (bj > bi)
        return;
    int64_t i0 = bi * TILE, j0 = bj * TILE;
    /* read the transposed tile from the upper side: rows j0.., columns i0.. */
    for (int k = threadIdx.y; k < TILE; k += blockDim.y) {
        int64_t r = j0 + k, c = i0 + threadIdx.x;
        if (r < d && c < d)
            tile[k][threadIdx.x] = h[r * d + c];
    }
    __syncthreads();
    for (int k = threadIdx.y; k < TILE; k += blockDim.y) {
        int64_t i = i0 + k, j = j0 + threadIdx.x;
        if (i < d && j < i)
            h[i * d + j] = tile[threadIdx.x][k];
    }
}

int sg_cuda_mirror_upper(cudaStream_t st, double *h, int64_t d)
{
    unsigned t = (unsigned)((d + TILE - 1) / TILE);
    mirror_upper<<<dim3(t, t), dim3(TILE, 8), 0, st>>>(h, d);
    return CU_LAUNCHED();
}

/* h[i][j] += s[i][j] for j >= i: a float32 partial sum into the float64
 * upper triangle */
__global__ void add_upper_f32(double *h, const float *s, int64_t d)
{
    for (int64_t r = blockIdx.y; r < d; r += gridDim.y)
        for (int64_t c = r + blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < d;
             c += (int64_t)gridDim.x * blockDim.x)
            h[r * d + c] += (double)s[r * d + c];
}

int sg_cuda_add_upper_f32(cudaStream_t st, double *h, const float *s, int64_t d)
{
    unsigned rows = (unsigned)(d < 65535 ? d : 65535);
    add_upper_f32<<<dim3(sg_blocks(d, 256) < 64 ? sg_blocks(d, 256) : 64, rows), 256, 0, st>>>(
        h, s, d);
    return CU_LAUNCHED();
}

__global__ void diag_add(double *m, int64_t n, int64_t ld, double v)
{
    for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        m[i * ld + i] += v;
}

int sg_cuda_diag_add(cudaStream_t st, double *m, int64_t n, int64_t ld, double v)
{
    diag_add<<<sg_blocks(n, 256), 256, 0, st>>>(m, n, ld, v);
    return CU_LAUNCHED();
}

__global__ void set_identity(double *m, int64_t n, int64_t ld)
{
    for (int64_t r = blockIdx.y; r < n; r += gridDim.y)
        for (int64_t c = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; c < n;
             c += (int64_t)gridDim.x * blockDim.x)
            m[r * ld + c] = r == c ? 1.0 : 0.0;
}

int sg_cuda_set_identity(cudaStream_t st, double *m, int64_t n, int64_t ld)
{
    dim3 grid(sg_blocks(n, 256) > 64 ? 64 : sg_blocks(n, 256), (unsigned)(n < 65535 ? n : 65535));
    set_identity<<<grid, 256, 0, st>>>(m, n, ld);
    return CU_LAUNCHED();
}
