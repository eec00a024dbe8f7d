/* Deterministic random models of any architecture we handle, for tests and
 * benchmarks at sizes no real checkpoint is at hand.
 *
 * Every tensor is generated from its own stream: splitmix64 seeded with
 * seed ^ FNV-1a-64(canonical name), normals by Box-Muller. A tensor's values
 * therefore depend only on (seed, name, shape), not on the order, sharding
 * or dtype it is written in, and one tensor can be produced without the rest.
 *
 * Values keep activations sane through many layers:
 *   matrices (rows, cols), embeddings too:  N(0, 1) / sqrt(cols)
 *   norm weights:                           1 + 0.1 N(0, 1)
 *   norm biases (LayerNorm), linear biases: 0.1 N(0, 1) */
#ifndef SG_SYNTH_MODEL_H
#define SG_SYNTH_MODEL_H

#include <stdint.h>

#include "dtype.h"
#include "gguf.h"
#include "model_config.h"

/* A typical cfg for arch with the given sizes (head_dim 0: dim / n_heads):
 *   llama: SwiGLU, RMSNorm eps 1e-5, RoPE rotate_half theta 1e4, untied
 *   opt:   ReLU, LayerNorm, learned positions (max_positions 2048, offset 2),
 *          biases everywhere, tied, n_kv_heads must equal n_heads
 *   phi:   GELU (tanh), LayerNorm, parallel blocks, RoPE on half of each
 *          head (rounded down to even), biases everywhere incl. lm_head
 * Callers may adjust fields (qkv_bias, max_positions, ...) afterwards.
 * Returns 0 or SG_EARG / SG_EFORMAT (from sg_config_validate). */
int sg_synth_config(sg_arch arch, int64_t dim, int64_t n_layers, int64_t n_heads,
                    int64_t n_kv_heads, int64_t head_dim, int64_t ffn_dim, int64_t vocab,
                    sg_model_config *cfg);

/* The canonical tensors of an unsliced model of cfg, in file order, with
 * data NULL. Free with sg_synth_free. SG_EUNSUPPORTED for a sliced cfg. */
int sg_synth_tensor_list(const sg_model_config *cfg, sg_named_tensor **out, int *n);

/* Fills dst (desc's element count) with desc's values for this seed. */
int sg_synth_fill(uint64_t seed, const sg_named_tensor *desc, float *dst);

/* The whole model in memory (tensor list with data). */
int sg_synth_model(const sg_model_config *cfg, uint64_t seed, sg_named_tensor **out, int *n);

/* Frees a list from sg_synth_tensor_list or sg_synth_model (names, data). */
void sg_synth_free(sg_named_tensor *tensors, int n);

/* Writes the model as a Hugging Face directory (see hf_save.h), generating
 * each tensor right before it is written: memory stays one tensor. */
int sg_synth_save_hf(const char *outdir, const sg_model_config *cfg, uint64_t seed,
                     sg_dtype dtype, int n_shards);

#endif
