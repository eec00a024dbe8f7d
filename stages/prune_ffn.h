/* Stage "prune_ffn" (--method nystrom): an MLP's hidden width F cut to F'.
 *
 * SliceGPT buys its size by cutting the residual stream, which every
 * later block and the head read; an MLP's hidden units are read by one
 * matrix only, its down projection W (d_out, F), so they can be cut and
 * the loss repaired in the same place. On the calibration set the hidden
 * units h (tokens, F) have the correlation C = Σ hᵀh; keeping the units S
 * and refitting W by least squares to what all F units wrote,
 *     W_S' = argmin Σ_t ‖h_t,S W_S'ᵀ − h_t Wᵀ‖²,
 * solves (C_SS + δ I) W_S'ᵀ = C_S,: Wᵀ (δ a small damping, ridge). This
 * is the Nyström approximation MoDeGPT uses for the MLP. The units kept
 * are those of largest ridge leverage, ℓ_i = [C (C + λI)⁻¹]_ii = 1 −
 * λ [(C + λI)⁻¹]_ii (λ = 1% of C's mean diagonal): a unit the others
 * cannot reproduce scores near 1, a redundant or silent one near 0.
 * Where the down projection has a bias, a constant unit joins the fit, so
 * the mean output of the units cut moves into the bias.
 *
 * C is accumulated on the backend in float64 (cov_accumulate), one chunk
 * of hidden units at a time; the selection and the solve run on the host
 * (LAPACK, float64): F³ flops, seconds per block at F = 28672, holding C
 * and one more F x F matrix at most. */
#ifndef SG_STAGE_PRUNE_FFN_H
#define SG_STAGE_PRUNE_FFN_H

#include <stdint.h>

#include "backend.h"
#include "model.h"

typedef struct {
    sg_backend *be;
    int64_t F, max_rows;
    int mixed;      /* cov_accumulate's float32 slices (GPU) */
    double *c;      /* (F, F) backend: Σ hᵀh */
    float *hidden;  /* (max_rows, F) backend: a chunk's hidden units */
    float *ones;    /* (max_rows) backend: 1s, for the column sums */
    float *colsum;  /* (F) backend: one chunk's Σ h */
    double *sum;    /* (F) host: Σ h over every chunk */
    int64_t tokens; /* rows added */
    int64_t *keep;  /* (F) host: the units sg_prune_ffn kept, ascending */
    int64_t kept;   /* how many (0 before it ran) */
} sg_ffn_stats;

int sg_ffn_stats_init(sg_ffn_stats *s, sg_backend *be, int64_t F, int64_t max_rows, int mixed);
void sg_ffn_stats_free(sg_ffn_stats *s);
/* Bytes it and the pruning hold at most, backend and host together, for
 * an MLP of F units writing d_out (host_memory: the backend's memory is
 * the host's), for the planner. */
int64_t sg_ffn_stats_bytes(int64_t F, int64_t d_out, int64_t max_rows, int host_memory);

/* C = 0, sums = 0: before the first chunk of a block. */
int sg_ffn_stats_begin(sg_ffn_stats *s);
/* Adds the hidden units of rows tokens of x (backend memory): the MLP's
 * input (rows, d_mid), or a parallel block's input (rows, d_in). */
int sg_ffn_stats_add(sg_ffn_stats *s, const sg_model_config *cfg, const sg_block *b,
                     const float *x, int64_t rows);

/* The units to keep: keep (f) ascending, the f of largest ridge leverage
 * under C (host, F x F, row-major; not changed), λ = lambda_frac x mean
 * diagonal. Host only; exposed for the tests. */
int sg_ffn_select(const double *c, int64_t F, int64_t f, double lambda_frac, int64_t *keep);

/* The refitted down projection, host only: w (d_out, F) row-major is the
 * projection before, w_new (d_out, f) the one after for the units keep;
 * c is its workspace (overwritten: C_SS is built in its memory, so the
 * solve holds no second F x F matrix);
 * with sum (F, host, Σ h) and tokens given (not NULL), a constant unit
 * joins the fit and bias_delta (d_out) receives what moves into the bias.
 * δ = damp_frac x mean diagonal of C_SS. */
int sg_ffn_refit(double *c, const double *sum, int64_t tokens, int64_t F, const float *w,
                 int64_t d_out, const int64_t *keep, int64_t f, double damp_frac, float *w_new,
                 double *bias_delta);

/* Cuts block b (its tensors in backend memory) to its f best hidden
 * units after the chunks added since sg_ffn_stats_begin: gate and up keep
 * their rows, the down projection is refitted (its bias too, if any). */
int sg_prune_ffn(sg_ffn_stats *s, const sg_model_config *cfg, sg_block *b, int64_t f);

/* h (rows, F) on the host, hidden units of the block before the cut (as
 * sg_ffn_stats_add computed them): the columns of the units sg_prune_ffn
 * kept moved to the front, in place, as (rows, kept). They are the pruned
 * MLP's hidden units, so its output needs only the down projection. */
void sg_ffn_keep_columns(const sg_ffn_stats *s, float *h, int64_t rows);

#endif
