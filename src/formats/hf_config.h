/* Hugging Face config.json <-> sg_model_config, through cJSON.
 * Understands model_type llama, mistral, qwen2 (q/k/v bias), opt, phi, and
 * our own "slicegpt" section of a sliced model. */
#ifndef SG_HF_CONFIG_H
#define SG_HF_CONFIG_H

#include "model_config.h"

int sg_hf_config_load(const char *path, sg_model_config *cfg);

/* Writes config.json for cfg (atomically: temp name, fsync, rename). A
 * sliced cfg gets a "slicegpt" object with sparsity and per-layer widths. */
int sg_hf_config_save(const char *path, const sg_model_config *cfg, double sparsity);

/* Checks, without writing, that sg_hf_config_save would accept cfg: it is
 * valid and its architecture's config.json can express it (e.g. OPT needs
 * one bias setting for all linears). source names the target in messages. */
int sg_hf_config_check(const sg_model_config *cfg, const char *source);

#endif
