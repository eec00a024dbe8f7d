/* Writing a model as a Hugging Face directory: config.json plus either
 * model.safetensors or shards model-0000i-of-0000N.safetensors with
 * model.safetensors.index.json, tensors under their HF names.
 *
 * Atomicity is per file: each file is written under NAME.tmp, fsynced and
 * renamed. config.json is removed first and written last, so a directory
 * with a config.json is complete. OUTDIR is created if missing (an existing
 * one is written into); a stale model.safetensors (when writing shards) or
 * index (when writing one file) is removed so that a reader cannot pick up
 * the other layout. Old shards of another count are left alone. Every
 * tensor is stored in the one dtype given, as HF checkpoints do. */
#ifndef SG_HF_SAVE_H
#define SG_HF_SAVE_H

#include <stddef.h>

#include "dtype.h"
#include "gguf.h"
#include "model_config.h"

/* Produces the float32 data of one tensor into dst (desc->shape elements).
 * Returns 0 or a negative code (with sg_fail). */
typedef int (*sg_hf_tensor_fn)(void *ctx, const sg_named_tensor *desc, float *dst);

/* Streaming: descs give canonical names and shapes in file order (their
 * data is ignored); fn fills one tensor at a time, so memory stays one
 * tensor. dtype: F32, F16, BF16 (F64 too) for every tensor. n_shards >= 1;
 * 1 writes model.safetensors. sparsity goes to config.json of a sliced cfg. */
int sg_hf_save_stream(const char *outdir, const sg_model_config *cfg, double sparsity,
                      const sg_named_tensor *descs, int n, sg_dtype dtype, int n_shards,
                      sg_hf_tensor_fn fn, void *ctx);

/* The same with every tensor's data already in memory. */
int sg_hf_save_model(const char *outdir, const sg_model_config *cfg, double sparsity,
                     const sg_named_tensor *tensors, int n, sg_dtype dtype, int n_shards);

/* Writes n bytes to path atomically (path.tmp, fsync, rename, fsync of the
 * directory). Nothing is left under either name on failure. */
int sg_hf_file_write_atomic(const char *path, const void *data, size_t n);

#endif
