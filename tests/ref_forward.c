#include "ref_forward.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* y[n_out] = W[n_out][n_in] x[n_in] + b */
static void matvec(const float *w, const float *b, const double *x, int64_t n_in, int64_t n_out,
                   double *y)
{
    for (int64_t o = 0; o < n_out; o++) {
        double acc = b ? b[o] : 0.0;
        for (int64_t i = 0; i < n_in; i++)
            acc += (double)w[o * n_in + i] * x[i];
        y[o] = acc;
    }
}

static void norm(const sg_model_config *c, const double *x, int64_t d, const float *w,
                 const float *b, double *y)
{
    if (c->norm == SG_NORM_LAYER) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < d; i++)
            mean += x[i] / d;
        for (int64_t i = 0; i < d; i++)
            var += (x[i] - mean) * (x[i] - mean) / d;
        for (int64_t i = 0; i < d; i++)
            y[i] = (x[i] - mean) / sqrt(var + c->norm_eps);
    } else {
        double ms = 0;
        for (int64_t i = 0; i < d; i++)
            ms += x[i] * x[i];
        ms /= c->norm_dim; /* sliced models keep dividing by the full width */
        for (int64_t i = 0; i < d; i++)
            y[i] = x[i] / sqrt(ms + c->norm_eps);
    }
    for (int64_t i = 0; i < d; i++)
        y[i] = y[i] * (w ? w[i] : 1.0) + (b ? b[i] : 0.0);
}

static double act(sg_act a, double x)
{
    switch (a) {
    case SG_ACT_SILU: return x / (1 + exp(-x));
    case SG_ACT_RELU: return x > 0 ? x : 0;
    case SG_ACT_GELU_TANH: return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
    case SG_ACT_GELU: return 0.5 * x * (1 + erf(x / sqrt(2)));
    }
    return x;
}

/* Frequency of pair i: theta^(-2i/rope_dim), then the scaling rule. */
static double freq(const sg_model_config *c, int64_t i)
{
    double f = 1.0 / pow(c->rope_theta, (double)(2 * i) / c->rope_dim);
    if (c->n_rope_freq_factors)
        return f / c->rope_freq_factors[i];
    if (c->rope_scaling == SG_ROPE_SCALE_LINEAR)
        return f / c->rope_factor;
    if (c->rope_scaling == SG_ROPE_SCALE_LLAMA3) {
        double low_wl = c->rope_original_max_positions / c->rope_low_freq_factor;
        double high_wl = c->rope_original_max_positions / c->rope_high_freq_factor;
        double wl = 2 * M_PI / f;
        if (wl < high_wl)
            return f;
        if (wl > low_wl)
            return f / c->rope_factor;
        double sm = (c->rope_original_max_positions / wl - c->rope_low_freq_factor) /
                    (c->rope_high_freq_factor - c->rope_low_freq_factor);
        return (1 - sm) * f / c->rope_factor + sm * f;
    }
    return f;
}

static void rope(const sg_model_config *c, double *head, int64_t pos)
{
    int64_t half = c->rope_dim / 2;
    double tmp[1024];
    memcpy(tmp, head, c->head_dim * sizeof(double));
    for (int64_t i = 0; i < half; i++) {
        int64_t a = c->rope == SG_ROPE_PAIRS ? 2 * i : i;
        int64_t b = c->rope == SG_ROPE_PAIRS ? 2 * i + 1 : i + half;
        double th = pos * freq(c, i);
        head[a] = tmp[a] * cos(th) - tmp[b] * sin(th);
        head[b] = tmp[a] * sin(th) + tmp[b] * cos(th);
    }
}

/* x (n, d_in) -> out (n, d_out) */
static void block(const sg_model_config *c, const sg_block *b, double *x, int64_t n, double *out)
{
    int64_t nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim, F = b->d_ffn;
    int64_t din = b->d_in, dmid = b->d_mid, dout = b->d_out;
    double *h = calloc(n * din, sizeof(double));
    double *q = calloc(n * nh * hd, sizeof(double)), *k = calloc(n * nkv * hd, sizeof(double));
    double *v = calloc(n * nkv * hd, sizeof(double)), *att = calloc(n * nh * hd, sizeof(double));
    double *r = calloc(n * dmid, sizeof(double)), *h2 = calloc(n * dmid, sizeof(double));
    double *u = calloc(F, sizeof(double)), *g = calloc(F, sizeof(double));
    double *tmp = calloc(dout > dmid ? dout : dmid, sizeof(double));
    for (int64_t t = 0; t < n; t++) {
        norm(c, x + t * din, din, b->attn_norm_w, b->attn_norm_b, h + t * din);
        matvec(b->wq, b->bq, h + t * din, din, nh * hd, q + t * nh * hd);
        matvec(b->wk, b->bk, h + t * din, din, nkv * hd, k + t * nkv * hd);
        matvec(b->wv, b->bv, h + t * din, din, nkv * hd, v + t * nkv * hd);
        if (c->rope != SG_ROPE_NONE) {
            for (int64_t j = 0; j < nh; j++)
                rope(c, q + t * nh * hd + j * hd, t);
            for (int64_t j = 0; j < nkv; j++)
                rope(c, k + t * nkv * hd + j * hd, t);
        }
    }
    double *p = calloc(n, sizeof(double));
    for (int64_t j = 0; j < nh; j++) {
        int64_t kvh = j / (nh / nkv);
        for (int64_t t = 0; t < n; t++) {
            double mx = -1e300, sum = 0;
            for (int64_t s = 0; s <= t; s++) {
                double dot = 0;
                for (int64_t i = 0; i < hd; i++)
                    dot += q[t * nh * hd + j * hd + i] * k[s * nkv * hd + kvh * hd + i];
                p[s] = dot / sqrt((double)hd);
                if (p[s] > mx)
                    mx = p[s];
            }
            for (int64_t s = 0; s <= t; s++)
                sum += (p[s] = exp(p[s] - mx));
            for (int64_t i = 0; i < hd; i++) {
                double acc = 0;
                for (int64_t s = 0; s <= t; s++)
                    acc += p[s] / sum * v[s * nkv * hd + kvh * hd + i];
                att[t * nh * hd + j * hd + i] = acc;
            }
        }
    }
    for (int64_t t = 0; t < n; t++) {
        /* residual after attention: x·S (or x) + o_proj(att) */
        matvec(b->wo, b->bo, att + t * nh * hd, nh * hd, dmid, tmp);
        for (int64_t o = 0; o < dmid; o++) {
            double s = 0;
            if (b->attn_shortcut)
                for (int64_t i = 0; i < din; i++)
                    s += x[t * din + i] * b->attn_shortcut[i * dmid + o];
            else
                s = x[t * din + o];
            r[t * dmid + o] = s + tmp[o];
        }
        /* the MLP reads the same normed input in a parallel block */
        const double *mlp_in = h + t * din;
        int64_t mlp_d = din;
        if (!c->parallel_block) {
            mlp_d = dmid;
            norm(c, r + t * dmid, dmid, b->ffn_norm_w, b->ffn_norm_b, h2 + t * dmid);
            mlp_in = h2 + t * dmid;
        }
        matvec(b->w_up, b->b_up, mlp_in, mlp_d, F, u);
        if (c->gated_mlp) {
            matvec(b->w_gate, NULL, mlp_in, mlp_d, F, g);
            for (int64_t i = 0; i < F; i++)
                u[i] *= act(c->act, g[i]);
        } else {
            for (int64_t i = 0; i < F; i++)
                u[i] = act(c->act, u[i]);
        }
        matvec(b->w_down, b->b_down, u, F, dout, tmp);
        for (int64_t o = 0; o < dout; o++) {
            double s = 0;
            if (c->parallel_block)
                s = r[t * dmid + o];
            else if (b->mlp_shortcut)
                for (int64_t i = 0; i < dmid; i++)
                    s += r[t * dmid + i] * b->mlp_shortcut[i * dout + o];
            else
                s = r[t * dmid + o];
            out[t * dout + o] = s + tmp[o];
        }
    }
    free(h); free(q); free(k); free(v); free(att); free(r); free(h2); free(u); free(g);
    free(tmp); free(p);
}

void ref_logits(const sg_model *m, const sg_block *blocks, const int32_t *ids, int64_t n,
                double *logits)
{
    const sg_model_config *c = &m->cfg;
    int64_t D = c->dim, V = c->vocab_size;
    double *x = calloc(n * D, sizeof(double)), *y = calloc(n * D, sizeof(double));
    int64_t d = c->embed_dim;
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < d; i++)
            x[t * d + i] = m->tok_embd[(int64_t)ids[t] * d + i] +
                           (m->pos_embd ? m->pos_embd[(t + c->pos_offset) * d + i] : 0.0);
    for (int64_t l = 0; l < c->n_layers; l++) {
        block(c, &blocks[l], x, n, y);
        double *t = x;
        x = y;
        y = t;
    }
    d = c->head_in_dim;
    double *h = calloc(d, sizeof(double));
    for (int64_t t = 0; t < n; t++) {
        norm(c, x + t * d, d, m->out_norm_w, m->out_norm_b, h);
        matvec(m->lm_head, m->lm_head_b, h, d, V, logits + t * V);
    }
    free(h);
    free(x);
    free(y);
}
