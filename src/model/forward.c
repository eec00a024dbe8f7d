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

void sg_norm_rows(const sg_model_config *cfg, float *x, int64_t rows, int64_t d, const float *w,
                  const float *b)
{
    for (int64_t r = 0; r < rows; r++) {
        float *v = x + r * d;
        if (cfg->norm == SG_NORM_LAYER) {
            double mean = 0, var = 0;
            for (int64_t i = 0; i < d; i++)
                mean += v[i];
            mean /= d;
            for (int64_t i = 0; i < d; i++)
                var += (v[i] - mean) * (v[i] - mean);
            float inv = (float)(1.0 / sqrt(var / d + cfg->norm_eps));
            for (int64_t i = 0; i < d; i++)
                v[i] = (float)(v[i] - mean) * inv;
        } else {
            double ss = 0;
            for (int64_t i = 0; i < d; i++)
                ss += (double)v[i] * v[i];
            float inv = (float)(1.0 / sqrt(ss / cfg->norm_dim + cfg->norm_eps));
            for (int64_t i = 0; i < d; i++)
                v[i] *= inv;
        }
        if (w)
            for (int64_t i = 0; i < d; i++)
                v[i] *= w[i];
        if (b)
            for (int64_t i = 0; i < d; i++)
                v[i] += b[i];
    }
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

/* Rotates q or k rows in place: x (t, n_heads * head_dim), positions from
 * the sequence layout. */
static void apply_rope(const sg_model_config *c, float *x, int64_t n_heads, const sg_seqs *seqs,
                       int64_t seq_begin, int64_t seq_end, const double *inv_freq)
{
    int64_t half = c->rope_dim / 2, base = seqs->offsets[seq_begin];
    for (int64_t s = seq_begin; s < seq_end; s++)
        for (int64_t tok = seqs->offsets[s]; tok < seqs->offsets[s + 1]; tok++) {
            int64_t pos = tok - seqs->offsets[s];
            float *row = x + (tok - base) * n_heads * c->head_dim;
            for (int64_t i = 0; i < half; i++) {
                double a = pos * inv_freq[i];
                float cs = (float)cos(a), sn = (float)sin(a);
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

void sg_attention_causal(int64_t nh, int64_t nkv, int64_t hd, const float *q, const float *k,
                         const float *v, float *out, int64_t n, float *scratch)
{
    int64_t group = nh / nkv, tile_rows = group * (n < ATT_TILE ? n : ATT_TILE);
    /* scratch: scores (tile_rows, n), then the stacked queries and outputs
     * (tile_rows, hd) each */
    float *scores = scratch, *qbuf = scores + tile_rows * n, *obuf = qbuf + tile_rows * hd;
    float scale = 1.0f / sqrtf((float)hd);
    for (int64_t g = 0; g < nkv; g++) {
        const float *kg = k + g * hd, *vg = v + g * hd;
        for (int64_t r0 = 0; r0 < n; r0 += ATT_TILE) {
            int64_t rows = n - r0 < ATT_TILE ? n - r0 : ATT_TILE, r1 = r0 + rows;
            int64_t m = group * rows;
            /* qbuf (m, hd): row gi*rows + i is query head g*group+gi at position r0+i */
            for (int64_t gi = 0; gi < group; gi++)
                for (int64_t i = 0; i < rows; i++)
                    memcpy(qbuf + (gi * rows + i) * hd, q + (r0 + i) * nh * hd + (g * group + gi) * hd,
                           hd * sizeof(float));
            /* scores (m, r1) = qbuf (m, hd) · K[0:r1]ᵀ */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)m, (int)r1, (int)hd, scale,
                        qbuf, (int)hd, kg, (int)(nkv * hd), 0.0f, scores, (int)r1);
            for (int64_t row = 0; row < m; row++) /* row sees keys 0 .. r0 + row % rows */
                sg_softmax_row(scores + row * r1, r0 + row % rows + 1, r1);
            /* obuf (m, hd) = P (m, r1) · V[0:r1] */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)m, (int)hd, (int)r1, 1.0f,
                        scores, (int)r1, vg, (int)(nkv * hd), 0.0f, obuf, (int)hd);
            for (int64_t gi = 0; gi < group; gi++)
                for (int64_t i = 0; i < rows; i++)
                    memcpy(out + (r0 + i) * nh * hd + (g * group + gi) * hd,
                           obuf + (gi * rows + i) * hd, hd * sizeof(float));
        }
    }
}


typedef struct {
    float *h;      /* (g, max width) normed input */
    float *q, *k, *v, *att; /* (g, nh*hd), (g, nkv*hd) x2, (g, nh*hd) */
    float *up, *gate;       /* (g, F) */
    float *att_scratch;     /* sg_attention_scratch_floats(.., max seq len) */
    double *inv_freq;       /* (rope_dim / 2) */
} scratch;

static void scratch_free(scratch *s)
{
    free(s->h); free(s->q); free(s->k); free(s->v); free(s->att);
    free(s->up); free(s->gate); free(s->att_scratch); free(s->inv_freq);
}

static int scratch_alloc(scratch *s, const sg_model_config *c, int64_t g, int64_t max_len)
{
    int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    memset(s, 0, sizeof *s);
    s->h = malloc(g * c->dim * sizeof(float));
    s->q = malloc(g * qd * sizeof(float));
    s->k = malloc(g * kvd * sizeof(float));
    s->v = malloc(g * kvd * sizeof(float));
    s->att = malloc(g * qd * sizeof(float));
    s->up = malloc(g * c->ffn_dim * sizeof(float));
    s->gate = c->gated_mlp ? malloc(g * c->ffn_dim * sizeof(float)) : NULL;
    s->att_scratch = malloc(
        sg_attention_scratch_floats(c->n_heads, c->n_kv_heads, c->head_dim, max_len) *
        sizeof(float));
    s->inv_freq = malloc((c->rope_dim / 2 + 1) * sizeof(double));
    if (!s->h || !s->q || !s->k || !s->v || !s->att || !s->up || (c->gated_mlp && !s->gate) ||
        !s->att_scratch || !s->inv_freq) {
        scratch_free(s);
        return sg_fail(-ENOMEM, "out of memory for block scratch (%lld tokens)", (long long)g);
    }
    sg_rope_inv_freq(c, s->inv_freq);
    return 0;
}

/* The attention sub-block for sequences [s0, s1): att (g, nh*hd) from the
 * normed input h (g, d). */
static void attention(const sg_model_config *c, const sg_block *b, scratch *s, int64_t d,
                      const sg_seqs *seqs, int64_t s0, int64_t s1, int64_t g)
{
    int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    int64_t base = seqs->offsets[s0];
    linear(s->h, g, d, b->wq, b->bq, qd, s->q, 0.0f);
    linear(s->h, g, d, b->wk, b->bk, kvd, s->k, 0.0f);
    linear(s->h, g, d, b->wv, b->bv, kvd, s->v, 0.0f);
    if (c->rope != SG_ROPE_NONE) {
        apply_rope(c, s->q, c->n_heads, seqs, s0, s1, s->inv_freq);
        apply_rope(c, s->k, c->n_kv_heads, seqs, s0, s1, s->inv_freq);
    }
    for (int64_t q = s0; q < s1; q++) {
        int64_t off = seqs->offsets[q] - base, n = seqs->offsets[q + 1] - seqs->offsets[q];
        sg_attention_causal(c->n_heads, c->n_kv_heads, c->head_dim, s->q + off * qd,
                            s->k + off * kvd, s->v + off * kvd, s->att + off * qd, n,
                            s->att_scratch);
    }
}

/* MLP on normed input h (g, d): adds its output (g, d_out) into y. d is
 * d_mid, or d_in in a parallel block. */
static void mlp(const sg_model_config *c, const sg_block *b, scratch *s, int64_t g, int64_t d,
                float *y)
{
    int64_t f = c->ffn_dim;
    linear(s->h, g, d, b->w_up, b->b_up, f, s->up, 0.0f);
    if (c->gated_mlp && c->act == SG_ACT_SILU) {
        linear(s->h, g, d, b->w_gate, NULL, f, s->gate, 0.0f);
        sg_silu_mul(s->up, s->gate, g * f);
    } else if (c->gated_mlp) {
        linear(s->h, g, d, b->w_gate, NULL, f, s->gate, 0.0f);
        for (int64_t i = 0; i < g * f; i++)
            s->up[i] *= sg_activation(c->act, s->gate[i]);
    } else if (c->act == SG_ACT_SILU) {
        sg_silu_mul(s->up, NULL, g * f);
    } else {
        for (int64_t i = 0; i < g * f; i++)
            s->up[i] = sg_activation(c->act, s->up[i]);
    }
    linear(s->up, g, f, b->w_down, b->b_down, b->d_out, y, 1.0f);
}

/* y (g, n_out) = x (g, n_in) through the shortcut (identity when NULL). */
static void residual(const float *x, int64_t g, int64_t n_in, const float *sc, int64_t n_out,
                     float *y)
{
    if (sc)
        shortcut(x, g, n_in, sc, n_out, y);
    else if (y != x)
        memcpy(y, x, g * n_out * sizeof(float));
}

int64_t sg_forward_scratch_bytes(const sg_model_config *c, int64_t max_len, int64_t tokens)
{
    int64_t g = max_len > GROUP_TOKENS ? max_len : GROUP_TOKENS;
    if (g > tokens)
        g = tokens;
    int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    int64_t per_token = c->dim + 2 * qd + 2 * kvd + (c->gated_mlp ? 2 : 1) * c->ffn_dim +
                        c->dim; /* h, q, att, k, v, up (+gate), residual */
    return (g * per_token +
            sg_attention_scratch_floats(c->n_heads, c->n_kv_heads, c->head_dim, max_len)) *
           (int64_t)sizeof(float);
}

int64_t sg_seqs_longest(const sg_seqs *seqs)
{
    int64_t max_len = 1;
    for (int64_t s = 0; s < seqs->n_seq; s++)
        if (seqs->offsets[s + 1] - seqs->offsets[s] > max_len)
            max_len = seqs->offsets[s + 1] - seqs->offsets[s];
    return max_len;
}

int64_t sg_seqs_group_cap(const sg_seqs *seqs, int64_t target)
{
    int64_t longest = sg_seqs_longest(seqs), cap = longest > target ? longest : target;
    return cap > sg_seqs_tokens(seqs) ? sg_seqs_tokens(seqs) : cap;
}

/* The MLP half for g tokens: xo (g, d_out) = r·S_mlp + MLP(norm(r)); uses
 * s->h as scratch. xo may alias the caller's input of the block. */
static void mlp_half(const sg_model_config *c, const sg_block *b, scratch *s, const float *r,
                     int64_t g, float *xo)
{
    memcpy(s->h, r, g * b->d_mid * sizeof(float));
    sg_norm_rows(c, s->h, g, b->d_mid, b->ffn_norm_w, b->ffn_norm_b);
    residual(r, g, b->d_mid, b->mlp_shortcut, b->d_out, xo);
    mlp(c, b, s, g, b->d_mid, xo);
}

int sg_block_forward(const sg_model_config *c, const sg_block *b, const float *x_in,
                     float *x_out, float *mid, const sg_seqs *seqs)
{
    int64_t qd = c->n_heads * c->head_dim, max_len = sg_seqs_longest(seqs);
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
        const float *xi = x_in + t0 * b->d_in;

        memcpy(s.h, xi, g * b->d_in * sizeof(float));
        sg_norm_rows(c, s.h, g, b->d_in, b->attn_norm_w, b->attn_norm_b);
        attention(c, b, &s, b->d_in, seqs, s0, s1, g);
        if (c->parallel_block) {
            /* x_out = x_in·S + attn(h) + mlp(h), both reading the same h */
            residual(xi, g, b->d_in, b->attn_shortcut, b->d_out, r);
            linear(s.att, g, qd, b->wo, b->bo, b->d_out, r, 1.0f);
            mlp(c, b, &s, g, b->d_in, r);
            if (x_out)
                memcpy(x_out + t0 * b->d_out, r, g * b->d_out * sizeof(float));
        } else {
            residual(xi, g, b->d_in, b->attn_shortcut, b->d_mid, r);
            linear(s.att, g, qd, b->wo, b->bo, b->d_mid, r, 1.0f);
            if (mid)
                memcpy(mid + t0 * b->d_mid, r, g * b->d_mid * sizeof(float));
            if (x_out)
                mlp_half(c, b, &s, r, g, x_out + t0 * b->d_out);
        }
        s0 = s1;
    }
    free(r);
    scratch_free(&s);
    return 0;
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
        mlp_half(c, b, &s, mid + t0 * b->d_mid, g, x_out + t0 * b->d_out);
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
            int64_t pos = t - seqs->offsets[s];
            if (ids[t] < 0 || ids[t] >= c->vocab_size)
                return sg_fail(SG_EARG, "token id %d outside the vocabulary (%lld)", ids[t],
                               (long long)c->vocab_size);
            memcpy(x + t * d, m->tok_embd + (int64_t)ids[t] * d, d * sizeof(float));
            if (m->pos_embd) {
                if (pos >= c->max_positions)
                    return sg_fail(SG_EARG, "sequence of %lld tokens exceeds the model's %lld positions",
                                   (long long)(seqs->offsets[s + 1] - seqs->offsets[s]),
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

#define HEAD_CHUNK 256

int sg_head_nll(const sg_model *m, const float *x, const int32_t *targets, int64_t T,
                double *nll, int64_t *count, double *row_nll, float *logits_out)
{
    const sg_model_config *c = &m->cfg;
    int64_t d = c->head_in_dim, V = c->vocab_size;
    float *h = malloc(HEAD_CHUNK * d * sizeof(float));
    float *logits = malloc(HEAD_CHUNK * V * sizeof(float));
    if (!h || !logits) {
        free(h);
        free(logits);
        return sg_fail(-ENOMEM, "out of memory for the head");
    }
    for (int64_t t0 = 0; t0 < T; t0 += HEAD_CHUNK) {
        int64_t n = T - t0 < HEAD_CHUNK ? T - t0 : HEAD_CHUNK;
        memcpy(h, x + t0 * d, n * d * sizeof(float));
        sg_norm_rows(c, h, n, d, m->out_norm_w, m->out_norm_b);
        linear(h, n, d, m->lm_head, m->lm_head_b, V, logits, 0.0f);
        if (logits_out)
            memcpy(logits_out + t0 * V, logits, n * V * sizeof(float));
        sg_logits_nll(logits, n, V, targets ? targets + t0 : NULL, nll, count,
                      row_nll ? row_nll + t0 : NULL);
    }
    free(h);
    free(logits);
    return 0;
}
