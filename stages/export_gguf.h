/* A plain model (a uniform rotation's output, slicer.h) as one GGUF file
 * that llama.cpp loads: the Hugging Face directory the writer finished is
 * read back like any model and handed to sg_gguf_save_model, which puts
 * q/k back in llama.cpp's pair-wise order and writes key_length and
 * value_length, which llama.cpp needs when head_dim x heads is not the
 * hidden size (it is not, once the hidden size is d). */
#ifndef SG_STAGE_EXPORT_GGUF_H
#define SG_STAGE_EXPORT_GGUF_H

#include "dtype.h"
#include "tokenizer.h"

/* hf_dir (a plain model: no slicegpt section) -> path, every matrix as
 * qtype (F32, F16, BF16, Q8_0, Q4_0, Q4_1), with tok's vocabulary when it
 * has a GGUF form (tok NULL: none; llama.cpp then cannot load it). The
 * whole model is held in memory as float32 while it is written (the GGUF
 * writer takes every tensor at once). */
int sg_export_gguf(const char *hf_dir, const char *path, sg_dtype qtype, const sg_tokenizer *tok);

#endif
