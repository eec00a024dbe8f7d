/* sg-synth: writes a deterministic random model (see src/formats/synth_model.h) as a
 * Hugging Face directory or a GGUF file.
 *
 *   sg-synth --arch llama|opt|phi --dim D --layers L --heads H [--kv-heads K]
 *            --ffn F --vocab V [--head-dim HD] [--qkv-bias] [--ctx N]
 *            [--seed S] [--dtype f32|f16|bf16|q8_0|q4_0|q4_1] [--shards N]
 *            --format hf|gguf --out PATH
 *
 * HF output streams one tensor at a time; GGUF output builds the model in
 * memory first (sg_gguf_save_model takes every tensor at once).
 * Exit status: 0 success, 1 failure, 2 bad usage. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "sg_error.h"
#include "synth_model.h"

static void usage(FILE *f)
{
    fprintf(f, "usage: sg-synth --arch llama|opt|phi --dim D --layers L --heads H "
               "[--kv-heads K] --ffn F --vocab V\n"
               "                [--head-dim HD] [--qkv-bias] [--ctx N] [--seed S]\n"
               "                [--dtype f32|f16|bf16|q8_0|q4_0|q4_1] [--shards N]\n"
               "                --format hf|gguf --out PATH\n");
}

static int parse_i64(const char *opt, const char *s, int64_t *out)
{
    char *end;
    long long v = strtoll(s, &end, 10);
    if (!*s || *end || v < 0) {
        fprintf(stderr, "sg-synth: %s: \"%s\" is not a non-negative integer\n", opt, s);
        return -1;
    }
    *out = v;
    return 0;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"arch", 1, 0, 'a'},   {"dim", 1, 0, 'd'},    {"layers", 1, 0, 'l'},
        {"heads", 1, 0, 'h'},  {"kv-heads", 1, 0, 'k'}, {"ffn", 1, 0, 'f'},
        {"vocab", 1, 0, 'v'},  {"head-dim", 1, 0, 'H'}, {"qkv-bias", 0, 0, 'b'},
        {"ctx", 1, 0, 'c'},    {"seed", 1, 0, 's'},   {"dtype", 1, 0, 't'},
        {"shards", 1, 0, 'n'}, {"format", 1, 0, 'F'}, {"out", 1, 0, 'o'},
        {"help", 0, 0, '?'},   {0, 0, 0, 0},
    };
    const char *arch = NULL, *dtype = "f32", *format = NULL, *out = NULL;
    int64_t dim = 0, layers = 0, heads = 0, kv = 0, ffn = 0, vocab = 0, head_dim = 0, ctx = 0,
            seed = 0, shards = 1;
    int qkv_bias = 0, c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int64_t *target = NULL;
        switch (c) {
        case 'a': arch = optarg; break;
        case 't': dtype = optarg; break;
        case 'F': format = optarg; break;
        case 'o': out = optarg; break;
        case 'b': qkv_bias = 1; break;
        case 'd': target = &dim; break;
        case 'l': target = &layers; break;
        case 'h': target = &heads; break;
        case 'k': target = &kv; break;
        case 'f': target = &ffn; break;
        case 'v': target = &vocab; break;
        case 'H': target = &head_dim; break;
        case 'c': target = &ctx; break;
        case 's': target = &seed; break;
        case 'n': target = &shards; break;
        default: usage(c == '?' && optopt == 0 ? stdout : stderr); return c == '?' ? 2 : 2;
        }
        if (target && parse_i64(argv[optind - 1], optarg, target))
            return 2;
    }
    if (!arch || !format || !out || !dim || !layers || !heads || !ffn || !vocab ||
        optind != argc) {
        usage(stderr);
        return 2;
    }
    sg_arch a;
    if (!strcmp(arch, "llama"))
        a = SG_ARCH_LLAMA;
    else if (!strcmp(arch, "opt"))
        a = SG_ARCH_OPT;
    else if (!strcmp(arch, "phi"))
        a = SG_ARCH_PHI;
    else {
        fprintf(stderr, "sg-synth: --arch: \"%s\" is not llama, opt or phi\n", arch);
        return 2;
    }
    static const struct { const char *name; sg_dtype dt; } dtypes[] = {
        {"f32", SG_DT_F32},   {"f16", SG_DT_F16},   {"bf16", SG_DT_BF16},
        {"q8_0", SG_DT_Q8_0}, {"q4_0", SG_DT_Q4_0}, {"q4_1", SG_DT_Q4_1},
    };
    int dt = -1;
    for (size_t i = 0; i < sizeof dtypes / sizeof dtypes[0]; i++)
        if (!strcmp(dtype, dtypes[i].name))
            dt = (int)dtypes[i].dt;
    if (dt < 0) {
        fprintf(stderr, "sg-synth: --dtype: \"%s\" is not f32, f16, bf16, q8_0, q4_0 or q4_1\n",
                dtype);
        return 2;
    }
    int gguf = !strcmp(format, "gguf");
    if (!gguf && strcmp(format, "hf")) {
        fprintf(stderr, "sg-synth: --format: \"%s\" is not hf or gguf\n", format);
        return 2;
    }
    if (!gguf && dt != SG_DT_F32 && dt != SG_DT_F16 && dt != SG_DT_BF16) {
        fprintf(stderr, "sg-synth: --dtype %s needs --format gguf\n", dtype);
        return 2;
    }

    sg_model_config cfg;
    int rc = sg_synth_config(a, dim, layers, heads, kv, head_dim, ffn, vocab, &cfg);
    if (rc == 0 && (qkv_bias || ctx)) {
        if (qkv_bias)
            cfg.qkv_bias = 1;
        if (ctx)
            cfg.max_positions = ctx;
        rc = sg_config_validate(&cfg, "sg-synth");
    }
    if (rc == 0 && !gguf) {
        rc = sg_synth_save_hf(out, &cfg, (uint64_t)seed, (sg_dtype)dt, (int)shards);
    } else if (rc == 0) {
        sg_named_tensor *t;
        int n;
        rc = sg_synth_model(&cfg, (uint64_t)seed, &t, &n);
        if (rc == 0)
            rc = sg_gguf_save_model(out, &cfg, t, n, (sg_dtype)dt, NULL);
        sg_synth_free(t, n);
    }
    if (rc) {
        fprintf(stderr, "sg-synth: %s\n", sg_last_error()[0] ? sg_last_error() : sg_strerror(rc));
        return 1;
    }
    return 0;
}
