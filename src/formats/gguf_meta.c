/* GGUF metadata -> sg_model_config, following llama.cpp's llama and qwen2
 * loaders: {arch}.* hyperparameters, defaults where llama.cpp has them,
 * biases and tied embeddings from which tensors are present. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "sg_error.h"

typedef struct {
    const sg_gguf *g;
    const char *arch;
} meta;

static const char *arch_key(const meta *m, const char *suffix, char *buf, size_t sz)
{
    snprintf(buf, sz, "%s.%s", m->arch, suffix);
    return buf;
}

/* {arch}.suffix as an integer in [1, max]; def < 0 makes it required. */
static int arch_int(const meta *m, const char *suffix, int64_t def, int64_t max, int64_t *out)
{
    char key[256];
    arch_key(m, suffix, key, sizeof key);
    if (!sg_gguf_has_key(m->g, key)) {
        if (def < 0)
            return sg_fail(SG_EMISSING, "%s: %s: metadata key missing", sg_gguf_path(m->g),
                           key);
        *out = def;
        return 0;
    }
    int err = sg_gguf_get_int(m->g, key, out);
    if (err)
        return err;
    if (*out < 1 || *out > max)
        return sg_fail(SG_EFORMAT, "%s: %s: value %lld is out of range", sg_gguf_path(m->g),
                       key, (long long)*out);
    return 0;
}

static int arch_float(const meta *m, const char *suffix, int required, double def,
                      double *out)
{
    char key[256];
    arch_key(m, suffix, key, sizeof key);
    if (!sg_gguf_has_key(m->g, key)) {
        if (required)
            return sg_fail(SG_EMISSING, "%s: %s: metadata key missing", sg_gguf_path(m->g),
                           key);
        *out = def;
        return 0;
    }
    return sg_gguf_get_float(m->g, key, out);
}

/* An optional token id: def if absent. */
static int token_id(const sg_gguf *g, const char *key, int32_t def, int32_t *out)
{
    int64_t v;
    if (!sg_gguf_has_key(g, key)) {
        *out = def;
        return 0;
    }
    int err = sg_gguf_get_int(g, key, &v);
    if (err)
        return err;
    if (v < -1 || v > INT32_MAX)
        return sg_fail(SG_EFORMAT, "%s: %s: token id %lld is out of range", sg_gguf_path(g),
                       key, (long long)v);
    *out = (int32_t)v;
    return 0;
}

static int has_tensor(const sg_gguf *g, const char *name) { return sg_gguf_find(g, name) != NULL; }

/* Rotary scaling: "linear" (positions divided by factor) or none. Llama-3
 * style scaling arrives as the rope_freqs.weight tensor instead (below). */
static int rope_scaling(const meta *m, sg_model_config *cfg)
{
    char key[256];
    const char *type = NULL;
    double factor = 0;
    int err;
    cfg->rope_scaling = SG_ROPE_SCALE_NONE;
    cfg->rope_factor = 1;
    if (sg_gguf_has_key(m->g, arch_key(m, "rope.scaling.type", key, sizeof key)) &&
        (err = sg_gguf_get_string(m->g, key, &type)))
        return err;
    if ((err = arch_float(m, "rope.scaling.factor", 0, 0, &factor)))
        return err;
    if (!type && factor == 0) {
        /* older converters: rope.scale_linear */
        if ((err = arch_float(m, "rope.scale_linear", 0, 0, &factor)))
            return err;
        if (factor != 0 && factor != 1)
            type = "linear";
    }
    if (!type || !strcmp(type, "none"))
        return 0;
    if (strcmp(type, "linear"))
        return sg_fail(SG_EUNSUPPORTED, "%s: %s: rope scaling \"%s\" is not supported (linear is)",
                       sg_gguf_path(m->g), arch_key(m, "rope.scaling.type", key, sizeof key),
                       type);
    if (!(factor > 0))
        return sg_fail(SG_EFORMAT, "%s: %s: linear rope scaling needs a positive factor",
                       sg_gguf_path(m->g), arch_key(m, "rope.scaling.factor", key, sizeof key));
    cfg->rope_scaling = SG_ROPE_SCALE_LINEAR;
    cfg->rope_factor = factor;
    return arch_int(m, "rope.scaling.original_context_length", cfg->max_positions, INT32_MAX,
                    &cfg->rope_original_max_positions);
}

/* rope_freqs.weight (rope_dim/2): per-frequency divisors, Llama-3 style. */
static int rope_freqs(const sg_gguf *g, sg_model_config *cfg)
{
    const sg_gguf_tensor *t = sg_gguf_find(g, "rope_freqs.weight");
    cfg->n_rope_freq_factors = 0;
    if (!t)
        return 0;
    int64_t n = cfg->rope_dim / 2;
    if (t->ndim != 1 || t->numel != n || n > (int64_t)(sizeof cfg->rope_freq_factors /
                                                      sizeof *cfg->rope_freq_factors))
        return sg_fail(SG_ESHAPE, "%s: rope_freqs.weight: %lld values, expected rope_dim/2 = %lld",
                       sg_gguf_path(g), (long long)t->numel, (long long)n);
    /* Reading does not change the file's state; the API is non-const only
     * so that a reader with I/O queues can be swapped in. */
    int err = sg_gguf_read_f32((sg_gguf *)g, t, cfg->rope_freq_factors);
    if (err)
        return err;
    cfg->n_rope_freq_factors = n;
    return 0;
}

/* SliceGPT output written by sg_gguf_save_model: slicegpt.* widths. */
static int sliced_widths(const sg_gguf *g, sg_model_config *cfg)
{
    int sliced = 0, err;
    int64_t v;
    if (!sg_gguf_has_key(g, "slicegpt.sliced"))
        return 0;
    if ((err = sg_gguf_get_bool(g, "slicegpt.sliced", &sliced)) || !sliced)
        return err;
    cfg->sliced = 1;
    if ((err = sg_gguf_get_int(g, "slicegpt.embed_dim", &v)))
        return err;
    cfg->embed_dim = v;
    if ((err = sg_gguf_get_int(g, "slicegpt.head_in_dim", &v)))
        return err;
    cfg->head_in_dim = v;
    static const char *keys[3] = {"slicegpt.d_in", "slicegpt.d_mid", "slicegpt.d_out"};
    int64_t *dst[3] = {cfg->d_in, cfg->d_mid, cfg->d_out};
    for (int k = 0; k < 3; k++) {
        int32_t *w;
        size_t n;
        if ((err = sg_gguf_get_int_array(g, keys[k], &w, &n)))
            return err;
        if ((int64_t)n != cfg->n_layers) {
            free(w);
            return sg_fail(SG_EFORMAT, "%s: %s: %zu widths for %lld layers", sg_gguf_path(g),
                           keys[k], n, (long long)cfg->n_layers);
        }
        for (size_t l = 0; l < n; l++)
            dst[k][l] = w[l];
        free(w);
    }
    return 0;
}

int sg_gguf_model_config(const sg_gguf *g, sg_model_config *cfg)
{
    const char *path = sg_gguf_path(g);
    meta m = {g, NULL};
    int err;
    memset(cfg, 0, sizeof *cfg);
    if ((err = sg_gguf_get_string(g, "general.architecture", &m.arch)))
        return err;
    int qwen2 = !strcmp(m.arch, "qwen2");
    if (strcmp(m.arch, "llama") && !qwen2)
        return sg_fail(SG_EUNSUPPORTED,
                       "%s: general.architecture: \"%s\" is not supported (llama and qwen2 are)",
                       path, m.arch);
    cfg->arch = SG_ARCH_LLAMA;
    cfg->norm = SG_NORM_RMS;
    cfg->act = SG_ACT_SILU;
    cfg->gated_mlp = 1;
    /* llama.cpp's converter permutes llama q/k rows so that RoPE rotates
     * adjacent pairs; qwen2 is converted unpermuted and run with NEOX
     * (rotate_half) RoPE. */
    cfg->rope = qwen2 ? SG_ROPE_HALF : SG_ROPE_PAIRS;

    if ((err = arch_int(&m, "embedding_length", -1, 1 << 20, &cfg->dim)) ||
        (err = arch_int(&m, "block_count", -1, SG_MAX_LAYERS, &cfg->n_layers)) ||
        (err = arch_int(&m, "feed_forward_length", -1, 1 << 22, &cfg->ffn_dim)) ||
        (err = arch_int(&m, "attention.head_count", -1, 1 << 16, &cfg->n_heads)) ||
        (err = arch_int(&m, "attention.head_count_kv", cfg->n_heads, 1 << 16,
                        &cfg->n_kv_heads)) ||
        (err = arch_int(&m, "context_length", -1, INT32_MAX, &cfg->max_positions)))
        return err;
    if ((err = arch_int(&m, "attention.key_length", cfg->dim / cfg->n_heads, 1 << 16,
                        &cfg->head_dim)))
        return err;
    int64_t value_len;
    if ((err = arch_int(&m, "attention.value_length", cfg->head_dim, 1 << 16, &value_len)))
        return err;
    if (value_len != cfg->head_dim)
        return sg_fail(SG_EUNSUPPORTED,
                       "%s: %s.attention.value_length %lld differs from key_length %lld",
                       path, m.arch, (long long)value_len, (long long)cfg->head_dim);
    if ((err = arch_int(&m, "rope.dimension_count", cfg->head_dim, 1 << 16, &cfg->rope_dim)) ||
        (err = arch_float(&m, "attention.layer_norm_rms_epsilon", 1, 0, &cfg->norm_eps)) ||
        (err = arch_float(&m, "rope.freq_base", 0, 10000.0, &cfg->rope_theta)))
        return err;

    /* vocab: explicit key, else the tokenizer's list, else the embedding rows */
    const char *const *tokens;
    size_t n_tokens;
    const sg_gguf_tensor *embd = sg_gguf_find(g, "token_embd.weight");
    char key[256];
    if (sg_gguf_has_key(g, arch_key(&m, "vocab_size", key, sizeof key))) {
        if ((err = arch_int(&m, "vocab_size", -1, 1 << 24, &cfg->vocab_size)))
            return err;
    } else if (sg_gguf_has_key(g, "tokenizer.ggml.tokens")) {
        if ((err = sg_gguf_get_string_array(g, "tokenizer.ggml.tokens", &tokens, &n_tokens)))
            return err;
        cfg->vocab_size = (int64_t)n_tokens;
    } else if (embd && embd->ndim == 2) {
        cfg->vocab_size = embd->ne[1];
    } else {
        return sg_fail(SG_EMISSING,
                       "%s: %s.vocab_size: no vocabulary size, tokenizer.ggml.tokens or "
                       "token_embd.weight",
                       path, m.arch);
    }

    if ((err = rope_scaling(&m, cfg)) || (err = rope_freqs(g, cfg)))
        return err;
    cfg->tied_embeddings = !has_tensor(g, "output.weight");
    cfg->qkv_bias = qwen2 || has_tensor(g, "blk.0.attn_q.bias");
    cfg->o_bias = has_tensor(g, "blk.0.attn_output.bias");
    cfg->mlp_bias = has_tensor(g, "blk.0.ffn_up.bias");
    cfg->lm_head_bias = has_tensor(g, "output.bias");
    if ((err = token_id(g, "tokenizer.ggml.bos_token_id", -1, &cfg->bos_id)) ||
        (err = token_id(g, "tokenizer.ggml.eos_token_id", -1, &cfg->eos_id)))
        return err;

    sg_config_set_unsliced(cfg);
    if ((err = sliced_widths(g, cfg)))
        return err;
    return sg_config_validate(cfg, path);
}
