/* The real SmolLM2 tokenizer (GGUF "gpt2" vocabulary, pre "smollm": digits
 * split one by one, then GPT-2's regex) against Hugging Face tokenizers.
 *
 * The expected ids were computed offline with the python `tokenizers`
 * package from this GGUF file's own tokens and merges (read with the python
 * `gguf` package): models.BPE(vocab, merges) behind
 * pre_tokenizers.Sequence([Digits(individual_digits=True),
 * ByteLevel(add_prefix_space=False)]), which is SmolLM2's tokenizer.json
 * pipeline without its added tokens; special tokens are not matched inside
 * text here (see tokenizer.h). For the whole of wiki.test.raw the count and
 * an FNV-1a hash of the ids (as little-endian u32) were recorded.
 * tests/fixtures/tok_hf_reference.py recomputes all of them.
 *
 * The model is $SG_DEFAULT_MODEL or
 * ~/.cache/slicegpt-stream/SmolLM2-135M-Instruct.Q4_1.gguf; absent, the
 * test is skipped. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gguf.h"
#include "sg_error.h"
#include "read_file.h"
#include "tap.h"
#include "tokenizer.h"

static const struct {
    const char *text;
    int32_t ids[32];
    size_t n;
} fixtures[] = {
    {"Hello world! The quick brown fox jumps over the lazy dog.",
     {19556, 905, 17, 378, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30}, 13},
    {"1234 apples and 56 oranges cost $7.89",
     {33, 34, 35, 36, 13855, 284, 216, 37, 38, 27068, 1708, 1885, 39, 30, 40, 41}, 16},
    {"I don't think they'll go, won't you? It's John's.",
     {57, 1326, 982, 1510, 502, 3060, 685, 28, 3763, 982, 346, 47, 657, 506, 2322, 506, 30},
     17},
    {"multiple    spaces   here  ", {30404, 333, 5600, 256, 1535, 256}, 6},
    {"line one\nline two\n\n\nafter blank lines\r\nwindows",
     {1311, 582, 198, 1311, 827, 1116, 198, 9110, 8884, 3204, 201, 198, 37066}, 13},
    {"caf\xc3\xa9 na\xc3\xafve \xe6\x97\xa5\xe6\x9c\xac \xc3\x9cn\xc3\xaf" "c\xc3\xb6" "d\xc3\xa9 "
     "\xe2\x80\x94 \xe2\x80\x9cquotes\xe2\x80\x9d \xe2\x80\xa6",
     {83, 1939, 2756, 15486, 46494, 17097, 241, 115, 40993, 5549, 246, 94,
      25972, 83, 7466, 84, 2756, 1841, 619, 385, 2346, 573, 5548},
     23},
    {" leading space", {2899, 1898}, 2},
    {"Tabs\tand\ttabs\t\tdouble", {68, 7366, 197, 397, 197, 100, 7366, 197, 197, 21414}, 10},
    {"Punctuation!!! ... ??? (parens) [brackets] {braces} <tags> @user #hash",
     {64, 8859, 6584, 29646, 4563, 9148, 16693, 365, 7126, 5400, 25, 933, 6838, 936,
      1175, 77, 1662, 6838, 561, 109, 2067, 15951, 46, 3394, 4093, 907, 14307},
     27},
    {"x = 3.14159 * r^2 // comment; foo_bar-baz",
     {104, 446, 216, 35, 30, 33, 36, 33, 37, 41, 1672, 412, 78, 34, 13241, 5189, 43, 29856,
      79, 6299, 29, 45511},
     22},
    {"emoji \xf0\x9f\x99\x82\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd end",
     {391, 33777, 47526, 10813, 235, 231, 10813, 233, 138, 1112}, 10},
    {"<|endoftext|> is plain text here", {44, 108, 486, 1714, 2692, 108, 46, 314, 9079, 1694, 1535},
     11},
};

/* Hugging Face on the whole of wiki.test.raw */
#define WIKI_IDS 303415
#define WIKI_FNV 0x8672b255a2935a9bull

static uint64_t fnv_ids(const int32_t *ids, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        for (int k = 0; k < 4; k++)
            h = (h ^ ((uint32_t)ids[i] >> (8 * k) & 0xFF)) * 0x100000001b3ull;
    return h;
}

/* The whole file, or NULL (the library's reader; its error is not needed here). */
static char *read_all(const char *path, size_t *len)
{
    char *buf;
    return sg_read_file(path, 0, &buf, len) ? NULL : buf;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

static void check_fixtures(const sg_tokenizer *t, const char *who)
{
    int bad = 0;
    for (size_t f = 0; f < sizeof fixtures / sizeof *fixtures; f++) {
        int32_t *ids;
        size_t n, len;
        char *back;
        const char *s = fixtures[f].text;
        if (sg_tokenizer_encode(t, s, strlen(s), 1, &ids, &n) < 0) {
            tap_diag("%s", sg_last_error());
            bad++;
            continue;
        }
        int ok = n == fixtures[f].n && !memcmp(ids, fixtures[f].ids, n * sizeof *ids);
        if (!ok) {
            printf("# \"%s\" gave", s);
            for (size_t i = 0; i < n; i++)
                printf(" %d", ids[i]);
            printf("\n");
        }
        ok = ok && sg_tokenizer_decode(t, ids, n, &back, &len) == 0 && len == strlen(s) &&
             !memcmp(back, s, len);
        if (ok)
            free(back);
        bad += !ok;
        free(ids);
    }
    tap_ok(bad == 0, "%s: %zu sentences encode to Hugging Face's ids and decode back", who,
           sizeof fixtures / sizeof *fixtures);
}

/* Whole wiki.test.raw: Hugging Face's ids, and back to the same bytes. */
static void check_wiki(const sg_tokenizer *t, const char *wiki, size_t n, const char *who)
{
    int32_t *ids;
    size_t nid, len;
    char *back;
    double t0 = now();
    int r = sg_tokenizer_encode(t, wiki, n, 1, &ids, &nid);
    double dt = now() - t0;
    if (!tap_ok(r == 0, "%s: wiki.test.raw encodes (%s)", who, sg_last_error()))
        return;
    uint64_t h = fnv_ids(ids, nid);
    tap_ok(nid == WIKI_IDS && h == WIKI_FNV,
           "%s: wiki.test.raw -> %zu ids (HF %d), hash %016llx (HF %016llx)", who, nid,
           WIKI_IDS, (unsigned long long)h, (unsigned long long)WIKI_FNV);
    tap_ok(dt < 5.0, "%s: %zu bytes in %.2f s (%.1f MB/s)", who, n, dt, n / dt / 1e6);
    r = sg_tokenizer_decode(t, ids, nid, &back, &len);
    tap_ok(r == 0 && len == n && !memcmp(back, wiki, n), "%s: decode gives the file back", who);
    free(back);
    free(ids);
}

int main(void)
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
        tap_skip_all(why);
    }
    size_t n = 0;
    char *wiki = read_all(tap_data_path("wikitext-2/wiki.test.raw"), &n);
    if (!wiki)
        return 1;

    sg_gguf *g;
    sg_tokenizer *t;
    int r = sg_gguf_open(path, &g);
    if (!tap_ok(r == 0, "open %s (%s)", path, sg_last_error()))
        return tap_done();
    r = sg_gguf_tokenizer(g, &t);
    sg_gguf_close(g);
    if (!tap_ok(r == 0, "tokenizer from GGUF metadata (%s)", sg_last_error()))
        return tap_done();
    /* The other GGUF models this path may name have other ids. */
    if (sg_tokenizer_vocab_size(t) != 49152) {
        sg_tokenizer_free(t);
        free(wiki);
        tap_skip_all("not the SmolLM2 vocabulary");
    }
    tap_ok(sg_tokenizer_get_kind(t) == SG_TOK_MERGES_BYTES, "byte-level BPE, 49152 tokens");
    check_fixtures(t, "GGUF");
    check_wiki(t, wiki, n, "GGUF");

    /* Random bytes, invalid UTF-8 included, come back unchanged, except the
     * 21 bytes (0x04, 0xC0, 0xFF, ...) SmolLM2 has no character for, which
     * are dropped as Hugging Face drops them. */
    int spellable[256], n_unspellable = 0;
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        int32_t *bid;
        size_t bn = 0;
        sg_tokenizer_encode(t, &c, 1, 0, &bid, &bn);
        spellable[b] = bn > 0;
        n_unspellable += bn == 0;
        free(bid);
    }
    tap_ok(n_unspellable == 21 && !spellable[0xFF] && spellable[0x80],
           "%d bytes have no vocabulary character", n_unspellable);
    uint64_t seed = 42;
    int fuzz_bad = 0;
    for (int k = 0; k < 2000; k++) {
        char buf[64], want[64];
        size_t blen, wlen = 0;
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        blen = (seed >> 33) % sizeof buf;
        for (size_t i = 0; i < blen; i++) {
            seed = seed * 6364136223846793005ull + 1442695040888963407ull;
            static const char pool[] = " \n\t\xc3\xa9\xe6\x97\xa5\x80\xff'0a";
            unsigned v = (unsigned)(seed >> 40);
            buf[i] = v & 1 ? (char)(v >> 8) : pool[(v >> 8) % (sizeof pool - 1)];
            if (spellable[(unsigned char)buf[i]])
                want[wlen++] = buf[i];
        }
        int32_t *fid;
        size_t fn, flen;
        char *fback;
        if (sg_tokenizer_encode(t, buf, blen, 1, &fid, &fn) < 0) {
            fuzz_bad++;
            continue;
        }
        if (sg_tokenizer_decode(t, fid, fn, &fback, &flen) < 0 || flen != wlen ||
            memcmp(fback, want, wlen))
            fuzz_bad++;
        free(fback);
        free(fid);
    }
    tap_ok(fuzz_bad == 0, "2000 random byte strings round trip, less those (%d failed)",
           fuzz_bad);

    /* Written as tokenizer.json and read back: the same tokenizer. */
    const char *dir = tap_tmpdir();
    char json[512];
    snprintf(json, sizeof json, "%s/tokenizer.json", dir);
    r = sg_tokenizer_save_json(t, json);
    tap_ok(r == 0, "saved as %s (%s)", json, sg_last_error());
    sg_tokenizer *tj;
    r = sg_tokenizer_load_json(json, &tj);
    if (tap_ok(r == 0, "tokenizer.json reads back (%s)", sg_last_error())) {
        tap_ok(sg_tokenizer_vocab_size(tj) == 49152 &&
                   sg_tokenizer_bos(tj) == sg_tokenizer_bos(t) &&
                   sg_tokenizer_eos(tj) == sg_tokenizer_eos(t),
               "49152 tokens, BOS %d and EOS %d kept", sg_tokenizer_bos(tj),
               sg_tokenizer_eos(tj));
        check_fixtures(tj, "tokenizer.json");
        check_wiki(tj, wiki, n, "tokenizer.json");
        sg_tokenizer_free(tj);
    }
    unlink(json);
    rmdir(dir);
    sg_tokenizer_free(t);
    free(wiki);
    return tap_done();
}
