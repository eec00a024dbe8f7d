/* tokenizer.ggml.* -> sg_tokenizer_spec -> sg_tokenizer_build.
 * Kept apart from the config reader so programs that never tokenize do
 * not pull the tokenizer in. Defaults follow llama.cpp's vocab loader. */
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "sg_error.h"
#include "tokenizer.h"

static int opt_id(const sg_gguf *g, const char *key, int32_t def, size_t n_vocab, int32_t *out)
{
    int64_t v;
    *out = def;
    if (!sg_gguf_has_key(g, key))
        return 0;
    int err = sg_gguf_get_int(g, key, &v);
    if (err)
        return err;
    if (v < -1 || v >= (int64_t)n_vocab)
        return sg_fail(SG_EFORMAT, "%s: %s: token id %lld is outside the vocabulary of %zu",
                       sg_gguf_path(g), key, (long long)v, n_vocab);
    *out = (int32_t)v;
    return 0;
}

static int opt_bool(const sg_gguf *g, const char *key, int def, int *out)
{
    *out = def;
    return sg_gguf_has_key(g, key) ? sg_gguf_get_bool(g, key, out) : 0;
}

static int length_mismatch(const sg_gguf *g, const char *key, size_t n, size_t n_vocab)
{
    return sg_fail(SG_EFORMAT, "%s: %s: %zu entries for %zu tokens", sg_gguf_path(g), key, n,
                   n_vocab);
}

int sg_gguf_tokenizer(const sg_gguf *g, sg_tokenizer **out)
{
    const char *path = sg_gguf_path(g), *model;
    sg_tokenizer_spec spec;
    float *scores = NULL;
    int32_t *types = NULL;
    size_t n;
    int err, llama;
    *out = NULL;
    memset(&spec, 0, sizeof spec);
    if ((err = sg_gguf_get_string(g, "tokenizer.ggml.model", &model)))
        return err;
    llama = !strcmp(model, "llama");
    if (!llama && strcmp(model, "gpt2"))
        return sg_fail(SG_EUNSUPPORTED,
                       "%s: tokenizer.ggml.model: \"%s\" is not supported (llama and gpt2 are)",
                       path, model);
    if ((err = sg_gguf_get_string_array(g, "tokenizer.ggml.tokens", &spec.tokens, &spec.n_vocab)))
        return err;
    if (spec.n_vocab == 0)
        return sg_fail(SG_EFORMAT, "%s: tokenizer.ggml.tokens: empty vocabulary", path);

    if (sg_gguf_has_key(g, "tokenizer.ggml.token_type")) {
        if ((err = sg_gguf_get_int_array(g, "tokenizer.ggml.token_type", &types, &n)))
            goto done;
        if (n != spec.n_vocab) {
            err = length_mismatch(g, "tokenizer.ggml.token_type", n, spec.n_vocab);
            goto done;
        }
        spec.types = types;
    }
    if (llama) {
        /* SentencePiece BPE: merge priority is the score */
        spec.kind = SG_TOK_SCORES;
        if ((err = sg_gguf_get_float_array(g, "tokenizer.ggml.scores", &scores, &n)))
            goto done;
        if (n != spec.n_vocab) {
            err = length_mismatch(g, "tokenizer.ggml.scores", n, spec.n_vocab);
            goto done;
        }
        spec.scores = scores;
    } else {
        spec.kind = SG_TOK_MERGES_BYTES;
        if ((err = sg_gguf_get_string_array(g, "tokenizer.ggml.merges", &spec.merges,
                                            &spec.n_merges)))
            goto done;
        if (sg_gguf_has_key(g, "tokenizer.ggml.pre") &&
            (err = sg_gguf_get_string(g, "tokenizer.ggml.pre", &spec.pre_name)))
            goto done;
    }
    if ((err = opt_id(g, "tokenizer.ggml.bos_token_id", llama ? 1 : -1, spec.n_vocab,
                      &spec.bos_id)) ||
        (err = opt_id(g, "tokenizer.ggml.eos_token_id", llama ? 2 : -1, spec.n_vocab,
                      &spec.eos_id)) ||
        (err = opt_id(g, "tokenizer.ggml.unknown_token_id", llama ? 0 : -1, spec.n_vocab,
                      &spec.unk_id)) ||
        (err = opt_bool(g, "tokenizer.ggml.add_bos_token", llama, &spec.add_bos)) ||
        (err = opt_bool(g, "tokenizer.ggml.add_space_prefix", llama, &spec.add_space_prefix)))
        goto done;
    /* llama.cpp's defaults name ids 0-2 even in a tiny vocabulary */
    if (spec.bos_id >= (int32_t)spec.n_vocab) spec.bos_id = -1;
    if (spec.eos_id >= (int32_t)spec.n_vocab) spec.eos_id = -1;
    if (spec.unk_id >= (int32_t)spec.n_vocab) spec.unk_id = -1;
    err = sg_tokenizer_build(&spec, out);
done:
    free(scores);
    free(types);
    return err;
}
