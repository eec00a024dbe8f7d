/* The CPU forward pass. GEMMs go through CBLAS (OpenBLAS, threaded); the
 * rest are plain loops over rows. Weights are row-major [out][in], so a
 * linear layer is Y (T, out) = X (T, in) · W^T, one sgemm with transB.
 *
 * Blocks run over groups of whole sequences of at most GROUP_TOKENS tokens
 * so scratch memory stays bounded however large the batch is. */
#include "forward.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "parallel.h"
#include "sg_error.h"
#include "vec_math.h"

#define GROUP_TOKENS 4096

/* Y (t, n_out) = X (t, n_in) · W^T (+ bias), W (n_out, n_in); beta = 1 adds
 * to Y instead of overwriting. */
static void linear(const float *x, int64_t t, int64_t n_in, const float *w, const float *bias,
                   int64_t n_out, float *y, float beta)
{
    if (bias && beta == 0.0f) {
        for (int64_t i = 0; i < t; i++)
            memcpy(y + i * n_out, bias, n_out * sizeof(float));
        beta = 1.0f;
    } else if (bias) {
        for (int64_t i = 0; i < t; i++)
            for (int64_t j = 0; j < n_out; j++)
                y[i * n_out + j] += bias[j];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)t, (int)n_out, (int)n_in, 1.0f, x,
                (int)n_in, w, (int)n_in, beta, y, (int)n_out);
}

/* Y (t, n_out) (+)= X (t, n_in) · S, S (n_in, n_out): the residual shortcut. */
static void shortcut(const float *x, int64_t t, int64_t n_in, const float *s, int64_t n_out,
                     float *y)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)t, (int)n_out, (int)n_in, 1.0f,
                x, (int)n_in, s, (int)n_out, 0.0f, y, (int)n_out);
}

/* dst rows = norm of src rows (rows, d); dst may be src. One pass over
 * each row after its statistic, with the roundings of the in-place loops
 * (normalise, then scale, then shift). */
static void norm_rows_to(const sg_model_config *cfg, const float *src, float *dst, int64_t rows,
                         int64_t d, const float *w, const float *b)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *v = src + r * d;
        float *o = dst + r * d;
        if (cfg->norm == SG_NORM_LAYER) {
            double mean = 0, var = 0;
            for (int64_t i = 0; i < d; i++)
                mean += v[i];
            mean /= d;
            for (int64_t i = 0; i < d; i++)
                var += (v[i] - mean) * (v[i] - mean);
            float inv = (float)(1.0 / sqrt(var / d + cfg->norm_eps));
            for (int64_t i = 0; i < d; i++) {
                float t = (float)(v[i] - mean) * inv;
                t = w ? t * w[i] : t;
                o[i] = b ? t + b[i] : t;
            }
        } else {
            double ss = 0;
            for (int64_t i = 0; i < d; i++)
                ss += (double)v[i] * v[i];
            float inv = (float)(1.0 / sqrt(ss / cfg->norm_dim + cfg->norm_eps));
            for (int64_t i = 0; i < d; i++) {
                float t = v[i] * inv;
                t = w ? t * w[i] : t;
                o[i] = b ? t + b[i] : t;
            }
        }
    }
}

void sg_norm_rows(const sg_model_config *cfg, float *x, int64_t rows, int64_t d, const float *w,
                  const float *b)
{
    norm_rows_to(cfg, x, x, rows, d, w, b);
}

/* Inverse frequency of rotary pair i, after the model's scaling rule. */
static double rope_inv_freq(const sg_model_config *c, int64_t i)
{
    double f = pow(c->rope_theta, -2.0 * i / c->rope_dim);
    if (c->n_rope_freq_factors > 0)
        return f / c->rope_freq_factors[i];
    if (c->rope_scaling == SG_ROPE_SCALE_LINEAR)
        return f / c->rope_factor;
    if (c->rope_scaling == SG_ROPE_SCALE_LLAMA3) {
        /* Llama 3.1: long wavelengths are slowed by factor, short ones kept,
         * the band between interpolated smoothly. */
        double orig = (double)c->rope_original_max_positions;
        double wavelen = 2 * M_PI / f;
        if (wavelen < orig / c->rope_high_freq_factor)
            return f;
        if (wavelen > orig / c->rope_low_freq_factor)
            return f / c->rope_factor;
        double smooth = (orig / wavelen - c->rope_low_freq_factor) /
                        (c->rope_high_freq_factor - c->rope_low_freq_factor);
        return (1 - smooth) * f / c->rope_factor + smooth * f;
    }
    return f;
}

void sg_rope_inv_freq(const sg_model_config *c, double *out)
{
    for (int64_t i = 0; i < c->rope_dim / 2; i++)
        out[i] = rope_inv_freq(c, i);
}

/* cs (n, rope_dim / 2, 2): cos and sin of position p times pair i's
 * frequency, rounded to float as the rotation uses them. */
static void rope_table(const sg_model_config *c, int64_t n, const double *inv_freq, float *cs)
{
    int64_t half = c->rope_dim / 2;
    for (int64_t p = 0; p < n; p++)
        for (int64_t i = 0; i < half; i++) {
            double a = p * inv_freq[i];
            cs[(p * half + i) * 2] = (float)cos(a);
            cs[(p * half + i) * 2 + 1] = (float)sin(a);
        }
}

/* Rotates rows of q or k in place: x (rows, n_heads * head_dim), row i at
 * position pos[i], angles from rope_table. */
static void rope_rows(const sg_model_config *c, float *x, int64_t n_heads, const int64_t *pos,
                      int64_t rows, const float *table)
{
    int64_t half = c->rope_dim / 2;
    for (int64_t t = 0; t < rows; t++) {
        float *row = x + t * n_heads * c->head_dim;
        const float *cst = table + pos[t] * half * 2;
        for (int64_t i = 0; i < half; i++) {
            float cs = cst[2 * i], sn = cst[2 * i + 1];
            int64_t i0 = c->rope == SG_ROPE_PAIRS ? 2 * i : i;
            int64_t i1 = c->rope == SG_ROPE_PAIRS ? 2 * i + 1 : i + half;
            for (int64_t h = 0; h < n_heads; h++) {
                float *v = row + h * c->head_dim;
                float x0 = v[i0], x1 = v[i1];
                v[i0] = x0 * cs - x1 * sn;
                v[i1] = x0 * sn + x1 * cs;
            }
        }
    }
}

/* Causal attention for one sequence of n tokens. q (n, nh*hd), k and v
 * (n, nkv*hd), out (n, nh*hd). Query head h reads key/value head
 * h / (nh / nkv) (grouped-query attention).
 *
 * Work goes by key/value head and by tiles of ATT_TILE query rows: the
 * query heads that share a key/value head are stacked into one matrix, so
 * each tile is two large GEMMs instead of 2 x group small ones, and a tile
 * only multiplies the keys it can see (columns up to its last row), which
 * halves the work of the causal mask on long sequences. */
#define ATT_TILE 256

int64_t sg_attention_scratch_floats(int64_t nh, int64_t nkv, int64_t hd, int64_t n)
{
    int64_t tile_rows = (nh / nkv) * (n < ATT_TILE ? n : ATT_TILE);
    return tile_rows * (n + 2 * hd);
}

/* One tile: query rows [r0, r0 + rows) of the query heads of key/value
 * head g; scratch as sg_attention_scratch_floats for np + n. With np > 0
 * the sequence continues a prefix of np tokens whose keys and values are
 * kp and vp (same row stride): every row sees all of them first, so the
 * scores are (prefix | own keys) side by side and the output sums the two
 * products. Without a prefix the arithmetic is the plain causal tile's. */
static void attention_tile(int64_t nh, int64_t nkv, int64_t hd, const float *q, const float *k,
                           const float *v, float *out, int64_t n, int64_t g, int64_t r0,
                           const float *kp, const float *vp, int64_t np, float *scratch)
{
    int64_t nt = np + n, group = nh / nkv, tile_rows = group * (nt < ATT_TILE ? nt : ATT_TILE);
    /* scratch: scores (tile_rows, np + n), then the stacked queries and
     * outputs (tile_rows, hd) each */
    float *scores = scratch, *qbuf = scores + tile_rows * nt, *obuf = qbuf + tile_rows * hd;
    float scale = 1.0f / sqrtf((float)hd);
    const float *kg = k + g * hd, *vg = v + g * hd;
    int64_t rows = n - r0 < ATT_TILE ? n - r0 : ATT_TILE, r1 = r0 + rows, w = np + r1;
    int64_t m = group * rows;
    /* qbuf (m, hd): row gi*rows + i is query head g*group+gi at position r0+i */
    for (int64_t gi = 0; gi < group; gi++)
        for (int64_t i = 0; i < rows; i++)
            memcpy(qbuf + (gi * rows + i) * hd, q + (r0 + i) * nh * hd + (g * group + gi) * hd,
                   hd * sizeof(float));
    /* scores (m, np + r1) = qbuf (m, hd) · [Kp ; K[0:r1]]ᵀ */
    if (np)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)np, (int)hd, scale,
                    qbuf, (int)hd, kp + g * hd, (int)(nkv * hd), 0.0f, scores, (int)w);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)r1, (int)hd, scale, qbuf,
                (int)hd, kg, (int)(nkv * hd), 0.0f, scores + np, (int)w);
    for (int64_t row = 0; row < m; row++) /* row sees the prefix and keys 0 .. r0 + row % rows */
        sg_softmax_row(scores + row * w, np + r0 + row % rows + 1, w);
    /* obuf (m, hd) = P (m, np + r1) · [Vp ; V[0:r1]] */
    if (np)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)hd, (int)np, 1.0f,
                    scores, (int)w, vp + g * hd, (int)(nkv * hd), 0.0f, obuf, (int)hd);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)hd, (int)r1, 1.0f,
                scores + np, (int)w, vg, (int)(nkv * hd), np ? 1.0f : 0.0f, obuf, (int)hd);
    for (int64_t gi = 0; gi < group; gi++)
        for (int64_t i = 0; i < rows; i++)
            memcpy(out + (r0 + i) * nh * hd + (g * group + gi) * hd, obuf + (gi * rows + i) * hd,
                   hd * sizeof(float));
}

void sg_attention_causal(int64_t nh, int64_t nkv, int64_t hd, const float *q, const float *k,
                         const float *v, float *out, int64_t n, float *scratch)
{
    for (int64_t g = 0; g < nkv; g++)
        for (int64_t r0 = 0; r0 < n; r0 += ATT_TILE)
            attention_tile(nh, nkv, hd, q, k, v, out, n, g, r0, NULL, NULL, 0, scratch);
}

typedef struct {
    float *h;      /* (g, max width) normed input */
    float *q, *k, *v, *att; /* (g, nh*hd), (g, nkv*hd) x2, (g, nh*hd) */
    float *up, *gate;       /* (g, F) */
    float *att_scratch;     /* workers x sg_attention_scratch_floats(.., max seq len) */
    int64_t att_floats;     /* one worker's share of att_scratch */
    int64_t *pos;           /* (g) position of each token in its sequence */
    double *inv_freq;       /* (rope_dim / 2) */
    float *rope_cs;         /* (max seq len, rope_dim / 2, 2), rope_table */
} scratch;

static void scratch_free(scratch *s)
{
    free(s->h); free(s->q); free(s->k); free(s->v); free(s->att);
    free(s->up); free(s->gate); free(s->att_scratch); free(s->pos); free(s->inv_freq);
    free(s->rope_cs);
}

static int scratch_alloc(scratch *s, const sg_model_config *c, int64_t g, int64_t max_len)
{
    int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    memset(s, 0, sizeof *s);
    s->att_floats = sg_attention_scratch_floats(c->n_heads, c->n_kv_heads, c->head_dim, max_len);
    s->h = malloc(g * c->dim * sizeof(float));
    s->q = malloc(g * qd * sizeof(float));
    s->k = malloc(g * kvd * sizeof(float));
    s->v = malloc(g * kvd * sizeof(float));
    s->att = malloc(g * qd * sizeof(float));
    s->up = malloc(g * c->ffn_dim * sizeof(float));
    s->gate = c->gated_mlp ? malloc(g * c->ffn_dim * sizeof(float)) : NULL;
    s->att_scratch = malloc(sg_parallel_workers() * s->att_floats * sizeof(float));
    s->pos = malloc(g * sizeof(int64_t));
    s->inv_freq = malloc((c->rope_dim / 2 + 1) * sizeof(double));
    s->rope_cs = malloc((max_len * (c->rope_dim / 2) * 2 + 1) * sizeof(float));
    if (!s->h || !s->q || !s->k || !s->v || !s->att || !s->up || (c->gated_mlp && !s->gate) ||
        !s->att_scratch || !s->pos || !s->inv_freq || !s->rope_cs) {
        scratch_free(s);
        return sg_fail(-ENOMEM, "out of memory for block scratch (%lld tokens)", (long long)g);
    }
    sg_rope_inv_freq(c, s->inv_freq);
    if (c->rope != SG_ROPE_NONE)
        rope_table(c, max_len, s->inv_freq, s->rope_cs);
    return 0;
}

/* One group of whole sequences [s0, s1) (g tokens from t0) through a
 * block, in three item sets: row slices up to the attention (norm, q/k/v,
 * RoPE), attention tiles, row slices after it (output projection, MLP).
 * Every row slice runs its GEMMs on its own rows, so a token's arithmetic
 * is the same whichever slice it falls in. */
typedef struct {
    const sg_model_config *c;
    const sg_block *b;
    scratch *s;
    const sg_seqs *seqs;
    int64_t s0, t0, g, slices;
    const float *xi; /* (g, d_in) */
    float *r;        /* (g, r_width) residual after attention (or the parallel block's sum) */
    float *mid;      /* (g, d_mid) or NULL */
    float *xo;       /* (g, d_out) or NULL */
    int64_t n_tiles; /* attention tiles of the longest sequence per key/value head */
} block_job;

/* s->h rows [a, b) = norm of x rows [a, b) (width d) */
static void norm_rows_into(const sg_model_config *c, float *h, const float *x, int64_t a,
                           int64_t b, int64_t d, const float *w, const float *bias)
{
    norm_rows_to(c, x + a * d, h + a * d, b - a, d, w, bias);
}

static void job_before_attention(void *arg, int64_t i, int worker)
{
    block_job *j = arg;
    const sg_model_config *c = j->c;
    const sg_block *b = j->b;
    scratch *s = j->s;
    int64_t a, e, d = b->d_in;
    int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    sg_slice_rows(j->g, j->slices, i, &a, &e);
    if (e <= a)
        return;
    norm_rows_into(c, s->h, j->xi, a, e, d, b->attn_norm_w, b->attn_norm_b);
    linear(s->h + a * d, e - a, d, b->wq, b->bq, qd, s->q + a * qd, 0.0f);
    linear(s->h + a * d, e - a, d, b->wk, b->bk, kvd, s->k + a * kvd, 0.0f);
    linear(s->h + a * d, e - a, d, b->wv, b->bv, kvd, s->v + a * kvd, 0.0f);
    if (c->rope != SG_ROPE_NONE) {
        rope_rows(c, s->q + a * qd, c->n_heads, s->pos + a, e - a, s->rope_cs);
        rope_rows(c, s->k + a * kvd, c->n_kv_heads, s->pos + a, e - a, s->rope_cs);
    }
}

/* Item i: tile (n_tiles - 1 - i % n_tiles) of key/value head (i / n_tiles)
 * % nkv of sequence s0 + i / (n_tiles·nkv); the last tiles, which see the
 * most keys, are handed out first. */
static void job_attention(void *arg, int64_t i, int worker)
{
    block_job *j = arg;
    const sg_model_config *c = j->c;
    scratch *s = j->s;
    int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    int64_t tile = j->n_tiles - 1 - i % j->n_tiles, g = (i / j->n_tiles) % c->n_kv_heads;
    int64_t q = j->s0 + i / (j->n_tiles * c->n_kv_heads);
    int64_t off = j->seqs->offsets[q] - j->t0, n = j->seqs->offsets[q + 1] - j->seqs->offsets[q];
    if (tile * ATT_TILE >= n)
        return;
    int64_t p = j->seqs->parent ? j->seqs->parent[q] : -1; /* in this group: families stay whole */
    int64_t poff = p >= 0 ? j->seqs->offsets[p] - j->t0 : 0, np = sg_seqs_prefix(j->seqs, q);
    attention_tile(c->n_heads, c->n_kv_heads, c->head_dim, s->q + off * qd, s->k + off * kvd,
                   s->v + off * kvd, s->att + off * qd, n, g, tile * ATT_TILE,
                   s->k + poff * kvd, s->v + poff * kvd, np,
                   s->att_scratch + worker * s->att_floats);
}

/* MLP on normed rows [a, e) of h (width d): adds their output (width
 * d_out) into y's rows [a, e). d is d_mid, or d_in in a parallel block. */
static void mlp_rows(const sg_model_config *c, const sg_block *b, scratch *s, int64_t a,
                     int64_t e, int64_t d, float *y)
{
    int64_t f = b->d_ffn, n = e - a;
    float *up = s->up + a * f, *gate = s->gate ? s->gate + a * f : NULL;
    linear(s->h + a * d, n, d, b->w_up, b->b_up, f, up, 0.0f);
    if (c->gated_mlp && c->act == SG_ACT_SILU) {
        linear(s->h + a * d, n, d, b->w_gate, NULL, f, gate, 0.0f);
        sg_silu_mul(up, gate, n * f);
    } else if (c->gated_mlp) {
        linear(s->h + a * d, n, d, b->w_gate, NULL, f, gate, 0.0f);
        for (int64_t i = 0; i < n * f; i++)
            up[i] *= sg_activation(c->act, gate[i]);
    } else if (c->act == SG_ACT_SILU) {
        sg_silu_mul(up, NULL, n * f);
    } else {
        for (int64_t i = 0; i < n * f; i++)
            up[i] = sg_activation(c->act, up[i]);
    }
    linear(up, n, f, b->w_down, b->b_down, b->d_out, y + a * b->d_out, 1.0f);
}

/* rows [a, e) of y (width n_out) = x (width n_in) through the shortcut
 * (identity when NULL) */
static void residual_rows(const float *x, int64_t a, int64_t e, int64_t n_in, const float *sc,
                          int64_t n_out, float *y)
{
    if (sc)
        shortcut(x + a * n_in, e - a, n_in, sc, n_out, y + a * n_out);
    else if (y != x)
        memcpy(y + a * n_out, x + a * n_out, (e - a) * n_out * sizeof(float));
}

/* The MLP half for rows [a, e): xo = r·S_mlp + MLP(norm(r)); uses s->h as
 * scratch. xo may alias the caller's input of the block. */
static void mlp_half_rows(const sg_model_config *c, const sg_block *b, scratch *s,
                          const float *r, int64_t a, int64_t e, float *xo)
{
    norm_rows_into(c, s->h, r, a, e, b->d_mid, b->ffn_norm_w, b->ffn_norm_b);
    residual_rows(r, a, e, b->d_mid, b->mlp_shortcut, b->d_out, xo);
    mlp_rows(c, b, s, a, e, b->d_mid, xo);
}

static void job_after_attention(void *arg, int64_t i, int worker)
{
    block_job *j = arg;
    const sg_model_config *c = j->c;
    const sg_block *b = j->b;
    scratch *s = j->s;
    int64_t a, e, qd = c->n_heads * c->head_dim;
    sg_slice_rows(j->g, j->slices, i, &a, &e);
    if (e <= a)
        return;
    if (c->parallel_block) {
        /* x_out = x_in·S + attn(h) + mlp(h), both reading the same h */
        residual_rows(j->xi, a, e, b->d_in, b->attn_shortcut, b->d_out, j->r);
        linear(s->att + a * qd, e - a, qd, b->wo, b->bo, b->d_out, j->r + a * b->d_out, 1.0f);
        mlp_rows(c, b, s, a, e, b->d_in, j->r);
        if (j->xo)
            memcpy(j->xo + a * b->d_out, j->r + a * b->d_out, (e - a) * b->d_out * sizeof(float));
    } else {
        residual_rows(j->xi, a, e, b->d_in, b->attn_shortcut, b->d_mid, j->r);
        linear(s->att + a * qd, e - a, qd, b->wo, b->bo, b->d_mid, j->r + a * b->d_mid, 1.0f);
        if (j->mid)
            memcpy(j->mid + a * b->d_mid, j->r + a * b->d_mid, (e - a) * b->d_mid * sizeof(float));
        if (j->xo)
            mlp_half_rows(c, b, s, j->r, a, e, j->xo);
    }
}

/* Row slices of about this many rows, at most two per worker: large
 * enough that repacking each weight once per slice costs little. */
#define SLICE_ROWS 128

int64_t sg_forward_scratch_bytes(const sg_model_config *c, int64_t max_len, int64_t tokens)
{
    int64_t g = max_len > GROUP_TOKENS ? max_len : GROUP_TOKENS;
    if (g > tokens)
        g = tokens;
    int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    int64_t per_token = c->dim + 2 * qd + 2 * kvd + (c->gated_mlp ? 2 : 1) * c->ffn_dim +
                        c->dim + 2; /* h, q, att, k, v, up (+gate), residual, position */
    return (g * per_token + max_len * c->rope_dim +
            sg_parallel_workers() *
                sg_attention_scratch_floats(c->n_heads, c->n_kv_heads, c->head_dim, max_len)) *
           (int64_t)sizeof(float);
}

int64_t sg_seqs_longest(const sg_seqs *seqs)
{
    int64_t max_len = 1;
    for (int64_t s = 0; s < seqs->n_seq; s++) {
        int64_t len = seqs->offsets[s + 1] - seqs->offsets[s] + sg_seqs_prefix(seqs, s);
        max_len = len > max_len ? len : max_len;
    }
    return max_len;
}

int64_t sg_seqs_group_cap(const sg_seqs *seqs, int64_t target)
{
    int64_t largest = 1;
    for (int64_t s = 0; s < seqs->n_seq;) {
        int64_t e = sg_seqs_family_end(seqs, s);
        if (seqs->offsets[e] - seqs->offsets[s] > largest)
            largest = seqs->offsets[e] - seqs->offsets[s];
        s = e;
    }
    int64_t cap = largest > target ? largest : target;
    return cap > sg_seqs_tokens(seqs) ? sg_seqs_tokens(seqs) : cap;
}

int sg_block_forward(const sg_model_config *c, const sg_block *b, const float *x_in,
                     float *x_out, float *mid, const sg_seqs *seqs)
{
    int64_t max_len = sg_seqs_longest(seqs);
    int64_t group_cap = sg_seqs_group_cap(seqs, GROUP_TOKENS);
    int64_t r_width = b->d_mid > b->d_out ? b->d_mid : b->d_out;
    scratch s;
    int err = scratch_alloc(&s, c, group_cap, max_len);
    if (err)
        return err;
    float *r = malloc(group_cap * r_width * sizeof(float)); /* residual after attention */
    if (!r) {
        scratch_free(&s);
        return sg_fail(-ENOMEM, "out of memory for block residual");
    }
    for (int64_t s0 = 0; s0 < seqs->n_seq;) {
        int64_t s1 = sg_seqs_group_end(seqs, s0, group_cap);
        int64_t t0 = seqs->offsets[s0], g = seqs->offsets[s1] - t0;
        for (int64_t q = s0; q < s1; q++)
            for (int64_t t = seqs->offsets[q]; t < seqs->offsets[q + 1]; t++)
                s.pos[t - t0] = t - seqs->offsets[q] + sg_seqs_prefix(seqs, q);
        int64_t longest = 1;
        for (int64_t q = s0; q < s1; q++)
            if (seqs->offsets[q + 1] - seqs->offsets[q] > longest)
                longest = seqs->offsets[q + 1] - seqs->offsets[q];
        block_job j = {
            .c = c, .b = b, .s = &s, .seqs = seqs, .s0 = s0, .t0 = t0, .g = g,
            .slices = sg_parallel_slices(g, SLICE_ROWS),
            .xi = x_in + t0 * b->d_in, .r = r,
            .mid = mid ? mid + t0 * b->d_mid : NULL,
            .xo = x_out ? x_out + t0 * b->d_out : NULL,
            .n_tiles = (longest + ATT_TILE - 1) / ATT_TILE,
        };
        sg_parallel_for(j.slices, job_before_attention, &j);
        sg_parallel_for((s1 - s0) * c->n_kv_heads * j.n_tiles, job_attention, &j);
        sg_parallel_for(j.slices, job_after_attention, &j);
        s0 = s1;
    }
    free(r);
    scratch_free(&s);
    return 0;
}

typedef struct {
    const sg_model_config *c;
    const sg_block *b;
    scratch *s;
    const float *mid;
    float *xo;
    int64_t g, slices;
} mlp_job;

static void job_mlp_half(void *arg, int64_t i, int worker)
{
    mlp_job *j = arg;
    int64_t a, e;
    sg_slice_rows(j->g, j->slices, i, &a, &e);
    if (e > a)
        mlp_half_rows(j->c, j->b, j->s, j->mid, a, e, j->xo);
}

int sg_block_forward_mlp(const sg_model_config *c, const sg_block *b, const float *mid,
                         float *x_out, int64_t tokens)
{
    scratch s;
    int err = scratch_alloc(&s, c, tokens < GROUP_TOKENS ? tokens : GROUP_TOKENS, 1);
    if (err)
        return err;
    for (int64_t t0 = 0; t0 < tokens; t0 += GROUP_TOKENS) {
        int64_t g = tokens - t0 < GROUP_TOKENS ? tokens - t0 : GROUP_TOKENS;
        mlp_job j = {c, b, &s, mid + t0 * b->d_mid, x_out + t0 * b->d_out, g,
                     sg_parallel_slices(g, SLICE_ROWS)};
        sg_parallel_for(j.slices, job_mlp_half, &j);
    }
    scratch_free(&s);
    return 0;
}

int sg_embed(const sg_model *m, const int32_t *ids, const sg_seqs *seqs, float *x)
{
    const sg_model_config *c = &m->cfg;
    int64_t d = c->embed_dim;
    for (int64_t s = 0; s < seqs->n_seq; s++)
        for (int64_t t = seqs->offsets[s]; t < seqs->offsets[s + 1]; t++) {
            int64_t pos = t - seqs->offsets[s] + sg_seqs_prefix(seqs, s);
            if (ids[t] < 0 || ids[t] >= c->vocab_size)
                return sg_fail(SG_EARG, "token id %d outside the vocabulary (%lld)", ids[t],
                               (long long)c->vocab_size);
            memcpy(x + t * d, m->tok_embd + (int64_t)ids[t] * d, d * sizeof(float));
            if (m->pos_embd) {
                if (pos >= c->max_positions)
                    return sg_fail(SG_EARG, "sequence of %lld tokens exceeds the model's %lld positions",
                                   (long long)(seqs->offsets[s + 1] - seqs->offsets[s] +
                                               sg_seqs_prefix(seqs, s)),
                                   (long long)c->max_positions);
                const float *p = m->pos_embd + (pos + c->pos_offset) * d;
                for (int64_t i = 0; i < d; i++)
                    x[t * d + i] += p[i];
            }
        }
    return 0;
}

void sg_logits_nll(const float *logits, int64_t n, int64_t V, const int32_t *targets,
                   double *nll, int64_t *count, double *row_nll)
{
    for (int64_t i = 0; targets && i < n; i++) {
        if (targets[i] < 0)
            continue;
        const float *row = logits + i * V;
        double v = sg_logsumexp(row, V) - row[targets[i]];
        *nll += v;
        (*count)++;
        if (row_nll)
            row_nll[i] = v;
    }
}

/* The head goes in chunks of HEAD_CHUNK rows, one chunk per item, each
 * worker with its own normed rows and logits; every row's NLL is kept and
 * summed in row order afterwards, as one loop would. */
#define HEAD_CHUNK 128

typedef struct {
    const sg_model *m;
    const float *x;
    const int32_t *targets;
    int64_t T;
    float *h, *logits; /* per worker: (HEAD_CHUNK, d), (HEAD_CHUNK, V) */
    double *row_nll;   /* (T) */
    float *logits_out;
} head_job;

static void job_head(void *arg, int64_t i, int worker)
{
    head_job *j = arg;
    const sg_model_config *c = &j->m->cfg;
    int64_t d = c->head_in_dim, V = c->vocab_size, t0 = i * HEAD_CHUNK;
    int64_t n = j->T - t0 < HEAD_CHUNK ? j->T - t0 : HEAD_CHUNK;
    float *h = j->h + worker * HEAD_CHUNK * d, *logits = j->logits + worker * HEAD_CHUNK * V;
    memcpy(h, j->x + t0 * d, n * d * sizeof(float));
    sg_norm_rows(c, h, n, d, j->m->out_norm_w, j->m->out_norm_b);
    linear(h, n, d, j->m->lm_head, j->m->lm_head_b, V, logits, 0.0f);
    if (j->logits_out)
        memcpy(j->logits_out + t0 * V, logits, n * V * sizeof(float));
    for (int64_t r = 0; j->targets && r < n; r++) {
        int32_t t = j->targets[t0 + r];
        j->row_nll[t0 + r] = t < 0 ? 0 : sg_logsumexp(logits + r * V, V) - logits[r * V + t];
    }
}

int sg_head_nll(const sg_model *m, const float *x, const int32_t *targets, int64_t T,
                double *nll, int64_t *count, double *row_nll, float *logits_out)
{
    const sg_model_config *c = &m->cfg;
    int64_t d = c->head_in_dim, V = c->vocab_size, w = sg_parallel_workers();
    head_job j = {m, x, targets, T, malloc(w * HEAD_CHUNK * d * sizeof(float)),
                  malloc(w * HEAD_CHUNK * V * sizeof(float)),
                  malloc((T > 0 ? T : 1) * sizeof(double)), logits_out};
    if (!j.h || !j.logits || !j.row_nll) {
        free(j.h);
        free(j.logits);
        free(j.row_nll);
        return sg_fail(-ENOMEM, "out of memory for the head");
    }
    sg_parallel_for((T + HEAD_CHUNK - 1) / HEAD_CHUNK, job_head, &j);
    for (int64_t i = 0; targets && i < T; i++)
        if (targets[i] >= 0) {
            *nll += j.row_nll[i];
            (*count)++;
            if (row_nll)
                row_nll[i] = j.row_nll[i];
        }
    free(j.h);
    free(j.logits);
    free(j.row_nll);
    return 0;
}
