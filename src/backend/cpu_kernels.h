/* The CPU backend's arithmetic for the SliceGPT stages: covariance
 * accumulation (dsyrk), the float64 eigensolve (dsyevd) and the float64
 * rotations of weights (dgemm). The stages call them through the backend
 * (backend.h), where a GPU has its own; tests and benchmarks call them
 * directly, as the reference the other paths are held to. */
#ifndef SG_CPU_KERNELS_H
#define SG_CPU_KERNELS_H

#include <stdint.h>

/* ---- covariance ---- */

/* H (d, d) upper triangle += Xᵀ·X for x (rows, d) float32 row-major, each
 * SG_COV_CHUNK rows widened to float64 in chunk (SG_COV_CHUNK, d) and
 * added with dsyrk: as exact as a float64 accumulation. */
#define SG_COV_CHUNK 1024
void sg_cov_accumulate_upper(double *h, double *chunk, int64_t d, const float *x, int64_t rows);
/* Mixed precision, for hardware whose float64 is slow: every slice of
 * SG_COV_MIXED_ROWS rows multiplied in float32 (ssyrk) into s (d, d)
 * float32 scratch, then widened and added to h's upper triangle. A
 * slice's float32 sum carries a relative error of ~√rows·2⁻²⁴; the
 * slices' errors are independent, so over a whole signal they average
 * down to the size of the inputs' own float32 rounding
 * (tests/test_backend.c measures it against the float64 sum). */
#define SG_COV_MIXED_ROWS 1024
void sg_cov_accumulate_upper_mixed(double *h, float *s, int64_t d, const float *x,
                                   int64_t rows);
/* Mirrors h's upper triangle so it is a full symmetric matrix. */
void sg_cov_mirror_upper(double *h, int64_t d);

/* ---- eigensolve ---- */
/* Stage "eigensolve": the principal directions of a covariance.
 *
 * SliceGPT takes Q = eigenvectors of H + δI with δ = 1% of mean(diag H)
 * (damping, so a rank-deficient H still has a well-defined basis), sorted
 * by eigenvalue, largest first. Solved in float64 by LAPACK's divide and
 * conquer dsyevd, as the reference does: float32 eigenvectors cost real
 * perplexity on large models. */


/* h: (d, d) symmetric, row-major, overwritten. On return q (d, d) row-major
 * holds eigenvector j in column j, eigenvalues (d) descending (damping
 * included, as the reference reports them). damp_frac: 0.01 for SliceGPT. */
int sg_eigh_descending(double *h, int64_t d, double damp_frac, double *q, double *eigenvalues);

/* A random orthogonal (d, d) matrix (QR of a Gaussian matrix, seeded): the
 * control that shows what PCA buys over any rotation. */
int sg_random_orthogonal(int64_t d, uint64_t seed, double *q);

/* ---- rotations ---- */
/* Stage "rotate/slice": apply a block's rotations and keep the leading
 * principal directions.
 *
 * With Q (D, D) orthogonal and Q_d its first d columns:
 *   a reader of the residual stream (y = W x, W (out, D))   W ← W·Q_d      (out, d)
 *   a writer into it (W (D, in), bias (D))                   W ← Q_dᵀ·W     (d, in)
 *   the residual path from basis Q_a (d_a kept) to Q_b       S = Q_a,dₐᵀ·Q_b,d_b
 *   activations already in the original basis               X ← X·Q_d
 * Weights are rotated in float64, as the reference does; Q (D, D) is
 * row-major with principal direction j in column j. */


/* *w (rows, D) -> (rows, d) = W·Q_d; reallocates *w. */
int sg_rotate_reader(float **w, int64_t rows, int64_t D, const double *q, int64_t d);

/* The same into a caller's out (rows, d), w untouched (the CPU backend's op). */
int sg_rotate_reader_into(const float *w, int64_t rows, int64_t D, const double *q, int64_t d,
                          float *out);

/* *w (D, cols) -> (d, cols) = Q_dᵀ·W and *bias (D) -> (d) when not NULL. */
int sg_rotate_writer(float **w, float **bias, int64_t D, int64_t cols, const double *q,
                     int64_t d);

/* The shortcut (d_a, d_b) = Q_a[:, :d_a]ᵀ · Q_b[:, :d_b]. With q_b NULL
 * the target is the original basis: (d_a, D) = Q_a[:, :d_a]ᵀ. */
int sg_shortcut_matrix(const double *q_a, int64_t d_a, const double *q_b, int64_t d_b,
                       int64_t D, float **out);

/* out (T, d) = X (T, D)·Q_d, for activations. */
int sg_project_rows(const float *x, int64_t T, int64_t D, const double *q, int64_t d,
                    float *out);

#endif
