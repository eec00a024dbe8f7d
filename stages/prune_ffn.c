/* Stage "prune_ffn": see prune_ffn.h. */
#include "prune_ffn.h"

#include <cblas.h>
#include <errno.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "forward_ops.h"
#include "sg_error.h"

/* the selection's λ and the refit's δ, as fractions of a mean diagonal:
 * λ sets how redundant a unit must be to score low; δ only keeps the
 * solve well posed. Taken from a prototype on SmolLM2-135M; on the two
 * tiny models at 80%, λ from 1e-3 to 1 and δ from 1e-4 to 1e-2 move
 * held-out perplexity by at most 1.4% (stories260K) and 6.7% (tinyopt),
 * with no setting best on both (scoring units by C_ii·‖W_:,i‖² instead:
 * 12.43 and 41.88 against leverage's 12.54 and 39.79, mixed too). */
#define SELECT_LAMBDA 1e-2
#define REFIT_DAMP 1e-3

int64_t sg_ffn_stats_bytes(int64_t F, int64_t d_out, int64_t max_rows, int host_memory)
{
    /* backend: C, its float32 slice, a chunk of units, the 1s, the column
     * sums; host: C's copy (none where the backend's memory is the
     * host's), the sums, and the solve's peak: the selection's factor of
     * C, or the refit's W·C and W in float64 (C_SS is built in C; LAPACK
     * runs column-major, so LAPACKE makes no transposed copies) */
    int64_t f64 = sizeof(double), f32 = sizeof(float);
    int64_t backend = F * F * f64 + F * F * f32 + max_rows * F * f32 + max_rows * f32 + F * f32;
    int64_t solve = F * F * f64 > 2 * F * d_out * f64 ? F * F * f64 : 2 * F * d_out * f64;
    return backend + (host_memory ? 0 : F * F * f64) + F * f64 + F * sizeof(int64_t) + solve;
}

void sg_ffn_stats_free(sg_ffn_stats *s)
{
    if (s->be) {
        void *dev[] = {s->c, s->hidden, s->ones, s->colsum};
        for (size_t i = 0; i < sizeof dev / sizeof *dev; i++)
            if (dev[i])
                s->be->ops->release(s->be, dev[i]);
    }
    free(s->sum);
    free(s->keep);
    memset(s, 0, sizeof *s);
}

int sg_ffn_stats_init(sg_ffn_stats *s, sg_backend *be, int64_t F, int64_t max_rows, int mixed)
{
    memset(s, 0, sizeof *s);
    s->be = be, s->F = F, s->max_rows = max_rows, s->mixed = mixed;
    int err = be->ops->alloc(be, F * F * sizeof(double), (void **)&s->c);
    err = err ? err : be->ops->alloc(be, max_rows * F * sizeof(float), (void **)&s->hidden);
    err = err ? err : be->ops->alloc(be, max_rows * sizeof(float), (void **)&s->ones);
    err = err ? err : be->ops->alloc(be, F * sizeof(float), (void **)&s->colsum);
    s->sum = err ? NULL : malloc(F * sizeof(double));
    s->keep = err ? NULL : malloc(F * sizeof(int64_t));
    if (!err && (!s->sum || !s->keep))
        err = sg_fail(-ENOMEM, "out of memory for the MLP statistics (F = %lld)", (long long)F);
    float *one = err ? NULL : malloc(max_rows * sizeof(float));
    if (!err && !one)
        err = sg_fail(-ENOMEM, "out of memory for the MLP statistics (F = %lld)", (long long)F);
    for (int64_t i = 0; one && i < max_rows; i++)
        one[i] = 1.0f;
    err = err ? err : be->ops->upload(be, s->ones, one, max_rows * sizeof(float));
    free(one);
    if (err)
        sg_ffn_stats_free(s);
    return err;
}

int sg_ffn_stats_begin(sg_ffn_stats *s)
{
    memset(s->sum, 0, s->F * sizeof(double));
    s->tokens = s->kept = 0;
    return s->be->ops->zero(s->be, s->c, s->F * s->F * sizeof(double));
}

int sg_ffn_stats_add(sg_ffn_stats *s, const sg_model_config *cfg, const sg_block *b,
                     const float *x, int64_t rows)
{
    sg_backend *be = s->be;
    int64_t F = s->F;
    if (rows > s->max_rows || b->d_ffn != F)
        return sg_fail(SG_EARG, "MLP statistics: a chunk of %lld rows of width %lld (room for "
                                "%lld of %lld)",
                       (long long)rows, (long long)b->d_ffn, (long long)s->max_rows, (long long)F);
    int err = sg_block_mlp_hidden_ops(be, cfg, b, x, rows, s->hidden);
    err = err ? err : be->ops->cov_accumulate(be, s->c, F, s->hidden, rows, s->mixed);
    /* Σ h of the chunk: 1ᵀ·h, float32 within a chunk, float64 across */
    err = err ? err
              : be->ops->sgemm(be, 0, 0, 1, F, rows, 1.0f, s->ones, rows, s->hidden, F, 0.0f,
                               s->colsum, F);
    float *cs = err ? NULL : malloc(F * sizeof(float));
    if (!err && !cs)
        err = sg_fail(-ENOMEM, "out of memory for the MLP statistics");
    err = err ? err : be->ops->download(be, cs, s->colsum, F * sizeof(float));
    for (int64_t j = 0; !err && j < F; j++)
        s->sum[j] += cs[j];
    free(cs);
    s->tokens += err ? 0 : rows;
    return err;
}

/* mean of the diagonal of the n x n matrix a (leading dimension ld) */
static double mean_diag(const double *a, int64_t n, int64_t ld)
{
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m += a[i * ld + i];
    return m / (double)n;
}

typedef struct {
    double score;
    int64_t unit;
} ranked;

static int by_score_desc(const void *pa, const void *pb)
{
    const ranked *a = pa, *b = pb;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return a->unit < b->unit ? -1 : a->unit > b->unit; /* ties: the earlier unit */
}

static int by_index(const void *pa, const void *pb)
{
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    return a < b ? -1 : a > b;
}

int sg_ffn_select(const double *c, int64_t F, int64_t f, double lambda_frac, int64_t *keep)
{
    double lambda = lambda_frac * mean_diag(c, F, F);
    if (!(lambda > 0) || !isfinite(lambda))
        return sg_fail(SG_ENUMERIC, "MLP pruning: the hidden units' correlation has mean "
                                    "diagonal %g (no calibration signal)", lambda);
    double *a = malloc(F * F * sizeof(double));
    ranked *r = malloc(F * sizeof(ranked));
    int err = 0;
    if (!a || !r) {
        err = sg_fail(-ENOMEM, "out of memory ranking %lld hidden units", (long long)F);
        goto out;
    }
    memcpy(a, c, F * F * sizeof(double));
    for (int64_t i = 0; i < F; i++)
        a[i * F + i] += lambda;
    /* (C + λI)⁻¹ by Cholesky: ℓ_i = 1 − λ [(C + λI)⁻¹]_ii. C is symmetric,
     * so its row-major lower triangle is read as column-major upper: a
     * row-major call would make LAPACKE hold a transposed F x F copy. */
    lapack_int info = LAPACKE_dpotrf(LAPACK_COL_MAJOR, 'U', F, a, F);
    info = info ? info : LAPACKE_dpotri(LAPACK_COL_MAJOR, 'U', F, a, F);
    if (info) {
        err = sg_fail(SG_ENUMERIC, "MLP pruning: the damped correlation of the hidden units is "
                                   "not positive definite (LAPACK info %d)", (int)info);
        goto out;
    }
    for (int64_t i = 0; i < F; i++)
        r[i] = (ranked){1.0 - lambda * a[i * F + i], i};
    qsort(r, F, sizeof *r, by_score_desc);
    for (int64_t i = 0; i < f; i++)
        keep[i] = r[i].unit;
    qsort(keep, f, sizeof *keep, by_index);
out:
    free(a);
    free(r);
    return err;
}

int sg_ffn_refit(double *c, const double *sum, int64_t tokens, int64_t F, const float *w,
                 int64_t d_out, const int64_t *keep, int64_t f, double damp_frac, float *w_new,
                 double *bias_delta)
{
    int bias = sum != NULL;
    int64_t n = f + bias; /* the units kept, and the constant one */
    double *wd = calloc(d_out * F, sizeof(double)), *wc = malloc(d_out * F * sizeof(double));
    double *rb = bias ? malloc(d_out * sizeof(double)) : NULL;
    int err = 0;
    if (!wd || !wc || (bias && !rb)) {
        err = sg_fail(-ENOMEM, "out of memory refitting a down projection of %lld units",
                      (long long)F);
        goto out;
    }
    for (int64_t i = 0; i < d_out * F; i++)
        wd[i] = w[i];
    /* W·C (d_out, F), C symmetric: what each unit sees of all F units'
     * output, one row per output; its columns keep are the right-hand
     * side, which column-major LAPACK reads as (n, d_out) */
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d_out, F, F, 1.0, wd, F, c, F, 0.0, wc,
                F);
    if (bias) /* the constant unit sees Σ_t h_t Wᵀ */
        cblas_dgemv(CblasRowMajor, CblasNoTrans, d_out, F, 1.0, wd, F, sum, 1, 0.0, rb, 1);
    free(wd);
    wd = NULL;
    /* C_SS (n x n, ld n) gathered into C's own memory, row by row: the
     * element read, c[keep_i F + keep_j], never lies before the one
     * written, i n + j (keep_i >= i, keep_j >= j, F >= n); the same for
     * the right-hand side's rows, wc[o F + keep_i] into o n + i */
    double delta = 0;
    for (int64_t i = 0; i < f; i++)
        delta += c[keep[i] * F + keep[i]];
    delta = damp_frac * delta / (double)f;
    for (int64_t i = 0; i < f; i++)
        for (int64_t j = 0; j < f; j++)
            c[i * n + j] = c[keep[i] * F + keep[j]];
    for (int64_t i = 0; i < f; i++)
        c[i * n + i] += delta;
    for (int64_t o = 0; o < d_out; o++) {
        for (int64_t i = 0; i < f; i++)
            wc[o * n + i] = wc[o * F + keep[i]];
        if (bias)
            wc[o * n + f] = rb[o];
    }
    if (bias) { /* the constant unit: its correlations are the sums, its own the count */
        for (int64_t i = 0; i < f; i++)
            c[i * n + f] = c[f * n + i] = sum[keep[i]];
        c[f * n + f] = (double)tokens;
    }
    /* column-major, as the selection: no transposed copies of C_SS */
    lapack_int info = LAPACKE_dposv(LAPACK_COL_MAJOR, 'U', n, d_out, c, n, wc, n);
    if (info) {
        err = sg_fail(SG_ENUMERIC, "MLP pruning: the least-squares system of the %lld units "
                                   "kept is not positive definite (LAPACK info %d)",
                      (long long)f, (int)info);
        goto out;
    }
    for (int64_t o = 0; o < d_out; o++)
        for (int64_t i = 0; i < f; i++)
            w_new[o * f + i] = (float)wc[o * n + i];
    for (int64_t o = 0; bias && o < d_out; o++)
        bias_delta[o] = wc[o * n + f];
out:
    free(wd);
    free(wc);
    free(rb);
    return err;
}

/* *t (rows, cols) in backend memory replaced by host's (rows', cols)
 * contents: a new buffer there, the old one gone (on a host-memory
 * backend the tensors are malloc'd host buffers, as the block loader
 * made them). */
static int replace(sg_backend *be, float **t, float *host, int64_t floats)
{
    if (be->ops->host_memory) {
        free(*t);
        *t = host;
        return 0;
    }
    float *dev = NULL;
    int err = be->ops->alloc(be, floats * sizeof(float), (void **)&dev);
    err = err ? err : be->ops->upload(be, dev, host, floats * sizeof(float));
    free(host);
    if (err) {
        if (dev)
            be->ops->release(be, dev);
        return err;
    }
    be->ops->release(be, *t);
    *t = dev;
    return 0;
}

/* The rows keep of *t (F, cols) in backend memory, as a new tensor. */
static int keep_rows(sg_backend *be, float **t, int64_t F, int64_t cols, const int64_t *keep,
                     int64_t f)
{
    float *all = malloc(F * cols * sizeof(float)), *kept = malloc(f * cols * sizeof(float));
    int err = all && kept ? 0 : sg_fail(-ENOMEM, "out of memory pruning an MLP");
    err = err ? err : be->ops->download(be, all, *t, F * cols * sizeof(float));
    for (int64_t i = 0; !err && i < f; i++)
        memcpy(kept + i * cols, all + keep[i] * cols, cols * sizeof(float));
    free(all);
    if (err) {
        free(kept);
        return err;
    }
    return replace(be, t, kept, f * cols);
}

int sg_prune_ffn(sg_ffn_stats *s, const sg_model_config *cfg, sg_block *b, int64_t f)
{
    sg_backend *be = s->be;
    int64_t F = s->F, d_out = b->d_out, d_in = cfg->parallel_block ? b->d_in : b->d_mid;
    if (f >= F)
        return 0;
    /* C: the statistics' own on a host-memory backend (the refit uses it
     * as its workspace; the next block starts it from 0), else a copy */
    int own = !be->ops->host_memory;
    double *c = own ? malloc(F * F * sizeof(double)) : s->c;
    double *delta = malloc(d_out * sizeof(double));
    int64_t *keep = s->keep;
    float *w = malloc(d_out * F * sizeof(float)), *w_new = malloc(d_out * f * sizeof(float));
    float *bias = b->b_down ? malloc(d_out * sizeof(float)) : NULL;
    int err = c && delta && w && w_new && (bias || !b->b_down)
                  ? 0
                  : sg_fail(-ENOMEM, "out of memory pruning an MLP of %lld units", (long long)F);
    if (!err && own)
        err = be->ops->download(be, c, s->c, F * F * sizeof(double));
    err = err ? err : be->ops->download(be, w, b->w_down, d_out * F * sizeof(float));
    err = err ? err : sg_ffn_select(c, F, f, SELECT_LAMBDA, keep);
    err = err ? err
              : sg_ffn_refit(c, b->b_down ? s->sum : NULL, s->tokens, F, w, d_out, keep, f,
                             REFIT_DAMP, w_new, delta);
    if (!err && bias) {
        err = be->ops->download(be, bias, b->b_down, d_out * sizeof(float));
        for (int64_t o = 0; !err && o < d_out; o++)
            bias[o] = (float)(bias[o] + delta[o]);
        err = err ? err : be->ops->upload(be, b->b_down, bias, d_out * sizeof(float));
    }
    err = err ? err : keep_rows(be, &b->w_up, F, d_in, keep, f);
    if (!err && b->w_gate)
        err = keep_rows(be, &b->w_gate, F, d_in, keep, f);
    if (!err && b->b_up)
        err = keep_rows(be, &b->b_up, F, 1, keep, f);
    if (!err) {
        err = replace(be, &b->w_down, w_new, d_out * f);
        w_new = NULL; /* replace took it, or freed it */
    }
    if (!err)
        b->d_ffn = f, s->kept = f;
    if (own)
        free(c);
    free(delta);
    free(w);
    free(w_new);
    free(bias);
    return err;
}

void sg_ffn_keep_columns(const sg_ffn_stats *s, float *h, int64_t rows)
{
    /* row by row, front to back: the element read, h[r F + keep_j], never
     * lies before the one written, r kept + j (keep_j >= j, F >= kept) */
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < s->kept; j++)
            h[r * s->kept + j] = h[r * s->F + s->keep[j]];
}
