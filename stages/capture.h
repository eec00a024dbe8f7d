/* Stage "capture": runs each block on the calibration activations and
 * collects the signals whose covariance is needed (the residual after
 * attention, the block output), chunk by chunk through the activation
 * store; projects a block's output into the next block's inputs.
 *
 * Activations live in the store on the host and cross to the backend one
 * chunk at a time: one chunk is resident on a GPU. */
#ifndef SG_STAGE_CAPTURE_H
#define SG_STAGE_CAPTURE_H

#include <stdint.h>

#include "act_store.h"
#include "backend.h"
#include "model.h"
#include "prune_ffn.h"
#include "rotate_slice.h"
#include "text.h"

/* Called for each captured chunk (rows, D) of a signal, after it was put
 * in the store as chunk `chunk` of stored_as: x on the host, x_dev the
 * same rows in backend memory. signal: "embeddings", "attention_output"
 * or "block_output"; layer -1 for the embeddings. */
typedef int (*sg_capture_sink)(void *ctx, const char *signal, int64_t layer,
                               const char *stored_as, int64_t chunk, int64_t n_chunks,
                               const float *x, const float *x_dev, int64_t rows);

/* The calibration batch cut into chunks of whole sequences (chunk c holds
 * sequences [first[c], first[c+1])), chunk buffers, and the store the
 * activations live in. */
typedef struct {
    const sg_token_batch *calib;
    int64_t D;
    int64_t n_chunks, max_tokens;
    int64_t *first, *local;
    float *in, *mid, *out; /* (max_tokens, D) each */
    sg_backend *be;
    float *din, *dmid, *dout; /* the same in backend memory (aliases on the CPU) */
    sg_act_store *store;   /* set by the driver after init */
    sg_capture_sink sink;     /* NULL: a signal whose axes are known (kept embeddings) */
    void *sink_ctx;
} sg_capture;

/* Plans chunks of about chunk_tokens tokens and allocates the buffers. */
int sg_capture_init(sg_capture *c, sg_backend *be, const sg_token_batch *calib,
                    int64_t chunk_tokens, int64_t D);
void sg_capture_free(sg_capture *c);

/* The embedded calibration tokens (m: folded embeddings) -> "output". */
int sg_capture_embeddings(sg_capture *c, const sg_model *m);
/* "input" through block l (work: sg_slice_work_config with d_mid = D;
 * b: the block in backend memory, sg_block_to_backend):
 * the residual after attention -> "residual" (signal attention_output),
 * or for parallel blocks the block output -> "output" (block_output). */
int sg_capture_attention(sg_capture *c, const sg_model_config *work, const sg_block *b,
                         int64_t l);
/* Sequential blocks: "residual" projected on Q_mid's d_mid columns is what
 * the sliced attention half produces, so only the MLP half runs -> "output"
 * (block_output); "residual" is dropped. */
int sg_capture_mlp(sg_capture *c, const sg_model_config *work, const sg_block *b,
                   const sg_rotation *q_mid, int64_t d_mid, int64_t l);
/* The MLP's inputs into its hidden units' statistics (--method nystrom):
 * a sequential block's "residual" projected on Q_mid's d_mid columns (q_mid
 * NULL: as it is), a parallel block's "input" as it is; the store keeps
 * both. keep_hidden (a sequential block on a host-memory backend): each
 * chunk's hidden units also go to the store as "hidden", so that
 * sg_capture_mlp_kept need not compute them again. */
int sg_capture_ffn(sg_capture *c, const sg_model_config *work, const sg_block *b,
                   const sg_rotation *q_mid, int64_t d_mid, sg_ffn_stats *stats, int keep_hidden);
/* sg_capture_mlp for a sequential block whose residual stream is kept and
 * whose MLP sg_prune_ffn cut (b, stats) after sg_capture_ffn kept its
 * hidden units: the kept units' columns through the refitted down
 * projection, plus "residual" -> "output" (block_output); "hidden" and
 * "residual" are dropped. The gate and up projections do not run again. */
int sg_capture_mlp_kept(sg_capture *c, const sg_block *b, sg_ffn_stats *stats, int64_t l);
/* The next block's inputs: "output" projected on q's first d columns
 * becomes "input" (the old "input", if any, and "output" are dropped);
 * q NULL: "output" becomes "input" as it is. */
int sg_capture_advance(sg_capture *c, const sg_rotation *q, int64_t d);

#endif
