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

/* Bytes tensor name takes in its file (its stored dtype), or -1 if absent. */
int64_t sg_model_files_tensor_bytes(const sg_model_files *m, const char *name);

/* Reads canonical tensor name into dst as float32 after checking that its
 * shape is exactly (rows, cols) (cols = 0 for a vector of rows values).
 * SG_EMISSING or SG_ESHAPE otherwise, with a message naming file and tensor. */
int sg_model_files_read(sg_model_files *m, const char *name, float *dst, int64_t rows,
                        int64_t cols);

/* Block prefetch: starts reading the stored bytes of every tensor named
 * "blk.<l>.*" into one SG_IO_ALIGN-aligned buffer and returns at once.
 * Tensors lying next to each other in one file are read as one large
 * request (split into pieces of a few MiB, many in flight), with O_DIRECT
 * where the filesystem allows it (SG_IO_DIRECT=0 turns that off), so a
 * model larger than RAM streams past the page cache. sg_model_files_read
 * then serves these tensors from the buffer, waiting for the reads first,
 * with the same float32 result as an ordinary read; a read error shows up
 * there. Prefetching block l releases every block but l - 1, so at most
 * two blocks' raw bytes are held: the one being served and the one in
 * flight; the usual loop is prefetch(0), then for each l prefetch(l + 1)
 * before reading block l. Prefetching a block held already does nothing;
 * one without tensors (l = n_layers) adds nothing and releases as above.
 * Tensors not prefetched are read on demand as before. The reads progress
 * on a reader thread of m's own; m itself is for one thread at a time. */
int sg_model_files_prefetch_block(sg_model_files *m, int64_t l);

/* Raw bytes currently held by prefetched blocks (tests, memory reports). */
int64_t sg_model_files_prefetch_bytes(const sg_model_files *m);

/* How tensors are read: "io_uring", or "pread: " and the reason io_uring
 * is not used ("pread: io_uring refused: Operation not permitted"), for a
 * one-line notice. sg_model_files_io_direct: how many of the model's files
 * are read with O_DIRECT (0 where the filesystem refuses it). */
const char *sg_model_files_io_backend(const sg_model_files *m);
int sg_model_files_io_direct(const sg_model_files *m);

/* The model's tokenizer: override_path if given (tokenizer.json or a
 * llama2.c tokenizer.bin), else the GGUF metadata, else tokenizer.json or
 * tokenizer.bin in the model directory. */
int sg_model_files_tokenizer(const sg_model_files *m, const char *override_path,
                             sg_tokenizer **out);

#endif
