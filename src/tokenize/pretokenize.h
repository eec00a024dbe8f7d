/* Regex pre-tokenization for byte-level BPE (GPT-2 family).
 *
 * A pre-tokenizer is a sequence of PCRE2 patterns (UTF + UCP). The first is
 * applied to the text; each later one to every piece the previous produced.
 * A pattern splits its input into the matches and the runs of text between
 * matches, all kept in order ("Isolated" in Hugging Face terms), so the
 * pieces always concatenate back to the input. Invalid UTF-8 is allowed: it
 * never matches and so ends up in the between-match pieces. */
#ifndef SG_PRETOKENIZE_H
#define SG_PRETOKENIZE_H

#include <stddef.h>

typedef struct sg_pretok sg_pretok;

/* Compiles patterns (JIT when PCRE2 has it). what names the source in error
 * messages. */
int sg_pretok_new(const char *const *patterns, size_t n, const char *what, sg_pretok **out);

/* The pattern sequence llama.cpp uses for a GGUF tokenizer.ggml.pre name
 * (NULL means GPT-2's). *ignore_merges is set where llama.cpp sets it (a
 * piece that is itself a vocabulary entry is not merged: Llama-3 family).
 * Unknown names are SG_EUNSUPPORTED, as in llama.cpp: guessing would
 * silently change the tokens. */
int sg_pretok_for_name(const char *name, sg_pretok **out, int *ignore_merges);

/* The GPT-2 pattern of Hugging Face's ByteLevel pre-tokenizer. */
extern const char sg_pretok_gpt2_regex[];

void sg_pretok_free(sg_pretok *p);

/* The pattern sources, in order; returns their count. */
size_t sg_pretok_patterns(const sg_pretok *p, const char *const **out);

/* Calls cb(ctx, piece, len) for each piece of text[0..len) in order, and
 * stops at the first non-zero return, which it returns. */
typedef int (*sg_pretok_cb)(void *ctx, const char *piece, size_t len);
int sg_pretok_split(const sg_pretok *p, const char *text, size_t len, sg_pretok_cb cb,
                    void *ctx);

#endif
