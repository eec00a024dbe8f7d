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

/* What to do with the token embeddings.
 *   SG_EMBED_SLICE: rotate and cut them like every signal (the published
 *     method); a tied head is untied, with the final norm folded into it.
 *   SG_EMBED_KEEP: leave the table in the original basis and unsliced, and
 *     the head tied to it: block 0 reads the embedded tokens at full width
 *     (its q/k/v keep D inputs, its attention shortcut maps D to the mid
 *     basis), the last block writes back to the original basis (its output
 *     rotation is the identity), and the final norm keeps its scale. The
 *     same function as SLICE except that the embedding signal is not
 *     truncated before block 0. Tied RMSNorm models only.
 *   SG_EMBED_AUTO: KEEP where it can be done (tied RMSNorm models, head not
 *     sliced), else SLICE. */
typedef enum { SG_EMBED_AUTO, SG_EMBED_KEEP, SG_EMBED_SLICE } sg_embed_mode;
const char *sg_embed_mode_name(sg_embed_mode m);

/* How the widths are chosen (--method).
 *   SG_METHOD_REFERENCE: one width d for every cut signal (the published
 *     method, bit for bit as before issue 13): the baseline.
 *   SG_METHOD_SPECTRUM: a width per signal from the per-axis energies of
 *     a first pass over the dense model, at the stored size the reference
 *     plan has (schedule.h). `run` only.
 *   SG_METHOD_FILL: the reference's widths, then what the --target-size
 *     budget leaves after them (the rounding) spent widening the signals
 *     whose next components keep the most energy per parameter (schedule.h).
 *     Never narrower than the reference; `run` only.
 *   SG_METHOD_NYSTROM: the residual stream is neither rotated nor cut;
 *     the same stored size (the reference plan's, or --target-size) is
 *     bought by pruning each MLP's hidden width F to one F' (a multiple of
 *     the round interval): the hidden units with the largest ridge
 *     leverage on the calibration set stay, and the down projection is
 *     refitted by least squares to what all F units wrote (the Nyström
 *     approximation of MoDeGPT's MLP step; stages/prune_ffn.h). `run` only. */
typedef enum {
    SG_METHOD_REFERENCE,
    SG_METHOD_SPECTRUM,
    SG_METHOD_FILL,
    SG_METHOD_NYSTROM
} sg_width_method;
const char *sg_width_method_name(sg_width_method m);

typedef struct {
    sg_width_method method;
    double sparsity;          /* 0 .. 0.9 */
    int64_t round_interval;   /* sliced widths are multiples of this (default 8) */
    int slice_head;           /* also slice the last block's output and the head */
    sg_embed_mode embeddings;
    /* 0 < F < 1: instead of sparsity, the widest width (a multiple of the
     * round interval) whose stored parameters, shortcuts and heads
     * included, are at most F x the dense model's; 0: use sparsity */
    double target_size;
    /* 1: one rotation for the whole network (--rotation uniform): every
     * signal, the embeddings and the head's input included, is cut to d,
     * and the result is written as a plain model of hidden size d
     * (sg_uniform_config). RMSNorm models only. */
    int uniform;
    /* 1 (--shared-basis): one basis per block. Block l's output is
     * rotated by its mid basis Q_mid instead of a PCA of its own, so the
     * MLP shortcut Q_midᵀQ_out is the identity and is not stored: about
     * d² parameters less per block, which a --target-size spends on a
     * wider d. Every block whose output is cut (not the last one with
     * the embeddings kept or the head unsliced); sequential blocks only. */
    int shared_basis;
} sg_plan_options;
void sg_plan_options_default(sg_plan_options *o);

/* The sliced model's config: orig folded, every width d = sg_sliced_dim
 * (or the width --target-size chooses),
 * except the last block's output and the head, which stay D unless
 * slice_head, and with the embeddings kept, the embeddings and block 0's
 * input (D). Returns d, or a negative code with one line when the options
 * cannot apply to this model (--embeddings keep on an untied model) or
 * would slice nothing (a sparsity above 0 that the rounding undoes). */
int64_t sg_slice_plan(const sg_model_config *orig, const sg_plan_options *o,
                      sg_model_config *sliced);

/* --method nystrom's plan sliced as written: an RMSNorm model's is its own
 * architecture with intermediate_size F' (nothing rotated, the norms'
 * weights as 1s): *plain, and 1; a LayerNorm model's folded centring has no
 * plain form: 0, written in the per-layer format. */
int sg_nystrom_plain_config(const sg_model_config *orig, const sg_model_config *sliced,
                            sg_model_config *plain);

/* The sparsity a plan stands for: the option, or with a target size the
 * fraction of D that width d removes (written to the sliced config). */
double sg_plan_sparsity(const sg_plan_options *o, int64_t D, int64_t d);

/* 1 when a sliced config keeps the embeddings (SG_EMBED_KEEP): sliced and
 * still tied. */
int sg_embeddings_kept(const sg_model_config *sliced);

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
        ffn_stats, globals, total;
} sg_slice_memory;
void sg_slice_memory_estimate(const sg_model_config *cfg, int64_t block_raw_bytes,
                              int64_t chunk_tokens, int64_t max_seq, sg_slice_memory *mem);
/* The estimate for --method nystrom: no covariance and no rotations (it
 * rotates nothing), the MLP statistics instead (sg_ffn_stats_bytes, with
 * its host_memory). */
void sg_slice_memory_nystrom(const sg_model_config *cfg, int64_t chunk_tokens, int host_memory,
                             sg_slice_memory *mem);

/* The plain model a uniform rotation makes of orig at width d: hidden size
 * d, every other size as orig's, an RMSNorm over d with eps·D/d (its
 * weights, sqrt(D/d), are written by the transport), the head tied to
 * the rotated table when tied (the writer puts q/k in rotate-half order). Unsliced: no
 * slicegpt section, any loader of the base architecture runs it. */
void sg_uniform_config(const sg_model_config *orig, int64_t d, int tied, sg_model_config *plain);

/* Parameter count of a model as cfg describes it. */
int64_t sg_model_param_count(const sg_model_config *cfg);

#endif
