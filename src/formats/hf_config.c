/* Hugging Face config.json <-> sg_model_config.
 *
 * Defaults follow the transformers Config classes (LlamaConfig, OPTConfig,
 * PhiConfig) so that a key left out means what it means there. A key whose
 * value is JSON null counts as absent, except bos/eos token ids where null
 * means "no such token" (-1).
 *
 * Our own additions, ignored by transformers:
 *   "slicegpt": {"sparsity", "norm_dim", "embed_dim", "head_in_dim",
 *                "norm": "rms"|"layer", "rope_layout": "half"|"pairs",
 *                "qkv_bias", "o_bias", "mlp_bias", "lm_head_bias" (booleans,
 *                overriding the architecture's: folding adds biases),
 *                "layers": [{"d_in", "d_mid", "d_out"}, ...]}
 *   "rope_layout": "pairs"      a model whose q/k rows rotate adjacent pairs
 *   "rope_freq_factors": [...]  per-frequency RoPE divisors (GGUF rope_freqs)
 *   "layer_norm_eps" on OPT     (transformers hard-codes 1e-5) */
#include "hf_config.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hf_save.h"
#include "read_file.h"
#include "sg_error.h"

#define MAX_CONFIG_BYTES (16 << 20)

/* ---------------------------------------------------------------- reading */

typedef struct {
    const cJSON *obj;
    const char *path;
    const char *where; /* "" or "slicegpt." etc., for messages */
} jsec;

static const cJSON *j_get(jsec s, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s.obj, key);
    return cJSON_IsNull(v) ? NULL : v;
}

static int j_double(jsec s, const char *key, int required, double def, double *out)
{
    const cJSON *v = j_get(s, key);
    if (!v) {
        if (required)
            return sg_fail(SG_EMISSING, "%s: %s%s: required key is missing", s.path, s.where,
                           key);
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return sg_fail(SG_EFORMAT, "%s: %s%s: expected a number", s.path, s.where, key);
    *out = v->valuedouble;
    return 0;
}

static int j_int(jsec s, const char *key, int required, int64_t def, int64_t *out)
{
    double d;
    int rc = j_double(s, key, required, (double)def, &d);
    if (rc)
        return rc;
    if (d != floor(d) || fabs(d) > 9007199254740992.0)
        return sg_fail(SG_EFORMAT, "%s: %s%s: expected an integer", s.path, s.where, key);
    *out = (int64_t)d;
    return 0;
}

static int j_bool(jsec s, const char *key, int def, int *out)
{
    const cJSON *v = j_get(s, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsBool(v))
        return sg_fail(SG_EFORMAT, "%s: %s%s: expected true or false", s.path, s.where, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

static int j_str(jsec s, const char *key, const char *def, const char **out)
{
    const cJSON *v = j_get(s, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsString(v))
        return sg_fail(SG_EFORMAT, "%s: %s%s: expected a string", s.path, s.where, key);
    *out = v->valuestring;
    return 0;
}

/* bos/eos: an id, a list of ids (the first is used), or null (none). */
static int j_token(jsec s, const char *key, int32_t def, int32_t *out)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(s.obj, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (cJSON_IsNull(v)) {
        *out = -1;
        return 0;
    }
    if (cJSON_IsArray(v))
        v = cJSON_GetArrayItem(v, 0);
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) ||
        v->valuedouble < 0 || v->valuedouble > 2147483647.0)
        return sg_fail(SG_EFORMAT, "%s: %s%s: expected a token id", s.path, s.where, key);
    *out = (int32_t)v->valuedouble;
    return 0;
}

static int parse_act(jsec s, const char *key, const char *def, sg_act *act)
{
    const char *name;
    int rc = j_str(s, key, def, &name);
    if (rc)
        return rc;
    if (!strcmp(name, "silu") || !strcmp(name, "swish"))
        *act = SG_ACT_SILU;
    else if (!strcmp(name, "relu"))
        *act = SG_ACT_RELU;
    else if (!strcmp(name, "gelu_new") || !strcmp(name, "gelu_pytorch_tanh"))
        *act = SG_ACT_GELU_TANH;
    else if (!strcmp(name, "gelu"))
        *act = SG_ACT_GELU;
    else
        return sg_fail(SG_EUNSUPPORTED, "%s: %s: activation \"%s\" is not supported", s.path,
                       key, name);
    return 0;
}

/* head_dim = hidden / heads unless given; heads must divide hidden then. */
static int parse_head_dim(jsec s, sg_model_config *c, int allow_key)
{
    int64_t hd = 0;
    int rc = allow_key ? j_int(s, "head_dim", 0, 0, &hd) : 0;
    if (rc)
        return rc;
    if (hd > 0) {
        c->head_dim = hd;
        return 0;
    }
    if (c->n_heads <= 0)
        return sg_fail(SG_EFORMAT, "%s: num_attention_heads: %lld: must be at least 1", s.path,
                       (long long)c->n_heads);
    if (c->dim % c->n_heads)
        return sg_fail(SG_EFORMAT,
                       "%s: num_attention_heads: %lld heads do not divide hidden_size %lld",
                       s.path, (long long)c->n_heads, (long long)c->dim);
    c->head_dim = c->dim / c->n_heads;
    return 0;
}

/* HF computes int(partial_rotary_factor * head_dim): truncation, kept. */
static int parse_rope_dim(jsec s, sg_model_config *c, double def_factor)
{
    double f;
    int rc = j_double(s, "partial_rotary_factor", 0, def_factor, &f);
    if (rc)
        return rc;
    if (!(f > 0 && f <= 1))
        return sg_fail(SG_EFORMAT, "%s: partial_rotary_factor: %g is not in (0, 1]", s.path,
                       f);
    c->rope_dim = (int64_t)(f * (double)c->head_dim);
    return 0;
}

static int parse_rope_scaling(jsec s, sg_model_config *c)
{
    const cJSON *rs = j_get(s, "rope_scaling");
    c->rope_scaling = SG_ROPE_SCALE_NONE;
    if (!rs)
        return 0;
    if (!cJSON_IsObject(rs))
        return sg_fail(SG_EFORMAT, "%s: rope_scaling: expected an object", s.path);
    jsec r = {rs, s.path, "rope_scaling."};
    const char *type;
    int rc = j_str(r, "rope_type", NULL, &type);
    if (!rc && !type)
        rc = j_str(r, "type", "default", &type);
    if (rc)
        return rc;
    if (!strcmp(type, "default"))
        return 0;
    if (!strcmp(type, "linear")) {
        c->rope_scaling = SG_ROPE_SCALE_LINEAR;
        return j_double(r, "factor", 1, 0, &c->rope_factor);
    }
    if (!strcmp(type, "llama3")) {
        c->rope_scaling = SG_ROPE_SCALE_LLAMA3;
        if ((rc = j_double(r, "factor", 1, 0, &c->rope_factor)) ||
            (rc = j_double(r, "low_freq_factor", 1, 0, &c->rope_low_freq_factor)) ||
            (rc = j_double(r, "high_freq_factor", 1, 0, &c->rope_high_freq_factor)) ||
            (rc = j_int(r, "original_max_position_embeddings", 1, 0,
                        &c->rope_original_max_positions)))
            return rc;
        if (!(c->rope_high_freq_factor > c->rope_low_freq_factor) || c->rope_factor <= 0)
            return sg_fail(SG_EFORMAT,
                           "%s: rope_scaling: llama3 needs factor > 0 and high_freq_factor > "
                           "low_freq_factor", s.path);
        return 0;
    }
    return sg_fail(SG_EUNSUPPORTED, "%s: rope_scaling: type \"%s\" is not supported", s.path,
                   type);
}

static int parse_rope_layout(jsec s, sg_model_config *c)
{
    const char *layout;
    int rc = j_str(s, "rope_layout", NULL, &layout);
    if (rc || !layout)
        return rc;
    if (c->rope == SG_ROPE_NONE)
        return sg_fail(SG_EFORMAT, "%s: %srope_layout: this model has no rotary embedding",
                       s.path, s.where);
    if (!strcmp(layout, "half"))
        c->rope = SG_ROPE_HALF;
    else if (!strcmp(layout, "pairs"))
        c->rope = SG_ROPE_PAIRS;
    else
        return sg_fail(SG_EFORMAT, "%s: %srope_layout: \"%s\" is not \"half\" or \"pairs\"",
                       s.path, s.where, layout);
    return 0;
}

static int parse_freq_factors(jsec s, sg_model_config *c)
{
    const cJSON *a = j_get(s, "rope_freq_factors");
    if (!a)
        return 0;
    int n = cJSON_IsArray(a) ? cJSON_GetArraySize(a) : -1;
    if (n < 0 || n > (int)(sizeof c->rope_freq_factors / sizeof c->rope_freq_factors[0]))
        return sg_fail(SG_EFORMAT, "%s: %srope_freq_factors: expected a list of at most %zu "
                       "numbers", s.path, s.where,
                       sizeof c->rope_freq_factors / sizeof c->rope_freq_factors[0]);
    int i = 0;
    const cJSON *v;
    cJSON_ArrayForEach(v, a)
    {
        if (!cJSON_IsNumber(v) || !(v->valuedouble > 0))
            return sg_fail(SG_EFORMAT, "%s: %srope_freq_factors[%d]: expected a positive "
                           "number", s.path, s.where, i);
        c->rope_freq_factors[i++] = (float)v->valuedouble;
    }
    c->n_rope_freq_factors = n;
    return 0;
}

/* Keys common to the rotary architectures. */
static int parse_common(jsec s, sg_model_config *c)
{
    int rc;
    if ((rc = j_int(s, "hidden_size", 1, 0, &c->dim)) ||
        (rc = j_int(s, "num_hidden_layers", 1, 0, &c->n_layers)) ||
        (rc = j_int(s, "num_attention_heads", 1, 0, &c->n_heads)) ||
        (rc = j_int(s, "num_key_value_heads", 0, c->n_heads, &c->n_kv_heads)) ||
        (rc = j_int(s, "intermediate_size", 1, 0, &c->ffn_dim)) ||
        (rc = j_int(s, "vocab_size", 1, 0, &c->vocab_size)) ||
        (rc = j_int(s, "max_position_embeddings", 0, 2048, &c->max_positions)) ||
        (rc = j_double(s, "rope_theta", 0, 10000.0, &c->rope_theta)) ||
        (rc = j_token(s, "bos_token_id", 1, &c->bos_id)) ||
        (rc = j_token(s, "eos_token_id", 2, &c->eos_id)))
        return rc;
    return parse_rope_scaling(s, c);
}

static int load_llama(jsec s, const char *model_type, sg_model_config *c)
{
    int rc, attn_bias, sliding = 0;
    c->arch = SG_ARCH_LLAMA;
    if ((rc = parse_common(s, c)) || (rc = parse_head_dim(s, c, 1)) ||
        (rc = parse_rope_dim(s, c, 1.0)) ||
        (rc = j_double(s, "rms_norm_eps", 0, 1e-6, &c->norm_eps)) ||
        (rc = parse_act(s, "hidden_act", "silu", &c->act)) ||
        (rc = j_bool(s, "tie_word_embeddings", 0, &c->tied_embeddings)) ||
        (rc = j_bool(s, "attention_bias", 0, &attn_bias)) ||
        (rc = j_bool(s, "mlp_bias", 0, &c->mlp_bias)) ||
        (rc = j_bool(s, "use_sliding_window", 0, &sliding)))
        return rc;
    /* Qwen2's sliding window is off unless use_sliding_window; Mistral's
     * sliding_window only matters past it, which calibration does not reach. */
    if (sliding)
        return sg_fail(SG_EUNSUPPORTED, "%s: use_sliding_window: sliding-window attention "
                       "is not supported", s.path);
    c->gated_mlp = 1;
    c->norm = SG_NORM_RMS;
    c->rope = SG_ROPE_HALF;
    if (!strcmp(model_type, "qwen2")) {
        /* Qwen2: q, k, v carry biases, o_proj does not */
        c->qkv_bias = 1;
        c->o_bias = 0;
    } else {
        c->qkv_bias = c->o_bias = attn_bias;
    }
    return 0;
}

static int load_opt(jsec s, sg_model_config *c)
{
    int rc, pre_norm, bias, affine;
    int64_t proj;
    c->arch = SG_ARCH_OPT;
    if ((rc = j_int(s, "hidden_size", 1, 0, &c->dim)) ||
        (rc = j_int(s, "num_hidden_layers", 1, 0, &c->n_layers)) ||
        (rc = j_int(s, "num_attention_heads", 1, 0, &c->n_heads)) ||
        (rc = j_int(s, "ffn_dim", 1, 0, &c->ffn_dim)) ||
        (rc = j_int(s, "vocab_size", 1, 0, &c->vocab_size)) ||
        (rc = j_int(s, "max_position_embeddings", 0, 2048, &c->max_positions)) ||
        (rc = j_int(s, "word_embed_proj_dim", 0, c->dim, &proj)) ||
        (rc = j_bool(s, "do_layer_norm_before", 1, &pre_norm)) ||
        (rc = j_bool(s, "enable_bias", 1, &bias)) ||
        (rc = j_bool(s, "layer_norm_elementwise_affine", 1, &affine)) ||
        (rc = j_bool(s, "tie_word_embeddings", 1, &c->tied_embeddings)) ||
        (rc = j_double(s, "layer_norm_eps", 0, 1e-5, &c->norm_eps)) ||
        (rc = parse_act(s, "activation_function", "relu", &c->act)) ||
        (rc = j_token(s, "bos_token_id", 2, &c->bos_id)) ||
        (rc = j_token(s, "eos_token_id", 2, &c->eos_id)) || (rc = parse_head_dim(s, c, 0)))
        return rc;
    if (!pre_norm)
        return sg_fail(SG_EUNSUPPORTED, "%s: do_layer_norm_before: post-norm OPT (opt-350m) "
                       "is not supported", s.path);
    if (proj != c->dim)
        return sg_fail(SG_EUNSUPPORTED, "%s: word_embed_proj_dim: %lld differs from "
                       "hidden_size %lld (projected embeddings are not supported)",
                       s.path, (long long)proj, (long long)c->dim);
    if (!affine)
        return sg_fail(SG_EUNSUPPORTED, "%s: layer_norm_elementwise_affine: LayerNorm "
                       "without weights is not supported", s.path);
    c->n_kv_heads = c->n_heads;
    c->norm = SG_NORM_LAYER;
    c->rope = SG_ROPE_NONE;
    c->pos_offset = 2;
    c->qkv_bias = c->o_bias = c->mlp_bias = bias;
    return 0;
}

static int load_phi(jsec s, sg_model_config *c)
{
    int rc, qk_norm;
    c->arch = SG_ARCH_PHI;
    if ((rc = parse_common(s, c)) || (rc = parse_head_dim(s, c, 0)) ||
        (rc = parse_rope_dim(s, c, 0.5)) ||
        (rc = j_double(s, "layer_norm_eps", 0, 1e-5, &c->norm_eps)) ||
        (rc = parse_act(s, "hidden_act", "gelu_new", &c->act)) ||
        (rc = j_bool(s, "tie_word_embeddings", 0, &c->tied_embeddings)) ||
        (rc = j_bool(s, "qk_layernorm", 0, &qk_norm)))
        return rc;
    if (qk_norm)
        return sg_fail(SG_EUNSUPPORTED, "%s: qk_layernorm: not supported", s.path);
    c->norm = SG_NORM_LAYER;
    c->rope = SG_ROPE_HALF;
    c->parallel_block = 1;
    c->qkv_bias = c->o_bias = c->mlp_bias = c->lm_head_bias = 1;
    return 0;
}

static int load_slicegpt(jsec top, sg_model_config *c)
{
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(top.obj, "slicegpt");
    if (!sec || cJSON_IsNull(sec))
        return 0;
    if (!cJSON_IsObject(sec))
        return sg_fail(SG_EFORMAT, "%s: slicegpt: expected an object", top.path);
    jsec s = {sec, top.path, "slicegpt."};
    double sparsity;
    const char *norm;
    int rc, kept = 0;
    if ((rc = j_double(s, "sparsity", 0, 0, &sparsity)) ||
        (rc = j_bool(s, "embeddings_kept", 0, &kept)) ||
        (rc = j_bool(s, "residual_kept", 0, &c->residual_kept)) ||
        (rc = j_int(s, "norm_dim", 0, c->dim, &c->norm_dim)) ||
        (rc = j_int(s, "embed_dim", 1, 0, &c->embed_dim)) ||
        (rc = j_int(s, "head_in_dim", 1, 0, &c->head_in_dim)) ||
        (rc = j_str(s, "norm", NULL, &norm)) || (rc = parse_rope_layout(s, c)) ||
        (rc = parse_freq_factors(s, c)) ||
        (rc = j_bool(s, "qkv_bias", c->qkv_bias, &c->qkv_bias)) ||
        (rc = j_bool(s, "o_bias", c->o_bias, &c->o_bias)) ||
        (rc = j_bool(s, "mlp_bias", c->mlp_bias, &c->mlp_bias)) ||
        (rc = j_bool(s, "lm_head_bias", c->lm_head_bias, &c->lm_head_bias)))
        return rc;
    if (norm && !strcmp(norm, "rms"))
        c->norm = SG_NORM_RMS;
    else if (norm && !strcmp(norm, "layer"))
        c->norm = SG_NORM_LAYER;
    else if (norm)
        return sg_fail(SG_EFORMAT, "%s: slicegpt.norm: \"%s\" is not \"rms\" or \"layer\"",
                       top.path, norm);
    const cJSON *layers = cJSON_GetObjectItemCaseSensitive(sec, "layers");
    if (!cJSON_IsArray(layers) || cJSON_GetArraySize(layers) != c->n_layers)
        return sg_fail(SG_EFORMAT, "%s: slicegpt.layers: expected a list of %lld layers",
                       top.path, (long long)c->n_layers);
    int l = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, layers)
    {
        char where[64];
        snprintf(where, sizeof where, "slicegpt.layers[%d].", l);
        jsec ls = {e, top.path, where};
        if (!cJSON_IsObject(e))
            return sg_fail(SG_EFORMAT, "%s: %s: expected an object", top.path, where);
        if ((rc = j_int(ls, "d_in", 1, 0, &c->d_in[l])) ||
            (rc = j_int(ls, "d_mid", 1, 0, &c->d_mid[l])) ||
            (rc = j_int(ls, "d_out", 1, 0, &c->d_out[l])) ||
            (rc = j_int(ls, "d_ffn", 0, 0, &c->d_ffn[l])))
            return rc;
        if (c->d_ffn[l] < 0 || c->d_ffn[l] > c->ffn_dim)
            return sg_fail(SG_EFORMAT, "%s: %sd_ffn %lld is outside 1..%lld (the FFN width)",
                           top.path, where, (long long)c->d_ffn[l], (long long)c->ffn_dim);
        int shared;
        if ((rc = j_bool(ls, "shared_basis", 0, &shared)))
            return rc;
        if (shared && c->d_mid[l] != c->d_out[l])
            return sg_fail(SG_EFORMAT, "%s: %sshared_basis with d_mid %lld != d_out %lld",
                           top.path, where, (long long)c->d_mid[l], (long long)c->d_out[l]);
        c->shared_basis[l] = (uint8_t)shared;
        l++;
    }
    c->sliced = 1;
    /* the head was rotated apart from the embeddings, unless they were kept
     * (then the head is still the table, and the final norm has its scale) */
    c->tied_embeddings = kept;
    return 0;
}


int sg_hf_config_load(const char *path, sg_model_config *cfg)
{
    memset(cfg, 0, sizeof *cfg);
    /* a model directory stands for its config.json */
    char *file = NULL;
    struct stat sb;
    if (stat(path, &sb) == 0 && S_ISDIR(sb.st_mode)) {
        if (asprintf(&file, "%s/config.json", path) < 0)
            return sg_fail(-ENOMEM, "%s: out of memory", path);
        path = file;
    }
    char *text = NULL;
    size_t text_len;
    int rc = sg_read_file(path, MAX_CONFIG_BYTES, &text, &text_len);
    if (rc) {
        free(file);
        return rc;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsObject(root)) {
        rc = sg_fail(SG_EFORMAT, "%s: not a JSON object", path);
        goto out;
    }
    jsec s = {root, path, ""};
    const char *mt;
    if ((rc = j_str(s, "model_type", NULL, &mt)))
        goto out;
    if (!mt) {
        rc = sg_fail(SG_EMISSING, "%s: model_type: required key is missing", path);
        goto out;
    }
    /* a per-layer sliced model names its base type after "slicegpt_" */
    int sliced_type = !strncmp(mt, "slicegpt_", 9);
    if (sliced_type)
        mt += 9;
    if (sliced_type && !cJSON_IsObject(cJSON_GetObjectItemCaseSensitive(root, "slicegpt"))) {
        rc = sg_fail(SG_EFORMAT, "%s: model_type \"slicegpt_%s\" without a \"slicegpt\" section",
                     path, mt);
        goto out;
    }
    if (!strcmp(mt, "llama") || !strcmp(mt, "mistral") || !strcmp(mt, "qwen2"))
        rc = load_llama(s, mt, cfg);
    else if (!strcmp(mt, "opt"))
        rc = load_opt(s, cfg);
    else if (!strcmp(mt, "phi"))
        rc = load_phi(s, cfg);
    else
        rc = sg_fail(SG_EUNSUPPORTED, "%s: model_type: \"%s\" is not supported (llama, "
                     "mistral, qwen2, opt, phi)", path, mt);
    if (rc)
        goto out;
    if (cfg->n_layers < 1 || cfg->n_layers > SG_MAX_LAYERS) {
        rc = sg_fail(SG_EFORMAT, "%s: num_hidden_layers: %lld is not in 1..%d", path,
                     (long long)cfg->n_layers, SG_MAX_LAYERS);
        goto out;
    }
    if (cfg->n_heads < 1) {
        rc = sg_fail(SG_EFORMAT, "%s: num_attention_heads: %lld: must be at least 1", path,
                     (long long)cfg->n_heads);
        goto out;
    }
    /* 0 would cap every window and calibration sample at nothing */
    if (cfg->max_positions < 1) {
        rc = sg_fail(SG_EFORMAT, "%s: max_position_embeddings: %lld: must be at least 1", path,
                     (long long)cfg->max_positions);
        goto out;
    }
    sg_config_set_unsliced(cfg);
    if ((rc = parse_rope_layout(s, cfg)) || (rc = parse_freq_factors(s, cfg)) ||
        (rc = load_slicegpt(s, cfg)))
        goto out;
    rc = sg_config_validate(cfg, path);
out:
    cJSON_Delete(root);
    free(file);
    return rc;
}

/* ---------------------------------------------------------------- writing */

static const char *act_name(sg_act act, sg_arch arch)
{
    switch (act) {
    case SG_ACT_SILU: return "silu";
    case SG_ACT_RELU: return "relu";
    case SG_ACT_GELU_TANH: return arch == SG_ARCH_PHI ? "gelu_new" : "gelu_pytorch_tanh";
    case SG_ACT_GELU: return "gelu";
    }
    return "?";
}

/* The factor whose int(factor * head_dim) gives back rope_dim exactly. */
static double rope_factor_of(const sg_model_config *c)
{
    double f = (double)c->rope_dim / (double)c->head_dim;
    while ((int64_t)(f * (double)c->head_dim) < c->rope_dim)
        f = nextafter(f, 2.0);
    return f;
}

static void add_token(cJSON *o, const char *key, int32_t id)
{
    if (id >= 0)
        cJSON_AddNumberToObject(o, key, id);
    else
        cJSON_AddNullToObject(o, key);
}

/* Refuses a cfg that the arch's config.json cannot express, so that what is
 * saved loads back the same. A sliced cfg records its norm and bias flags in
 * the slicegpt section (folding a LayerNorm adds biases, e.g. on OPT's
 * lm_head), so only the structure is checked for it. */
static int check_expressible(const char *path, const sg_model_config *c)
{
    const char *why = NULL;
    switch (c->arch) {
    case SG_ARCH_LLAMA:
        if (!c->gated_mlp || c->rope == SG_ROPE_NONE || c->parallel_block || c->pos_offset ||
            (!c->sliced && (c->lm_head_bias || c->norm != SG_NORM_RMS)))
            why = "llama needs a gated MLP, RoPE, RMSNorm, sequential blocks and no lm_head "
                  "bias";
        else if (!c->sliced && c->o_bias && !c->qkv_bias)
            why = "an o_proj bias without q/k/v biases";
        else if (!c->sliced && c->qkv_bias && !c->o_bias && c->mlp_bias)
            why = "qwen2-style q/k/v biases together with MLP biases";
        break;
    case SG_ARCH_OPT:
        if (c->gated_mlp || c->rope != SG_ROPE_NONE || c->parallel_block || c->pos_offset != 2 ||
            c->n_kv_heads != c->n_heads || c->head_dim * c->n_heads != c->dim ||
            (!c->sliced && (c->norm != SG_NORM_LAYER || c->lm_head_bias ||
                            c->qkv_bias != c->o_bias || c->qkv_bias != c->mlp_bias)))
            why = "OPT needs learned positions at offset 2, LayerNorm, no GQA, head_dim * "
                  "heads == hidden size and one bias setting for every linear";
        break;
    case SG_ARCH_PHI:
        if (c->gated_mlp || c->rope == SG_ROPE_NONE || !c->parallel_block || c->pos_offset ||
            c->head_dim * c->n_heads != c->dim ||
            (!c->sliced && (c->norm != SG_NORM_LAYER || !c->qkv_bias || !c->o_bias ||
                            !c->mlp_bias || !c->lm_head_bias)))
            why = "phi needs RoPE, LayerNorm, parallel blocks, head_dim * heads == hidden "
                  "size and biases on every linear";
        break;
    default:
        why = "unknown architecture";
    }
    if (why)
        return sg_fail(SG_EUNSUPPORTED, "%s: cannot express this %s model in config.json: %s",
                       path, sg_arch_name(c->arch), why);
    return 0;
}

static void add_rope(cJSON *o, const sg_model_config *c)
{
    cJSON_AddNumberToObject(o, "rope_theta", c->rope_theta);
    if (c->rope_dim != c->head_dim || c->arch == SG_ARCH_PHI)
        cJSON_AddNumberToObject(o, "partial_rotary_factor", rope_factor_of(c));
    if (c->rope_scaling == SG_ROPE_SCALE_NONE) {
        cJSON_AddNullToObject(o, "rope_scaling");
    } else {
        cJSON *rs = cJSON_AddObjectToObject(o, "rope_scaling");
        if (c->rope_scaling == SG_ROPE_SCALE_LINEAR) {
            cJSON_AddStringToObject(rs, "rope_type", "linear");
            cJSON_AddNumberToObject(rs, "factor", c->rope_factor);
        } else {
            cJSON_AddStringToObject(rs, "rope_type", "llama3");
            cJSON_AddNumberToObject(rs, "factor", c->rope_factor);
            cJSON_AddNumberToObject(rs, "low_freq_factor", c->rope_low_freq_factor);
            cJSON_AddNumberToObject(rs, "high_freq_factor", c->rope_high_freq_factor);
            cJSON_AddNumberToObject(rs, "original_max_position_embeddings",
                                    (double)c->rope_original_max_positions);
        }
    }
    if (!c->sliced && c->rope == SG_ROPE_PAIRS)
        cJSON_AddStringToObject(o, "rope_layout", "pairs");
    if (c->n_rope_freq_factors > 0) {
        cJSON *a = cJSON_AddArrayToObject(o, "rope_freq_factors");
        for (int64_t i = 0; i < c->n_rope_freq_factors; i++)
            cJSON_AddItemToArray(a, cJSON_CreateNumber(c->rope_freq_factors[i]));
    }
}

static cJSON *build_config(const sg_model_config *c, double sparsity)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
#define NUM(key, v) cJSON_AddNumberToObject(o, key, (double)(v))
#define BOOL(key, v) cJSON_AddBoolToObject(o, key, (v) != 0)
    switch (c->arch) {
    case SG_ARCH_LLAMA: {
        int qwen = c->qkv_bias && !c->o_bias;
        cJSON_AddItemToObject(o, "architectures",
                              cJSON_CreateStringArray((const char *[]){
                                  qwen ? "Qwen2ForCausalLM" : "LlamaForCausalLM"}, 1));
        cJSON_AddStringToObject(o, "model_type", qwen ? "qwen2" : "llama");
        NUM("hidden_size", c->dim);
        NUM("intermediate_size", c->ffn_dim);
        NUM("num_hidden_layers", c->n_layers);
        NUM("num_attention_heads", c->n_heads);
        NUM("num_key_value_heads", c->n_kv_heads);
        NUM("head_dim", c->head_dim);
        NUM("max_position_embeddings", c->max_positions);
        NUM("rms_norm_eps", c->norm_eps);
        cJSON_AddStringToObject(o, "hidden_act", act_name(c->act, c->arch));
        if (!qwen)
            BOOL("attention_bias", c->qkv_bias);
        BOOL("mlp_bias", c->mlp_bias);
        add_rope(o, c);
        break;
    }
    case SG_ARCH_OPT:
        cJSON_AddItemToObject(o, "architectures",
                              cJSON_CreateStringArray((const char *[]){"OPTForCausalLM"}, 1));
        cJSON_AddStringToObject(o, "model_type", "opt");
        NUM("hidden_size", c->dim);
        NUM("word_embed_proj_dim", c->dim);
        NUM("ffn_dim", c->ffn_dim);
        NUM("num_hidden_layers", c->n_layers);
        NUM("num_attention_heads", c->n_heads);
        NUM("max_position_embeddings", c->max_positions);
        BOOL("do_layer_norm_before", 1);
        BOOL("enable_bias", c->qkv_bias);
        BOOL("layer_norm_elementwise_affine", 1);
        NUM("layer_norm_eps", c->norm_eps);
        cJSON_AddStringToObject(o, "activation_function", act_name(c->act, c->arch));
        break;
    case SG_ARCH_PHI:
        cJSON_AddItemToObject(o, "architectures",
                              cJSON_CreateStringArray((const char *[]){"PhiForCausalLM"}, 1));
        cJSON_AddStringToObject(o, "model_type", "phi");
        NUM("hidden_size", c->dim);
        NUM("intermediate_size", c->ffn_dim);
        NUM("num_hidden_layers", c->n_layers);
        NUM("num_attention_heads", c->n_heads);
        NUM("num_key_value_heads", c->n_kv_heads);
        NUM("max_position_embeddings", c->max_positions);
        NUM("layer_norm_eps", c->norm_eps);
        cJSON_AddStringToObject(o, "hidden_act", act_name(c->act, c->arch));
        BOOL("qk_layernorm", 0);
        add_rope(o, c);
        break;
    }
    NUM("vocab_size", c->vocab_size);
    add_token(o, "bos_token_id", c->bos_id);
    add_token(o, "eos_token_id", c->eos_id);
    BOOL("tie_word_embeddings", c->tied_embeddings);
    if (c->sliced) {
        /* not a stock model: other loaders must say "unknown model type"
         * rather than fail on shapes; the base type is kept for ours */
        const cJSON *mt = cJSON_GetObjectItemCaseSensitive(o, "model_type");
        const cJSON *ar = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "architectures"), 0);
        char type[64], arch[96];
        snprintf(type, sizeof type, "slicegpt_%s", cJSON_IsString(mt) ? mt->valuestring : "");
        snprintf(arch, sizeof arch, "SliceGPT%s", cJSON_IsString(ar) ? ar->valuestring : "");
        cJSON_ReplaceItemInObjectCaseSensitive(o, "model_type", cJSON_CreateString(type));
        cJSON_ReplaceItemInObjectCaseSensitive(
            o, "architectures", cJSON_CreateStringArray((const char *[]){arch}, 1));
        cJSON *s = cJSON_AddObjectToObject(o, "slicegpt");
        cJSON_AddNumberToObject(s, "sparsity", sparsity);
        cJSON_AddNumberToObject(s, "norm_dim", (double)c->norm_dim);
        cJSON_AddNumberToObject(s, "embed_dim", (double)c->embed_dim);
        if (c->tied_embeddings)
            cJSON_AddBoolToObject(s, "embeddings_kept", 1);
        if (c->residual_kept)
            cJSON_AddBoolToObject(s, "residual_kept", 1);
        cJSON_AddNumberToObject(s, "head_in_dim", (double)c->head_in_dim);
        cJSON_AddStringToObject(s, "norm", c->norm == SG_NORM_RMS ? "rms" : "layer");
        cJSON_AddBoolToObject(s, "qkv_bias", c->qkv_bias != 0);
        cJSON_AddBoolToObject(s, "o_bias", c->o_bias != 0);
        cJSON_AddBoolToObject(s, "mlp_bias", c->mlp_bias != 0);
        cJSON_AddBoolToObject(s, "lm_head_bias", c->lm_head_bias != 0);
        if (c->rope != SG_ROPE_NONE)
            cJSON_AddStringToObject(s, "rope_layout", c->rope == SG_ROPE_PAIRS ? "pairs" : "half");
        cJSON *layers = cJSON_AddArrayToObject(s, "layers");
        for (int64_t l = 0; l < c->n_layers; l++) {
            cJSON *e = cJSON_CreateObject();
            cJSON_AddNumberToObject(e, "d_in", (double)c->d_in[l]);
            cJSON_AddNumberToObject(e, "d_mid", (double)c->d_mid[l]);
            cJSON_AddNumberToObject(e, "d_out", (double)c->d_out[l]);
            if (c->shared_basis[l])
                cJSON_AddTrueToObject(e, "shared_basis");
            if (sg_layer_ffn(c, l) != c->ffn_dim)
                cJSON_AddNumberToObject(e, "d_ffn", (double)sg_layer_ffn(c, l));
            cJSON_AddItemToArray(layers, e);
        }
    }
#undef NUM
#undef BOOL
    return o;
}

int sg_hf_config_check(const sg_model_config *cfg, const char *source)
{
    int rc = sg_config_validate(cfg, source);
    return rc ? rc : check_expressible(source, cfg);
}

int sg_hf_config_save(const char *path, const sg_model_config *cfg, double sparsity)
{
    int rc = sg_hf_config_check(cfg, path);
    if (rc)
        return rc;
    cJSON *o = build_config(cfg, sparsity);
    char *text = o ? cJSON_Print(o) : NULL;
    cJSON_Delete(o);
    if (!text)
        return sg_fail(-ENOMEM, "%s: out of memory building config.json", path);
    size_t len = strlen(text);
    text[len] = '\n'; /* a final newline, replacing the terminator */
    rc = sg_hf_file_write_atomic(path, text, len + 1);
    free(text);
    return rc;
}
