/* sg-gguf-f32: a llama-family GGUF (any type we read: Q4_1, Q8_0, F16...)
 * rewritten with every tensor in float32, tokenizer included, so that
 * llama.cpp, transformers (gguf_file=) and slicegpt-stream score the very
 * same weights (bench/bench_peers.sh); and the token ids slicegpt-stream
 * scores for a text (BOS first), so the other engines see the same windows.
 *
 *   sg-gguf-f32 IN.gguf OUT.gguf
 *   sg-gguf-f32 --tokens IN.gguf TEXT     (ids, one per line, on stdout)
 *   sg-gguf-f32 --calib IN.gguf TEXT NSAMPLES SEQLEN SEED
 *                                         (the calibration windows run samples
 *                                         with the same options, one per line,
 *                                         ids separated by spaces) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "slicegpt.h"

static int die(const char *what)
{
    fprintf(stderr, "sg-gguf-f32: %s: %s\n", what, sg_last_error());
    return 1;
}

static int tokens(const char *model, const char *text_path)
{
    sg_model_files *f;
    sg_tokenizer *tok;
    char *text;
    size_t len, n;
    int32_t *ids;
    if (sg_model_files_open(model, &f) || sg_model_files_tokenizer(f, NULL, &tok))
        return die(model);
    if (sg_text_read(text_path, &text, &len) || sg_tokenizer_encode(tok, text, len, 1, &ids, &n))
        return die(text_path);
    for (size_t i = 0; i < n; i++)
        printf("%d\n", ids[i]);
    free(ids);
    free(text);
    sg_tokenizer_free(tok);
    sg_model_files_close(f);
    return 0;
}

/* The windows sg_batch_calibration draws, as `run --calib` does: what
 * bench/bench_slice_peers.sh hands the PyTorch reference. */
static int calib(const char *model, const char *text_path, int64_t nsamples, int64_t seqlen,
                 uint64_t seed)
{
    sg_model_files *f;
    sg_tokenizer *tok;
    char *text;
    size_t len;
    sg_token_batch b;
    if (sg_model_files_open(model, &f) || sg_model_files_tokenizer(f, NULL, &tok))
        return die(model);
    if (sg_text_read(text_path, &text, &len) ||
        sg_batch_calibration(tok, text, len, nsamples, seqlen, seed, &b))
        return die(text_path);
    for (int64_t s = 0; s < b.n_seq; s++)
        for (int64_t t = b.offsets[s]; t < b.offsets[s + 1]; t++)
            printf("%d%c", b.ids[t], t + 1 < b.offsets[s + 1] ? ' ' : '\n');
    sg_token_batch_free(&b);
    free(text);
    sg_tokenizer_free(tok);
    sg_model_files_close(f);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 4 && !strcmp(argv[1], "--tokens"))
        return tokens(argv[2], argv[3]);
    if (argc == 7 && !strcmp(argv[1], "--calib"))
        return calib(argv[2], argv[3], atoll(argv[4]), atoll(argv[5]),
                     (uint64_t)strtoull(argv[6], NULL, 10));
    if (argc != 3) {
        fprintf(stderr, "usage: sg-gguf-f32 IN.gguf OUT.gguf | sg-gguf-f32 --tokens IN.gguf TEXT\n");
        return 2;
    }
    sg_gguf *g;
    sg_model_config cfg;
    if (sg_gguf_open(argv[1], &g) || sg_gguf_model_config(g, &cfg))
        return die(argv[1]);
    int n = sg_gguf_tensor_count(g), kept = 0;
    sg_named_tensor *t = calloc(n, sizeof *t);
    for (int i = 0; i < n; i++) {
        const sg_gguf_tensor *s = sg_gguf_tensor_at(g, i);
        if (!strcmp(s->name, "rope_freqs.weight"))
            continue; /* the writer derives it from cfg */
        float *data = malloc(s->numel * sizeof(float));
        if (!data || sg_gguf_read_f32(g, s, data))
            return die(s->name);
        sg_named_tensor *o = &t[kept++];
        o->name = s->name;
        o->ndim = s->ndim;
        o->shape[0] = s->ndim == 2 ? s->ne[1] : s->ne[0]; /* row-major (rows, cols) */
        o->shape[1] = s->ndim == 2 ? s->ne[0] : 0;
        o->data = data;
    }
    sg_gguf_vocab v = {0};
    const char *const *merges = NULL;
    size_t n_types = 0;
    if (sg_gguf_get_string(g, "tokenizer.ggml.model", &v.model) ||
        sg_gguf_get_string_array(g, "tokenizer.ggml.tokens", &v.tokens, &v.n_tokens))
        return die("tokenizer");
    sg_gguf_get_string(g, "tokenizer.ggml.pre", &v.pre);
    if (!sg_gguf_get_string_array(g, "tokenizer.ggml.merges", &merges, &v.n_merges))
        v.merges = merges;
    float *scores = NULL;
    size_t n_scores = 0;
    if (!sg_gguf_get_float_array(g, "tokenizer.ggml.scores", &scores, &n_scores))
        v.scores = scores;
    int32_t *types = NULL;
    if (!sg_gguf_get_int_array(g, "tokenizer.ggml.token_type", &types, &n_types))
        v.types = types;
    if (sg_gguf_save_model(argv[2], &cfg, t, kept, SG_DT_F32, &v))
        return die(argv[2]);
    return 0;
}
