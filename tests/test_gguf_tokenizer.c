/* Tokenizers from GGUF metadata: a gpt2 (merges) and a llama (scores)
 * vocabulary written with sg_gguf_save_model and read back; missing and
 * inconsistent tokenizer.ggml.* keys refused; the real SmolLM2 vocabulary
 * encoding like Hugging Face tokenizers (ids below computed with the python
 * tokenizers package from this file's own tokens and merges). */
#include <ftw.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "sg_error.h"
#include "tap.h"
#include "tokenizer.h"

static const char *dir;

static const char *path_in_dir(const char *name)
{
    static char buf[4][512];
    static int next;
    char *out = buf[next++ % 4];
    snprintf(out, 512, "%s/%s", dir, name);
    return out;
}

static int msg_has(const char *s) { return strstr(sg_last_error(), s) != NULL; }

/* A one-layer model whose only purpose is to carry a vocabulary. */
static int save_with_vocab(const char *path, const sg_gguf_vocab *v)
{
    static float w[96 * 32], e[16 * 32], n[32];
    sg_model_config c;
    memset(&c, 0, sizeof c);
    c.arch = SG_ARCH_LLAMA, c.dim = 32, c.n_layers = 1, c.n_heads = 2, c.n_kv_heads = 2;
    c.head_dim = 16, c.ffn_dim = 32, c.vocab_size = (int64_t)v->n_tokens, c.max_positions = 64;
    c.gated_mlp = 1, c.norm_eps = 1e-5, c.rope = SG_ROPE_PAIRS, c.rope_theta = 10000;
    c.rope_dim = 16, c.bos_id = -1, c.eos_id = -1;
    sg_config_set_unsliced(&c);
    sg_named_tensor t[] = {
        {"token_embd.weight", 2, {c.vocab_size, 32}, e},
        {"blk.0.attn_norm.weight", 1, {32, 0}, n},
        {"blk.0.attn_q.weight", 2, {32, 32}, w},
    };
    return sg_gguf_save_model(path, &c, t, 3, SG_DT_F32, v);
}

static int encode_is(const sg_tokenizer *t, const char *text, const int32_t *want, size_t n_want)
{
    int32_t *ids = NULL;
    size_t n = 0;
    int ok = sg_tokenizer_encode(t, text, strlen(text), 0, &ids, &n) == 0 && n == n_want &&
             !memcmp(ids, want, n * sizeof *ids);
    if (!ok) {
        printf("# got");
        for (size_t i = 0; i < n; i++)
            printf(" %d", ids[i]);
        printf("\n");
    }
    free(ids);
    return ok;
}

static void gpt2_vocab(void)
{
    /* byte-level: a space is "Ġ" (U+0120) */
    const char *tokens[] = {"<|endoftext|>", "a", "b", "c", "\xc4\xa0", "ab", "\xc4\xa0" "ab",
                            "abc"};
    int32_t types[] = {3, 1, 1, 1, 1, 1, 1, 1};
    const char *merges[] = {"a b", "\xc4\xa0 ab", "ab c"};
    sg_gguf_vocab v = {"gpt2", "gpt2", tokens, NULL, types, 8, merges, 3};
    const char *path = path_in_dir("gpt2.gguf");
    sg_gguf *g = NULL;
    sg_tokenizer *t = NULL;
    sg_clear_error();
    int rc = save_with_vocab(path, &v);
    if (!rc)
        rc = sg_gguf_open(path, &g);
    if (!rc)
        rc = sg_gguf_tokenizer(g, &t);
    if (tap_ok(rc == 0, "gpt2 vocabulary: written, read, built (%s)", sg_last_error())) {
        tap_ok(sg_tokenizer_vocab_size(t) == 8 && sg_tokenizer_bos(t) == -1 &&
                   !strcmp(sg_tokenizer_piece(t, 6), "\xc4\xa0" "ab"),
               "gpt2: 8 tokens, no BOS, pieces as written");
        tap_ok(encode_is(t, "abc ab", (int32_t[]){7, 6}, 2), "gpt2: \"abc ab\" -> abc, Ġab");
    }
    sg_tokenizer_free(t);
    sg_gguf_close(g);
}

static void llama_vocab(void)
{
    /* SentencePiece: a space is "▁" (U+2581), merged by score */
    const char *tokens[] = {"<unk>", "<s>", "</s>", "\xe2\x96\x81", "a", "b",
                            "\xe2\x96\x81" "a", "ab", "\xe2\x96\x81" "ab"};
    float scores[] = {0, 0, 0, -1, -2, -3, -4, -5, -6};
    int32_t types[] = {2, 3, 3, 1, 1, 1, 1, 1, 1};
    sg_gguf_vocab v = {"llama", NULL, tokens, scores, types, 9, NULL, 0};
    const char *path = path_in_dir("llama.gguf");
    sg_gguf *g = NULL;
    sg_tokenizer *t = NULL;
    sg_clear_error();
    int rc = save_with_vocab(path, &v);
    if (!rc)
        rc = sg_gguf_open(path, &g);
    if (!rc)
        rc = sg_gguf_tokenizer(g, &t);
    if (tap_ok(rc == 0, "llama vocabulary: written, read, built (%s)", sg_last_error())) {
        /* llama.cpp's defaults: bos 1, eos 2, unk 0, BOS added, space prefix */
        tap_ok(sg_tokenizer_vocab_size(t) == 9 && sg_tokenizer_bos(t) == 1 &&
                   sg_tokenizer_eos(t) == 2,
               "llama: 9 tokens, default bos 1 and eos 2");
        tap_ok(encode_is(t, "ab", (int32_t[]){8}, 1), "llama: \"ab\" -> ▁ab (dummy prefix)");
    }
    sg_tokenizer_free(t);
    sg_gguf_close(g);
}

/* ---- hand-made metadata ---- */

typedef struct {
    unsigned char b[1024];
    size_t n;
} bytes;

static void put(bytes *f, const void *p, size_t n) { memcpy(f->b + f->n, p, n), f->n += n; }
static void u32(bytes *f, uint32_t v) { put(f, &v, 4); }
static void u64(bytes *f, uint64_t v) { put(f, &v, 8); }
static void str(bytes *f, const char *s) { u64(f, strlen(s)), put(f, s, strlen(s)); }
static void kv_str(bytes *f, const char *k, const char *s) { str(f, k), u32(f, 8), str(f, s); }

static void strings(bytes *f, const char *key, int n)
{
    str(f, key), u32(f, 9), u32(f, 8), u64(f, (uint64_t)n);
    for (int i = 0; i < n; i++)
        str(f, i ? "x" : "<unk>");
}

static void refused(bytes *f, const char *name, int code, const char *want)
{
    const char *path = path_in_dir(name);
    FILE *fp = fopen(path, "wb");
    fwrite(f->b, 1, f->n, fp);
    fclose(fp);
    sg_gguf *g = NULL;
    sg_tokenizer *t = (sg_tokenizer *)1;
    int rc = sg_gguf_open(path, &g);
    if (rc == 0)
        rc = sg_gguf_tokenizer(g, &t);
    tap_ok(rc == code && t == NULL && strstr(sg_last_error(), path) && msg_has(want),
           "%s: %s", name, sg_last_error());
    sg_gguf_close(g);
}

static void header(bytes *f, uint64_t n_kv)
{
    f->n = 0;
    put(f, "GGUF", 4), u32(f, 3), u64(f, 0), u64(f, n_kv);
}

static void bad_metadata(void)
{
    bytes f;
    header(&f, 1);
    strings(&f, "tokenizer.ggml.tokens", 3);
    refused(&f, "no-model.gguf", SG_EMISSING, "tokenizer.ggml.model");
    header(&f, 2);
    kv_str(&f, "tokenizer.ggml.model", "llama");
    strings(&f, "tokenizer.ggml.tokens", 3);
    refused(&f, "no-scores.gguf", SG_EMISSING, "tokenizer.ggml.scores");
    header(&f, 2);
    kv_str(&f, "tokenizer.ggml.model", "gpt2");
    strings(&f, "tokenizer.ggml.tokens", 3);
    refused(&f, "no-merges.gguf", SG_EMISSING, "tokenizer.ggml.merges");
    header(&f, 1);
    kv_str(&f, "tokenizer.ggml.model", "gpt2");
    refused(&f, "no-tokens.gguf", SG_EMISSING, "tokenizer.ggml.tokens");
    header(&f, 3);
    kv_str(&f, "tokenizer.ggml.model", "llama");
    strings(&f, "tokenizer.ggml.tokens", 3);
    str(&f, "tokenizer.ggml.scores"), u32(&f, 9), u32(&f, 6), u64(&f, 2);
    u32(&f, 0), u32(&f, 0);
    refused(&f, "short-scores.gguf", SG_EFORMAT, "tokenizer.ggml.scores: 2 entries for 3 tokens");
    header(&f, 2);
    kv_str(&f, "tokenizer.ggml.model", "bert");
    strings(&f, "tokenizer.ggml.tokens", 3);
    refused(&f, "bert.gguf", SG_EUNSUPPORTED, "bert");
}

static void real_model(void)
{
    char def[4096];
    const char *path = getenv("SG_DEFAULT_MODEL");
    if (!path || !*path) {
        snprintf(def, sizeof def, "%s/.cache/slicegpt-stream/SmolLM2-135M-Instruct.Q4_1.gguf",
                 getenv("HOME") ? getenv("HOME") : "");
        path = def;
    }
    if (access(path, R_OK) != 0) {
        char why[4200];
        snprintf(why, sizeof why, "%s not present", path);
        tap_skip("SmolLM2 tokenizer", why);
        return;
    }
    sg_gguf *g = NULL;
    sg_tokenizer *t = NULL;
    sg_clear_error();
    int rc = sg_gguf_open(path, &g);
    if (!rc)
        rc = sg_gguf_tokenizer(g, &t);
    if (tap_ok(rc == 0, "SmolLM2: tokenizer built (%s)", sg_last_error())) {
        tap_ok(sg_tokenizer_vocab_size(t) == 49152 && sg_tokenizer_bos(t) == 1 &&
                   sg_tokenizer_eos(t) == 2,
               "SmolLM2: 49152 tokens, bos 1, eos 2");
        static const int32_t fox[] = {19556, 905, 17, 378, 2365, 6354, 16438,
                                      27003, 690, 260, 23790, 2767, 30};
        static const int32_t lily[] = {6403, 1980, 253, 655, 28, 665, 436,
                                       253, 1838, 8180, 3365, 14176, 30};
        tap_ok(encode_is(t, "Hello world! The quick brown fox jumps over the lazy dog.", fox, 13),
               "SmolLM2: a pangram encodes as Hugging Face tokenizers does");
        tap_ok(encode_is(t, "Once upon a time, there was a little girl named Lily.", lily, 13),
               "SmolLM2: a story opening encodes as Hugging Face tokenizers does");
    }
    sg_tokenizer_free(t);
    sg_gguf_close(g);
}

static int remove_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

int main(void)
{
    dir = tap_tmpdir();
    gpt2_vocab();
    llama_vocab();
    bad_metadata();
    real_model();
    nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    return tap_done();
}
