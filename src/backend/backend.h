/* Backends: where the heavy operations of the pipeline run.
 *
 * As in ggml, a backend is a small table of coarse operations plus a
 * context. The CPU backend (OpenBLAS + LAPACKE) is the reference; the CUDA
 * backend (kernels/, cuBLAS + cuSOLVER + our kernels) implements the same
 * table on device memory. Callers hold an sg_backend * and never #ifdef:
 *
 *     sg_backend *be = sg_backend_cuda_init(0, cap);   NULL: no GPU / no CUDA
 *     if (!be)
 *         be = sg_backend_cpu();
 *     float *x;
 *     err = be->ops->alloc(be, bytes, (void **)&x);
 *     err = err ? err : be->ops->upload(be, x, host_x, bytes);
 *     ...
 *     be->ops->release(be, x);
 *     be->ops->free(be);
 *
 * Every pointer an operation takes is backend memory (from alloc) unless
 * its comment says host; on the CPU backend the two are the same thing.
 * Matrices are row-major with an explicit leading dimension (row stride in
 * elements) where an operation works on sub-blocks. Operations may run
 * asynchronously; download and synchronize wait for everything queued
 * before them. Every operation returns 0 or a negative code with a
 * message (sg_error.h); none exits or prints. */
#ifndef SG_BACKEND_H
#define SG_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "forward.h"
#include "model_config.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct sg_backend sg_backend;

/* Eigensolver precision.
 *   SG_EIGH_F64:   float64 divide and conquer (dsyevd), the reference.
 *   SG_EIGH_MIXED: float32 divide and conquer (ssyevd) on the matrix cast
 *                  to float32, then refined in float64 until the result is
 *                  as accurate as dsyevd's (see "The mixed eigensolver"
 *                  below).
 *   SG_EIGH_F32:   the float32 solve alone, widened: for comparisons only;
 *                  its eigenvectors are accurate to ~1e-7·‖H‖/gap, which
 *                  is what costs perplexity on large models. */
typedef enum { SG_EIGH_F64, SG_EIGH_MIXED, SG_EIGH_F32 } sg_eigh_mode;

typedef struct {
    size_t in_use;       /* bytes allocated through this backend now */
    size_t workspace;    /* of which the backend's own scratch */
    size_t peak;         /* the most ever in use at once (scratch included) */
    size_t cap;          /* the limit given at init; 0: none */
    size_t device_free;  /* what the device reports (cudaMemGetInfo); 0 on CPU */
    size_t device_total;
    int f64_ratio;       /* float32 over float64 throughput (2 on an H100, 64 on
                            consumer cards; 0: unknown, as on the CPU) */
} sg_backend_mem;

typedef struct sg_backend_ops {
    const char *name; /* "cpu", "cuda" */
    /* 1: backend memory is host memory, so a caller may hand host buffers
     * to the ops and skip the copies (the CPU backend) */
    int host_memory;

    /* Releases the backend and everything it holds (not buffers the
     * caller still has: release those first). */
    void (*free)(sg_backend *be);

    /* ---- memory ---- */
    /* *out = bytes of backend memory, 256-byte aligned; -ENOMEM past the cap. */
    int (*alloc)(sg_backend *be, size_t bytes, void **out);
    void (*release)(sg_backend *be, void *p);
    /* *out = bytes of host memory the backend transfers from and to
     * fastest (page-locked on a GPU, plain malloc on the CPU); freed with
     * host_free */
    int (*host_alloc)(sg_backend *be, size_t bytes, void **out);
    void (*host_free)(sg_backend *be, void *p);
    /* dst (backend) = src (host) */
    int (*upload)(sg_backend *be, void *dst, const void *src, size_t bytes);
    /* dst (backend) = src (host) on a second queue, overlapping the work
     * already queued (which it follows only in that dst may be freshly
     * allocated); src must stay as it is until the next download or
     * synchronize after await_uploads. For preparing the next block while
     * this one computes. */
    int (*upload_async)(sg_backend *be, void *dst, const void *src, size_t bytes);
    /* work queued after this waits for every upload_async before it */
    int (*await_uploads)(sg_backend *be);
    /* dst (host) = src (backend); waits for queued work */
    int (*download)(sg_backend *be, void *dst, const void *src, size_t bytes);
    /* dst (backend) = src (backend) */
    int (*copy)(sg_backend *be, void *dst, const void *src, size_t bytes);
    /* bytes of p (backend) = 0 */
    int (*zero)(sg_backend *be, void *p, size_t bytes);
    /* waits until every queued operation has finished */
    int (*synchronize)(sg_backend *be);
    int (*memory)(sg_backend *be, sg_backend_mem *out);

    /* ---- dense linear algebra ---- */
    /* C (m, n) = alpha·op(A)·op(B) + beta·C, float32; op(A) (m, k), op(B)
     * (k, n); ta/tb non-zero: the stored matrix is transposed. lda, ldb,
     * ldc are row strides of the stored matrices. */
    int (*sgemm)(sg_backend *be, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
                 const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                 int64_t ldc);

    /* ---- the SliceGPT stages ---- */
    /* H (d, d) float64 += Xᵀ·X for X (rows, d) float32. H stays fully
     * symmetric. mixed 0: each row widened to float64 before it is
     * multiplied, so the sum is as exact as a float64 accumulation.
     * mixed 1: each slice of SG_COV_MIXED_ROWS rows multiplied in float32
     * and the slices added in float64 (covariance.h): for GPUs whose
     * float64 runs at 1/32-1/64 of float32. */
    int (*cov_accumulate)(sg_backend *be, double *h, int64_t d, const float *x, int64_t rows,
                          int mixed);
    /* Eigenvectors of H + δI, δ = damp_frac·mean(diag H): Q (d, d) float64
     * with eigenvector j in column j, eigenvalues (host, d) descending,
     * damping included (as stages/eigensolve.c). H is destroyed. */
    int (*eigh)(sg_backend *be, double *h, int64_t d, double damp_frac, sg_eigh_mode mode,
                double *q, double *eigenvalues);
    /* A reader of the residual stream: out (rows, d) = W (rows, D)·Q[:, :d],
     * products in float64 (stages/rotate_slice.c). Q (D, D). */
    int (*rotate_reader)(sg_backend *be, const float *w, int64_t rows, int64_t D, const double *q,
                         int64_t d, float *out);
    /* A writer into it: out (d, cols) = Q[:, :d]ᵀ·W (D, cols), float64
     * products. A bias is a writer with cols = 1. */
    int (*rotate_writer)(sg_backend *be, const float *w, int64_t D, int64_t cols,
                         const double *q, int64_t d, float *out);
    /* Activations into the new basis: out (rows, d) = X (rows, D)·Q[:, :d]
     * in float32 (sg_project_rows). Q (D, D) float64. */
    int (*project_rows)(sg_backend *be, const float *x, int64_t rows, int64_t D, const double *q,
                        int64_t d, float *out);

    /* ---- the block forward pass ---- */
    /* sg_block_forward and sg_block_forward_mlp (forward.h) with the
     * block's tensors and the activations in backend memory (from
     * sg_block_to_backend, forward_ops.h); seqs is on the host. The CPU
     * backend runs forward.c; others compose the ops below
     * (forward_ops.c). */
    int (*block_forward)(sg_backend *be, const sg_model_config *cfg, const sg_block *b,
                         const float *x_in, float *x_out, float *mid, const sg_seqs *seqs);
    int (*block_forward_mlp)(sg_backend *be, const sg_model_config *cfg, const sg_block *b,
                             const float *mid, float *x_out, int64_t tokens);

    /* ---- the forward pass op by op (forward.c's steps) ---- */
    /* x (rows, d) in place: RMSNorm dividing by norm_dim (the original D,
     * also after slicing) or LayerNorm over d; then ·w and +b where not
     * NULL (both (d)). Sums in float64, as forward.c. */
    int (*norm_rows)(sg_backend *be, float *x, int64_t rows, int64_t d, sg_norm_kind kind,
                     int64_t norm_dim, double eps, const float *w, const float *b);
    /* Rotary embedding in place on x (n, n_heads·head_dim), token t at
     * position pos0 + t; the first rope_dim coordinates of each head turn,
     * paired per layout (model_config.h). inv_freq (host, rope_dim/2): the
     * model's inverse frequencies, scaling already applied. */
    int (*rope)(sg_backend *be, float *x, int64_t n, int64_t n_heads, int64_t head_dim,
                int64_t rope_dim, sg_rope_layout layout, int64_t pos0, const double *inv_freq);
    /* Causal attention over one sequence of n tokens, softmax(q·kᵀ/√hd)·v:
     * q (n, nh·hd), k and v (n, nkv·hd), out (n, nh·hd). Query head h reads
     * key/value head h / (nh / nkv) (grouped-query attention). */
    int (*attention)(sg_backend *be, const float *q, const float *k, const float *v, float *out,
                     int64_t n, int64_t n_heads, int64_t n_kv_heads, int64_t head_dim);
    /* up (n) = up·act(gate) when gate is not NULL (gated MLP), else act(up). */
    int (*activation)(sg_backend *be, sg_act act, float *up, const float *gate, int64_t n);
    /* y (rows, cols) += x, x's rows x_stride apart: x_stride = cols adds a
     * matrix (the residual), x_stride = 0 adds one row to all (a bias). */
    int (*add)(sg_backend *be, float *y, const float *x, int64_t rows, int64_t cols,
               int64_t x_stride);
} sg_backend_ops;

struct sg_backend {
    const sg_backend_ops *ops;
    void *ctx; /* the backend's own state */
};

/* Cleanup after an error: waits for every queued operation and copy
 * (await_uploads, synchronize), so buffers they use can be freed, and
 * leaves the message of the error being reported as it was. */
void sg_backend_drain(sg_backend *be);

/* The CPU backend: one shared instance, thread-safe; its free is a no-op. */
sg_backend *sg_backend_cpu(void);

/* The CUDA backend on GPU `device`, allocations limited to mem_cap_bytes
 * (0: no limit beyond the device). NULL when built without CUDA, when no
 * GPU is present, or when the device cannot be initialized; the reason is
 * left in sg_last_error(). */
sg_backend *sg_backend_cuda_init(int device, size_t mem_cap_bytes);

/* The CUDA backend's table itself, for tests that check every slot is
 * filled: there wherever CUDA was built, GPU or not; NULL in a build
 * without CUDA. */
const sg_backend_ops *sg_backend_cuda_ops(void);

/* ---------------------------------------------------------------------
 * The mixed eigensolver (for backend implementations; callers use eigh).
 *
 * Why: dsyevd's cost is dominated by the reduction to tridiagonal form,
 * half of it memory-bound matrix-vector work, which float32 halves; and a
 * GPU's float64 GEMM runs at tens of TFLOP/s. So: solve in float32, then
 * refine in float64 with GEMMs only.
 *
 * How (Ogita & Aishima, "Iterative refinement for symmetric eigenvalue
 * decomposition", JJIAM 35, 2018, with Rayleigh–Ritz on clusters). Each
 * sweep, with X the current eigenvector estimate:
 *     X ← X·(I − (XᵀX − I)/2) until ‖XᵀX − I‖_max ≤ 1e-10   (quadratic)
 *     G = XᵀX,  S = Xᵀ(A·X),  λ_i = s_ii / g_ii          (S, G symmetrized)
 *     c_ij = max(|s_ij − λ_j g_ij|, |s_ij − λ_i g_ij|)   the coupling left
 *     e_ij = (s_ij − λ_j g_ij) / (λ_j − λ_i)   separated: gap > γ, c_ij ≤ κ·gap
 *     e_ij = (δ_ij − g_ij) / 2                 otherwise
 *     X ← X + X·E
 * Separated pairs converge quadratically. The paper's global separation
 * bound would call almost every pair of an n = 8192 covariance clustered,
 * hence a test per pair, with κ = 1e-3 (a tail vector has hundreds of
 * partners, and the second-order terms the update neglects add up over
 * them). Pairs neither separated nor resolved (c_ij at the rounding floor
 * τ = 2ε₆₄‖A‖) are clustered: they form runs of consecutive indices, and
 * each run's Rayleigh quotient S_cc, shifted by its middle, is solved as a
 * problem of its own (recursively: the shifted block has its own, smaller
 * scale, so float32 resolves what it could not at the scale of ‖A‖; runs
 * of ≤ 48 by dsyevd on the host); the run's vectors are rotated by the
 * result before the update. Pairs closer than γ = 1e4·ε₆₄‖A‖ are never
 * separated: their coupling is rounding noise, which the first-order
 * formula would turn into rotations whose loss of orthogonality never
 * settles. X is orthonormalized before S is formed because where
 * eigenvalues crowd far from zero (a damped tail) a loss of
 * orthogonality g shows as couplings λ·g, huge against the gaps, and
 * Rayleigh–Ritz in a non-orthonormal basis depends on the shift. The
 * sweeps stop when max c_ij ≤ 4√n·ε₆₄‖A‖ (rounding noise); a last
 * orthonormalization brings ‖XᵀX − I‖ to rounding. The result has a
 * float64 backward error, so its invariant subspaces are as accurate as
 * dsyevd's (tests/test_eigh_mixed.c). If the sweeps do not converge in 12
 * it falls back to dsyevd: MIXED never returns a float32-quality answer.
 *
 * Cost: ssyevd(n), usually a second float32 solve of the run the tail
 * forms, and ~6 float64 GEMMs of n³ per sweep, 3-4 sweeps: a loss on a
 * CPU, where dsyevd's reduction is not the bottleneck; meant for GPUs,
 * whose float64 GEMMs are tens of TFLOP/s.
 *
 * The driver (src/backend/eigh_mixed.c) is written once against these
 * primitives, which each backend provides on its own memory; the CPU
 * backend's copy is what tests/test_eigh_mixed.c measures. */
enum { SG_COPY_H2D, SG_COPY_D2H, SG_COPY_D2D };

typedef struct {
    /* C (m, n) = alpha·op(A)·op(B) + beta·C in float64, as sgemm: op(A)
     * (m, k), op(B) (k, n); ta/tb non-zero: the stored matrix is
     * transposed; lda, ldb, ldc are row strides. */
    int (*dgemm)(sg_backend *be, int ta, int tb, int64_t m, int64_t n, int64_t k, double alpha,
                 const double *a, int64_t lda, const double *b, int64_t ldb, double beta,
                 double *c, int64_t ldc);
    /* X (n, n; ld n) = eigenvectors of A (n, n; ld lda) in columns and
     * w (host, n) descending: float32 (cast down) or float64. A is kept. */
    int (*eigh_f32)(sg_backend *be, const double *a, int64_t n, int64_t lda, double *x,
                    double *w);
    int (*eigh_f64)(sg_backend *be, const double *a, int64_t n, int64_t lda, double *x,
                    double *w);
    /* out (host, n) = diag(M) */
    int (*diag_get)(sg_backend *be, const double *m, int64_t n, int64_t ld, double *out);
    /* diag(M) += v */
    int (*diag_add)(sg_backend *be, double *m, int64_t n, int64_t ld, double v);
    /* M = I (n, n) */
    int (*set_identity)(sg_backend *be, double *m, int64_t n, int64_t ld);
    /* hi (host, n): the largest j > i whose pair with i is clustered (the
     * test above with t = {κ, τ, γ}), or i. G NULL means G = I. lam (host). */
    int (*couple)(sg_backend *be, const double *s, const double *g, int64_t n, int64_t ld,
                  const double *lam, const double t[3], int64_t *hi);
    /* S (n, n) ← E, the correction above; with lam NULL, E = (I − G)/2
     * (orthogonalization only; S is then only written). Host outputs:
     * stat[0] = max |e_ij|, stat[1] = max c_ij, stat[2] = max |g_ij − δ_ij|. */
    int (*correction)(sg_backend *be, double *s, const double *g, int64_t n, int64_t ld,
                      const double *lam, const double t[3], double *stat);
    /* dst (rows, cols; ld ldd) = src (ld lds) in direction kind */
    int (*copy2d)(sg_backend *be, double *dst, int64_t ldd, const double *src, int64_t lds,
                  int64_t rows, int64_t cols, int kind);
} sg_eigh_prims;

/* Damping, checks and the solve in the given mode, on backend memory:
 * the body of every backend's eigh (src/eigh_mixed.c). */
int sg_eigh_run(sg_backend *be, const sg_eigh_prims *p, double *h, int64_t d, double damp_frac,
                sg_eigh_mode mode, double *q, double *eigenvalues);

/* Each backend's primitives, for tests (dgemm on its own memory, every
 * slot filled): the CPU's always, CUDA's wherever CUDA was built (no GPU
 * needed), else NULL. */
const sg_eigh_prims *sg_eigh_prims_cpu(void);
const sg_eigh_prims *sg_eigh_prims_cuda(void);

/* Statistics of the last mixed solve in this thread (for tests/bench). */
typedef struct {
    int iterations;       /* refinement sweeps at the top level */
    int64_t clusters;     /* runs solved as sub-problems, all levels */
    int64_t largest;      /* the largest such run */
    int depth;            /* the deepest recursion */
    int fallback;         /* 1: did not converge, dsyevd was used */
    double last_coupling; /* max c_ij of the last top-level sweep */
    double last_orth;     /* max |g_ij − δ_ij| of the last top-level sweep */
} sg_eigh_stats;
void sg_eigh_last_stats(sg_eigh_stats *out);

#ifdef __cplusplus
}
#endif

#endif
