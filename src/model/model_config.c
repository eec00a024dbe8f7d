#include "model_config.h"

#include <string.h>

#include "sg_error.h"

const char *sg_arch_name(sg_arch arch)
{
    switch (arch) {
    case SG_ARCH_LLAMA: return "llama";
    case SG_ARCH_OPT: return "opt";
    case SG_ARCH_PHI: return "phi";
    }
    return "?";
}

void sg_config_set_unsliced(sg_model_config *cfg)
{
    cfg->sliced = 0;
    cfg->norm_dim = cfg->dim;
    cfg->embed_dim = cfg->dim;
    cfg->head_in_dim = cfg->dim;
    for (int64_t l = 0; l < cfg->n_layers && l < SG_MAX_LAYERS; l++)
        cfg->d_in[l] = cfg->d_mid[l] = cfg->d_out[l] = cfg->dim;
    memset(cfg->shared_basis, 0, sizeof cfg->shared_basis);
    memset(cfg->d_ffn, 0, sizeof cfg->d_ffn); /* every block at ffn_dim */
    cfg->residual_kept = 0;
}

int sg_config_validate(const sg_model_config *c, const char *source)
{
#define REQUIRE(cond, what)                                                           \
    do {                                                                              \
        if (!(cond))                                                                  \
            return sg_fail(SG_EFORMAT, "%s: invalid model config: %s", source, what); \
    } while (0)
    REQUIRE(c->dim > 0 && c->dim <= 1 << 20, "hidden size out of range");
    REQUIRE(c->n_layers > 0 && c->n_layers <= SG_MAX_LAYERS, "layer count out of range");
    REQUIRE(c->n_heads > 0 && c->n_kv_heads > 0 && c->n_heads % c->n_kv_heads == 0,
            "attention heads must be a multiple of key/value heads");
    REQUIRE(c->head_dim > 0 && c->head_dim <= 1024, "head dimension out of range");
    REQUIRE(c->ffn_dim > 0 && c->ffn_dim <= 1 << 22, "FFN width out of range");
    REQUIRE(c->vocab_size > 0 && c->vocab_size <= 1 << 24, "vocabulary size out of range");
    REQUIRE(c->norm_eps > 0 && c->norm_eps < 1, "norm epsilon out of range");
    REQUIRE(c->rope == SG_ROPE_NONE ||
                (c->rope_dim > 0 && c->rope_dim <= c->head_dim && c->rope_dim % 2 == 0),
            "rotary dimension must be even and at most the head dimension");
    REQUIRE(c->rope != SG_ROPE_NONE || c->max_positions > 0,
            "learned positions need a context length");
    REQUIRE(c->embed_dim > 0 && c->embed_dim <= c->dim && c->head_in_dim > 0 &&
                c->head_in_dim <= c->dim,
            "sliced widths out of range");
    for (int64_t l = 0; l < c->n_layers; l++)
        REQUIRE(c->d_in[l] > 0 && c->d_in[l] <= c->dim && c->d_mid[l] > 0 &&
                    c->d_mid[l] <= c->dim && c->d_out[l] > 0 && c->d_out[l] <= c->dim,
                "per-layer sliced widths out of range");
    for (int64_t l = 0; l < c->n_layers; l++)
        REQUIRE(c->d_ffn[l] >= 0 && c->d_ffn[l] <= c->ffn_dim, "per-layer FFN width out of range");
    for (int64_t l = 0; c->residual_kept && l < c->n_layers; l++)
        REQUIRE(c->d_in[l] == c->dim && c->d_mid[l] == c->dim && c->d_out[l] == c->dim,
                "a model whose residual stream was kept has every width equal to its hidden size");
#undef REQUIRE
    return 0;
}
