/* Stage "schedule": a width per signal (--method spectrum|fill).
 *
 * SliceGPT cuts three kinds of signal: the embeddings (unless kept), each
 * block's residual after attention (its width is d_mid[l]) and each
 * block's output (d_out[l] = d_in[l+1]). The reference gives them all one
 * width d; but the share of a signal its last axes carry differs from
 * signal to signal, and so does what an axis costs (a column of the next
 * block's q/k/v/gate/up and of two shortcuts, a row of the previous
 * o_proj/down and shortcut). Each axis i of a signal is worth its share
 * e_i / Σe of the signal's per-token energy (sg_schedule_probe below);
 * a step moves a signal by r axes (the round interval).
 *
 *   spectrum: every cut signal starts at D; while the stored parameters
 *     exceed the reference plan's, the signal whose next cut loses the
 *     least share per stored parameter saved is cut by r.
 *   fill: every signal starts at the reference's width; while the
 *     --target-size budget allows, the signal whose next r axes keep the
 *     most share per stored parameter added is widened by r.
 *
 * The PCA axes come largest first, so what a step moves only shrinks as
 * a signal widens: both greedy orders solve the relaxed problem (a sum
 * of convex costs under one linear budget) up to the last step. Widths
 * stay multiples of r, at least r.
 *
 * The spectra come from a first pass over the dense model (slicer.c):
 * under streaming the sliced model's spectrum of block l is known only
 * when block l is reached, after the widths before it are fixed; the
 * dense model's are the estimate available before any cut.
 * bench/quality.sh measures both against the reference: neither wins at
 * equal stored size on the bundled models (README). */
#ifndef SG_STAGE_SCHEDULE_H
#define SG_STAGE_SCHEDULE_H

#include <stdint.h>

#include "model_config.h"
#include "plan.h"

/* What each axis of every signal a plan cuts is worth (D each, in PCA
 * order): the per-token energies of sg_schedule_probe_energy. */
typedef struct {
    int64_t D, n_layers;
    double *embeddings; /* (D) */
    double *mid;        /* (n_layers, D): attention_output */
    double *out;        /* (n_layers, D): block_output */
    uint8_t *have;      /* (2 n_layers + 1): embeddings, mid[l], out[l] measured */
} sg_schedule_spectra;

int sg_schedule_spectra_init(sg_schedule_spectra *s, int64_t D, int64_t n_layers);
void sg_schedule_spectra_free(sg_schedule_spectra *s);
/* Records a signal's eigenvalues ("embeddings", "attention_output",
 * "block_output"; others are ignored). */
void sg_schedule_spectra_put(sg_schedule_spectra *s, const char *signal, int64_t layer,
                             const double *eig);
/* Bytes it holds, for the planner. */
int64_t sg_schedule_spectra_bytes(int64_t D, int64_t n_layers);

/* What a component of a signal is worth to the readers. Every reader of
 * the residual stream sees it through a norm, which divides each token by
 * its own RMS; so the loss a cut makes is the per-token relative energy
 * it discards, Σ_t ‖P x_t‖² / ‖x_t‖², not the share of Σ_t ‖P x_t‖² (the
 * covariance's eigenvalues), which a few tokens of huge norm ("massive
 * activations", e.g. at BOS) dominate and make every tail look empty.
 * The probe accumulates Hn = Σ_t x_t x_tᵀ / ‖x_t‖² beside H (on the CPU,
 * from the host copy of each chunk) and measures component i of the PCA
 * basis as e_i = q_iᵀ Hn q_i. */
typedef struct {
    int64_t D, max_rows;
    double *hn;        /* (D, D) */
    double *chunk;     /* (SG_COV_CHUNK, D) the CPU accumulation's work */
    float *xn;         /* (max_rows, D) a chunk, each row scaled to norm 1 */
    double *m;         /* (D, D) Hn·Q */
} sg_schedule_probe;
int sg_schedule_probe_init(sg_schedule_probe *p, int64_t D);
void sg_schedule_probe_free(sg_schedule_probe *p);
int64_t sg_schedule_probe_bytes(int64_t D);
/* Hn = 0 (the first chunk of a signal), then += each chunk x (rows, D). */
void sg_schedule_probe_begin(sg_schedule_probe *p);
void sg_schedule_probe_add(sg_schedule_probe *p, const float *x, int64_t rows);
/* e (D) = diag(Qᵀ Hn Q) for q (D, D) row-major, column i the i-th axis. */
void sg_schedule_probe_energy(sg_schedule_probe *p, const double *q, double *e);

/* reference: the reference plan at the same options (sg_slice_plan): it
 * says which signals are cut and, by its stored parameters, the budget.
 * The widths go into *sliced (reference's structure, each width chosen
 * here). Returns 0, or a negative code when a signal it must cut was not
 * measured. */
int sg_schedule_widths(const sg_model_config *orig, const sg_model_config *reference,
                       const sg_plan_options *o, const sg_schedule_spectra *s,
                       sg_model_config *sliced);

#endif
