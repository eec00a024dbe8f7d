/* A model on disk, whatever its format: a Hugging Face directory
 * (config.json + safetensors, single or sharded) or a GGUF file. Tensors
 * are addressed by canonical name (see model_config.h) and read one at a
 * time, converted to float32; nothing reads the whole model at once. */
#ifndef SG_MODEL_FILES_H
#define SG_MODEL_FILES_H

#include <stdint.h>

#include "model_config.h"
#include "tokenizer.h"

typedef struct sg_model_files sg_model_files;

int sg_model_files_open(const char *path, sg_model_files **out);
void sg_model_files_close(sg_model_files *m);

const sg_model_config *sg_model_files_config(const sg_model_files *m);
const char *sg_model_files_path(const sg_model_files *m);

/* 1 if the canonical tensor exists, else 0. */
int sg_model_files_has(const sg_model_files *m, const char *name);

/* Reads canonical tensor name into dst as float32 after checking that its
 * shape is exactly (rows, cols) (cols = 0 for a vector of rows values).
 * SG_EMISSING or SG_ESHAPE otherwise, with a message naming file and tensor. */
int sg_model_files_read(sg_model_files *m, const char *name, float *dst, int64_t rows,
                        int64_t cols);

/* The model's tokenizer: override_path if given (tokenizer.json or a
 * llama2.c tokenizer.bin), else the GGUF metadata, else tokenizer.json or
 * tokenizer.bin in the model directory. */
int sg_model_files_tokenizer(const sg_model_files *m, const char *override_path,
                             sg_tokenizer **out);

#endif
