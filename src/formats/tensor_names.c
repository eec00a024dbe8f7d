/* Canonical (GGUF-style) <-> Hugging Face tensor names.
 *
 * Each architecture is two small tables of module stems: whole-model ones
 * ("model.norm" <-> "output_norm") and per-layer ones under a layer prefix
 * ("model.layers.N." + "self_attn.q_proj" <-> "blk.N." + "attn_q"); a stem
 * takes ".weight" or ".bias" on both sides. SliceGPT's shortcut matrices
 * have no suffix in HF form ("model.layers.N.attn_shortcut_Q") and are
 * listed whole. */
#include "tensor_names.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sg_error.h"

typedef struct {
    const char *hf, *canon;
} name_pair;

typedef struct {
    const char *layer_prefix;   /* HF prefix of block N, followed by "N." */
    const name_pair *globals;   /* stems outside the blocks */
    const name_pair *stems;     /* per-block stems */
} arch_names;

static const name_pair shortcuts[] = {
    {"attn_shortcut_Q", "attn_shortcut.weight"},
    {"mlp_shortcut_Q", "mlp_shortcut.weight"},
    {NULL, NULL},
};

static const name_pair llama_globals[] = {
    {"model.embed_tokens", "token_embd"},
    {"model.norm", "output_norm"},
    {"lm_head", "output"},
    {NULL, NULL},
};
static const name_pair llama_stems[] = {
    {"input_layernorm", "attn_norm"},
    {"self_attn.q_proj", "attn_q"},
    {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},
    {"self_attn.o_proj", "attn_output"},
    {"post_attention_layernorm", "ffn_norm"},
    {"mlp.gate_proj", "ffn_gate"},
    {"mlp.up_proj", "ffn_up"},
    {"mlp.down_proj", "ffn_down"},
    {NULL, NULL},
};

static const name_pair opt_globals[] = {
    {"model.decoder.embed_tokens", "token_embd"},
    {"model.decoder.embed_positions", "position_embd"},
    {"model.decoder.final_layer_norm", "output_norm"},
    {"lm_head", "output"},
    {NULL, NULL},
};
static const name_pair opt_stems[] = {
    {"self_attn_layer_norm", "attn_norm"},
    {"self_attn.q_proj", "attn_q"},
    {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},
    {"self_attn.out_proj", "attn_output"},
    {"final_layer_norm", "ffn_norm"}, /* per block: the norm before the MLP */
    {"fc1", "ffn_up"},
    {"fc2", "ffn_down"},
    {NULL, NULL},
};

static const name_pair phi_globals[] = {
    {"model.embed_tokens", "token_embd"},
    {"model.final_layernorm", "output_norm"},
    {"lm_head", "output"},
    {NULL, NULL},
};
/* Phi-2 blocks are parallel: one norm feeds both attention and the MLP. */
static const name_pair phi_stems[] = {
    {"input_layernorm", "attn_norm"},
    {"self_attn.q_proj", "attn_q"},
    {"self_attn.k_proj", "attn_k"},
    {"self_attn.v_proj", "attn_v"},
    {"self_attn.dense", "attn_output"},
    {"mlp.fc1", "ffn_up"},
    {"mlp.fc2", "ffn_down"},
    {NULL, NULL},
};

static const arch_names *names_of(sg_arch arch)
{
    static const arch_names llama = {"model.layers.", llama_globals, llama_stems};
    static const arch_names opt = {"model.decoder.layers.", opt_globals, opt_stems};
    static const arch_names phi = {"model.layers.", phi_globals, phi_stems};
    switch (arch) {
    case SG_ARCH_LLAMA: return &llama;
    case SG_ARCH_OPT: return &opt;
    case SG_ARCH_PHI: return &phi;
    }
    return NULL;
}

/* s == stem + ".weight" or stem + ".bias": returns the suffix, else NULL. */
static const char *match_stem(const char *s, const char *stem)
{
    size_t n = strlen(stem);
    if (strncmp(s, stem, n))
        return NULL;
    if (!strcmp(s + n, ".weight") || !strcmp(s + n, ".bias"))
        return s + n;
    return NULL;
}

/* "N." at s: a block number without sign or leading zeros. Returns the
 * character after the dot, or NULL. */
static const char *parse_layer(const char *s, long *layer)
{
    if (s[0] < '0' || s[0] > '9' || (s[0] == '0' && s[1] != '.'))
        return NULL;
    long n = 0;
    while (*s >= '0' && *s <= '9') {
        n = n * 10 + (*s++ - '0');
        if (n >= 1000000)
            return NULL;
    }
    if (*s != '.')
        return NULL;
    *layer = n;
    return s + 1;
}

/* Maps `name` from one side of the tables to the other. to_canon selects
 * the direction; the block prefixes are layer_from -> layer_to. */
static int map_name(const arch_names *a, int to_canon, const char *name, char *out,
                    size_t outsz)
{
    const char *layer_from = to_canon ? a->layer_prefix : "blk.";
    const char *layer_to = to_canon ? "blk." : a->layer_prefix;
    int n = -1;
    for (const name_pair *p = a->globals; p->hf && n < 0; p++) {
        const char *from = to_canon ? p->hf : p->canon, *to = to_canon ? p->canon : p->hf;
        const char *suffix = match_stem(name, from);
        if (suffix)
            n = snprintf(out, outsz, "%s%s", to, suffix);
    }
    size_t plen = strlen(layer_from);
    long layer;
    const char *rest;
    if (n < 0 && !strncmp(name, layer_from, plen) && (rest = parse_layer(name + plen, &layer))) {
        for (const name_pair *p = a->stems; p->hf && n < 0; p++) {
            const char *from = to_canon ? p->hf : p->canon, *to = to_canon ? p->canon : p->hf;
            const char *suffix = match_stem(rest, from);
            if (suffix)
                n = snprintf(out, outsz, "%s%ld.%s%s", layer_to, layer, to, suffix);
        }
        for (const name_pair *p = shortcuts; p->hf && n < 0; p++)
            if (!strcmp(rest, to_canon ? p->hf : p->canon))
                n = snprintf(out, outsz, "%s%ld.%s", layer_to, layer,
                             to_canon ? p->canon : p->hf);
    }
    if (n < 0)
        return 1;
    if ((size_t)n >= outsz)
        return -1;
    return 0;
}

int sg_name_from_hf(sg_arch arch, const char *hf_name, char *out, size_t outsz)
{
    const arch_names *a = names_of(arch);
    if (!a)
        return sg_fail(SG_EARG, "%s: unknown architecture %d", hf_name, (int)arch);
    /* Some OPT checkpoints drop the "model." in front of "decoder." */
    char buf[512];
    if (arch == SG_ARCH_OPT && !strncmp(hf_name, "decoder.", 8) &&
        snprintf(buf, sizeof buf, "model.%s", hf_name) < (int)sizeof buf)
        hf_name = buf;
    int rc = map_name(a, 1, hf_name, out, outsz);
    if (rc > 0)
        return sg_fail(SG_EMISSING, "%s: not a %s tensor name", hf_name, sg_arch_name(arch));
    if (rc < 0)
        return sg_fail(SG_EARG, "%s: canonical name does not fit %zu bytes", hf_name, outsz);
    return 0;
}

int sg_name_to_hf(sg_arch arch, const char *canonical, char *out, size_t outsz)
{
    const arch_names *a = names_of(arch);
    if (!a)
        return sg_fail(SG_EARG, "%s: unknown architecture %d", canonical, (int)arch);
    int rc = map_name(a, 0, canonical, out, outsz);
    if (rc > 0)
        return sg_fail(SG_EARG, "%s: no %s tensor has this canonical name", canonical,
                       sg_arch_name(arch));
    if (rc < 0)
        return sg_fail(SG_EARG, "%s: HF name does not fit %zu bytes", canonical, outsz);
    return 0;
}
