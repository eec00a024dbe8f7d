/* Stage "fold": turn every norm into a scale-free RMSNorm.
 *
 * SliceGPT's invariance needs norms that commute with an orthogonal Q:
 * RMSNorm(x·Q) = RMSNorm(x)·Q holds only without a per-coordinate scale.
 * So each norm's scale (and LayerNorm bias) moves into the linear layers
 * that read it:  W·diag(w)  and  b + W·β.  A LayerNorm also subtracts the
 * mean; if every writer of the residual stream (embeddings, attention
 * output, MLP output) already produces zero-mean vectors, LayerNorm equals
 * RMSNorm, so those writers are centred: W ← W − 1·mean_rows(W),
 * b ← b − mean(b), embedding rows ← row − mean(row).
 * The tied head gets its own copy first: the final norm's scale folds
 * into the head but must not reach the input embeddings. */
#ifndef SG_STAGE_FOLD_H
#define SG_STAGE_FOLD_H

#include "model.h"

/* The config of the folded model: SliceGPT form (sliced = 1, RMS, every
 * width D), untied head, biases where the LayerNorm bias created them. */
sg_model_config sg_fold_config(const sg_model_config *orig);

/* Folds the global tensors of m in place; m->cfg becomes sg_fold_config.
 * With m->lm_head NULL (and the model marked untied) only the embeddings
 * are folded. */
int sg_fold_globals(sg_model *m);

/* Folds block b of a model whose original config is orig, in place. */
int sg_fold_block(const sg_model_config *orig, sg_block *b);

/* The embeddings as sg_slice_embeddings_load returns them, folded. */
int sg_slice_embeddings_fold(sg_model *m);
/* Folds the final norm into an untied head; m keeps lm_head (+ lm_head_b). */
int sg_slice_head_fold(sg_model *m);

#endif
