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
#ifndef SG_STAGE_ROTATE_SLICE_H
#define SG_STAGE_ROTATE_SLICE_H

#include <stdint.h>

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

/* Right-multiplies a shortcut (d_a, D) by Q_b[:, :d_b], in place. */
int sg_shortcut_extend(float **s, int64_t d_a, int64_t D, const double *q_b, int64_t d_b);

/* out (T, d) = X (T, D)·Q_d, for activations. */
int sg_project_rows(const float *x, int64_t T, int64_t D, const double *q, int64_t d,
                    float *out);

/* d = floor((1 − sparsity)·D / round)·round, at least round (and ≤ D). */
int64_t sg_sliced_dim(int64_t D, double sparsity, int64_t round_interval);

#endif
