/* Synthetic models: see synth_model.h for the value distributions and why
 * each tensor has its own random stream. */
#include "synth_model.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hf_save.h"
#include "sg_error.h"

/* splitmix64 (Steele, Lea, Flood 2014): a 64-bit counter through a strong
 * mixer; every seed gives a full-period, well-distributed stream. */
static uint64_t splitmix64(uint64_t *state)
{
    uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t fnv1a64(const char *s)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
    return h;
}

/* Uniform in (0, 1): the top 53 bits, offset by half a step so log() is finite. */
static double uniform01(uint64_t *state)
{
    return ((double)(splitmix64(state) >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}

/* Box-Muller: two uniforms give two independent standard normals. */
static void fill_normal(uint64_t *state, float *dst, int64_t n, double scale, double shift)
{
    for (int64_t i = 0; i < n; i += 2) {
        double r = sqrt(-2.0 * log(uniform01(state))), a = 2.0 * M_PI * uniform01(state);
        dst[i] = (float)(shift + scale * r * cos(a));
        if (i + 1 < n)
            dst[i + 1] = (float)(shift + scale * r * sin(a));
    }
}

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

int sg_synth_fill(uint64_t seed, const sg_named_tensor *d, float *dst)
{
    uint64_t state = seed ^ fnv1a64(d->name);
    splitmix64(&state); /* decorrelate nearby seeds before the first value */
    int64_t n = d->ndim == 2 ? d->shape[0] * d->shape[1] : d->shape[0];
    if (d->ndim == 2)
        fill_normal(&state, dst, n, 1.0 / sqrt((double)d->shape[1]), 0.0);
    else if (strstr(d->name, "norm") && ends_with(d->name, ".weight"))
        fill_normal(&state, dst, n, 0.1, 1.0);
    else if (ends_with(d->name, ".bias"))
        fill_normal(&state, dst, n, 0.1, 0.0);
    else
        return sg_fail(SG_EARG, "%s: no synthetic distribution for this tensor", d->name);
    return 0;
}

int sg_synth_config(sg_arch arch, int64_t dim, int64_t n_layers, int64_t n_heads,
                    int64_t n_kv_heads, int64_t head_dim, int64_t ffn_dim, int64_t vocab,
                    sg_model_config *c)
{
    memset(c, 0, sizeof *c);
    if (n_heads <= 0 || (head_dim <= 0 && dim % n_heads))
        return sg_fail(SG_EARG, "synthetic %s: %lld heads do not divide dim %lld",
                       sg_arch_name(arch), (long long)n_heads, (long long)dim);
    c->arch = arch;
    c->dim = dim;
    c->n_layers = n_layers;
    c->n_heads = n_heads;
    c->n_kv_heads = n_kv_heads > 0 ? n_kv_heads : n_heads;
    c->head_dim = head_dim > 0 ? head_dim : dim / n_heads;
    c->ffn_dim = ffn_dim;
    c->vocab_size = vocab;
    c->max_positions = 2048;
    c->norm_eps = 1e-5;
    c->rope_theta = 10000.0;
    c->bos_id = 1;
    c->eos_id = 2;
    switch (arch) {
    case SG_ARCH_LLAMA:
        c->gated_mlp = 1;
        c->act = SG_ACT_SILU;
        c->norm = SG_NORM_RMS;
        c->rope = SG_ROPE_HALF;
        c->rope_dim = c->head_dim;
        break;
    case SG_ARCH_OPT:
        if (c->n_kv_heads != n_heads)
            return sg_fail(SG_EARG, "synthetic opt: kv heads (%lld) must equal heads (%lld)",
                           (long long)c->n_kv_heads, (long long)n_heads);
        c->act = SG_ACT_RELU;
        c->norm = SG_NORM_LAYER;
        c->rope = SG_ROPE_NONE;
        c->pos_offset = 2;
        c->tied_embeddings = 1;
        c->qkv_bias = c->o_bias = c->mlp_bias = 1;
        break;
    case SG_ARCH_PHI:
        c->act = SG_ACT_GELU_TANH;
        c->norm = SG_NORM_LAYER;
        c->rope = SG_ROPE_HALF;
        c->rope_dim = c->head_dim / 2 & ~(int64_t)1;
        c->parallel_block = 1;
        c->qkv_bias = c->o_bias = c->mlp_bias = c->lm_head_bias = 1;
        break;
    default:
        return sg_fail(SG_EARG, "synthetic model: unknown architecture %d", (int)arch);
    }
    sg_config_set_unsliced(c);
    return sg_config_validate(c, "synthetic model");
}

typedef struct {
    sg_named_tensor *t;
    int n, cap;
} tensor_list;

static int add(tensor_list *l, const char *name, int64_t rows, int64_t cols)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        sg_named_tensor *t = realloc(l->t, (size_t)cap * sizeof *t);
        if (!t)
            return sg_fail(-ENOMEM, "synthetic model: out of memory");
        l->t = t;
        l->cap = cap;
    }
    sg_named_tensor *t = &l->t[l->n];
    memset(t, 0, sizeof *t);
    if (!(t->name = strdup(name)))
        return sg_fail(-ENOMEM, "synthetic model: out of memory");
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    l->n++;
    return 0;
}

/* A linear layer (rows, cols) with an optional bias (rows). */
static int add_linear(tensor_list *l, int64_t layer, const char *stem, int64_t rows,
                      int64_t cols, int bias)
{
    char name[96];
    snprintf(name, sizeof name, "blk.%lld.%s.weight", (long long)layer, stem);
    int rc = add(l, name, rows, cols);
    snprintf(name, sizeof name, "blk.%lld.%s.bias", (long long)layer, stem);
    return rc || !bias ? rc : add(l, name, rows, 0);
}

/* A norm of width D: weight, plus bias for LayerNorm. prefix "blk.N." or "". */
static int add_norm(tensor_list *l, const sg_model_config *c, const char *prefix,
                    const char *stem)
{
    char name[96];
    snprintf(name, sizeof name, "%s%s.weight", prefix, stem);
    int rc = add(l, name, c->dim, 0);
    snprintf(name, sizeof name, "%s%s.bias", prefix, stem);
    return rc || c->norm != SG_NORM_LAYER ? rc : add(l, name, c->dim, 0);
}

int sg_synth_tensor_list(const sg_model_config *c, sg_named_tensor **out, int *n)
{
    *out = NULL;
    *n = 0;
    if (c->sliced)
        return sg_fail(SG_EUNSUPPORTED, "synthetic model: sliced layouts are not generated");
    int64_t D = c->dim, F = c->ffn_dim, V = c->vocab_size;
    int64_t q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    tensor_list l = {0};
    int rc = add(&l, "token_embd.weight", V, D);
    if (rc == 0 && c->rope == SG_ROPE_NONE)
        rc = add(&l, "position_embd.weight", c->max_positions + c->pos_offset, D);
    for (int64_t b = 0; b < c->n_layers && rc == 0; b++) {
        char prefix[32];
        snprintf(prefix, sizeof prefix, "blk.%lld.", (long long)b);
        if ((rc = add_norm(&l, c, prefix, "attn_norm")) ||
            (rc = add_linear(&l, b, "attn_q", q_dim, D, c->qkv_bias)) ||
            (rc = add_linear(&l, b, "attn_k", kv_dim, D, c->qkv_bias)) ||
            (rc = add_linear(&l, b, "attn_v", kv_dim, D, c->qkv_bias)) ||
            (rc = add_linear(&l, b, "attn_output", D, q_dim, c->o_bias)))
            break;
        /* parallel blocks (Phi-2) feed the MLP from the attention norm */
        if (!c->parallel_block && (rc = add_norm(&l, c, prefix, "ffn_norm")))
            break;
        if ((c->gated_mlp && (rc = add_linear(&l, b, "ffn_gate", F, D, c->mlp_bias))) ||
            (rc = add_linear(&l, b, "ffn_up", F, D, c->mlp_bias)) ||
            (rc = add_linear(&l, b, "ffn_down", D, F, c->mlp_bias)))
            break;
    }
    if (rc == 0)
        rc = add_norm(&l, c, "", "output_norm");
    if (rc == 0 && !c->tied_embeddings)
        rc = add(&l, "output.weight", V, D);
    if (rc == 0 && c->lm_head_bias)
        rc = add(&l, "output.bias", V, 0);
    if (rc) {
        sg_synth_free(l.t, l.n);
        return rc;
    }
    *out = l.t;
    *n = l.n;
    return 0;
}

void sg_synth_free(sg_named_tensor *t, int n)
{
    if (!t)
        return;
    for (int i = 0; i < n; i++) {
        free((char *)t[i].name);
        free((float *)t[i].data);
    }
    free(t);
}

int sg_synth_model(const sg_model_config *cfg, uint64_t seed, sg_named_tensor **out, int *n)
{
    int rc = sg_synth_tensor_list(cfg, out, n);
    for (int i = 0; i < *n && rc == 0; i++) {
        sg_named_tensor *t = &(*out)[i];
        int64_t numel = t->ndim == 2 ? t->shape[0] * t->shape[1] : t->shape[0];
        float *data = malloc((size_t)numel * sizeof *data);
        if (!data)
            rc = sg_fail(-ENOMEM, "%s: out of memory for %lld floats", t->name,
                         (long long)numel);
        else
            rc = sg_synth_fill(seed, t, data);
        t->data = data;
    }
    if (rc) {
        sg_synth_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

static int fill_cb(void *ctx, const sg_named_tensor *desc, float *dst)
{
    return sg_synth_fill(*(const uint64_t *)ctx, desc, dst);
}

int sg_synth_save_hf(const char *outdir, const sg_model_config *cfg, uint64_t seed,
                     sg_dtype dtype, int n_shards)
{
    sg_named_tensor *list;
    int n;
    int rc = sg_synth_tensor_list(cfg, &list, &n);
    if (rc)
        return rc;
    rc = sg_hf_save_stream(outdir, cfg, 0.0, list, n, dtype, n_shards, fill_cb, &seed);
    sg_synth_free(list, n);
    return rc;
}
