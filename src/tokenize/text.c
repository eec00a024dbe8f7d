#include "text.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "read_file.h"
#include "sg_error.h"


int sg_text_read(const char *path, char **text, size_t *len)
{
    return sg_read_file(path, 0, text, len);
}

void sg_token_batch_free(sg_token_batch *b)
{
    free(b->ids);
    free(b->offsets);
    memset(b, 0, sizeof *b);
}

/* Appends one sequence to a batch being built (amortized growth). */
typedef struct {
    sg_token_batch *b;
    int64_t cap_ids, cap_seq;
} batch_builder;

static int builder_add(batch_builder *bb, const int32_t *ids, int64_t n)
{
    sg_token_batch *b = bb->b;
    int64_t used = b->n_seq ? b->offsets[b->n_seq] : 0;
    if (used + n > bb->cap_ids) {
        bb->cap_ids = (used + n) * 2;
        int32_t *g = realloc(b->ids, bb->cap_ids * sizeof *g);
        if (!g)
            return sg_fail(-ENOMEM, "out of memory for tokens");
        b->ids = g;
    }
    if (b->n_seq + 2 > bb->cap_seq) {
        bb->cap_seq = (b->n_seq + 2) * 2;
        int64_t *g = realloc(b->offsets, bb->cap_seq * sizeof *g);
        if (!g)
            return sg_fail(-ENOMEM, "out of memory for sequences");
        b->offsets = g;
    }
    if (b->n_seq == 0)
        b->offsets[0] = 0;
    memcpy(b->ids + used, ids, n * sizeof *ids);
    b->offsets[++b->n_seq] = used + n;
    return 0;
}

/* ids (n, freed here) cut into non-overlapping windows of seqlen (at most
 * max_windows, 0 all; the short tail dropped) as out; `what` names the
 * source in the error. */
static int cut_windows(int32_t *ids, int64_t n, int64_t seqlen, int64_t max_windows,
                       const char *what, sg_token_batch *out)
{
    int64_t windows = n / seqlen;
    if (max_windows > 0 && windows > max_windows)
        windows = max_windows;
    if (windows == 0) {
        free(ids);
        return sg_fail(SG_EARG, "%s: %lld tokens, fewer than one window of %lld", what,
                       (long long)n, (long long)seqlen);
    }
    int err = 0;
    batch_builder bb = {out, 0, 0};
    for (int64_t w = 0; w < windows && !err; w++)
        err = builder_add(&bb, ids + w * seqlen, seqlen);
    free(ids);
    if (err)
        sg_token_batch_free(out);
    return err;
}

int sg_batch_windows(const sg_tokenizer *tok, const char *text, size_t len, int64_t seqlen,
                     int64_t max_windows, sg_token_batch *out)
{
    memset(out, 0, sizeof *out);
    int32_t *ids;
    size_t n;
    int err = sg_tokenizer_encode(tok, text, len, 1, &ids, &n);
    if (err)
        return err;
    return cut_windows(ids, (int64_t)n, seqlen, max_windows, "text", out);
}

int sg_batch_lines(const sg_tokenizer *tok, const char *text, size_t len, int64_t seqlen,
                   int64_t first, int64_t last, sg_token_batch *out)
{
    memset(out, 0, sizeof *out);
    batch_builder bb = {out, 0, 0};
    int64_t line_no = 0;
    int err = 0;
    for (const char *p = text, *end = text + len; p < end && !err;) {
        const char *nl = memchr(p, '\n', end - p);
        const char *stop = nl ? nl : end;
        /* a line of only whitespace counts as empty (Python's line.strip()),
         * but a counted line is encoded as it is */
        int blank = 1;
        for (const char *q = p; q < stop && blank; q++)
            blank = *q == ' ' || *q == '\t' || *q == '\r' || *q == '\f' || *q == '\v';
        if (!blank) {
            line_no++;
            if (line_no >= first && (last == 0 || line_no <= last)) {
                int32_t *ids;
                size_t n;
                if (!(err = sg_tokenizer_encode(tok, p, stop - p, 1, &ids, &n))) {
                    err = builder_add(&bb, ids, (int64_t)n < seqlen ? (int64_t)n : seqlen);
                    free(ids);
                }
            }
        }
        p = stop + 1;
    }
    if (!err && out->n_seq == 0)
        err = sg_fail(SG_EARG, "no non-empty lines in the range %lld..%lld", (long long)first,
                      (long long)last);
    if (err)
        sg_token_batch_free(out);
    return err;
}

/* splitmix64: small, seedable, and the same on every platform */
static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int sg_batch_calibration(const sg_tokenizer *tok, const char *text, size_t len,
                         int64_t nsamples, int64_t seqlen, uint64_t seed, sg_token_batch *out)
{
    memset(out, 0, sizeof *out);
    /* documents: runs of text separated by one or more blank lines */
    int64_t n_docs = 0, cap = 0;
    const char **doc_start = NULL;
    size_t *doc_len = NULL;
    const char *end = text + len;
    for (const char *p = text; p < end;) {
        while (p < end && (*p == '\n' || *p == '\r'))
            p++;
        if (p >= end)
            break;
        const char *q = p;
        while (q < end) {
            const char *nl = memchr(q, '\n', end - q);
            if (!nl) {
                q = end;
                break;
            }
            const char *r = nl + 1;
            while (r < end && *r == '\r')
                r++;
            if (r >= end || *r == '\n') {
                q = nl;
                break;
            }
            q = r;
        }
        if (n_docs == cap) {
            cap = cap ? cap * 2 : 256;
            doc_start = realloc(doc_start, cap * sizeof *doc_start);
            doc_len = realloc(doc_len, cap * sizeof *doc_len);
            if (!doc_start || !doc_len) {
                free(doc_start);
                free(doc_len);
                return sg_fail(-ENOMEM, "out of memory for documents");
            }
        }
        doc_start[n_docs] = p;
        doc_len[n_docs++] = q - p;
        p = q;
    }
    if (n_docs == 0) {
        free(doc_start);
        free(doc_len);
        return sg_fail(SG_EARG, "calibration text has no documents");
    }
    batch_builder bb = {out, 0, 0};
    int err = 0;
    char *joined = NULL;
    size_t joined_cap = 0;
    /* A sample depends only on the document it starts at: one drawn again
     * is copied from the first time, not tokenized again (a text of one
     * long document would otherwise be tokenized whole for every sample). */
    int64_t *first_sample = calloc((size_t)n_docs, sizeof *first_sample); /* sample + 1 */
    if (!first_sample)
        err = sg_fail(-ENOMEM, "out of memory for documents");
    for (int64_t s = 0; s < nsamples && !err; s++) {
        int64_t d = (int64_t)(rng_next(&seed) % (uint64_t)n_docs), used_docs = 0;
        if (first_sample[d]) {
            int64_t f = first_sample[d] - 1, k = out->offsets[f + 1] - out->offsets[f];
            int32_t *copy = malloc((size_t)(k ? k : 1) * sizeof *copy);
            if (!copy) {
                err = sg_fail(-ENOMEM, "out of memory for tokens");
                break;
            }
            memcpy(copy, out->ids + out->offsets[f], (size_t)k * sizeof *copy);
            err = builder_add(&bb, copy, k);
            free(copy);
            continue;
        }
        first_sample[d] = s + 1;
        size_t jl = 0;
        int32_t *ids = NULL;
        size_t n = 0;
        /* Grow the run of documents until it tokenizes to seqlen tokens, or
         * every document is in it (then the sample is shorter). */
        for (;;) {
            size_t need = jl + 2 + doc_len[d] + 1;
            if (need > joined_cap) {
                joined_cap = need * 2;
                char *g = realloc(joined, joined_cap);
                if (!g) {
                    err = sg_fail(-ENOMEM, "out of memory for calibration text");
                    break;
                }
                joined = g;
            }
            if (jl) {
                memcpy(joined + jl, "\n\n", 2);
                jl += 2;
            }
            memcpy(joined + jl, doc_start[d], doc_len[d]);
            jl += doc_len[d];
            used_docs++;
            /* cheap lower bound first: a token covers at most ~16 bytes */
            if ((int64_t)jl >= seqlen || used_docs == n_docs) {
                free(ids);
                ids = NULL;
                if ((err = sg_tokenizer_encode(tok, joined, jl, 1, &ids, &n)))
                    break;
                if ((int64_t)n >= seqlen || used_docs == n_docs)
                    break;
            }
            d = (d + 1) % n_docs;
        }
        if (!err)
            err = builder_add(&bb, ids, (int64_t)n < seqlen ? (int64_t)n : seqlen);
        free(ids);
    }
    free(first_sample);
    free(joined);
    free(doc_start);
    free(doc_len);
    if (err)
        sg_token_batch_free(out);
    return err;
}

/* The ids of a file of little-endian uint32 ids, each checked against the
 * vocabulary. */
static int read_ids(const char *path, int64_t vocab_size, int32_t **out, int64_t *count)
{
    char *raw;
    size_t len;
    *out = NULL;
    int err = sg_text_read(path, &raw, &len);
    if (err)
        return err;
    if (len % 4) {
        free(raw);
        return sg_fail(SG_EFORMAT, "%s: size %zu is not a whole number of uint32 ids", path, len);
    }
    int64_t n = (int64_t)(len / 4);
    int32_t *ids = malloc((n ? n : 1) * sizeof *ids);
    if (!ids) {
        free(raw);
        return sg_fail(-ENOMEM, "%s: out of memory", path);
    }
    for (int64_t i = 0; i < n && !err; i++) {
        const unsigned char *p = (const unsigned char *)raw + 4 * i;
        uint32_t v = p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
        if (v >= (uint64_t)vocab_size)
            err = sg_fail(SG_EFORMAT, "%s: token %lld has id %u outside the vocabulary (%lld)",
                          path, (long long)i, v, (long long)vocab_size);
        ids[i] = (int32_t)v;
    }
    free(raw);
    if (err) {
        free(ids);
        return err;
    }
    *out = ids;
    *count = n;
    return 0;
}

int sg_batch_pretokenized(const char *path, int64_t vocab_size, int64_t nsamples,
                          int64_t seqlen, uint64_t seed, sg_token_batch *out)
{
    memset(out, 0, sizeof *out);
    int32_t *ids;
    int64_t n;
    int err = read_ids(path, vocab_size, &ids, &n);
    if (err)
        return err;
    if (n < seqlen) {
        free(ids);
        return sg_fail(SG_EARG, "%s: %lld tokens, fewer than one sample of %lld", path,
                       (long long)n, (long long)seqlen);
    }
    batch_builder bb = {out, 0, 0};
    for (int64_t s = 0; s < nsamples && !err; s++) {
        int64_t start = (int64_t)(rng_next(&seed) % (uint64_t)(n - seqlen + 1));
        err = builder_add(&bb, ids + start, seqlen);
    }
    free(ids);
    if (err)
        sg_token_batch_free(out);
    return err;
}

int sg_batch_token_rows(const char *path, int64_t vocab_size, int64_t nrows, int64_t seqlen,
                        sg_token_batch *out)
{
    memset(out, 0, sizeof *out);
    int32_t *ids;
    int64_t n;
    int err = read_ids(path, vocab_size, &ids, &n);
    if (err)
        return err;
    if (n == 0 || n % seqlen || (nrows > 0 && n != nrows * seqlen)) {
        free(ids);
        if (nrows > 0)
            return sg_fail(SG_EARG, "%s: %lld ids, not %lld rows x %lld (rows layout: exactly "
                                    "--nsamples x --seqlen ids)",
                           path, (long long)n, (long long)nrows, (long long)seqlen);
        return sg_fail(SG_EARG, "%s: %lld ids, not a whole number of rows of %lld (rows layout: "
                                "--seqlen ids per row)",
                       path, (long long)n, (long long)seqlen);
    }
    return cut_windows(ids, n, seqlen, 0, path, out); /* whole rows: every window */
}

int sg_batch_token_stream(const char *path, int64_t vocab_size, int64_t seqlen,
                          int64_t max_windows, sg_token_batch *out)
{
    memset(out, 0, sizeof *out);
    int32_t *ids;
    int64_t n;
    int err = read_ids(path, vocab_size, &ids, &n);
    if (err)
        return err;
    return cut_windows(ids, n, seqlen, max_windows, path, out);
}
