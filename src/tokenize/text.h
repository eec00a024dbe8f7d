/* Text inputs: reading a file, and turning tokenized text into the packed
 * sequences the forward pass runs on, for evaluation and calibration. */
#ifndef SG_TEXT_H
#define SG_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* Reads a whole file into a NUL-terminated buffer. */
int sg_text_read(const char *path, char **text, size_t *len);

/* Token sequences packed back to back: sequence s is ids[offsets[s] ..
 * offsets[s+1]). parent (NULL: none) lets sequences share a prefix:
 * parent[s] >= 0 names an earlier sequence whose tokens come before s's
 * (s's positions continue the parent's, its attention sees the parent's
 * tokens); a parent has no parent of its own, its children follow it
 * with nothing between them but its other children, and its tokens are
 * all context (none is scored, its last token is run too). Not owned. */
typedef struct {
    int32_t *ids;
    int64_t *offsets;
    int64_t n_seq;
    const int64_t *parent;
} sg_token_batch;

void sg_token_batch_free(sg_token_batch *b);

/* Perplexity protocol of the SliceGPT/GPTQ papers: the text tokenized as a
 * whole (BOS first if the tokenizer adds one), cut into non-overlapping
 * windows of seqlen tokens; the tail shorter than a window is dropped.
 * max_windows 0 means all. */
int sg_batch_windows(const sg_tokenizer *tok, const char *text, size_t len, int64_t seqlen,
                     int64_t max_windows, sg_token_batch *out);

/* Per-line protocol (llama2.c / TinyStories references): each line with
 * something other than whitespace in it, numbered from 1, in [first, last] (last 0 = to the end) becomes its
 * own sequence BOS + encode(line), truncated to seqlen tokens. */
int sg_batch_lines(const sg_tokenizer *tok, const char *text, size_t len, int64_t seqlen,
                   int64_t first, int64_t last, sg_token_batch *out);

/* Calibration samples as the SliceGPT reference builds them: documents are
 * separated by blank lines; each of nsamples samples starts at a document
 * chosen by a seeded generator and concatenates consecutive documents
 * (separated by "\n\n") until it holds seqlen tokens, then is cut to
 * exactly seqlen (BOS first if the tokenizer adds one). */
int sg_batch_calibration(const sg_tokenizer *tok, const char *text, size_t len,
                         int64_t nsamples, int64_t seqlen, uint64_t seed, sg_token_batch *out);

/* Pre-tokenized calibration: raw little-endian uint32 ids, cut into
 * nsamples windows of seqlen tokens at seeded random offsets. */
int sg_batch_pretokenized(const char *path, int64_t vocab_size, int64_t nsamples,
                          int64_t seqlen, uint64_t seed, sg_token_batch *out);

/* Pre-tokenized sequences given as they are (rows layout): the file is
 * exactly nrows x seqlen little-endian uint32 ids (nrows 0: any whole
 * number of rows), row r is sequence r. For reproducing another tool's
 * calibration or evaluation sequences exactly. */
int sg_batch_token_rows(const char *path, int64_t vocab_size, int64_t nrows, int64_t seqlen,
                        sg_token_batch *out);

/* Pre-tokenized text (stream layout): one stream of uint32 ids, cut like
 * sg_batch_windows into non-overlapping windows of seqlen, the short tail
 * dropped; nothing added (a BOS is in the file or not). max_windows 0: all. */
int sg_batch_token_stream(const char *path, int64_t vocab_size, int64_t seqlen,
                          int64_t max_windows, sg_token_batch *out);

#endif
