/* Tokenizers: one BPE engine, three vocab sources.
 *
 *  - SG_TOK_SCORES: SentencePiece-style BPE (llama2.c tokenizer.bin, GGUF
 *    model "llama"): spaces become U+2581, a dummy-prefix space is added,
 *    text is split into UTF-8 characters (bytes <0xNN> as fallback), and the
 *    adjacent pair whose concatenation is a vocab entry with the highest
 *    score is merged, leftmost on ties, until none is.
 *  - SG_TOK_MERGES_BYTES: GPT-2 byte-level BPE (tokenizer.json with a
 *    ByteLevel pre-tokenizer, GGUF model "gpt2"): text is split by the
 *    pre-tokenizer regex (PCRE2, UTF + UCP), bytes mapped to printable
 *    code points, then merged by merge rank.
 *  - SG_TOK_MERGES_SPM: tokenizer.json BPE with byte fallback and a
 *    "▁"-replacing normalizer (Llama-2 style): merged by merge rank. */
#ifndef SG_TOKENIZER_H
#define SG_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

typedef struct sg_tokenizer sg_tokenizer;

typedef enum { SG_TOK_SCORES, SG_TOK_MERGES_BYTES, SG_TOK_MERGES_SPM } sg_tokenizer_kind;

typedef struct {
    sg_tokenizer_kind kind;
    size_t n_vocab;
    const char *const *tokens;   /* UTF-8 piece of each id */
    const float *scores;         /* SG_TOK_SCORES: merge priority; else NULL */
    const int32_t *types;        /* GGUF token types (1 normal, 3 control, 6 byte); may be NULL */
    const char *const *merges;   /* "left right", highest priority first */
    size_t n_merges;
    int32_t bos_id, eos_id, unk_id; /* -1 if none */
    int add_bos;                 /* encode() prepends BOS when asked and this is set */
    int add_space_prefix;        /* SG_TOK_SCORES / SPM: dummy prefix " " */
    /* Pre-tokenizer for SG_TOK_MERGES_BYTES: a GGUF tokenizer.ggml.pre name
     * ("gpt2", "smollm", "llama-bpe", "qwen2", ...) or NULL for GPT-2's. */
    const char *pre_name;
    /* or explicit PCRE2 patterns applied in sequence (tokenizer.json Split). */
    const char *const *pre_regexes;
    size_t n_pre_regexes;
} sg_tokenizer_spec;

int sg_tokenizer_build(const sg_tokenizer_spec *spec, sg_tokenizer **out);

/* llama2.c tokenizer.bin: i32 max_len, then per token f32 score, i32 len, bytes. */
int sg_tokenizer_load_llama2c(const char *path, int64_t vocab_size, sg_tokenizer **out);

/* Hugging Face tokenizer.json (model type BPE). */
int sg_tokenizer_load_json(const char *path, sg_tokenizer **out);

/* Writes t as a Hugging Face tokenizer.json that sg_tokenizer_load_json
 * reads back to the same ids (how a sliced GGUF model keeps its
 * tokenizer). Atomic: temp name, fsync, rename. */
int sg_tokenizer_save_json(const sg_tokenizer *t, const char *path);

void sg_tokenizer_free(sg_tokenizer *t);

/* The vocabulary as GGUF metadata (gguf.h sg_gguf_vocab): byte-level BPE
 * as "gpt2" with its merges and pre-tokenizer name when it has one,
 * score-based ones as "llama" with their scores. *v points into *store,
 * freed by sg_tokenizer_gguf_vocab_free. SG_EUNSUPPORTED for a
 * SentencePiece vocabulary with merges and no scores. */
typedef struct sg_gguf_vocab_store sg_gguf_vocab_store;
int sg_tokenizer_gguf_vocab(const sg_tokenizer *t, sg_gguf_vocab *v, sg_gguf_vocab_store **store);
void sg_tokenizer_gguf_vocab_free(sg_gguf_vocab_store *store);

/* Encodes len bytes of UTF-8 text. With add_bos, BOS is prepended (if the
 * tokenizer has one). Text is plain: a control token written in it
 * ("<|endoftext|>", "<s>") is encoded as ordinary text, never as its id, as
 * llama.cpp's perplexity tool does (parse_special off). Invalid UTF-8 is
 * encoded byte by byte. *ids is malloc'ed; the caller frees it. */
int sg_tokenizer_encode(const sg_tokenizer *t, const char *text, size_t len, int add_bos,
                        int32_t **ids, size_t *n);

/* Decodes ids to UTF-8 text: control tokens (BOS, EOS) are skipped, byte
 * tokens become their bytes, and the one leading space a dummy prefix added
 * is dropped, so decode(encode(s)) == s. *text is malloc'ed, NUL-terminated. */
int sg_tokenizer_decode(const sg_tokenizer *t, const int32_t *ids, size_t n, char **text,
                        size_t *len);

size_t sg_tokenizer_vocab_size(const sg_tokenizer *t);
int32_t sg_tokenizer_bos(const sg_tokenizer *t);
int32_t sg_tokenizer_eos(const sg_tokenizer *t);
const char *sg_tokenizer_piece(const sg_tokenizer *t, int32_t id);

sg_tokenizer_kind sg_tokenizer_get_kind(const sg_tokenizer *t);

/* Id of a piece written as the vocabulary writes it ("▁the", "Ġthe", "<s>"),
 * or -1. */
int32_t sg_tokenizer_find(const sg_tokenizer *t, const char *piece);

#endif
