/* Private to the tokenizer files: the tokenizer's insides, shared by the
 * engine (tokenizer.c), the loaders (tokenizer_json.c, tokenizer_llama2c.c)
 * and the writer (tokenizer_save.c). */
#ifndef SG_TOKENIZER_INTERNAL_H
#define SG_TOKENIZER_INTERNAL_H

#include "pretokenize.h"
#include "tokenizer.h"

/* GGUF token types */
enum { SG_TT_NORMAL = 1, SG_TT_UNKNOWN = 2, SG_TT_CONTROL = 3, SG_TT_USER = 4, SG_TT_BYTE = 6 };

typedef struct {
    uint64_t key;   /* left id << 32 | right id */
    int32_t id;     /* merged token; -1 marks an empty slot */
    int32_t rank;
} sg_tok_pair;

struct sg_tokenizer {
    sg_tokenizer_kind kind;
    size_t n_vocab;
    char **pieces;          /* as given (GGUF llama keeps U+2581) */
    char **norm;            /* as matched against text: U+2581 -> ' ' for SCORES/SPM */
    uint32_t *norm_len;
    float *scores;          /* SCORES only */
    int32_t *types;         /* always set: given or derived */
    uint8_t *plain;         /* 1 if text may produce this id (not control/unknown) */
    int16_t *byte_of;       /* byte a byte token stands for, else -1 */
    int32_t bos, eos, unk;
    int add_bos, add_space_prefix, ignore_merges, byte_fallback, metaspace_split;
    int32_t *vslot;         /* open addressing: piece -> id */
    size_t vmask;
    sg_tok_pair *pslot;     /* merges kinds: (left, right) -> merged, rank */
    size_t pmask;
    int32_t (*merges)[2];   /* the usable merges as id pairs, best first */
    size_t n_merges;
    int32_t byte_tok[256];  /* SCORES/SPM: <0xNN>; BYTES: the mapped character */
    char byte_chr[256][3];  /* BYTES: UTF-8 of GPT-2's printable stand-in for each byte */
    int16_t cp_byte[324];   /* BYTES: inverse of byte_chr */
    sg_pretok *pre;
    char pre_name[32];      /* the GGUF tokenizer.ggml.pre it was built for, or "" */
};

/* Id of a piece in its internal form (U+2581 already a space), or -1. */
int32_t sg_tok_lookup(const sg_tokenizer *t, const char *s, size_t n);

typedef struct {
    const char *what;                /* source named in error messages (a path) */
    /* Merges as (left, right) pairs instead of spec->merges, for sources
     * whose pieces may contain spaces (tokenizer.json [a, b] merges). */
    const char *const *merge_left, *const *merge_right;
    int ignore_merges;               /* -1: as spec->pre_name implies */
    int byte_fallback;               /* SPM: <0xNN> tokens for characters not in the vocab */
    int metaspace_split;             /* SPM: each space-started word is merged on its own */
} sg_tokenizer_extra;

#define SG_TOKENIZER_EXTRA_DEFAULT {NULL, NULL, NULL, -1, 1, 0}

int sg_tokenizer_build_ex(const sg_tokenizer_spec *spec, const sg_tokenizer_extra *ex,
                          sg_tokenizer **out);

#endif
