/* In-memory random models for tests: every tensor the config asks for,
 * filled from a seeded generator so activations stay of order one. */
#ifndef SG_TEST_RANDOM_MODEL_H
#define SG_TEST_RANDOM_MODEL_H

#include <stdint.h>

#include "model.h"
#include "slicer.h"
#include "text.h"

typedef struct {
    sg_model model;
    sg_block *blocks; /* n_layers */
} test_model;

/* A base config of each architecture, small enough for float64 references. */
sg_model_config test_config_llama(void);
sg_model_config test_config_opt(void);
sg_model_config test_config_phi(void);

int test_model_random(const sg_model_config *cfg, uint64_t seed, test_model *tm);
void test_model_free(test_model *tm);

/* Logits (tokens, vocab) of the fast path for packed sequences. */
int test_model_logits(const test_model *tm, const int32_t *ids, const int64_t *offsets,
                      int64_t n_seq, float *logits);

double test_gauss(uint64_t *state);

/* A batch of n_seq random sequences of len token ids below vocab (free
 * with sg_token_batch_free). */
sg_token_batch test_random_batch(int64_t n_seq, int64_t len, int64_t vocab, uint64_t seed);

/* The small synthetic model the slicing tests share (D 64, 3 layers, 4
 * heads, GQA 2 on Llama, head_dim 16, vocab 97; MLP width ffn), written
 * as a Hugging Face directory (seed 5, F32, 2 shards) into dir. */
int test_synth_dir(sg_arch arch, int64_t ffn, const char *dir, sg_model_config *cfg);

/* Elements of every tensor written in dir (its safetensors shards), -1
 * when they cannot be read; *shortcuts (when not NULL) = how many of the
 * tensors are shortcut matrices. */
int64_t test_stored_elements(const char *dir, int *shortcuts);

/* Slices the model in model_dir with o, whose plan, out_dir and backend
 * the caller set (chunk_tokens is set here to 100: several chunks per
 * signal), on calib; *rep (NULL: not wanted) gets the report. */
int test_slice_dir(const char *model_dir, const sg_token_batch *calib, sg_slice_options *o,
                   sg_slice_report *rep);

/* c with uneven sliced widths (as slicing with different per-signal dims
 * gives), scale-free RMSNorms and an untied head. */
void test_config_make_sliced(sg_model_config *c);

#endif
