/* Stage "plan": the sliced widths, and the memory a run holds.
 *
 * The sliced width is d = (1 − sparsity)·D rounded down to a multiple of
 * the round interval; every signal is cut to d except the last block's
 * output and the head, which stay D unless the head is sliced too. The
 * fused run, the slice filter and `plan` all choose widths here. */
#ifndef SG_STAGE_PLAN_H
#define SG_STAGE_PLAN_H

#include <stdint.h>

#include "model_config.h"

/* d = floor((1 − sparsity)·D / round)·round, at least round (and ≤ D). */
int64_t sg_sliced_dim(int64_t D, double sparsity, int64_t round_interval);

/* Refuses (SG_EARG, one line) a sparsity above 0 whose rounded width
 * keeps every dimension, so that nothing is silently left unsliced. */
int sg_slice_plan_check(int64_t D, double sparsity, int64_t round_interval);

/* The sliced model's config: orig folded, every width d = sg_sliced_dim,
 * except the last block's output and the head, which stay D unless
 * slice_head. Returns d. */
int64_t sg_slice_plan(const sg_model_config *orig, double sparsity, int64_t round_interval,
                      int slice_head, sg_model_config *sliced);

/* What the forward pass runs block l with while it is being sliced: the
 * sliced config with d_in[l] cut, d_mid[l] = d_mid (D before Q_mid is
 * known), d_out[l] = D. */
void sg_slice_work_config(const sg_model_config *sliced, int64_t l, int64_t d_mid,
                          sg_model_config *work);

/* Bytes the driver holds besides the activation store, for cfg sliced with
 * chunks of chunk_tokens tokens (max_seq: the longest sequence): one
 * block's weights as stored and as float32, the chunk buffers, the
 * covariance and rotations, and the larger of embeddings and head. The
 * plan command prints it; the memory-bound test holds the driver to it. */
typedef struct {
    int64_t block_raw, block_f32, chunk_buffers, forward_scratch, covariance, rotations,
        globals, total;
} sg_slice_memory;
void sg_slice_memory_estimate(const sg_model_config *cfg, int64_t block_raw_bytes,
                              int64_t chunk_tokens, int64_t max_seq, sg_slice_memory *mem);

/* Parameter count of a model as cfg describes it. */
int64_t sg_model_param_count(const sg_model_config *cfg);

#endif
