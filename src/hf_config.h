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

#endif
