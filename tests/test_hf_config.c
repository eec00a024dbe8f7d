/* config.json -> sg_model_config for each model family (fixtures written
 * here, shaped like the real configs of Llama-3.2, Qwen2, Mistral, Phi-2 and
 * the bundled tinyopt), refusals with the file and key named, save -> load
 * giving back every field (sliced configs too), and the HF <-> canonical
 * tensor names. */
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "hf_config.h"
#include "sg_error.h"
#include "tap.h"
#include "tensor_names.h"

/* The last error, for a check's description when rc says one happened. */
static const char *why(int rc)
{
    static char buf[1100];
    if (!rc)
        return "";
    snprintf(buf, sizeof buf, " (%s)", sg_last_error());
    return buf;
}

static const char *dir;

static const char *fixture(const char *name, const char *json)
{
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    FILE *f = fopen(p, "w");
    fputs(json, f);
    fclose(f);
    return p;
}

/* Every field the forward pass reads; the name of the first that differs. */
static const char *config_diff(const sg_model_config *a, const sg_model_config *b)
{
#define SAME(f)                 \
    do {                        \
        if (a->f != b->f)       \
            return #f;          \
    } while (0)
    SAME(arch); SAME(dim); SAME(n_layers); SAME(n_heads); SAME(n_kv_heads); SAME(head_dim);
    SAME(ffn_dim); SAME(vocab_size); SAME(max_positions); SAME(gated_mlp); SAME(act);
    SAME(norm); SAME(norm_eps); SAME(rope); SAME(rope_theta); SAME(rope_dim);
    SAME(rope_scaling); SAME(rope_factor); SAME(rope_low_freq_factor);
    SAME(rope_high_freq_factor); SAME(rope_original_max_positions);
    SAME(n_rope_freq_factors); SAME(pos_offset); SAME(tied_embeddings); SAME(qkv_bias);
    SAME(o_bias); SAME(mlp_bias); SAME(lm_head_bias); SAME(parallel_block); SAME(bos_id);
    SAME(eos_id); SAME(sliced); SAME(norm_dim); SAME(embed_dim); SAME(head_in_dim);
    for (int64_t i = 0; i < a->n_rope_freq_factors; i++)
        SAME(rope_freq_factors[i]);
    for (int64_t l = 0; l < a->n_layers; l++) {
        SAME(d_in[l]);
        SAME(d_mid[l]);
        SAME(d_out[l]);
    }
#undef SAME
    return NULL;
}

/* save(cfg) then load gives cfg back. */
static void round_trip(const char *what, const sg_model_config *cfg, double sparsity)
{
    char path[512];
    snprintf(path, sizeof path, "%s/saved-%s.json", dir, what);
    sg_model_config back;
    int rc = sg_hf_config_save(path, cfg, sparsity);
    if (rc == 0)
        rc = sg_hf_config_load(path, &back);
    const char *diff = rc ? "(save or load failed)" : config_diff(cfg, &back);
    tap_ok(!diff, "%s: save -> load gives the same config%s%s %s", what, diff ? ": " : "",
           diff ? diff : "", rc ? sg_last_error() : "");
}

static void expect_refused(const char *path, int code, const char *key, const char *what)
{
    sg_model_config cfg;
    sg_clear_error();
    int rc = sg_hf_config_load(path, &cfg);
    const char *msg = sg_last_error();
    tap_ok(rc == code && strstr(msg, path) && (!key || strstr(msg, key)),
           "%s refused (%s): %s", what, sg_strerror(rc), msg);
}

static void test_llama3(void)
{
    const char *p = fixture(
        "llama3.json",
        "{\"architectures\": [\"LlamaForCausalLM\"], \"model_type\": \"llama\", "
        "\"hidden_size\": 64, \"intermediate_size\": 192, \"num_hidden_layers\": 3, "
        "\"num_attention_heads\": 8, \"num_key_value_heads\": 2, \"head_dim\": 16, "
        "\"hidden_act\": \"silu\", \"max_position_embeddings\": 131072, "
        "\"rms_norm_eps\": 1e-05, \"rope_theta\": 500000.0, \"rope_scaling\": "
        "{\"factor\": 32.0, \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0, "
        "\"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"}, "
        "\"tie_word_embeddings\": true, \"attention_bias\": false, \"mlp_bias\": false, "
        "\"vocab_size\": 1000, \"bos_token_id\": 128000, "
        "\"eos_token_id\": [128001, 128008, 128009], \"torch_dtype\": \"bfloat16\"}");
    sg_model_config c;
    int rc = sg_hf_config_load(p, &c);
    tap_ok(rc == 0, "llama3 config loads%s", why(rc));
    tap_ok(c.arch == SG_ARCH_LLAMA && c.dim == 64 && c.n_layers == 3 && c.n_heads == 8 &&
               c.n_kv_heads == 2 && c.head_dim == 16 && c.ffn_dim == 192 &&
               c.vocab_size == 1000 && c.max_positions == 131072,
           "llama3 sizes (explicit head_dim 16 with 8 heads of a 64 model)");
    tap_ok(c.gated_mlp && c.act == SG_ACT_SILU && c.norm == SG_NORM_RMS &&
               c.norm_eps == 1e-5 && c.rope == SG_ROPE_HALF && c.rope_dim == 16 &&
               c.rope_theta == 500000.0 && c.tied_embeddings && !c.qkv_bias && !c.o_bias &&
               !c.mlp_bias && !c.parallel_block && c.pos_offset == 0,
           "llama3: SwiGLU, RMSNorm, rotate_half RoPE, tied");
    tap_ok(c.rope_scaling == SG_ROPE_SCALE_LLAMA3 && c.rope_factor == 32 &&
               c.rope_low_freq_factor == 1 && c.rope_high_freq_factor == 4 &&
               c.rope_original_max_positions == 8192,
           "llama3 rope_scaling");
    tap_ok(c.bos_id == 128000 && c.eos_id == 128001, "bos, and the first of a list of eos");
    tap_ok(!c.sliced && c.embed_dim == 64 && c.d_mid[2] == 64, "unsliced widths are dim");
    round_trip("llama3", &c, 0);

    /* linear scaling with "type" (older configs), defaults for the rest */
    p = fixture("llama-linear.json",
                "{\"model_type\": \"llama\", \"hidden_size\": 48, \"intermediate_size\": 64, "
                "\"num_hidden_layers\": 1, \"num_attention_heads\": 6, \"vocab_size\": 32, "
                "\"rope_scaling\": {\"type\": \"linear\", \"factor\": 2.0}, "
                "\"num_key_value_heads\": null}");
    rc = sg_hf_config_load(p, &c);
    tap_ok(rc == 0 && c.rope_scaling == SG_ROPE_SCALE_LINEAR && c.rope_factor == 2 &&
               c.head_dim == 8 && c.n_kv_heads == 6 && c.rope_theta == 10000 &&
               c.norm_eps == 1e-6 && !c.tied_embeddings && c.max_positions == 2048 &&
               c.bos_id == 1 && c.eos_id == 2,
           "linear rope_scaling and LlamaConfig defaults%s", why(rc));
    round_trip("llama-linear", &c, 0);
}

static void test_qwen2_mistral(void)
{
    const char *p = fixture(
        "qwen2.json",
        "{\"architectures\": [\"Qwen2ForCausalLM\"], \"model_type\": \"qwen2\", "
        "\"hidden_size\": 64, \"intermediate_size\": 160, \"num_hidden_layers\": 2, "
        "\"num_attention_heads\": 4, \"num_key_value_heads\": 2, \"hidden_act\": \"silu\", "
        "\"max_position_embeddings\": 32768, \"rms_norm_eps\": 1e-06, "
        "\"rope_theta\": 1000000.0, \"rope_scaling\": null, \"sliding_window\": 32768, "
        "\"use_sliding_window\": false, \"max_window_layers\": 21, "
        "\"tie_word_embeddings\": true, \"vocab_size\": 300, "
        "\"bos_token_id\": 151643, \"eos_token_id\": 151645}");
    sg_model_config c;
    int rc = sg_hf_config_load(p, &c);
    tap_ok(rc == 0 && c.qkv_bias && !c.o_bias && !c.mlp_bias && c.head_dim == 16 &&
               c.rope_theta == 1e6 && c.tied_embeddings && c.eos_id == 151645,
           "qwen2: q/k/v biases, no o_proj bias%s", why(rc));
    round_trip("qwen2", &c, 0);

    p = fixture("mistral.json",
                "{\"model_type\": \"mistral\", \"hidden_size\": 64, \"intermediate_size\": 224, "
                "\"num_hidden_layers\": 2, \"num_attention_heads\": 8, "
                "\"num_key_value_heads\": 2, \"head_dim\": null, \"sliding_window\": 4096, "
                "\"rope_theta\": 1000000.0, \"vocab_size\": 128, \"rms_norm_eps\": 1e-05}");
    rc = sg_hf_config_load(p, &c);
    tap_ok(rc == 0 && c.arch == SG_ARCH_LLAMA && c.head_dim == 8 && c.n_kv_heads == 2,
           "mistral loads as llama (head_dim null -> hidden / heads)%s", why(rc));
}

static void test_phi2(void)
{
    const char *p = fixture(
        "phi2.json",
        "{\"architectures\": [\"PhiForCausalLM\"], \"model_type\": \"phi\", "
        "\"hidden_size\": 80, \"intermediate_size\": 320, \"num_hidden_layers\": 2, "
        "\"num_attention_heads\": 4, \"num_key_value_heads\": null, "
        "\"partial_rotary_factor\": 0.4, \"hidden_act\": \"gelu_new\", "
        "\"layer_norm_eps\": 1e-05, \"rope_theta\": 10000.0, \"rope_scaling\": null, "
        "\"qk_layernorm\": false, \"resid_pdrop\": 0.1, \"tie_word_embeddings\": false, "
        "\"max_position_embeddings\": 2048, \"vocab_size\": 512, "
        "\"bos_token_id\": 50256, \"eos_token_id\": 50256}");
    sg_model_config c;
    int rc = sg_hf_config_load(p, &c);
    tap_ok(rc == 0 && c.arch == SG_ARCH_PHI && c.head_dim == 20 && c.rope_dim == 8 &&
               c.rope == SG_ROPE_HALF && c.n_kv_heads == 4,
           "phi-2: head_dim 20, partial rotary 0.4 -> rope_dim 8%s", why(rc));
    tap_ok(c.norm == SG_NORM_LAYER && c.act == SG_ACT_GELU_TANH && !c.gated_mlp &&
               c.parallel_block && c.qkv_bias && c.o_bias && c.mlp_bias && c.lm_head_bias &&
               !c.tied_embeddings && c.bos_id == 50256,
           "phi-2: LayerNorm, gelu_new, parallel block, biases everywhere, untied");
    round_trip("phi2", &c, 0);
}

static void test_tinyopt(sg_model_config *opt)
{
    const char *root = getenv("SG_DATA");
    char p[4096];
    snprintf(p, sizeof p, "%s/tinyopt-250K/config.json", root ? root : "../shared/data");
    if (access(p, R_OK) != 0) {
        /* the same keys as the bundled file */
        const char *f = fixture(
            "tinyopt.json",
            "{\"model_type\": \"opt\", \"vocab_size\": 512, \"hidden_size\": 64, "
            "\"word_embed_proj_dim\": 64, \"num_hidden_layers\": 4, \"num_attention_heads\": 4, "
            "\"ffn_dim\": 256, \"max_position_embeddings\": 256, \"do_layer_norm_before\": true, "
            "\"activation_function\": \"relu\", \"enable_bias\": true, "
            "\"layer_norm_elementwise_affine\": true, \"bos_token_id\": 1, "
            "\"eos_token_id\": 2, \"tie_word_embeddings\": true}");
        snprintf(p, sizeof p, "%s", f);
        tap_diag("bundled tinyopt config absent; using a copy of its keys");
    }
    int rc = sg_hf_config_load(p, opt);
    tap_ok(rc == 0 && opt->arch == SG_ARCH_OPT && opt->dim == 64 && opt->n_layers == 4 &&
               opt->n_heads == 4 && opt->n_kv_heads == 4 && opt->head_dim == 16 &&
               opt->ffn_dim == 256 && opt->vocab_size == 512 && opt->max_positions == 256,
           "tinyopt sizes%s", why(rc));
    tap_ok(opt->rope == SG_ROPE_NONE && opt->pos_offset == 2 && opt->act == SG_ACT_RELU &&
               !opt->gated_mlp && opt->norm == SG_NORM_LAYER && opt->norm_eps == 1e-5 &&
               opt->qkv_bias && opt->o_bias && opt->mlp_bias && !opt->lm_head_bias &&
               opt->tied_embeddings && opt->bos_id == 1 && opt->eos_id == 2,
           "tinyopt: learned positions at offset 2, ReLU, LayerNorm, biases, tied");
    round_trip("tinyopt", opt, 0);
}

static void test_refusals(void)
{
    expect_refused(fixture("heads.json",
                           "{\"model_type\": \"llama\", \"hidden_size\": 64, "
                           "\"intermediate_size\": 128, \"num_hidden_layers\": 2, "
                           "\"num_attention_heads\": 6, \"vocab_size\": 32}"),
                   SG_EFORMAT, "num_attention_heads", "6 heads of a 64-wide model");
    expect_refused(fixture("kv.json",
                           "{\"model_type\": \"llama\", \"hidden_size\": 64, "
                           "\"intermediate_size\": 128, \"num_hidden_layers\": 2, "
                           "\"num_attention_heads\": 4, \"num_key_value_heads\": 3, "
                           "\"vocab_size\": 32}"),
                   SG_EFORMAT, "key/value", "3 kv heads for 4 heads");
    expect_refused(fixture("nodim.json",
                           "{\"model_type\": \"llama\", \"intermediate_size\": 128, "
                           "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
                           "\"vocab_size\": 32}"),
                   SG_EMISSING, "hidden_size", "missing hidden_size");
    expect_refused(fixture("strdim.json",
                           "{\"model_type\": \"llama\", \"hidden_size\": \"64\", "
                           "\"intermediate_size\": 128, \"num_hidden_layers\": 2, "
                           "\"num_attention_heads\": 4, \"vocab_size\": 32}"),
                   SG_EFORMAT, "hidden_size", "hidden_size as a string");
    expect_refused(fixture("yarn.json",
                           "{\"model_type\": \"llama\", \"hidden_size\": 64, "
                           "\"intermediate_size\": 128, \"num_hidden_layers\": 2, "
                           "\"num_attention_heads\": 4, \"vocab_size\": 32, "
                           "\"rope_scaling\": {\"rope_type\": \"yarn\", \"factor\": 4}}"),
                   SG_EUNSUPPORTED, "rope_scaling", "yarn rope scaling");
    expect_refused(fixture("postnorm.json",
                           "{\"model_type\": \"opt\", \"hidden_size\": 64, \"ffn_dim\": 128, "
                           "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
                           "\"vocab_size\": 32, \"do_layer_norm_before\": false}"),
                   SG_EUNSUPPORTED, "do_layer_norm_before", "post-norm OPT");
    expect_refused(fixture("proj.json",
                           "{\"model_type\": \"opt\", \"hidden_size\": 64, \"ffn_dim\": 128, "
                           "\"num_hidden_layers\": 2, \"num_attention_heads\": 4, "
                           "\"vocab_size\": 32, \"word_embed_proj_dim\": 32}"),
                   SG_EUNSUPPORTED, "word_embed_proj_dim", "OPT with projected embeddings");
    expect_refused(fixture("gpt2.json", "{\"model_type\": \"gpt2\", \"n_embd\": 64}"),
                   SG_EUNSUPPORTED, "gpt2", "model_type gpt2");
    expect_refused(fixture("broken.json", "{\"model_type\": \"llama\", "), SG_EFORMAT, NULL,
                   "truncated JSON");
    char absent[512];
    snprintf(absent, sizeof absent, "%s/absent.json", dir);
    expect_refused(absent, SG_EMISSING, NULL, "missing file");
}

static void test_sliced(const sg_model_config *opt)
{
    /* a sliced OPT: the norms became scale-free RMSNorms over the original D */
    sg_model_config s = *opt;
    s.sliced = 1;
    s.norm = SG_NORM_RMS;
    s.tied_embeddings = 0;
    s.lm_head_bias = 1; /* the final LayerNorm's bias, folded into the head */
    s.embed_dim = 48;
    s.head_in_dim = 40;
    for (int l = 0; l < 4; l++) {
        s.d_in[l] = 48 - 8 * (l % 2);
        s.d_mid[l] = 56;
        s.d_out[l] = 40 + 8 * (l % 2);
    }
    round_trip("sliced-opt", &s, 0.25);
    char path[512];
    snprintf(path, sizeof path, "%s/saved-sliced-opt.json", dir);
    char *text = NULL;
    FILE *f = fopen(path, "r");
    if (f) {
        text = calloc(1, 1 << 16);
        if (fread(text, 1, (1 << 16) - 1, f) == 0)
            text[0] = 0;
        fclose(f);
    }
    tap_ok(text && strstr(text, "\"slicegpt\"") && strstr(text, "\"sparsity\":\t0.25") &&
               strstr(text, "\"model_type\":\t\"slicegpt_opt\"") &&
               strstr(text, "\"SliceGPTOPTForCausalLM\""),
           "the sliced config names a type of its own (slicegpt_opt, SliceGPTOPTForCausalLM), "
           "not a stock one, and has a slicegpt section");
    free(text);

    /* a sliced llama in GGUF's pair-wise layout with per-frequency factors */
    sg_model_config l;
    memset(&l, 0, sizeof l);
    l.arch = SG_ARCH_LLAMA;
    l.dim = 32;
    l.n_layers = 2;
    l.n_heads = 4;
    l.n_kv_heads = 1;
    l.head_dim = 8;
    l.ffn_dim = 64;
    l.vocab_size = 100;
    l.max_positions = 512;
    l.gated_mlp = 1;
    l.act = SG_ACT_SILU;
    l.norm = SG_NORM_RMS;
    l.norm_eps = 1e-5;
    l.rope = SG_ROPE_PAIRS;
    l.rope_theta = 10000;
    l.rope_dim = 8;
    l.n_rope_freq_factors = 4;
    const float ff[4] = {1, 1.5f, 3.25f, 8.0f / 3};
    memcpy(l.rope_freq_factors, ff, sizeof ff);
    l.bos_id = -1;
    l.eos_id = 7;
    sg_config_set_unsliced(&l);
    round_trip("pairs-llama", &l, 0);
    l.sliced = 1;
    l.embed_dim = 24;
    l.head_in_dim = 16;
    l.d_in[0] = 24, l.d_mid[0] = 24, l.d_out[0] = 16;
    l.d_in[1] = 16, l.d_mid[1] = 16, l.d_out[1] = 16;
    round_trip("sliced-pairs-llama", &l, 0.5);

    /* what config.json cannot say is refused, and nothing is written */
    sg_model_config bad = *opt;
    bad.mlp_bias = 0;
    snprintf(path, sizeof path, "%s/unsaid.json", dir);
    sg_clear_error();
    int rc = sg_hf_config_save(path, &bad, 0);
    tap_ok(rc == SG_EUNSUPPORTED && access(path, F_OK) != 0 && strstr(sg_last_error(), path),
           "OPT with mixed bias settings is refused: %s", sg_last_error());
}

typedef struct {
    sg_arch arch;
    const char *hf, *canon;
} name_case;

static void test_names(void)
{
    static const name_case cases[] = {
        {SG_ARCH_LLAMA, "model.embed_tokens.weight", "token_embd.weight"},
        {SG_ARCH_LLAMA, "model.layers.0.input_layernorm.weight", "blk.0.attn_norm.weight"},
        {SG_ARCH_LLAMA, "model.layers.12.self_attn.q_proj.bias", "blk.12.attn_q.bias"},
        {SG_ARCH_LLAMA, "model.layers.3.self_attn.o_proj.weight", "blk.3.attn_output.weight"},
        {SG_ARCH_LLAMA, "model.layers.3.post_attention_layernorm.weight", "blk.3.ffn_norm.weight"},
        {SG_ARCH_LLAMA, "model.layers.7.mlp.gate_proj.weight", "blk.7.ffn_gate.weight"},
        {SG_ARCH_LLAMA, "model.layers.7.mlp.down_proj.weight", "blk.7.ffn_down.weight"},
        {SG_ARCH_LLAMA, "model.norm.weight", "output_norm.weight"},
        {SG_ARCH_LLAMA, "lm_head.weight", "output.weight"},
        {SG_ARCH_LLAMA, "model.layers.5.attn_shortcut_Q", "blk.5.attn_shortcut.weight"},
        {SG_ARCH_LLAMA, "model.layers.5.mlp_shortcut_Q", "blk.5.mlp_shortcut.weight"},
        {SG_ARCH_OPT, "model.decoder.embed_tokens.weight", "token_embd.weight"},
        {SG_ARCH_OPT, "model.decoder.embed_positions.weight", "position_embd.weight"},
        {SG_ARCH_OPT, "model.decoder.layers.2.self_attn_layer_norm.bias", "blk.2.attn_norm.bias"},
        {SG_ARCH_OPT, "model.decoder.layers.2.self_attn.out_proj.weight", "blk.2.attn_output.weight"},
        {SG_ARCH_OPT, "model.decoder.layers.2.final_layer_norm.weight", "blk.2.ffn_norm.weight"},
        {SG_ARCH_OPT, "model.decoder.layers.2.fc1.bias", "blk.2.ffn_up.bias"},
        {SG_ARCH_OPT, "model.decoder.layers.2.fc2.weight", "blk.2.ffn_down.weight"},
        {SG_ARCH_OPT, "model.decoder.final_layer_norm.bias", "output_norm.bias"},
        {SG_ARCH_OPT, "lm_head.weight", "output.weight"},
        {SG_ARCH_OPT, "model.decoder.layers.1.mlp_shortcut_Q", "blk.1.mlp_shortcut.weight"},
        {SG_ARCH_PHI, "model.layers.0.input_layernorm.bias", "blk.0.attn_norm.bias"},
        {SG_ARCH_PHI, "model.layers.0.self_attn.dense.weight", "blk.0.attn_output.weight"},
        {SG_ARCH_PHI, "model.layers.0.mlp.fc1.weight", "blk.0.ffn_up.weight"},
        {SG_ARCH_PHI, "model.layers.0.mlp.fc2.bias", "blk.0.ffn_down.bias"},
        {SG_ARCH_PHI, "model.final_layernorm.weight", "output_norm.weight"},
        {SG_ARCH_PHI, "lm_head.bias", "output.bias"},
        {SG_ARCH_PHI, "model.layers.4.attn_shortcut_Q", "blk.4.attn_shortcut.weight"},
    };
    int bad = 0;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char canon[128], hf[128];
        int ok = sg_name_from_hf(cases[i].arch, cases[i].hf, canon, sizeof canon) == 0 &&
                 !strcmp(canon, cases[i].canon) &&
                 sg_name_to_hf(cases[i].arch, cases[i].canon, hf, sizeof hf) == 0 &&
                 !strcmp(hf, cases[i].hf);
        if (!ok) {
            tap_diag("%s: %s <-> %s failed", sg_arch_name(cases[i].arch), cases[i].hf,
                     cases[i].canon);
            bad++;
        }
    }
    tap_ok(!bad, "%zu HF <-> canonical names map both ways", sizeof cases / sizeof cases[0]);

    char out[128];
    tap_ok(sg_name_from_hf(SG_ARCH_OPT, "decoder.layers.0.fc1.weight", out, sizeof out) == 0 &&
               !strcmp(out, "blk.0.ffn_up.weight"),
           "OPT names without the model. prefix are accepted");
    tap_ok(sg_name_from_hf(SG_ARCH_LLAMA, "model.layers.0.self_attn.rotary_emb.inv_freq", out,
                           sizeof out) == SG_EMISSING &&
               sg_name_from_hf(SG_ARCH_LLAMA, "model.layers.01.mlp.up_proj.weight", out,
                               sizeof out) == SG_EMISSING &&
               sg_name_from_hf(SG_ARCH_PHI, "model.layers.0.self_attn.o_proj.weight", out,
                               sizeof out) == SG_EMISSING &&
               sg_name_from_hf(SG_ARCH_OPT, "model.decoder.layers.x.fc1.weight", out,
                               sizeof out) == SG_EMISSING,
           "rotary caches, other architectures' names and bad layer numbers are not tensors");
    tap_ok(sg_name_to_hf(SG_ARCH_PHI, "blk.0.ffn_gate.weight", out, sizeof out) == SG_EARG &&
               sg_name_to_hf(SG_ARCH_LLAMA, "blk.0.attn_q.weight", out, 8) == SG_EARG,
           "a canonical name the architecture lacks, or a short buffer, is SG_EARG");
}

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    return remove(path);
}

int main(void)
{
    dir = tap_tmpdir();
    sg_model_config opt;
    test_llama3();
    test_qwen2_mistral();
    test_phi2();
    test_tinyopt(&opt);
    test_refusals();
    test_sliced(&opt);
    test_names();
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return tap_done();
}
