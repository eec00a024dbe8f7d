#include "forward_ops.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sg_error.h"

/* Tokens per group, as forward.c: scratch stays bounded however large the
 * chunk, and a group always holds whole sequences. */
#define GROUP_TOKENS 4096

typedef struct {
    float *h, *q, *k, *v, *att, *up, *gate, *r; /* backend memory */
    double *inv_freq;                           /* host, (rope_dim / 2) */
} scratch;

static void scratch_release(sg_backend *be, scratch *s)
{
    float *bufs[] = {s->h, s->q, s->k, s->v, s->att, s->up, s->gate, s->r};
    for (size_t i = 0; i < sizeof bufs / sizeof *bufs; i++)
        if (bufs[i])
            be->ops->release(be, bufs[i]);
    free(s->inv_freq);
    memset(s, 0, sizeof *s);
}

static int scratch_alloc(sg_backend *be, scratch *s, const sg_model_config *c, int64_t g,
                         int attention)
{
    int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    struct { float **p; int64_t floats; } want[] = {
        {&s->h, g * c->dim},
        {&s->r, g * c->dim},
        {&s->up, g * c->ffn_dim},
        {&s->gate, c->gated_mlp ? g * c->ffn_dim : 0},
        {&s->q, attention ? g * qd : 0},
        {&s->k, attention ? g * kvd : 0},
        {&s->v, attention ? g * kvd : 0},
        {&s->att, attention ? g * qd : 0},
    };
    memset(s, 0, sizeof *s);
    int err = 0;
    for (size_t i = 0; i < sizeof want / sizeof *want && !err; i++)
        if (want[i].floats > 0)
            err = be->ops->alloc(be, want[i].floats * sizeof(float), (void **)want[i].p);
    if (!err && attention && c->rope != SG_ROPE_NONE) {
        s->inv_freq = malloc((c->rope_dim / 2 + 1) * sizeof(double));
        if (!s->inv_freq)
            err = sg_fail(-ENOMEM, "out of memory for rotary frequencies");
        else
            sg_rope_inv_freq(c, s->inv_freq);
    }
    if (err)
        scratch_release(be, s);
    return err;
}

/* y (t, n_out) = x (t, n_in)·Wᵀ (+ bias), or += with beta 1. */
static int linear(sg_backend *be, const float *x, int64_t t, int64_t n_in, const float *w,
                  const float *bias, int64_t n_out, float *y, float beta)
{
    int err = be->ops->sgemm(be, 0, 1, t, n_out, n_in, 1.0f, x, n_in, w, n_in, beta, y, n_out);
    return err || !bias ? err : be->ops->add(be, y, bias, t, n_out, 0);
}

/* y (g, n_out) = x (g, n_in)·S, or a copy when there is no shortcut. */
static int residual(sg_backend *be, const float *x, int64_t g, int64_t n_in, const float *sc,
                    int64_t n_out, float *y)
{
    if (sc)
        return be->ops->sgemm(be, 0, 0, g, n_out, n_in, 1.0f, x, n_in, sc, n_out, 0.0f, y,
                              n_out);
    return be->ops->copy(be, y, x, g * n_out * sizeof(float));
}

/* s->h = norm(x) for g rows of width d */
static int normed(sg_backend *be, const sg_model_config *c, scratch *s, const float *x, int64_t g,
                  int64_t d, const float *w, const float *b)
{
    int err = be->ops->copy(be, s->h, x, g * d * sizeof(float));
    return err ? err
               : be->ops->norm_rows(be, s->h, g, d, c->norm, c->norm_dim, c->norm_eps, w, b);
}

/* s->att (g, nh·hd) = attention over sequences [s0, s1) of the normed s->h */
static int attention(sg_backend *be, const sg_model_config *c, const sg_block *b, scratch *s,
                     const sg_seqs *seqs, int64_t s0, int64_t s1, int64_t g)
{
    int64_t nh = c->n_heads, nkv = c->n_kv_heads, hd = c->head_dim;
    int64_t qd = nh * hd, kvd = nkv * hd, base = seqs->offsets[s0];
    int err = linear(be, s->h, g, b->d_in, b->wq, b->bq, qd, s->q, 0.0f);
    err = err ? err : linear(be, s->h, g, b->d_in, b->wk, b->bk, kvd, s->k, 0.0f);
    err = err ? err : linear(be, s->h, g, b->d_in, b->wv, b->bv, kvd, s->v, 0.0f);
    for (int64_t q = s0; q < s1 && !err; q++) {
        int64_t off = seqs->offsets[q] - base, n = seqs->offsets[q + 1] - seqs->offsets[q];
        if (c->rope != SG_ROPE_NONE) {
            err = be->ops->rope(be, s->q + off * qd, n, nh, hd, c->rope_dim, c->rope, 0,
                                s->inv_freq);
            err = err ? err
                      : be->ops->rope(be, s->k + off * kvd, n, nkv, hd, c->rope_dim, c->rope, 0,
                                      s->inv_freq);
        }
        err = err ? err
                  : be->ops->attention(be, s->q + off * qd, s->k + off * kvd, s->v + off * kvd,
                                       s->att + off * qd, n, nh, nkv, hd);
    }
    return err;
}

/* h (g, d_ffn) = the MLP's hidden units of the normed s->h of width d,
 * act(s->h·W_upᵀ + b) (times the gate, through s->gate, where there is one) */
static int hidden_units(sg_backend *be, const sg_model_config *c, const sg_block *b, scratch *s,
                        int64_t g, int64_t d, float *h)
{
    int64_t f = b->d_ffn;
    int err = linear(be, s->h, g, d, b->w_up, b->b_up, f, h, 0.0f);
    if (!err && c->gated_mlp)
        err = linear(be, s->h, g, d, b->w_gate, NULL, f, s->gate, 0.0f);
    return err ? err : be->ops->activation(be, c->act, h, c->gated_mlp ? s->gate : NULL, g * f);
}

/* y (g, d_out) += MLP(s->h), s->h of width d */
static int mlp(sg_backend *be, const sg_model_config *c, const sg_block *b, scratch *s, int64_t g,
               int64_t d, float *y)
{
    int err = hidden_units(be, c, b, s, g, d, s->up);
    return err ? err : linear(be, s->up, g, b->d_ffn, b->w_down, b->b_down, b->d_out, y, 1.0f);
}

/* xo (g, d_out) = r·S_mlp + MLP(norm(r)) */
static int mlp_half(sg_backend *be, const sg_model_config *c, const sg_block *b, scratch *s,
                    const float *r, int64_t g, float *xo)
{
    int err = normed(be, c, s, r, g, b->d_mid, b->ffn_norm_w, b->ffn_norm_b);
    err = err ? err : residual(be, r, g, b->d_mid, b->mlp_shortcut, b->d_out, xo);
    return err ? err : mlp(be, c, b, s, g, b->d_mid, xo);
}

int sg_block_forward_ops(sg_backend *be, const sg_model_config *c, const sg_block *b,
                         const float *x_in, float *x_out, float *mid, const sg_seqs *seqs)
{
    int64_t qd = c->n_heads * c->head_dim, cap = sg_seqs_group_cap(seqs, GROUP_TOKENS);
    if (cap <= 0)
        return 0;
    scratch s;
    int err = scratch_alloc(be, &s, c, cap, 1);
    for (int64_t s0 = 0; s0 < seqs->n_seq && !err;) {
        int64_t s1 = sg_seqs_group_end(seqs, s0, cap);
        int64_t t0 = seqs->offsets[s0], g = seqs->offsets[s1] - t0;
        const float *xi = x_in + t0 * b->d_in;
        err = normed(be, c, &s, xi, g, b->d_in, b->attn_norm_w, b->attn_norm_b);
        err = err ? err : attention(be, c, b, &s, seqs, s0, s1, g);
        if (c->parallel_block) {
            /* x_out = x_in·S + attn(h) + mlp(h), both reading the same h */
            err = err ? err : residual(be, xi, g, b->d_in, b->attn_shortcut, b->d_out, s.r);
            err = err ? err : linear(be, s.att, g, qd, b->wo, b->bo, b->d_out, s.r, 1.0f);
            err = err ? err : mlp(be, c, b, &s, g, b->d_in, s.r);
            if (!err && x_out)
                err = be->ops->copy(be, x_out + t0 * b->d_out, s.r, g * b->d_out * sizeof(float));
        } else {
            err = err ? err : residual(be, xi, g, b->d_in, b->attn_shortcut, b->d_mid, s.r);
            err = err ? err : linear(be, s.att, g, qd, b->wo, b->bo, b->d_mid, s.r, 1.0f);
            if (!err && mid)
                err = be->ops->copy(be, mid + t0 * b->d_mid, s.r, g * b->d_mid * sizeof(float));
            if (!err && x_out)
                err = mlp_half(be, c, b, &s, s.r, g, x_out + t0 * b->d_out);
        }
        s0 = s1;
    }
    scratch_release(be, &s);
    return err;
}

int sg_block_forward_mlp_ops(sg_backend *be, const sg_model_config *c, const sg_block *b,
                             const float *mid, float *x_out, int64_t tokens)
{
    if (tokens <= 0)
        return 0;
    scratch s;
    int err = scratch_alloc(be, &s, c, tokens < GROUP_TOKENS ? tokens : GROUP_TOKENS, 0);
    for (int64_t t0 = 0; t0 < tokens && !err; t0 += GROUP_TOKENS) {
        int64_t g = tokens - t0 < GROUP_TOKENS ? tokens - t0 : GROUP_TOKENS;
        err = mlp_half(be, c, b, &s, mid + t0 * b->d_mid, g, x_out + t0 * b->d_out);
    }
    scratch_release(be, &s);
    return err;
}

int sg_block_mlp_hidden_ops(sg_backend *be, const sg_model_config *c, const sg_block *b,
                            const float *x, int64_t tokens, float *hidden)
{
    if (tokens <= 0)
        return 0;
    int parallel = c->parallel_block;
    int64_t d = parallel ? b->d_in : b->d_mid, f = b->d_ffn;
    const float *nw = parallel ? b->attn_norm_w : b->ffn_norm_w;
    const float *nb = parallel ? b->attn_norm_b : b->ffn_norm_b;
    scratch s;
    int err = scratch_alloc(be, &s, c, tokens < GROUP_TOKENS ? tokens : GROUP_TOKENS, 0);
    for (int64_t t0 = 0; t0 < tokens && !err; t0 += GROUP_TOKENS) {
        int64_t g = tokens - t0 < GROUP_TOKENS ? tokens - t0 : GROUP_TOKENS;
        err = normed(be, c, &s, x + t0 * d, g, d, nw, nb);
        err = err ? err : hidden_units(be, c, b, &s, g, d, hidden + t0 * f);
    }
    scratch_release(be, &s);
    return err;
}

int sg_block_mlp_down_ops(sg_backend *be, const sg_block *b, const float *hidden,
                          const float *mid, int64_t tokens, float *x_out)
{
    if (tokens <= 0)
        return 0;
    int err = residual(be, mid, tokens, b->d_mid, b->mlp_shortcut, b->d_out, x_out);
    return err ? err
               : linear(be, hidden, tokens, b->d_ffn, b->w_down, b->b_down, b->d_out, x_out, 1.0f);
}

/* ---- a block in backend memory ---- */

#define MAX_TENSORS 20

/* Every tensor slot of a block with its size in floats, from its widths:
 * what the forward pass reads (a parallel block's attention output and
 * MLP read and write at d_out, which equals d_mid whenever it runs). */
static int block_slots(const sg_model_config *c, sg_block *b, float ***slot, int64_t *floats)
{
    int64_t qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim, F = b->d_ffn;
    int64_t in = b->d_in, mid = c->parallel_block ? b->d_out : b->d_mid, out = b->d_out;
    int64_t mlp_in = c->parallel_block ? in : mid;
    struct { float **p; int64_t n; } all[] = {
        {&b->attn_norm_w, in}, {&b->attn_norm_b, in},
        {&b->wq, qd * in}, {&b->bq, qd},
        {&b->wk, kvd * in}, {&b->bk, kvd},
        {&b->wv, kvd * in}, {&b->bv, kvd},
        {&b->wo, mid * qd}, {&b->bo, mid},
        {&b->attn_shortcut, in * mid},
        {&b->ffn_norm_w, mid}, {&b->ffn_norm_b, mid},
        {&b->w_gate, F * mlp_in},
        {&b->w_up, F * mlp_in}, {&b->b_up, F},
        {&b->w_down, out * F}, {&b->b_down, out},
        {&b->mlp_shortcut, mid * out},
    };
    int n = 0;
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) {
        slot[n] = all[i].p;
        floats[n++] = all[i].n;
    }
    return n;
}

enum { TO_BACKEND, TO_BACKEND_ASYNC, TO_HOST };

/* to = from's tensors copied the given way into new buffers (backend
 * memory, or malloc'd host memory for TO_HOST), shapes from from's widths */
static int copy_block(sg_backend *be, const sg_model_config *c, const sg_block *from,
                      sg_block *to, int way)
{
    *to = *from;
    if (be->ops->host_memory)
        return 0;
    float **slot[MAX_TENSORS], **src[MAX_TENSORS];
    int64_t floats[MAX_TENSORS];
    sg_block copy = *from;
    int n = block_slots(c, to, slot, floats);
    block_slots(c, &copy, src, floats);
    for (int i = 0; i < n; i++)
        *slot[i] = NULL;
    int err = 0;
    for (int i = 0; i < n && !err; i++) {
        size_t bytes = floats[i] * sizeof(float);
        if (!*src[i])
            continue;
        if (way == TO_HOST) {
            if (!(*slot[i] = malloc(bytes)))
                err = sg_fail(-ENOMEM, "out of memory for a block of %lld-wide tensors",
                              (long long)c->dim);
            err = err ? err : be->ops->download(be, *slot[i], *src[i], bytes);
        } else {
            err = be->ops->alloc(be, bytes, (void **)slot[i]);
            if (!err)
                err = (way == TO_BACKEND_ASYNC ? be->ops->upload_async
                                               : be->ops->upload)(be, *slot[i], *src[i], bytes);
        }
    }
    if (err && way == TO_BACKEND_ASYNC)
        sg_backend_drain(be); /* copies already queued land before their buffers go */
    if (err && way == TO_HOST)
        sg_block_free(to);
    else if (err)
        sg_block_backend_release(be, to);
    return err;
}

int sg_block_to_backend(sg_backend *be, const sg_model_config *c, const sg_block *host,
                        sg_block *dev)
{
    return copy_block(be, c, host, dev, TO_BACKEND);
}

int sg_block_to_backend_async(sg_backend *be, const sg_model_config *c, const sg_block *host,
                              sg_block *dev)
{
    return copy_block(be, c, host, dev, TO_BACKEND_ASYNC);
}

int sg_block_pin(sg_backend *be, const sg_model_config *c, sg_block *b, void **arena)
{
    float **slot[MAX_TENSORS];
    int64_t floats[MAX_TENSORS], total = 0;
    int n = block_slots(c, b, slot, floats);
    for (int i = 0; i < n; i++)
        if (*slot[i])
            total += floats[i];
    int err = be->ops->host_alloc(be, total * sizeof(float), arena);
    if (err)
        return err;
    float *at = *arena;
    for (int i = 0; i < n; i++)
        if (*slot[i]) {
            memcpy(at, *slot[i], floats[i] * sizeof(float));
            free(*slot[i]);
            *slot[i] = at;
            at += floats[i];
        }
    return 0;
}

int sg_block_from_backend(sg_backend *be, const sg_model_config *c, const sg_block *dev,
                          sg_block *host)
{
    return copy_block(be, c, dev, host, TO_HOST);
}

void sg_block_backend_release(sg_backend *be, sg_block *dev)
{
    if (!be->ops->host_memory) {
        float **slot[MAX_TENSORS];
        int64_t floats[MAX_TENSORS];
        sg_model_config any = {0};
        int n = block_slots(&any, dev, slot, floats);
        for (int i = 0; i < n; i++)
            if (*slot[i])
                be->ops->release(be, *slot[i]);
    }
    memset(dev, 0, sizeof *dev);
}

void sg_block_drop(sg_backend *be, sg_block *b)
{
    if (be->ops->host_memory)
        sg_block_free(b); /* its tensors are the host buffers it was loaded into */
    else
        sg_block_backend_release(be, b);
}

int sg_block_to_host(sg_backend *be, const sg_model_config *cfg, sg_block *b)
{
    if (be->ops->host_memory)
        return 0;
    sg_block host;
    int err = sg_block_from_backend(be, cfg, b, &host);
    if (err)
        return err;
    sg_block_backend_release(be, b);
    *b = host;
    return 0;
}
