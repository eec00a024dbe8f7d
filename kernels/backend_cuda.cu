/* The CUDA backend: backend.h's table on one GPU.
 *
 * Dense products go to cuBLAS, eigensolves to cuSOLVER, the rest to our
 * kernels (one op per .cu/.cuh pair in kernels/). Matrices are row-major
 * like the CPU backend's: cuBLAS, column-major, sees each as its
 * transpose, so C = op(A)·op(B) is issued as Cᵀ = op(B)ᵀ·op(A)ᵀ, i.e.
 * with A and B swapped.
 *
 * Streams: every op is queued on the main stream, except upload_async,
 * which goes on a second (side) stream after an event recorded on the
 * main one (so a buffer just allocated there is ready) and overlaps the
 * work queued after it; await_uploads makes the main stream wait for the
 * side one. download and synchronize wait for the main stream only: a
 * side upload is waited for through await_uploads (sg_backend_drain
 * calls both).
 *
 * Covariance: either mode adds into H's lower triangle (column-major;
 * the row-major upper one), then mirrors it.
 *   mixed 0: the float32 rows widened to float64 in chunks and added with
 *            cublasDsyrk (one triangle, half a GEMM's work): as exact as a
 *            float64 accumulation; with FP64 on tensor cores (A100, H100,
 *            H200: 20-67 TFLOP/s) a 70B block's takes well under a second.
 *   mixed 1: each slice of SG_COV_MIXED_ROWS rows multiplied in float32
 *            by cublasSsyrk into a (d, d) float32 scratch, which a kernel
 *            adds into H in float64: the scheme of stages/covariance.c's
 *            mixed sum, for GPUs whose float64 runs at 1/32-1/64 of
 *            float32 (the caller chooses; --cov auto by f64_ratio).
 *
 * Allocations go through the stream-ordered allocator and are counted
 * against the cap given at init; the scratch workspace (covariance
 * chunks, rotation chunks, cuSOLVER workspaces) is one growable buffer
 * counted the same way. One thread drives a backend at a time. */
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "activation.cuh"
#include "attention.cuh"
#include "convert.cuh"
#include "cuda_common.cuh"
#include "eigh_refine.cuh"
#include "norm.cuh"
#include "residual.cuh"
#include "rope.cuh"

extern "C" {
#include "cpu_kernels.h"
}

#define CHUNK_BYTES ((size_t)256 << 20) /* float64 staging of cov and rotate */

/* ---- memory ---- */

static int track_add(sg_cuda *c, void *p, size_t bytes)
{
    if (c->n_blocks == c->blocks_cap) {
        int cap = c->blocks_cap ? 2 * c->blocks_cap : 64;
        sg_cuda_block *b = (sg_cuda_block *)realloc(c->blocks, cap * sizeof *b);
        if (!b)
            return sg_fail(-ENOMEM, "out of host memory tracking CUDA buffers");
        c->blocks = b;
        c->blocks_cap = cap;
    }
    c->blocks[c->n_blocks].ptr = p;
    c->blocks[c->n_blocks++].bytes = bytes;
    c->in_use += bytes;
    if (c->in_use > c->peak)
        c->peak = c->in_use;
    return 0;
}

static int cu_alloc(sg_backend *be, size_t bytes, void **out)
{
    sg_cuda *c = sg_cuda_of(be);
    bytes = (bytes + 255) & ~(size_t)255;
    if (!bytes)
        bytes = 256;
    if (c->cap && c->in_use + bytes > c->cap)
        return sg_fail(-ENOMEM, "a %zu MiB GPU buffer would pass the %zu MiB cap (%zu MiB in "
                       "use): raise --gpu-mem or lower --chunk-tokens",
                       bytes >> 20, c->cap >> 20, c->in_use >> 20);
    void *p = NULL;
    int err = CU(cudaMallocAsync(&p, bytes, c->stream));
    if (!err && (err = track_add(c, p, bytes)))
        cudaFreeAsync(p, c->stream);
    if (!err)
        *out = p;
    return err;
}

static void cu_release(sg_backend *be, void *p)
{
    sg_cuda *c = sg_cuda_of(be);
    if (!p)
        return;
    for (int i = 0; i < c->n_blocks; i++)
        if (c->blocks[i].ptr == p) {
            c->in_use -= c->blocks[i].bytes;
            c->blocks[i] = c->blocks[--c->n_blocks];
            cudaFreeAsync(p, c->stream);
            return;
        }
}

/* page-locked, so copies run at full PCIe speed and need no staging;
 * portable, because the slicer's helper thread (which has not chosen a
 * device) allocates the next block's buffer */
static int cu_host_alloc(sg_backend *be, size_t bytes, void **out)
{
    *out = NULL;
    return CU(cudaHostAlloc(out, bytes ? bytes : 1, cudaHostAllocPortable));
}

static void cu_host_free(sg_backend *be, void *p)
{
    if (p)
        cudaFreeHost(p);
}

static int cu_upload(sg_backend *be, void *dst, const void *src, size_t bytes)
{
    return CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, sg_cuda_of(be)->stream));
}

/* On the side stream, after what the main stream has queued so far (so a
 * buffer just allocated on it is ready), overlapping what comes next. */
static int cu_upload_async(sg_backend *be, void *dst, const void *src, size_t bytes)
{
    sg_cuda *c = sg_cuda_of(be);
    int err = CU(cudaEventRecord(c->ev_main, c->stream));
    err = err ? err : CU(cudaStreamWaitEvent(c->side, c->ev_main, 0));
    return err ? err
               : CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, c->side));
}

static int cu_await_uploads(sg_backend *be)
{
    sg_cuda *c = sg_cuda_of(be);
    int err = CU(cudaEventRecord(c->ev_side, c->side));
    return err ? err : CU(cudaStreamWaitEvent(c->stream, c->ev_side, 0));
}

static int cu_download(sg_backend *be, void *dst, const void *src, size_t bytes)
{
    sg_cuda *c = sg_cuda_of(be);
    int err = CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, c->stream));
    return err ? err : CU(cudaStreamSynchronize(c->stream));
}

static int cu_copy(sg_backend *be, void *dst, const void *src, size_t bytes)
{
    if (dst == src || !bytes)
        return 0;
    return CU(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, sg_cuda_of(be)->stream));
}

static int cu_zero(sg_backend *be, void *p, size_t bytes)
{
    return bytes ? CU(cudaMemsetAsync(p, 0, bytes, sg_cuda_of(be)->stream)) : 0;
}

static int cu_sync(sg_backend *be) { return CU(cudaStreamSynchronize(sg_cuda_of(be)->stream)); }

static int cu_memory(sg_backend *be, sg_backend_mem *m)
{
    sg_cuda *c = sg_cuda_of(be);
    memset(m, 0, sizeof *m);
    m->in_use = c->in_use;
    m->workspace = c->scratch_bytes;
    m->peak = c->peak;
    m->cap = c->cap;
    int ratio = 0;
    if (cudaDeviceGetAttribute(&ratio, cudaDevAttrSingleToDoublePrecisionPerfRatio, c->device) ==
        cudaSuccess)
        m->f64_ratio = ratio;
    return CU(cudaMemGetInfo(&m->device_free, &m->device_total));
}

/* ---- dense linear algebra ---- */

static int fits(int64_t v) { return v >= 0 && v <= INT_MAX; }

static int check_gemm(int64_t m, int64_t n, int64_t k, int64_t lda, int64_t ldb, int64_t ldc)
{
    if (!fits(m) || !fits(n) || !fits(k) || !fits(lda) || !fits(ldb) || !fits(ldc))
        return sg_fail(SG_EARG, "GEMM sizes beyond 32 bits (%lld x %lld x %lld)", (long long)m,
                       (long long)n, (long long)k);
    return 0;
}

static int cu_sgemm(sg_backend *be, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
                    const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                    int64_t ldc)
{
    int err = check_gemm(m, n, k, lda, ldb, ldc);
    if (err || !m || !n)
        return err;
    /* row-major C (m, n) = op(A)·op(B)  <=>  column-major Cᵀ = op(B)ᵀ·op(A)ᵀ */
    return CUBLAS(cublasSgemm(sg_cuda_of(be)->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                              ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)n, (int)m, (int)k, &alpha, b,
                              (int)ldb, a, (int)lda, &beta, c, (int)ldc));
}

static int cu_dgemm(sg_backend *be, int ta, int tb, int64_t m, int64_t n, int64_t k, double alpha,
                    const double *a, int64_t lda, const double *b, int64_t ldb, double beta,
                    double *c, int64_t ldc)
{
    int err = check_gemm(m, n, k, lda, ldb, ldc);
    if (err || !m || !n)
        return err;
    return CUBLAS(cublasDgemm(sg_cuda_of(be)->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                              ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)n, (int)m, (int)k, &alpha, b,
                              (int)ldb, a, (int)lda, &beta, c, (int)ldc));
}

/* ---- covariance and rotations ---- */

static int64_t chunk_rows(int64_t per_row_doubles, int64_t total, int64_t at_least)
{
    int64_t r = (int64_t)(CHUNK_BYTES / sizeof(double)) / (per_row_doubles ? per_row_doubles : 1);
    if (r < at_least)
        r = at_least;
    return r < total ? r : total;
}

/* H += Xᵀ·X with float64 products (mixed 0) */
static int cov_f64(sg_cuda *c, double *h, int64_t d, const float *x, int64_t rows)
{
    int64_t chunk = chunk_rows(d, rows, 256);
    double *wide;
    int err = sg_cuda_scratch(c, chunk * d * sizeof(double), (void **)&wide);
    const double one = 1.0;
    for (int64_t r0 = 0; !err && r0 < rows; r0 += chunk) {
        int64_t n = rows - r0 < chunk ? rows - r0 : chunk;
        err = sg_cuda_f32_to_f64(c->stream, wide, d, x + r0 * d, d, n, d);
        /* column-major, wide is Xᵀ (d, n): H += Xᵀ·X into its lower
         * triangle, which is the row-major upper one */
        err = err ? err : CUBLAS(cublasDsyrk(c->blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, (int)d,
                                             (int)n, &one, wide, (int)d, &one, h, (int)d));
    }
    return err;
}

/* H += Xᵀ·X, float32 slices added in float64 (mixed 1) */
static int cov_mixed(sg_cuda *c, double *h, int64_t d, const float *x, int64_t rows)
{
    float *s;
    int err = sg_cuda_scratch(c, d * d * sizeof(float), (void **)&s);
    const float one = 1.0f, zero = 0.0f;
    for (int64_t r0 = 0; !err && r0 < rows; r0 += SG_COV_MIXED_ROWS) {
        int64_t n = rows - r0 < SG_COV_MIXED_ROWS ? rows - r0 : SG_COV_MIXED_ROWS;
        /* column-major, the slice is Xᵀ (d, n): S = Xᵀ·X into its lower
         * triangle, the row-major upper one, in float32 */
        err = CUBLAS(cublasSsyrk(c->blas, CUBLAS_FILL_MODE_LOWER, CUBLAS_OP_N, (int)d, (int)n,
                                 &one, x + r0 * d, (int)d, &zero, s, (int)d));
        err = err ? err : sg_cuda_add_upper_f32(c->stream, h, s, d);
    }
    return err;
}

static int cu_cov_accumulate(sg_backend *be, double *h, int64_t d, const float *x, int64_t rows,
                             int mixed)
{
    sg_cuda *c = sg_cuda_of(be);
    if (rows <= 0)
        return 0;
    if (!fits(d))
        return sg_fail(SG_EARG, "covariance of width %lld", (long long)d);
    int err = mixed ? cov_mixed(c, h, d, x, rows) : cov_f64(c, h, d, x, rows);
    return err ? err : sg_cuda_mirror_upper(c->stream, h, d);
}

static int cu_rotate_reader(sg_backend *be, const float *w, int64_t rows, int64_t D,
                            const double *q, int64_t d, float *out)
{
    sg_cuda *c = sg_cuda_of(be);
    if (rows <= 0)
        return 0;
    int64_t chunk = chunk_rows(D + d, rows, 64);
    double *a;
    int err = sg_cuda_scratch(c, chunk * (D + d) * sizeof(double), (void **)&a);
    double *cc = a + chunk * D;
    for (int64_t r0 = 0; !err && r0 < rows; r0 += chunk) {
        int64_t n = rows - r0 < chunk ? rows - r0 : chunk;
        err = sg_cuda_f32_to_f64(c->stream, a, D, w + r0 * D, D, n, D);
        /* C (n, d) = A (n, D)·Q[:, :d] */
        err = err ? err : cu_dgemm(be, 0, 0, n, d, D, 1.0, a, D, q, D, 0.0, cc, d);
        err = err ? err : sg_cuda_f64_to_f32(c->stream, out + r0 * d, d, cc, d, n, d);
    }
    return err;
}

static int cu_rotate_writer(sg_backend *be, const float *w, int64_t D, int64_t cols,
                            const double *q, int64_t d, float *out)
{
    sg_cuda *c = sg_cuda_of(be);
    if (cols <= 0)
        return 0;
    int64_t chunk = chunk_rows(D + d, cols, 64);
    double *a;
    int err = sg_cuda_scratch(c, chunk * (D + d) * sizeof(double), (void **)&a);
    double *cc = a + chunk * D;
    for (int64_t c0 = 0; !err && c0 < cols; c0 += chunk) {
        int64_t n = cols - c0 < chunk ? cols - c0 : chunk;
        err = sg_cuda_f32_to_f64(c->stream, a, n, w + c0, cols, D, n);
        /* C (d, n) = Q[:, :d]ᵀ·A (D, n) */
        err = err ? err : cu_dgemm(be, 1, 0, d, n, D, 1.0, q, D, a, n, 0.0, cc, n);
        err = err ? err : sg_cuda_f64_to_f32(c->stream, out + c0, cols, cc, n, d, n);
    }
    return err;
}

/* out (rows, d) = X (rows, D)·Q[:, :d], float32 like the CPU's
 * sg_project_rows: Q's leading columns narrowed once into the scratch */
static int cu_project_rows(sg_backend *be, const float *x, int64_t rows, int64_t D,
                           const double *q, int64_t d, float *out)
{
    sg_cuda *c = sg_cuda_of(be);
    if (rows <= 0)
        return 0;
    float *qf;
    int err = sg_cuda_scratch(c, D * d * sizeof(float), (void **)&qf);
    err = err ? err : sg_cuda_f64_to_f32(c->stream, qf, d, q, D, D, d);
    return err ? err : cu_sgemm(be, 0, 0, rows, d, D, 1.0f, x, D, qf, d, 0.0f, out, d);
}

/* ---- the forward-pass ops ---- */

static int cu_norm_rows(sg_backend *be, float *x, int64_t rows, int64_t d, sg_norm_kind kind,
                        int64_t norm_dim, double eps, const float *w, const float *b)
{
    return sg_cuda_norm_rows(sg_cuda_of(be)->stream, x, rows, d, kind, norm_dim, eps, w, b);
}

static int cu_rope(sg_backend *be, float *x, int64_t n, int64_t n_heads, int64_t head_dim,
                   int64_t rope_dim, sg_rope_layout layout, int64_t pos0, const double *inv_freq)
{
    return sg_cuda_rope(sg_cuda_of(be)->stream, x, n, n_heads, head_dim, rope_dim, layout, pos0,
                        inv_freq);
}

static int cu_attention(sg_backend *be, const float *q, const float *k, const float *v,
                        float *out, int64_t n, int64_t nh, int64_t nkv, int64_t hd)
{
    return sg_cuda_attention(sg_cuda_of(be)->stream, q, k, v, out, n, nh, nkv, hd);
}

static int cu_activation(sg_backend *be, sg_act act, float *up, const float *gate, int64_t n)
{
    return sg_cuda_activation(sg_cuda_of(be)->stream, act, up, gate, n);
}

static int cu_add(sg_backend *be, float *y, const float *x, int64_t rows, int64_t cols,
                  int64_t x_stride)
{
    return sg_cuda_add(sg_cuda_of(be)->stream, y, x, rows, cols, x_stride);
}

/* ---- the eigensolver primitives ---- */

static int solver_info(sg_cuda *c, const char *what, int64_t n)
{
    int info = 0;
    int err = CU(cudaMemcpyAsync(&info, c->info, sizeof info, cudaMemcpyDeviceToHost, c->stream));
    err = err ? err : CU(cudaStreamSynchronize(c->stream));
    if (!err && info)
        err = sg_fail(SG_ENUMERIC, "%s failed (info %d) on a %lld x %lld matrix", what, info,
                      (long long)n, (long long)n);
    return err;
}

static size_t align256(size_t b) { return (b + 255) & ~(size_t)255; }

static int cu_eigh_f32(sg_backend *be, const double *a, int64_t n, int64_t lda, double *x,
                       double *w)
{
    sg_cuda *c = sg_cuda_of(be);
    if (!fits(n * n))
        return sg_fail(SG_EARG, "eigensolve of %lld x %lld", (long long)n, (long long)n);
    size_t mat = align256(n * n * sizeof(float)), vals = align256(n * sizeof(float));
    char *base = NULL;
    int lwork = 0;
    /* the size query gets real pointers: some cuSOLVER versions check them */
    int err = sg_cuda_scratch(c, mat + vals, (void **)&base);
    err = err ? err : CUSOLVER(cusolverDnSsyevd_bufferSize(c->solver, CUSOLVER_EIG_MODE_VECTOR,
                                                       CUBLAS_FILL_MODE_LOWER, (int)n,
                                                       (float *)base, (int)n,
                                                       (float *)(base + mat), &lwork));
    err = err ? err : sg_cuda_scratch(c, mat + vals + (size_t)lwork * sizeof(float), (void **)&base);
    if (err)
        return err;
    float *af = (float *)base, *wf = (float *)(base + mat), *work = (float *)(base + mat + vals);
    err = sg_cuda_f64_to_f32(c->stream, af, n, a, lda, n, n);
    err = err ? err : CUSOLVER(cusolverDnSsyevd(c->solver, CUSOLVER_EIG_MODE_VECTOR,
                                                CUBLAS_FILL_MODE_LOWER, (int)n, af, (int)n, wf,
                                                work, lwork, c->info));
    err = err ? err : solver_info(c, "cusolverDnSsyevd", n);
    err = err ? err : sg_cuda_eigvecs_f32(c->stream, x, af, n);
    float *hw = (float *)malloc(n * sizeof(float));
    if (!err && !hw)
        err = sg_fail(-ENOMEM, "out of memory for eigenvalues");
    err = err ? err : cu_download(be, hw, wf, n * sizeof(float));
    for (int64_t j = 0; !err && j < n; j++)
        w[j] = hw[n - 1 - j];
    free(hw);
    return err;
}

static int cu_eigh_f64(sg_backend *be, const double *a, int64_t n, int64_t lda, double *x,
                       double *w)
{
    sg_cuda *c = sg_cuda_of(be);
    if (!fits(n * n))
        return sg_fail(SG_EARG, "eigensolve of %lld x %lld", (long long)n, (long long)n);
    size_t mat = align256(n * n * sizeof(double)), vals = align256(n * sizeof(double));
    char *base = NULL;
    int lwork = 0;
    /* the size query gets real pointers: some cuSOLVER versions check them */
    int err = sg_cuda_scratch(c, mat + vals, (void **)&base);
    err = err ? err : CUSOLVER(cusolverDnDsyevd_bufferSize(c->solver, CUSOLVER_EIG_MODE_VECTOR,
                                                       CUBLAS_FILL_MODE_LOWER, (int)n,
                                                       (double *)base, (int)n,
                                                       (double *)(base + mat), &lwork));
    err = err ? err : sg_cuda_scratch(c, mat + vals + (size_t)lwork * sizeof(double), (void **)&base);
    if (err)
        return err;
    double *ad = (double *)base, *wd = (double *)(base + mat), *work = (double *)(base + mat + vals);
    err = CU(cudaMemcpy2DAsync(ad, n * sizeof(double), a, lda * sizeof(double), n * sizeof(double),
                               n, cudaMemcpyDeviceToDevice, c->stream));
    err = err ? err : CUSOLVER(cusolverDnDsyevd(c->solver, CUSOLVER_EIG_MODE_VECTOR,
                                                CUBLAS_FILL_MODE_LOWER, (int)n, ad, (int)n, wd,
                                                work, lwork, c->info));
    err = err ? err : solver_info(c, "cusolverDnDsyevd", n);
    err = err ? err : sg_cuda_eigvecs_f64(c->stream, x, ad, n);
    double *hw = (double *)malloc(n * sizeof(double));
    if (!err && !hw)
        err = sg_fail(-ENOMEM, "out of memory for eigenvalues");
    err = err ? err : cu_download(be, hw, wd, n * sizeof(double));
    for (int64_t j = 0; !err && j < n; j++)
        w[j] = hw[n - 1 - j];
    free(hw);
    return err;
}

static int cu_diag_get(sg_backend *be, const double *m, int64_t n, int64_t ld, double *out)
{
    sg_cuda *c = sg_cuda_of(be);
    int err = CU(cudaMemcpy2DAsync(out, sizeof(double), m, (ld + 1) * sizeof(double),
                                   sizeof(double), n, cudaMemcpyDeviceToHost, c->stream));
    return err ? err : CU(cudaStreamSynchronize(c->stream));
}

static int cu_diag_add(sg_backend *be, double *m, int64_t n, int64_t ld, double v)
{
    return sg_cuda_diag_add(sg_cuda_of(be)->stream, m, n, ld, v);
}

static int cu_set_identity(sg_backend *be, double *m, int64_t n, int64_t ld)
{
    return sg_cuda_set_identity(sg_cuda_of(be)->stream, m, n, ld);
}

/* lam (host, n) into the device copy, grown as needed */
static int put_lam(sg_cuda *c, const double *lam, int64_t n)
{
    int err = 0;
    if (n > c->hi_cap) {
        err = CU(cudaStreamSynchronize(c->stream));
        cudaFree(c->hi);
        cudaFree(c->lam);
        c->hi = NULL;
        c->lam = NULL;
        c->hi_cap = 0;
        err = err ? err : CU(cudaMalloc((void **)&c->hi, n * sizeof(int64_t)));
        err = err ? err : CU(cudaMalloc((void **)&c->lam, n * sizeof(double)));
        if (err)
            return err;
        c->hi_cap = n;
    }
    return lam ? CU(cudaMemcpyAsync(c->lam, lam, n * sizeof(double), cudaMemcpyHostToDevice,
                                    c->stream))
               : 0;
}

static int cu_couple(sg_backend *be, const double *s, const double *g, int64_t n, int64_t ld,
                     const double *lam, const double t[3], int64_t *hi)
{
    sg_cuda *c = sg_cuda_of(be);
    int err = put_lam(c, lam, n);
    err = err ? err : sg_cuda_couple(c->stream, s, g, n, ld, c->lam, t, c->hi);
    return err ? err : cu_download(be, hi, c->hi, n * sizeof(int64_t));
}

static int cu_correction(sg_backend *be, double *s, const double *g, int64_t n, int64_t ld,
                         const double *lam, const double t[3], double *stat)
{
    sg_cuda *c = sg_cuda_of(be);
    int err = put_lam(c, lam, n);
    err = err ? err : sg_cuda_correction(c->stream, s, g, n, ld, lam ? c->lam : NULL, t, c->stat);
    return err ? err : cu_download(be, stat, c->stat, 3 * sizeof(double));
}

static int cu_copy2d(sg_backend *be, double *dst, int64_t ldd, const double *src, int64_t lds,
                     int64_t rows, int64_t cols, int kind)
{
    sg_cuda *c = sg_cuda_of(be);
    if (rows <= 0 || cols <= 0)
        return 0;
    cudaMemcpyKind k = kind == SG_COPY_H2D   ? cudaMemcpyHostToDevice
                       : kind == SG_COPY_D2H ? cudaMemcpyDeviceToHost
                                             : cudaMemcpyDeviceToDevice;
    int err = CU(cudaMemcpy2DAsync(dst, ldd * sizeof(double), src, lds * sizeof(double),
                                   cols * sizeof(double), rows, k, c->stream));
    return err || kind != SG_COPY_D2H ? err : CU(cudaStreamSynchronize(c->stream));
}

/* designated initializers (C++20): in backend.h's order, as C++ requires */
static const sg_eigh_prims cuda_prims = {
    .dgemm = cu_dgemm,
    .eigh_f32 = cu_eigh_f32,
    .eigh_f64 = cu_eigh_f64,
    .diag_get = cu_diag_get,
    .diag_add = cu_diag_add,
    .set_identity = cu_set_identity,
    .couple = cu_couple,
    .correction = cu_correction,
    .copy2d = cu_copy2d,
};

static int cu_eigh(sg_backend *be, double *h, int64_t d, double damp_frac, sg_eigh_mode mode,
                   double *q, double *eigenvalues)
{
    return sg_eigh_run(be, &cuda_prims, h, d, damp_frac, mode, q, eigenvalues);
}

/* ---- the table, init and free ---- */

static void cu_free(sg_backend *be);

/* Designated initializers (C++20) must follow backend.h's order. The
 * block forward is forward_ops.c's composition of the ops below it. */
static const sg_backend_ops cuda_ops = {
    .name = "cuda",
    .host_memory = 0,
    .free = cu_free,
    .alloc = cu_alloc,
    .release = cu_release,
    .host_alloc = cu_host_alloc,
    .host_free = cu_host_free,
    .upload = cu_upload,
    .upload_async = cu_upload_async,
    .await_uploads = cu_await_uploads,
    .download = cu_download,
    .copy = cu_copy,
    .zero = cu_zero,
    .synchronize = cu_sync,
    .memory = cu_memory,
    .sgemm = cu_sgemm,
    .cov_accumulate = cu_cov_accumulate,
    .eigh = cu_eigh,
    .rotate_reader = cu_rotate_reader,
    .rotate_writer = cu_rotate_writer,
    .project_rows = cu_project_rows,
    .block_forward = sg_block_forward_ops,
    .block_forward_mlp = sg_block_forward_mlp_ops,
    .norm_rows = cu_norm_rows,
    .rope = cu_rope,
    .attention = cu_attention,
    .activation = cu_activation,
    .add = cu_add,
};

const sg_backend_ops *sg_backend_cuda_ops(void) { return &cuda_ops; }

const sg_eigh_prims *sg_eigh_prims_cuda(void) { return &cuda_prims; }

static void cu_free(sg_backend *be)
{
    if (!be)
        return;
    sg_cuda *c = sg_cuda_of(be);
    if (c) {
        cudaSetDevice(c->device);
        if (c->stream)
            cudaStreamSynchronize(c->stream);
        for (int i = 0; i < c->n_blocks; i++)
            cudaFree(c->blocks[i].ptr);
        free(c->blocks);
        cudaFree(c->scratch);
        cudaFree(c->info);
        cudaFree(c->stat);
        cudaFree(c->hi);
        cudaFree(c->lam);
        if (c->solver)
            cusolverDnDestroy(c->solver);
        if (c->blas)
            cublasDestroy(c->blas);
        if (c->side)
            cudaStreamSynchronize(c->side);
        if (c->ev_main)
            cudaEventDestroy(c->ev_main);
        if (c->ev_side)
            cudaEventDestroy(c->ev_side);
        if (c->side)
            cudaStreamDestroy(c->side);
        if (c->stream)
            cudaStreamDestroy(c->stream);
        free(c);
    }
    free(be);
}

sg_backend *sg_backend_cuda_init(int device, size_t mem_cap_bytes)
{
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        cudaGetLastError();
        sg_fail(SG_EUNSUPPORTED, "no CUDA GPU: %s",
                e != cudaSuccess ? cudaGetErrorString(e) : "no devices");
        return NULL;
    }
    if (device < 0 || device >= count) {
        sg_fail(SG_EARG, "CUDA device %d of %d", device, count);
        return NULL;
    }
    sg_backend *be = (sg_backend *)calloc(1, sizeof *be);
    sg_cuda *c = (sg_cuda *)calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        sg_fail(-ENOMEM, "out of memory for the CUDA backend");
        return NULL;
    }
    be->ops = &cuda_ops;
    be->ctx = c;
    c->device = device;
    c->cap = mem_cap_bytes;
    int err = CU(cudaSetDevice(device));
    err = err ? err : CU(cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking));
    err = err ? err : CU(cudaStreamCreateWithFlags(&c->side, cudaStreamNonBlocking));
    err = err ? err : CU(cudaEventCreateWithFlags(&c->ev_main, cudaEventDisableTiming));
    err = err ? err : CU(cudaEventCreateWithFlags(&c->ev_side, cudaEventDisableTiming));
    err = err ? err : CUBLAS(cublasCreate(&c->blas));
    err = err ? err : CUBLAS(cublasSetStream(c->blas, c->stream));
    /* default math: float32 GEMMs stay IEEE float32 (TF32 only ever with
     * CUBLAS_TF32_TENSOR_OP_MATH), float64 ones may use FP64 tensor cores,
     * which are IEEE float64 */
    err = err ? err : CUBLAS(cublasSetMathMode(c->blas, CUBLAS_DEFAULT_MATH));
    err = err ? err : CUSOLVER(cusolverDnCreate(&c->solver));
    err = err ? err : CUSOLVER(cusolverDnSetStream(c->solver, c->stream));
    err = err ? err : CU(cudaMalloc((void **)&c->info, sizeof(int)));
    err = err ? err : CU(cudaMalloc((void **)&c->stat, 4 * sizeof(double)));
    if (err) {
        cu_free(be);
        return NULL;
    }
    return be;
}
