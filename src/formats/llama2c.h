/* llama2.c "legacy" (version 0) checkpoints, as written by llama2.c's
 * export.py legacy_export and read by run.c.
 *
 * Little-endian: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 * vocab_size, seq_len), then float32 tensors, row-major [out][in]:
 *   token_embedding (vocab, dim)      rms_att (L, dim)
 *   wq (L, dim, dim)  wk, wv (L, kv_dim, dim)  wo (L, dim, dim)
 *   rms_ffn (L, dim)  w1 (L, hidden, dim)  w2 (L, dim, hidden)  w3 (L, hidden, dim)
 *   rms_final (dim)   freq_cis_real, freq_cis_imag (seq_len, head_size/2) each
 *   wcls (vocab, dim) only when vocab_size < 0 (a positive vocab_size means
 *   the classifier is the token embedding).
 * kv_dim = dim * n_kv_heads / n_heads. q/k rows rotate adjacent pairs
 * (2i, 2i+1) within each head, so the config says SG_ROPE_PAIRS. */
#ifndef SG_LLAMA2C_H
#define SG_LLAMA2C_H

#include <stdint.h>

#include "gguf.h"
#include "model_config.h"

typedef struct {
    int32_t header[7];           /* as stored; header[5] < 0: separate classifier */
    sg_model_config cfg;         /* arch llama, rope PAIRS, theta 1e4, eps 1e-5 */
    int n_tensors;
    sg_named_tensor *tensors;    /* canonical names, data into one allocation */
    float *data;
} sg_llama2c_model;

/* Reads the whole checkpoint (these models are small). The file size must
 * match the header exactly. */
int sg_llama2c_load(const char *path, sg_llama2c_model **out);
void sg_llama2c_free(sg_llama2c_model *m);

/* The tensor with canonical name, or NULL. */
const sg_named_tensor *sg_llama2c_find(const sg_llama2c_model *m, const char *name);

/* Reorders the rows of a q or k weight (n_heads * head_dim, cols) in place
 * from llama2.c's pair-wise RoPE layout to Hugging Face's rotate_half
 * layout, as llama2.c's export.py permute_original(): within each head,
 * row 2i + j moves to row j * head_dim/2 + i (pair (2i, 2i+1) becomes
 * (i, i + head_dim/2)). */
int sg_llama2c_permute_to_half(float *w, int64_t n_heads, int64_t head_dim, int64_t cols);

/* Converts MODEL.bin into a Hugging Face directory: config.json (model_type
 * llama, rope_theta 10000, rotate_half), model.safetensors (float32, HF
 * names, q/k rows permuted) and, if tokenizer_path is not NULL, a copy of
 * it as OUTDIR/tokenizer.bin. Files are written atomically, config.json
 * last. */
int sg_llama2c_to_hf(const char *model_path, const char *outdir, const char *tokenizer_path);

#endif
