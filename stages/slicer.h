/* The SliceGPT driver: fold, calibrate, and rotate/slice a model block by
 * block, writing the sliced model as it goes (DESIGN.md, "What it does").
 *
 * Per block ℓ with incoming rotation Q (Q₀ from the embeddings):
 *   readers of the block input rotated by Q and cut to d_in;
 *   run the attention half on the sliced inputs, capture the residual
 *   after attention (original basis, via a temporary shortcut Qᵀ), PCA →
 *   Q_mid; rotate/cut attention output and MLP input; run the MLP half,
 *   capture the block output, PCA → Q_out; rotate/cut the MLP output.
 *   The shortcuts are Q_prevᵀQ_mid and Q_midᵀQ_out restricted to kept
 *   dims, and the next block's inputs are this block's sliced outputs.
 *
 * The schedule is stages/pipeline.c; this is its transport in one
 * process (the stage filters, slicegpt-stream(5), are the other),
 * writing the same bytes.
 *
 * Uniform rotation (rotation SG_ROTATION_UNIFORM, plan.uniform): one basis
 * Q for the whole network, so every shortcut Q_dᵀQ_d is the identity and
 * the sliced model is a plain model of hidden size d. The schedule runs
 * twice. First over the dense folded model with nothing cut (every axes()
 * answer is the identity) while each signal's covariance H_s (the
 * embeddings, every attention_output and block_output) is added, divided
 * by its trace, into one sum Σ_s H_s / tr H_s; Q = its eigenvectors. The
 * trace makes each signal count once whatever its scale (the residual
 * stream grows with depth, and every norm divides that growth away before
 * a reader sees it). Then, without calibration, every block, the
 * embeddings and the head are rotated by that Q and cut to d. An RMSNorm
 * that divides by D is an RMSNorm over d with eps·D/d and weights
 * sqrt(D/d): the writer adds them (and a tied head stays tied when the
 * final norm's scale is a constant, else it is folded and untied). */
#ifndef SG_SLICER_H
#define SG_SLICER_H

#include <stdint.h>

#include "backend.h"
#include "eigensolve.h"
#include "pipeline.h"
#include "plan.h"
#include "dtype.h"
#include "model_files.h"
#include "text.h"
#include "tokenizer.h"

typedef struct {
    sg_plan_options plan;     /* the widths: sparsity or target size, embeddings (plan.h) */
    sg_rotation_kind rotation;/* PCA, or a random orthogonal control */
    uint64_t seed;            /* for the random control */
    double damp_frac;         /* eigensolver damping (0.01) */
    sg_dtype out_dtype;       /* F32, F16 or BF16 */
    const char *out_dir;
    const char *tokenizer_src;/* file to copy beside the model, or NULL */
    const sg_tokenizer *tok;  /* written as tokenizer.json when no file */
    sg_progress *progress;    /* phase "slice", block i/N, rate, ETA (NULL: none) */
    /* Out of core: calibration activations stay in memory up to
     * host_mem_bytes (0: half of physical RAM), beyond that they spill to
     * spill_dir (NULL: $TMPDIR or /tmp) as zstd chunks. Each chunk holds
     * whole sequences, about chunk_tokens tokens (0: 8192). */
    int64_t host_mem_bytes;
    const char *spill_dir;
    int64_t chunk_tokens;
    /* Where the forward, covariance, eigensolves and rotations run (NULL:
     * the CPU backend), and the eigensolver (SG_EIGH_F64: dsyevd, the
     * reference; SG_EIGH_MIXED: float32 solve refined to float64 quality). */
    sg_backend *backend;
    sg_eigh_mode eigh;
    /* 1: covariances multiplied in float32 slices, added in float64
     * (covariance.h), for GPUs whose float64 is slow; 0: float64 */
    int cov_mixed;
    /* uniform rotation only: 1 writes the same function in our sliced
     * format (norms over D, no weights, no shortcuts) instead of the plain
     * model, for the tests that compare the two */
    int uniform_sliced_format;
    /* Resume (resume.h; not with a uniform rotation): 1 records each step
     * in OUT.tmp and continues a killed run of the same job found there;
     * a run of another job found there is cleared, or with resume = 1
     * refused (one line), its files kept. */
    int resumable;
    int resume;
} sg_slice_options;


typedef struct {
    double seconds[SG_N_STAGES];
    int64_t params_dense;          /* the original model */
    int64_t params_sliced;         /* sliced weights, no shortcuts, head as the original */
    int64_t params_stored;         /* everything written: shortcuts, untied head */
    int64_t calib_tokens;
    int64_t d;                     /* the sliced width */
    sg_model_config sliced;        /* the plan: every layer's widths (sg_slice_plan) */
    int embeddings_kept;           /* plan.h, SG_EMBED_KEEP */
    int uniform;                   /* one rotation: written as a plain model of width d */
    int uniform_tied;              /* ... whose head is the (rotated) embedding table */
    int plain;                     /* --method nystrom on an RMSNorm model: written as the
                                      model's own architecture, intermediate_size F' */
    int64_t chunks;                /* calibration chunks per signal */
    int64_t store_budget;          /* bytes the activation store may keep resident */
    int64_t store_peak;            /* most it held at once */
    int64_t spilled_raw, spilled_compressed; /* bytes that went to disk */
    int64_t backend_peak;          /* most device memory held at once (0 on the CPU) */
    int resumed;                   /* continued a killed run ... */
    int64_t resumed_at;            /* ... at this block (n_layers: the head) */
} sg_slice_report;

void sg_slice_options_default(sg_slice_options *o);

int sg_slice(sg_model_files *files, const sg_token_batch *calib, const sg_slice_options *o,
             sg_slice_report *rep);

#endif
