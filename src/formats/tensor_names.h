/* Mapping between canonical (GGUF-style) tensor names and the names Hugging
 * Face checkpoints use for each architecture. */
#ifndef SG_TENSOR_NAMES_H
#define SG_TENSOR_NAMES_H

#include <stddef.h>

#include "model_config.h"

/* Writes the canonical name of HF tensor hf_name into out. Returns 0, or
 * SG_EMISSING if the name is not one this architecture uses (callers ignore
 * such tensors, e.g. rotary caches). */
int sg_name_from_hf(sg_arch arch, const char *hf_name, char *out, size_t outsz);

/* Writes the HF name of canonical tensor name into out. Returns 0 or SG_EARG. */
int sg_name_to_hf(sg_arch arch, const char *canonical, char *out, size_t outsz);

#endif
