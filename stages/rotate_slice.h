/* Stage "rotate/slice": apply a block's rotations and keep the leading
 * principal directions.
 *
 * With Q (D, D) orthogonal and Q_d its first d columns:
 *   a reader of the residual stream (y = W x, W (out, D))   W ← W·Q_d      (out, d)
 *   a writer into it (W (D, in), bias (D))                   W ← Q_dᵀ·W     (d, in)
 *   the residual path from basis Q_a (d_a kept) to Q_b       S = Q_a,dₐᵀ·Q_b,d_b
 *   activations already in the original basis               X ← X·Q_d
 * Weights are rotated in float64, as the reference does.
 *
 * Where: a block's tensors are in backend memory while it is sliced (the
 * fused run uploads a block once, folded, and downloads it once, sliced);
 * rotations are in both memories (sg_rotation); the embeddings and the
 * head stay on the host and go through the backend in row chunks. On the
 * CPU backend, whose memory is the host's, nothing is copied. */
#ifndef SG_STAGE_ROTATE_SLICE_H
#define SG_STAGE_ROTATE_SLICE_H

#include <stdint.h>

#include "backend.h"
#include "model.h"

/* A rotation Q (D, D) where the host (the shortcuts are built there) and
 * the backend (everything heavy) can read it: one array on a host-memory
 * backend. */
typedef struct {
    double *host, *dev;
} sg_rotation;
int sg_rotation_alloc(sg_backend *be, int64_t D, sg_rotation *q);
void sg_rotation_free(sg_backend *be, sg_rotation *q);
/* q = I (D, D), in both copies: the rotation of a signal kept in the
 * original basis. */
int sg_rotation_identity(sg_backend *be, int64_t D, sg_rotation *q);

/* Rotates the folded embeddings by Q₀ and cuts them to sliced->embed_dim;
 * m->cfg becomes *sliced, ready for the writer. */
int sg_slice_embeddings_rotate(sg_backend *be, sg_model *m, const sg_model_config *orig,
                               const sg_model_config *sliced, const sg_rotation *q0);

/* lm_head (V, D) -> (V, head_in_dim) = lm_head · Q_last; m->cfg = *sliced. */
int sg_slice_head_rotate(sg_backend *be, sg_model *m, const sg_model_config *orig,
                         const sg_model_config *sliced, const sg_rotation *q_last);

/* Block weights (loaded with sg_block_load, folded with sg_fold_block, in
 * backend memory: sg_block_to_backend). */

/* Readers of the block input rotated by Q_prev and cut to d_in; the
 * attention shortcut set to Q_prevᵀ (d_in, D), back to the original basis
 * in which the residual is captured. b->d_in = d_in, d_mid = d_out = D. */
int sg_slice_block_input(sg_backend *be, const sg_model_config *orig, sg_block *b,
                         const sg_rotation *q_prev, int64_t d_in);
/* Sequential blocks, once Q_mid is known: attention output rotated and
 * cut, MLP readers rotated and cut, shortcuts extended/created. */
int sg_slice_block_mid(sg_backend *be, const sg_model_config *orig, sg_block *b,
                       const sg_rotation *q_mid, int64_t d_in, int64_t d_mid);
/* Once Q_out is known: the writers of the block output rotated and cut
 * (MLP down projection; for parallel blocks the attention output too),
 * the shortcut into the output extended. The block is then final. */
int sg_slice_block_output(sg_backend *be, const sg_model_config *orig, sg_block *b,
                          const sg_rotation *q_out, int64_t d_in, int64_t d_mid, int64_t d_out);

#endif
