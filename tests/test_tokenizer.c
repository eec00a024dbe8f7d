/* Tokenizers: the llama2.c tok512 vocabulary against known ids and against
 * a straightforward O(n^2) re-implementation of llama2.c's encoder written
 * here; round trips over TinyStories and WikiText-2; hand-made GPT-2
 * byte-level and Llama-2 style vocabularies (built directly and as
 * tokenizer.json files) with ids worked out by hand; and broken files. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sg_error.h"
#include "pretokenize.h"
#include "read_file.h"
#include "tap.h"
#include "tokenizer.h"

/* The whole file, or NULL (the library's reader; its error is not needed here). */
static char *read_all(const char *path, size_t *len)
{
    char *buf;
    return sg_read_file(path, 0, &buf, len) ? NULL : buf;
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        perror(path);
        exit(1);
    }
    fclose(f);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static int same_ids(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

/* encode(text) == want[0..nwant) */
static int encodes_to(const sg_tokenizer *t, const char *text, int bos, const int32_t *want,
                      size_t nwant)
{
    int32_t *ids;
    size_t n;
    if (sg_tokenizer_encode(t, text, strlen(text), bos, &ids, &n) < 0) {
        tap_diag("encode failed: %s", sg_last_error());
        return 0;
    }
    int ok = same_ids(ids, n, want, nwant);
    if (!ok) {
        char got[1024] = "";
        for (size_t i = 0; i < n && strlen(got) < 1000; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), " %d", ids[i]);
        tap_diag("\"%s\" gave%s", text, got);
    }
    free(ids);
    return ok;
}

static int round_trips(const sg_tokenizer *t, const char *s, size_t len)
{
    int32_t *ids;
    size_t n, m;
    char *back;
    if (sg_tokenizer_encode(t, s, len, 1, &ids, &n) < 0)
        return 0;
    int ok = sg_tokenizer_decode(t, ids, n, &back, &m) == 0 && m == len &&
             memcmp(back, s, len) == 0;
    free(back);
    free(ids);
    return ok;
}

/* t and u give the same ids for text (BOS included) */
static int same_encoding(const sg_tokenizer *t, const sg_tokenizer *u, const char *text,
                         size_t len)
{
    int32_t *a, *b;
    size_t na, nb;
    if (sg_tokenizer_encode(t, text, len, 1, &a, &na) < 0)
        return 0;
    if (sg_tokenizer_encode(u, text, len, 1, &b, &nb) < 0) {
        free(a);
        return 0;
    }
    int ok = same_ids(a, na, b, nb);
    free(a);
    free(b);
    return ok;
}

/* Saves t as tokenizer.json under dir and loads it back. */
static sg_tokenizer *save_and_reload(const sg_tokenizer *t, const char *dir, const char *name)
{
    char path[512];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    sg_tokenizer *u = NULL;
    if (sg_tokenizer_save_json(t, path) < 0 || sg_tokenizer_load_json(path, &u) < 0)
        tap_diag("%s", sg_last_error());
    unlink(path);
    return u;
}

#define IDS(...) ((const int32_t[]){__VA_ARGS__}), sizeof((const int32_t[]){__VA_ARGS__}) / 4

/* ---- the reference: llama2.c's encoder, rescanning for the best pair ---- */

typedef struct {
    int n;
    char **piece;
    int *len;
    float *score;
    int *sorted;   /* ids sorted by piece, for bsearch as llama2.c does */
} ref_vocab;

static const ref_vocab *cmp_vocab;
static const char *key_s;
static int key_n;

static int cmp_piece(const char *a, int na, const char *b, int nb)
{
    int c = memcmp(a, b, na < nb ? na : nb);
    return c ? c : na - nb;
}

static int cmp_ids(const void *x, const void *y)
{
    int a = *(const int *)x, b = *(const int *)y;
    int c = cmp_piece(cmp_vocab->piece[a], cmp_vocab->len[a], cmp_vocab->piece[b],
                      cmp_vocab->len[b]);
    return c ? c : a - b;
}

static int cmp_key(const void *k, const void *y)
{
    (void)k;
    int b = *(const int *)y;
    return cmp_piece(key_s, key_n, cmp_vocab->piece[b], cmp_vocab->len[b]);
}

static int ref_lookup(const ref_vocab *v, const char *s, int n)
{
    cmp_vocab = v;
    key_s = s;
    key_n = n;
    const int *hit = bsearch(&key_n, v->sorted, v->n, sizeof(int), cmp_key);
    if (!hit)
        return -1;
    while (hit > v->sorted && cmp_key(NULL, hit - 1) == 0) /* lowest id of a duplicate */
        hit--;
    return *hit;
}

static int ref_load(const char *path, ref_vocab *v)
{
    size_t n;
    unsigned char *b = (unsigned char *)read_all(path, &n);
    if (!b)
        return -1;
    size_t pos = 4;
    v->n = 0;
    v->piece = NULL;
    v->len = NULL;
    v->score = NULL;
    while (pos + 8 <= n) {
        v->piece = realloc(v->piece, (v->n + 1) * sizeof *v->piece);
        v->len = realloc(v->len, (v->n + 1) * sizeof *v->len);
        v->score = realloc(v->score, (v->n + 1) * sizeof *v->score);
        int32_t l;
        memcpy(&v->score[v->n], b + pos, 4);
        memcpy(&l, b + pos + 4, 4);
        pos += 8;
        v->piece[v->n] = malloc((size_t)l + 1);
        memcpy(v->piece[v->n], b + pos, (size_t)l);
        v->len[v->n] = l;
        pos += (size_t)l;
        v->n++;
    }
    free(b);
    v->sorted = malloc(v->n * sizeof(int));
    for (int i = 0; i < v->n; i++)
        v->sorted[i] = i;
    cmp_vocab = v;
    qsort(v->sorted, v->n, sizeof(int), cmp_ids);
    return 0;
}

/* BOS, a dummy " ", UTF-8 characters (a byte plus its continuation bytes),
 * then merge the best-scoring adjacent pair whose text is a piece, leftmost
 * on ties, until none is; leftover characters become <0xNN> = byte + 3. */
static size_t ref_encode(const ref_vocab *v, const char *text, size_t len, int32_t *out)
{
    size_t n = 0;
    out[n++] = 1;
    if (len == 0)
        return n; /* no dummy prefix for empty text */
    char *buf = malloc(len + 1);
    int *off = malloc((len + 1) * sizeof(int)), *sl = malloc((len + 1) * sizeof(int));
    buf[0] = ' ';
    memcpy(buf + 1, text, len);
    int ns = 0;
    for (size_t i = 0; i < len + 1;) {
        size_t l = 1;
        while (i + l < len + 1 && l < 4 && ((unsigned char)buf[i + l] & 0xC0) == 0x80)
            l++;
        off[ns] = (int)i;
        sl[ns++] = (int)l;
        i += l;
    }
    for (;;) {
        float best = -1e30f;
        int bi = -1;
        for (int i = 0; i + 1 < ns; i++) {
            int id = ref_lookup(v, buf + off[i], sl[i] + sl[i + 1]);
            if (id >= 0 && v->score[id] > best) {
                best = v->score[id];
                bi = i;
            }
        }
        if (bi < 0)
            break;
        sl[bi] += sl[bi + 1];
        memmove(off + bi + 1, off + bi + 2, (ns - bi - 2) * sizeof(int));
        memmove(sl + bi + 1, sl + bi + 2, (ns - bi - 2) * sizeof(int));
        ns--;
    }
    for (int i = 0; i < ns; i++) {
        int id = ref_lookup(v, buf + off[i], sl[i]);
        if (id >= 0)
            out[n++] = id;
        else
            for (int k = 0; k < sl[i]; k++)
                out[n++] = (unsigned char)buf[off[i] + k] + 3;
    }
    free(buf);
    free(off);
    free(sl);
    return n;
}

/* Each line of text (without its newline) as a call to fn. */
typedef int (*line_fn)(void *ctx, const char *line, size_t len);
static int for_lines(const char *text, size_t len, int skip_empty, size_t max, line_fn fn,
                     void *ctx)
{
    size_t count = 0, bad = 0;
    for (size_t i = 0; i < len && count < max;) {
        const char *nl = memchr(text + i, '\n', len - i);
        size_t l = nl ? (size_t)(nl - (text + i)) : len - i;
        if (l > 0 || !skip_empty) {
            count++;
            bad += !fn(ctx, text + i, l);
        }
        i += l + 1;
    }
    return (int)bad;
}

static int line_round_trip(void *ctx, const char *line, size_t len)
{
    int ok = round_trips(ctx, line, len);
    if (!ok)
        tap_diag("no round trip: %.60s", line);
    return ok;
}

typedef struct {
    const sg_tokenizer *t;
    const ref_vocab *v;
} ref_ctx;

static int line_matches_ref(void *ctx, const char *line, size_t len)
{
    const ref_ctx *c = ctx;
    int32_t *want = malloc((4 * len + 2) * sizeof *want), *got;
    size_t nw = ref_encode(c->v, line, len, want), ng;
    int ok = sg_tokenizer_encode(c->t, line, len, 1, &got, &ng) == 0 &&
             same_ids(got, ng, want, nw);
    if (!ok)
        tap_diag("differs from the reference: %.60s", line);
    free(got);
    free(want);
    return ok;
}

static void test_tok512(const char *dir)
{
    const char *path = tap_data_path("stories260K/tok512.bin");
    sg_tokenizer *t;
    sg_clear_error();
    int r = sg_tokenizer_load_llama2c(path, 512, &t);
    if (!tap_ok(r == 0, "tok512.bin loads (%s)", sg_last_error()))
        exit(tap_done());
    tap_ok(sg_tokenizer_vocab_size(t) == 512 && sg_tokenizer_bos(t) == 1 &&
               sg_tokenizer_eos(t) == 2 && sg_tokenizer_get_kind(t) == SG_TOK_SCORES,
           "512 tokens, BOS 1, EOS 2, score-based");
    tap_ok(encodes_to(t, "Once upon a time", 1, IDS(1, 403, 407, 261, 378)),
           "\"Once upon a time\" -> 1 403 407 261 378 (PROVENANCE.md)");
    tap_ok(encodes_to(t, "Once upon a time", 0, IDS(403, 407, 261, 378)), "same without BOS");
    tap_ok(encodes_to(t, "", 1, IDS(1)) && encodes_to(t, "", 0, NULL, 0),
           "empty text: BOS only, no dummy prefix");
    /* "日" (E6 97 A5) is not among the 512 pieces: its bytes fall back to
     * <0xE6> <0x97> <0xA5>, ids byte + 3; the dummy " " is piece 410. */
    tap_ok(encodes_to(t, "\xe6\x97\xa5", 0, IDS(410, 0xE6 + 3, 0x97 + 3, 0xA5 + 3)),
           "\"日\" -> \" \" <0xE6> <0x97> <0xA5> (byte fallback)");
    tap_ok(sg_tokenizer_find(t, "<0x0A>") == 13 && sg_tokenizer_find(t, " Once") == 403 &&
               sg_tokenizer_find(t, "\xe2\x96\x81Once") == 403,
           "find: byte piece, piece with space or U+2581");

    /* The greedy sample from BOS in PROVENANCE.md, decoded. */
    const int32_t greedy[] = {1,   403, 407, 261, 378, 432, 383, 286, 261, 376, 298,
                              315, 421, 395, 317, 426, 338, 401, 396, 267, 337, 2};
    char *text;
    size_t len;
    r = sg_tokenizer_decode(t, greedy, sizeof greedy / 4, &text, &len);
    const char *want = "Once upon a time, there was a little girl named Lily. She loved to play";
    tap_ok(r == 0 && strcmp(text, want) == 0 && len == strlen(want),
           "greedy ids decode to \"%s\" (BOS/EOS skipped, dummy space dropped)", text);
    free(text);
    int32_t bad_id = 512;
    tap_ok(sg_tokenizer_decode(t, &bad_id, 1, &text, &len) == SG_EARG, "decode rejects id 512");

    ref_vocab v;
    if (ref_load(path, &v) < 0)
        exit(1);
    ref_ctx rc = {t, &v};
    size_t n;
    char *stories = read_all(tap_data_path("tinystories-valid-subset/tinystories_valid_first.txt"),
                             &n);
    tap_ok(for_lines(stories, n, 1, 300, line_matches_ref, &rc) == 0,
           "heap engine == O(n^2) llama2.c reference, first 300 TinyStories lines");
    tap_ok(for_lines(stories, n, 1, SIZE_MAX, line_round_trip, t) == 0,
           "decode(encode(line)) == line for every non-empty TinyStories line");
    free(stories);

    char *wiki = read_all(tap_data_path("wikitext-2/wiki.test.raw"), &n);
    tap_ok(for_lines(wiki, n, 0, 300, line_matches_ref, &rc) == 0,
           "heap engine == reference, first 300 WikiText-2 lines (byte fallback)");
    tap_ok(for_lines(wiki, n, 0, SIZE_MAX, line_round_trip, t) == 0,
           "decode(encode(line)) == line for every WikiText-2 line");
    int32_t *ids;
    size_t nid;
    double t0 = now();
    r = sg_tokenizer_encode(t, wiki, n, 1, &ids, &nid);
    double dt = now() - t0;
    tap_ok(r == 0 && dt < 5.0, "whole wiki.test.raw (%zu bytes) in one call: %zu ids, %.2f s",
           n, nid, dt);
    tap_diag("tok512 encode speed: %.1f MB/s", n / dt / 1e6);
    r = sg_tokenizer_decode(t, ids, nid, &text, &len);
    tap_ok(r == 0 && len == n && memcmp(text, wiki, n) == 0, "whole-file round trip");
    free(text);
    free(ids);

    /* random bytes, invalid UTF-8 included, come back unchanged */
    uint64_t seed = 42;
    int fuzz_bad = 0;
    for (int k = 0; k < 2000; k++) {
        char buf[64];
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        size_t blen = (seed >> 33) % sizeof buf;
        for (size_t i = 0; i < blen; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            static const char pool[] = " \n\t\xc3\xa9\xe6\x97\xa5\x80\xff'0a";
            unsigned v = (unsigned)(seed >> 40);
            buf[i] = v & 1 ? (char)(v >> 8) : pool[(v >> 8) % (sizeof pool - 1)];
        }
        int32_t *fid;
        size_t fn, flen;
        char *fback;
        if (sg_tokenizer_encode(t, buf, blen, 1, &fid, &fn) < 0) {
            fuzz_bad++;
            continue;
        }
        if (sg_tokenizer_decode(t, fid, fn, &fback, &flen) < 0 || flen != blen ||
            memcmp(fback, buf, blen))
            fuzz_bad++;
        free(fback);
        free(fid);
    }
    tap_ok(fuzz_bad == 0, "2000 random byte strings round trip (%d failed)", fuzz_bad);

    /* Written as tokenizer.json (scores kept in model.sg_scores) and read
     * back, it is the same tokenizer. */
    sg_tokenizer *u = save_and_reload(t, dir, "tok512.json");
    tap_ok(u && sg_tokenizer_get_kind(u) == SG_TOK_SCORES && sg_tokenizer_bos(u) == 1 &&
               sg_tokenizer_eos(u) == 2 && same_encoding(t, u, wiki, n),
           "tok512 -> tokenizer.json -> same ids on all of wiki.test.raw");
    sg_tokenizer_free(u);
    free(wiki);

    for (int i = 0; i < v.n; i++)
        free(v.piece[i]);
    free(v.piece);
    free(v.len);
    free(v.score);
    free(v.sorted);
    sg_tokenizer_free(t);
}

/* Broken copies of tok512.bin must fail with the file named. */
static void test_bad_llama2c(const char *dir)
{
    size_t n;
    char *good = read_all(tap_data_path("stories260K/tok512.bin"), &n);
    char path[512];
    sg_tokenizer *t = NULL;
    int r;

    snprintf(path, sizeof path, "%s/tok_truncated.bin", dir);
    write_file(path, good, 3000);
    r = sg_tokenizer_load_llama2c(path, 512, &t);
    tap_ok(r == SG_EFORMAT && t == NULL && strstr(sg_last_error(), path),
           "truncated copy: SG_EFORMAT naming the file (%s)", sg_last_error());

    /* token 0's length field is at offset 8: make it negative, then huge */
    char *bad = malloc(n);
    memcpy(bad, good, n);
    int32_t neg = -5, huge = 1 << 30;
    memcpy(bad + 8, &neg, 4);
    snprintf(path, sizeof path, "%s/tok_neglen.bin", dir);
    write_file(path, bad, n);
    r = sg_tokenizer_load_llama2c(path, 512, &t);
    tap_ok(r == SG_EFORMAT && strstr(sg_last_error(), path), "negative length: %s",
           sg_last_error());
    memcpy(bad + 8, &huge, 4);
    write_file(path, bad, n);
    r = sg_tokenizer_load_llama2c(path, 512, &t);
    tap_ok(r == SG_EFORMAT && strstr(sg_last_error(), path), "huge length: %s",
           sg_last_error());
    free(bad);

    snprintf(path, sizeof path, "%s/tok_short.bin", dir);
    write_file(path, good, 2);
    r = sg_tokenizer_load_llama2c(path, 512, &t);
    tap_ok(r == SG_EFORMAT && strstr(sg_last_error(), path), "2-byte file: %s",
           sg_last_error());

    r = sg_tokenizer_load_llama2c(tap_data_path("stories260K/tok512.bin"), 511, &t);
    tap_ok(r == SG_EFORMAT && strstr(sg_last_error(), "bytes left"),
           "vocab size 511 leaves bytes over: %s", sg_last_error());
    r = sg_tokenizer_load_llama2c(tap_data_path("stories260K/tok512.bin"), 0, &t);
    tap_ok(r == 0 && sg_tokenizer_vocab_size(t) == 512, "vocab size 0 reads all 512");
    sg_tokenizer_free(t);

    snprintf(path, sizeof path, "%s/absent.bin", dir);
    r = sg_tokenizer_load_llama2c(path, 512, &t);
    tap_ok(r == SG_EMISSING && strstr(sg_last_error(), path), "missing file: SG_EMISSING, %s",
           sg_last_error());
    free(good);
}

/* ---- a hand-made GPT-2 byte-level vocabulary ---------------------------
 * Byte-level pieces spell each byte as a printable character: space is "Ġ"
 * (U+0120), and "é" (C3 A9) is "Ã©" (U+00C3 U+00A9). */
static const char *const bl_tokens[] = {
    "<|endoftext|>",                                           /* 0, control */
    "h", "e", "l", "o", "\xc4\xa0", "w", "r", "d", "1", "2",   /* 1..10, \xc4\xa0 = Ġ */
    "'", "s", "he", "ll", "hell", "hello", "\xc4\xa0w", "or",  /* 11..18 */
    "\xc4\xa0wor", "ld", "\xc4\xa0world", "12",                /* 19..22 */
    "\xc3\x83", "\xc2\xa9", "\xc3\x83\xc2\xa9",                /* 23..25: Ã, ©, Ã© */
    "\xc4\x8a",                                                /* 26: Ċ = "\n" */
};
static const char *const bl_merges[] = {
    "h e", "l l", "he ll", "hell o", "\xc4\xa0 w", "o r", "\xc4\xa0w or", "l d",
    "\xc4\xa0wor ld", "1 2", "\xc3\x83 \xc2\xa9",
};

static void test_byte_level(const char *test_dir)
{
    sg_tokenizer_spec spec = {
        .kind = SG_TOK_MERGES_BYTES,
        .n_vocab = sizeof bl_tokens / sizeof *bl_tokens,
        .tokens = bl_tokens,
        .merges = bl_merges,
        .n_merges = sizeof bl_merges / sizeof *bl_merges,
        .bos_id = 0,
        .eos_id = 0,
        .unk_id = -1,
        .pre_name = "gpt2",
    };
    sg_tokenizer *t;
    sg_clear_error();
    int r = sg_tokenizer_build(&spec, &t);
    if (!tap_ok(r == 0, "byte-level fixture builds (%s)", sg_last_error()))
        return;
    /* h e l l o: "h e" (rank 0), "l l" (1), "he ll" (2), "hell o" (3) */
    tap_ok(encodes_to(t, "hello world", 1, IDS(16, 21)),
           "\"hello world\" -> hello Ġworld (no BOS: add_bos unset)");
    /* "l l" matches at 0 and 1 with the same rank: the leftmost wins */
    tap_ok(encodes_to(t, "lll", 0, IDS(14, 3)), "\"lll\" -> ll l (leftmost on ties)");
    /* GPT-2 regex: "hello" "'s" " 12" -> the space joins the digits */
    tap_ok(encodes_to(t, "hello's 12", 0, IDS(16, 11, 12, 5, 22)),
           "gpt2 pre: \"hello's 12\" -> hello ' s Ġ 12");
    tap_ok(encodes_to(t, "\xc3\xa9", 0, IDS(25)), "\"é\" -> the merged byte pair Ã©");
    tap_ok(encodes_to(t, "hello\n", 0, IDS(16, 26)), "newline is Ċ");
    tap_ok(encodes_to(t, "h\x01" "e", 0, IDS(1, 2)),
           "a byte with no character in the vocabulary is dropped (as HF, llama.cpp)");
    char *text;
    size_t len;
    const int32_t ids[] = {0, 16, 21, 5, 25, 26, 0};
    r = sg_tokenizer_decode(t, ids, 7, &text, &len);
    tap_ok(r == 0 && strcmp(text, "hello world \xc3\xa9\n") == 0,
           "decode maps code points back to bytes, skips <|endoftext|>");
    free(text);
    const char *sample = "hello world\nhello's 12 \xc3\xa9 lll";
    sg_tokenizer *u = save_and_reload(t, test_dir, "bl.json");
    tap_ok(u && sg_tokenizer_get_kind(u) == SG_TOK_MERGES_BYTES &&
               same_encoding(t, u, sample, strlen(sample)),
           "saved as tokenizer.json and read back: same ids");
    sg_tokenizer_free(u);
    sg_tokenizer_free(t);

    /* smollm: every digit is split off first, so "12" never merges. */
    spec.pre_name = "smollm";
    r = sg_tokenizer_build(&spec, &t);
    tap_ok(r == 0 && encodes_to(t, "hello's 12", 0, IDS(16, 11, 12, 5, 9, 10)),
           "smollm pre: \"hello's 12\" -> hello ' s Ġ 1 2");
    u = save_and_reload(t, test_dir, "bl.json");
    tap_ok(u && same_encoding(t, u, "hello's 12", 10),
           "its Split(\\p{N}) + ByteLevel tokenizer.json reads back the same");
    sg_tokenizer_free(u);
    sg_tokenizer_free(t);

    spec.pre_name = "no-such-pre";
    r = sg_tokenizer_build(&spec, &t);
    tap_ok(r == SG_EUNSUPPORTED && strstr(sg_last_error(), "no-such-pre"),
           "unknown pre-tokenizer name refused: %s", sg_last_error());
}

/* ---- tokenizer.json files ---------------------------------------------- */

static const char json_bytelevel[] =
    "{\"version\": \"1.0\",\n"
    " \"added_tokens\": [{\"id\": 0, \"content\": \"<|endoftext|>\", \"special\": true}],\n"
    " \"normalizer\": null,\n"
    " \"pre_tokenizer\": {\"type\": \"Sequence\", \"pretokenizers\": [\n"
    "   {\"type\": \"Digits\", \"individual_digits\": true},\n"
    "   {\"type\": \"ByteLevel\", \"add_prefix_space\": false, \"trim_offsets\": true,\n"
    "    \"use_regex\": true}]},\n"
    " \"decoder\": {\"type\": \"ByteLevel\"},\n"
    " \"model\": {\"type\": \"BPE\", \"byte_fallback\": false, \"vocab\": {\n"
    "   \"<|endoftext|>\": 0, \"h\": 1, \"e\": 2, \"l\": 3, \"o\": 4, \"\\u0120\": 5, \"w\": 6,\n"
    "   \"r\": 7, \"d\": 8, \"1\": 9, \"2\": 10, \"'\": 11, \"s\": 12, \"he\": 13, \"ll\": 14,\n"
    "   \"hell\": 15, \"hello\": 16, \"\\u0120w\": 17, \"or\": 18, \"\\u0120wor\": 19,\n"
    "   \"ld\": 20, \"\\u0120world\": 21, \"12\": 22},\n"
    "  \"merges\": [\"h e\", \"l l\", \"he ll\", \"hell o\", [\"\\u0120\", \"w\"], \"o r\",\n"
    "   \"\\u0120w or\", \"l d\", \"\\u0120wor ld\", \"1 2\"]}}\n";

/* Llama-2 layout: <unk> <s> </s>, 256 byte tokens, then pieces. The
 * vocabulary's tail is spliced in by test_json. */
static const char json_llama_head[] =
    "{\"added_tokens\": [{\"id\": 0, \"content\": \"<unk>\", \"special\": true},\n"
    "  {\"id\": 1, \"content\": \"<s>\", \"special\": true},\n"
    "  {\"id\": 2, \"content\": \"</s>\", \"special\": true}],\n"
    " \"normalizer\": {\"type\": \"Sequence\", \"normalizers\": [\n"
    "   {\"type\": \"Prepend\", \"prepend\": \"\\u2581\"},\n"
    "   {\"type\": \"Replace\", \"pattern\": {\"String\": \" \"}, \"content\": \"\\u2581\"}]},\n"
    " \"pre_tokenizer\": null,\n"
    " \"post_processor\": {\"type\": \"TemplateProcessing\",\n"
    "   \"single\": [{\"SpecialToken\": {\"id\": \"<s>\", \"type_id\": 0}},\n"
    "              {\"Sequence\": {\"id\": \"A\", \"type_id\": 0}}],\n"
    "   \"special_tokens\": {\"<s>\": {\"id\": \"<s>\", \"ids\": [1], \"tokens\": [\"<s>\"]}}},\n"
    " \"model\": {\"type\": \"BPE\", \"byte_fallback\": true, \"fuse_unk\": true,\n"
    "  \"unk_token\": \"<unk>\", \"merges\": [\"\\u2581 h\", \"\\u2581h i\", \"\\u2581 t\"],\n"
    "  \"vocab\": {\"<unk>\": 0, \"<s>\": 1, \"</s>\": 2";
static const char json_llama_tail[] =
    ", \"\\u2581\": 259, \"h\": 260, \"i\": 261, \"\\u2581h\": 262, \"\\u2581hi\": 263,"
    " \"t\": 264, \"\\u2581t\": 265}}}\n";

static void test_json(const char *dir)
{
    char path[512];
    sg_tokenizer *t = NULL;
    int r;

    snprintf(path, sizeof path, "%s/bytelevel.json", dir);
    write_file(path, json_bytelevel, strlen(json_bytelevel));
    sg_clear_error();
    r = sg_tokenizer_load_json(path, &t);
    if (tap_ok(r == 0, "ByteLevel tokenizer.json loads (%s)", sg_last_error())) {
        tap_ok(sg_tokenizer_get_kind(t) == SG_TOK_MERGES_BYTES, "kind: byte-level");
        tap_ok(encodes_to(t, "hello world", 1, IDS(16, 21)), "\"hello world\" -> 16 21");
        tap_ok(encodes_to(t, "hello's 12", 0, IDS(16, 11, 12, 5, 9, 10)),
               "Digits(individual) then ByteLevel: \"hello's 12\" -> 16 11 12 5 9 10");
        sg_tokenizer_free(t);
    }

    /* Llama-2 style, written with all 256 byte tokens. */
    size_t cap = sizeof json_llama_head + sizeof json_llama_tail + 256 * 24;
    char *js = malloc(cap);
    strcpy(js, json_llama_head);
    for (int b = 0; b < 256; b++)
        snprintf(js + strlen(js), cap - strlen(js), ", \"<0x%02X>\": %d", b, b + 3);
    strcat(js, json_llama_tail);
    snprintf(path, sizeof path, "%s/llama.json", dir);
    write_file(path, js, strlen(js));
    free(js);
    sg_clear_error();
    r = sg_tokenizer_load_json(path, &t);
    if (tap_ok(r == 0, "Llama-2 style tokenizer.json loads (%s)", sg_last_error())) {
        tap_ok(sg_tokenizer_get_kind(t) == SG_TOK_MERGES_SPM && sg_tokenizer_bos(t) == 1 &&
                   sg_tokenizer_eos(t) == 2,
               "kind: SentencePiece-style merges; BOS <s> from the template, EOS </s>");
        /* "▁hi▁hi": ▁ h (rank 0) twice, then ▁h i (rank 1) twice */
        tap_ok(encodes_to(t, "hi hi", 1, IDS(1, 263, 263)), "\"hi hi\" -> <s> ▁hi ▁hi");
        tap_ok(encodes_to(t, "hit", 0, IDS(263, 264)), "\"hit\" -> ▁hi t");
        /* "é" is not a piece: its bytes C3 A9 are ids 0xC3 + 3, 0xA9 + 3 */
        tap_ok(encodes_to(t, "t\xc3\xa9", 0, IDS(265, 198, 172)),
               "\"té\" -> ▁t <0xC3> <0xA9> (byte fallback)");
        const int32_t ids[] = {1, 263, 265, 198, 172, 259, 2};
        char *text;
        size_t len;
        r = sg_tokenizer_decode(t, ids, 7, &text, &len);
        tap_ok(r == 0 && strcmp(text, "hi t\xc3\xa9 ") == 0,
               "decode: ▁ -> space, bytes rejoined, leading space dropped: \"%s\"", text);
        free(text);
        tap_ok(round_trips(t, "  two  spaces, caf\xc3\xa9 ", 20),
               "round trip with spaces and UTF-8");
        sg_tokenizer *u = save_and_reload(t, dir, "llama2.json");
        const char *sample = "hi hit t\xc3\xa9  hi";
        tap_ok(u && sg_tokenizer_get_kind(u) == SG_TOK_MERGES_SPM && sg_tokenizer_bos(u) == 1 &&
                   same_encoding(t, u, sample, strlen(sample)),
               "saved as tokenizer.json and read back: same ids");
        sg_tokenizer_free(u);
        sg_tokenizer_free(t);
    }

    /* broken files */
    snprintf(path, sizeof path, "%s/broken.json", dir);
    write_file(path, json_bytelevel, 200);
    r = sg_tokenizer_load_json(path, &t);
    tap_ok(r == SG_EFORMAT && t == NULL && strstr(sg_last_error(), path),
           "truncated JSON: SG_EFORMAT naming the file (%s)", sg_last_error());
    const char *no_vocab = "{\"model\": {\"type\": \"BPE\", \"merges\": []}}";
    write_file(path, no_vocab, strlen(no_vocab));
    r = sg_tokenizer_load_json(path, &t);
    tap_ok(r == SG_EFORMAT && strstr(sg_last_error(), path), "no vocab: %s", sg_last_error());
    const char *unigram = "{\"model\": {\"type\": \"Unigram\", \"vocab\": {}}}";
    write_file(path, unigram, strlen(unigram));
    r = sg_tokenizer_load_json(path, &t);
    tap_ok(r == SG_EUNSUPPORTED && strstr(sg_last_error(), path), "Unigram model: %s",
           sg_last_error());
    const char *bad_merge = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0},"
                            " \"merges\": [\"nospace\"]},"
                            " \"pre_tokenizer\": {\"type\": \"ByteLevel\"}}";
    write_file(path, bad_merge, strlen(bad_merge));
    r = sg_tokenizer_load_json(path, &t);
    tap_ok(r == SG_EFORMAT && strstr(sg_last_error(), "nospace"), "merge without a space: %s",
           sg_last_error());
    const char *sparse = "{\"model\": {\"type\": \"BPE\", \"vocab\": {\"a\": 0, \"b\": 16000000},"
                         " \"merges\": []}}";
    write_file(path, sparse, strlen(sparse));
    r = sg_tokenizer_load_json(path, &t);
    tap_ok(r == SG_EFORMAT && strstr(sg_last_error(), "dense"),
           "two tokens numbered up to 16000000 (a 1 GB table from 80 bytes): %s", sg_last_error());
    snprintf(path, sizeof path, "%s/absent.json", dir);
    r = sg_tokenizer_load_json(path, &t);
    tap_ok(r == SG_EMISSING && strstr(sg_last_error(), path), "missing file: %s", sg_last_error());
}

/* ---- pre-tokenizers against Hugging Face --------------------------------
 * Piece count and an FNV-1a hash (u32 length then bytes, per piece) of the
 * pieces of wiki.test.raw + `extra`, computed offline with the python
 * tokenizers package: Split(Regex(pattern), "isolated") with each family's
 * original pattern (Llama-3 and Qwen2 with their (?i:'s|...) spelling),
 * SmolLM's as Digits(individual_digits) then the GPT-2 Split
 * (tests/fixtures/tok_hf_reference.py). */
static const char extra[] =
    "caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac \xc3\x9cn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9 "
    "\xe2\x80\x94 \xe2\x80\x9cquotes\xe2\x80\x9d \xe2\x80\xa6 I'M DON'T 12345678 \r\n\r\n  \t "
    "x\xc2\xa0" "y\xe2\x80\x83" "z \xf0\x9f\x99\x82\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd "
    "\xce\xa3\xce\x8a\xce\xa3\xce\xa5\xce\xa6\xce\x9f\xce\xa3 'S 'll\n";

static const struct {
    const char *name;
    size_t pieces;
    uint64_t fnv;
} pre_refs[] = {
    {"gpt2", 247261, 0x4bca0edddc0be4caull},
    {"smollm", 267799, 0xd042d6d2a2897a46ull},
    {"llama-bpe", 257807, 0x8c9e26973db7d0c2ull},
    {"qwen2", 267696, 0x37de37cea5af16b6ull},
};

typedef struct {
    size_t pieces, bytes;
    uint64_t h;
} piece_hash;

static int hash_piece(void *ctx, const char *p, size_t n)
{
    piece_hash *ph = ctx;
    uint32_t l = (uint32_t)n;
    for (int k = 0; k < 4; k++)
        ph->h = (ph->h ^ (l >> (8 * k) & 0xFF)) * 0x100000001b3ull;
    for (size_t i = 0; i < n; i++)
        ph->h = (ph->h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    ph->pieces++;
    ph->bytes += n;
    return 0;
}

static void test_pretokenizers(void)
{
    size_t n;
    char *wiki = read_all(tap_data_path("wikitext-2/wiki.test.raw"), &n);
    char *text = malloc(n + sizeof extra);
    memcpy(text, wiki, n);
    memcpy(text + n, extra, sizeof extra);
    size_t len = n + sizeof extra - 1;
    for (size_t i = 0; i < sizeof pre_refs / sizeof *pre_refs; i++) {
        sg_pretok *p;
        piece_hash ph = {0, 0, 0xcbf29ce484222325ull};
        int r = sg_pretok_for_name(pre_refs[i].name, &p, NULL);
        if (r == 0)
            r = sg_pretok_split(p, text, len, hash_piece, &ph);
        tap_ok(r == 0 && ph.pieces == pre_refs[i].pieces && ph.h == pre_refs[i].fnv &&
                   ph.bytes == len,
               "pre-tokenizer %s: %zu pieces, hash %016llx, as Hugging Face", pre_refs[i].name,
               ph.pieces, (unsigned long long)ph.h);
        sg_pretok_free(p);
    }
    /* every name llama.cpp maps compiles */
    static const char *const names[] = {"default", "falcon", "dbrx", "poro-chat", "viking",
                                        "tekken", "gpt-4o", "deepseek-coder", "deepseek-v3",
                                        "starcoder", "command-r", "chatglm-bpe", NULL};
    int ok = 1;
    for (int i = 0; names[i]; i++) {
        sg_pretok *p;
        int ign;
        piece_hash ph = {0, 0, 0};
        if (sg_pretok_for_name(names[i], &p, &ign) < 0 ||
            sg_pretok_split(p, text, len, hash_piece, &ph) < 0 || ph.bytes != len) {
            tap_diag("%s: %s", names[i], sg_last_error());
            ok = 0;
        }
        sg_pretok_free(p);
    }
    tap_ok(ok, "the other pre-tokenizer names compile and cover the text exactly");
    /* invalid UTF-8 is kept, byte for byte, in the pieces */
    piece_hash ph = {0, 0, 0};
    sg_pretok *p;
    sg_pretok_for_name("gpt2", &p, NULL);
    tap_ok(sg_pretok_split(p, "ab\xff\xfe cd\xc3", 8, hash_piece, &ph) == 0 && ph.bytes == 8,
           "invalid UTF-8 passes through the regexes");
    sg_pretok_free(p);
    free(text);
    free(wiki);
}

/* Llama-3 (ignore_merges): a pre-token that is itself a piece is taken
 * whole, even with no merge that could build it. */
static void test_ignore_merges(void)
{
    static const char *const tok[] = {"a", "b", "ab"};
    sg_tokenizer_spec spec = {.kind = SG_TOK_MERGES_BYTES, .n_vocab = 3, .tokens = tok,
                              .bos_id = -1, .eos_id = -1, .unk_id = -1, .pre_name = "gpt2"};
    sg_tokenizer *t;
    sg_tokenizer_build(&spec, &t);
    tap_ok(encodes_to(t, "ab", 0, IDS(0, 1)), "gpt2, no merges: \"ab\" -> a b");
    sg_tokenizer_free(t);
    spec.pre_name = "llama-bpe";
    sg_tokenizer_build(&spec, &t);
    tap_ok(encodes_to(t, "ab", 0, IDS(2)), "llama-bpe ignores merges: \"ab\" -> ab");
    sg_tokenizer_free(t);
}

int main(void)
{
    /* skip before any output if the shared data is absent */
    tap_data_path("stories260K/tok512.bin");
    tap_data_path("wikitext-2/wiki.test.raw");
    tap_data_path("tinystories-valid-subset/tinystories_valid_first.txt");
    const char *dir = tap_tmpdir();
    test_byte_level(dir);
    test_ignore_merges();
    test_pretokenizers();
    test_json(dir);
    test_bad_llama2c(dir);
    test_tok512(dir);
    static const char *const made[] = {"tok_truncated.bin", "tok_neglen.bin", "tok_short.bin",
                                       "bytelevel.json", "llama.json", "broken.json"};
    char path[512];
    for (size_t i = 0; i < sizeof made / sizeof *made; i++) {
        snprintf(path, sizeof path, "%s/%s", dir, made[i]);
        unlink(path);
    }
    rmdir(dir);
    return tap_done();
}
