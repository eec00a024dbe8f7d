/* GGUF reading (v2 and v3) and writing.
 *
 * File: magic "GGUF", u32 version, u64 tensor count, u64 metadata count
 * (v1 used u32 counts and is refused), metadata key/values, tensor infos
 * (name, n_dims, ne[] innermost first, ggml type, offset), padding to
 * general.alignment (default 32), then the tensor data. A tensor of
 * ne = [in, out] is a row-major (out, in) matrix. Validated strictly on open. */
#ifndef SG_GGUF_H
#define SG_GGUF_H

#include <stddef.h>
#include <stdint.h>

#include "dtype.h"
#include "model_config.h"
#include "uring_io.h"

typedef struct sg_tokenizer sg_tokenizer;

typedef enum {
    SG_GGUF_U8, SG_GGUF_I8, SG_GGUF_U16, SG_GGUF_I16, SG_GGUF_U32, SG_GGUF_I32,
    SG_GGUF_F32, SG_GGUF_BOOL, SG_GGUF_STRING, SG_GGUF_ARRAY, SG_GGUF_U64,
    SG_GGUF_I64, SG_GGUF_F64,
} sg_gguf_type;

typedef struct {
    char *name;
    sg_dtype dtype;
    int ndim;
    int64_t ne[4];        /* GGUF order: ne[0] is the innermost (contiguous) dim */
    int64_t numel;
    uint64_t offset;      /* absolute byte offset in the file */
    uint64_t nbytes;
} sg_gguf_tensor;

typedef struct sg_gguf sg_gguf;

int sg_gguf_open(const char *path, sg_gguf **out);
void sg_gguf_close(sg_gguf *g);
const char *sg_gguf_path(const sg_gguf *g);
uint32_t sg_gguf_version(const sg_gguf *g);   /* 2 or 3 */
uint64_t sg_gguf_alignment(const sg_gguf *g); /* general.alignment or 32 */

/* Metadata. Each returns 0, SG_EMISSING if the key is absent, or
 * SG_EFORMAT if it has another type. Integers of any width are accepted by
 * the integer getters when the value fits. */
int sg_gguf_get_int(const sg_gguf *g, const char *key, int64_t *out);
int sg_gguf_get_float(const sg_gguf *g, const char *key, double *out);
int sg_gguf_get_bool(const sg_gguf *g, const char *key, int *out);
int sg_gguf_get_string(const sg_gguf *g, const char *key, const char **out);
/* 1 if the key is present (any type), else 0; records no error. */
int sg_gguf_has_key(const sg_gguf *g, const char *key);
/* Arrays: strings as pointers into the parsed file (valid until close);
 * numbers converted into a new array (malloc: the caller frees it). Number
 * arrays accept any numeric element type (ints must fit int32 for the int
 * getter). */
int sg_gguf_get_string_array(const sg_gguf *g, const char *key, const char *const **out,
                             size_t *n);
int sg_gguf_get_float_array(const sg_gguf *g, const char *key, float **out, size_t *n);
int sg_gguf_get_int_array(const sg_gguf *g, const char *key, int32_t **out, size_t *n);

/* The open descriptor of the file (g keeps and closes it), for callers
 * that read tensor bytes themselves. */
int sg_gguf_fd(const sg_gguf *g);
/* Routes tensor reads through io (io_uring, large requests in flight)
 * instead of pread; NULL goes back to pread. io must stay open while g
 * reads with it. */
void sg_gguf_set_io(sg_gguf *g, sg_io *io);

int sg_gguf_tensor_count(const sg_gguf *g);
const sg_gguf_tensor *sg_gguf_tensor_at(const sg_gguf *g, int i);
const sg_gguf_tensor *sg_gguf_find(const sg_gguf *g, const char *name);
/* Reads tensor t (from this file) as numel float32 values into dst. */
int sg_gguf_read_f32(sg_gguf *g, const sg_gguf_tensor *t, float *dst);
/* Reads the nbytes stored bytes of t unconverted into dst. */
int sg_gguf_read_raw(sg_gguf *g, const sg_gguf_tensor *t, void *dst);

/* general.architecture "llama" (also Mistral, SmolLM, Qwen2 exported as llama
 * or qwen2) -> cfg. GGUF llama stores q/k rows for pair-wise RoPE, so
 * cfg->rope = SG_ROPE_PAIRS; "qwen2" is stored unpermuted and run by
 * llama.cpp with NEOX RoPE, so it reads as SG_ROPE_HALF (with q/k/v biases).
 * Biases and tied embeddings follow from which tensors exist; Llama-3 rope
 * scaling arrives as rope_freqs.weight (cfg->rope_freq_factors). */
int sg_gguf_model_config(const sg_gguf *g, sg_model_config *cfg);

/* tokenizer.ggml.* -> tokenizer (models "llama" and "gpt2"). */
int sg_gguf_tokenizer(const sg_gguf *g, sg_tokenizer **out);

/* Writing a whole model (synthetic generator, tests). Tensors are given by
 * canonical name with row-major float32 data; matrices are stored as qtype
 * (F32, F16, BF16, Q8_0, Q4_0, Q4_1; 1-D tensors always F32; a matrix whose
 * rows are not whole 32-value blocks falls back to F16, as llama.cpp's
 * quantizer does). When cfg->rope == SG_ROPE_HALF the q/k rows (and
 * biases) are permuted to pair-wise layout as llama.cpp's converter does.
 * Llama-3 rope scaling is written as rope_freqs.weight; a sliced cfg adds
 * slicegpt.* width keys that sg_gguf_model_config reads back. Only llama
 * (RMSNorm, SwiGLU, RoPE) configs: others give SG_EUNSUPPORTED. Written
 * atomically (PATH.tmp, fsync, rename; removed on any error). */
typedef struct {
    const char *name;
    int ndim;
    int64_t shape[2];     /* row-major: (rows, cols) or (n) */
    const float *data;
} sg_named_tensor;

typedef struct {
    /* optional tokenizer to embed: gpt2-style (merges) or llama-style (scores) */
    const char *model;    /* "gpt2" or "llama"; NULL: no tokenizer */
    const char *pre;      /* tokenizer.ggml.pre, may be NULL */
    const char *const *tokens;
    const float *scores;  /* may be NULL */
    const int32_t *types; /* may be NULL */
    size_t n_tokens;
    const char *const *merges;
    size_t n_merges;
} sg_gguf_vocab;

int sg_gguf_save_model(const char *path, const sg_model_config *cfg,
                       const sg_named_tensor *tensors, int n_tensors, sg_dtype qtype,
                       const sg_gguf_vocab *vocab);

#endif
