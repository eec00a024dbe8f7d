/* The steps of SliceGPT, one function each (the order is slicer.h's).
 *
 * Two drivers call them: sg_slice runs them all in one process, and the
 * stage filters (slicegpt-stream load | fold | capture | cov | eig | slice
 * | write) spread them over processes joined by pipes. Both must write the
 * same bytes, so both call these functions in the same order on the same
 * data: same calibration chunks, same covariance accumulation order, same
 * damping and eigensolver, same rotation and projection calls. Whatever a
 * driver does between the steps is bookkeeping, never arithmetic.
 *
 * Widths: D the original residual width; d_in, d_mid, d_out a block's
 * sliced widths (sg_slice_plan). Rotations q are (D, D) float64 row-major,
 * principal direction j in column j.
 *
 * Where: the arithmetic (forward, covariance, eigensolve, rotations) runs
 * on a backend (backend.h). A block's tensors (sg_slice_block_*) are in
 * backend memory: the fused driver uploads a block once, folded, and
 * downloads it once, sliced. Rotations are in both memories
 * (sg_rotation); the embeddings and the head stay on the host and go
 * through the backend in row chunks; activations live in the store on the
 * host and cross chunk by chunk. On the CPU backend, whose memory is the
 * host's, nothing is copied. So one block, one chunk and the D x D work
 * are resident on a GPU at a time. */
#ifndef SG_SLICE_STEPS_H
#define SG_SLICE_STEPS_H

#include <stdint.h>

#include "act_store.h"
#include "backend.h"
#include "covariance.h"
#include "model.h"
#include "slicer.h"
#include "text.h"

/* A rotation Q (D, D) where the host (the shortcuts are built there) and
 * the backend (everything heavy) can read it: one array on a host-memory
 * backend. */
typedef struct {
    double *host, *dev;
} sg_rotation;
int sg_rotation_alloc(sg_backend *be, int64_t D, sg_rotation *q);
void sg_rotation_free(sg_backend *be, sg_rotation *q);

/* ---- plan ---- */

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

/* ---- embeddings ---- */

/* token_embd (+ position_embd) of the original model, nothing else: m->cfg
 * is the original config marked untied, so folding leaves any head alone. */
int sg_slice_embeddings_load(sg_model_files *files, sg_model *m);
int sg_slice_embeddings_fold(sg_model *m);
/* Rotates the folded embeddings by Q₀ and cuts them to sliced->embed_dim;
 * m->cfg becomes *sliced, ready for the writer. */
int sg_slice_embeddings_rotate(sg_backend *be, sg_model *m, const sg_model_config *orig,
                               const sg_model_config *sliced, const sg_rotation *q0);

/* ---- head ---- */

/* The final norm and the head: output.weight, or token_embd.weight when
 * tied (then m->tok_embd holds it and m->lm_head aliases it). */
int sg_slice_head_load(sg_model_files *files, sg_model *m);
/* Folds the final norm into an untied head; m keeps lm_head (+ lm_head_b). */
int sg_slice_head_fold(sg_model *m);
/* lm_head (V, D) -> (V, head_in_dim) = lm_head · Q_last; m->cfg = *sliced. */
int sg_slice_head_rotate(sg_backend *be, sg_model *m, const sg_model_config *orig,
                         const sg_model_config *sliced, const sg_rotation *q_last);

/* ---- block weights (loaded with sg_block_load, folded with sg_fold_block,
 * in backend memory: sg_block_to_backend) ---- */

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

/* ---- calibration activations ---- */

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
    sg_capture_sink sink;
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
/* The next block's inputs: "output" projected on q's first d columns
 * becomes "input" (the old "input", if any, and "output" are dropped). */
int sg_capture_advance(sg_capture *c, const sg_rotation *q, int64_t d);

/* ---- covariance and eigensolve ---- */

/* A signal's covariance H (D, D) float64 in backend memory, fed chunk by
 * chunk in chunk order (the backend's cov_accumulate: rows widened to
 * float64, H kept symmetric). */
typedef struct {
    sg_backend *be;
    int64_t d;
    int mixed;       /* 1: float32 slices added in float64 (cov_accumulate_mixed) */
    double *h;       /* backend memory */
    int64_t tokens;  /* rows accumulated since begin */
} sg_slice_cov;
int sg_slice_cov_init(sg_slice_cov *cov, sg_backend *be, int64_t d, int mixed);
void sg_slice_cov_free(sg_slice_cov *cov);
/* H = 0 */
int sg_slice_cov_begin(sg_slice_cov *cov);
/* H += XᵀX for x (rows, d) in backend memory (the stage filters run on
 * the CPU backend, whose memory is the host's). */
int sg_slice_cov_add(sg_slice_cov *cov, const float *x, int64_t rows);

/* The principal axes of a finished covariance h (D, D, backend memory),
 * overwritten: PCA (damped, descending, by the backend's eigensolver in
 * the given mode), or the random control seeded by seed and layer
 * (eigenvalues then 0). q gets both copies, eig (host) the spectrum. */
int sg_slice_axes(sg_backend *be, double *h, int64_t D, int64_t layer, sg_rotation_kind kind,
                  uint64_t seed, double damp_frac, sg_eigh_mode mode, sg_rotation *q,
                  double *eig);

/* Eigenvalues per signal, written as eigenvalues.json beside the model. */
typedef struct sg_spectra sg_spectra;
sg_spectra *sg_spectra_new(void);
int sg_spectra_add(sg_spectra *s, const char *signal, int64_t layer, const double *eig,
                   int64_t n);
int sg_spectra_write(const sg_spectra *s, const char *out_dir);
void sg_spectra_free(sg_spectra *s);

#endif
