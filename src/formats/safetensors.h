/* Safetensors reading (single file or sharded with model.safetensors.index.json)
 * and streaming writing.
 *
 * Layout of one file: u64 little-endian header length N, N bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *  "__metadata__": {...}}, then the data; offsets are relative to the byte
 * after the header. Every header is validated strictly on open. */
#ifndef SG_SAFETENSORS_H
#define SG_SAFETENSORS_H

#include <stdint.h>

#include "dtype.h"
#include "uring_io.h"

#define SG_MAX_DIMS 4

typedef struct {
    char *name;           /* as stored in the file */
    sg_dtype dtype;
    int ndim;
    int64_t shape[SG_MAX_DIMS]; /* row-major, outermost first */
    int64_t numel;
    uint64_t offset;      /* absolute byte offset in its file */
    uint64_t nbytes;
    int file;             /* index into the set's files */
} sg_st_tensor;

typedef struct sg_safetensors sg_safetensors;

/* path: a .safetensors file, or a directory holding model.safetensors or
 * model.safetensors.index.json and its shards. */
int sg_safetensors_open(const char *path, sg_safetensors **out);
void sg_safetensors_close(sg_safetensors *st);

int sg_safetensors_count(const sg_safetensors *st);
const sg_st_tensor *sg_safetensors_at(const sg_safetensors *st, int i);
const sg_st_tensor *sg_safetensors_find(const sg_safetensors *st, const char *name);
const char *sg_safetensors_file_path(const sg_safetensors *st, int file);

/* The number of files (shards) and the open descriptor of one of them
 * (st keeps and closes it), for callers that read tensor bytes themselves. */
int sg_safetensors_file_count(const sg_safetensors *st);
int sg_safetensors_file_fd(const sg_safetensors *st, int file);

/* Routes the tensor reads below through io (io_uring, large requests in
 * flight) instead of pread; NULL goes back to pread. io must stay open
 * while st reads with it. Header reads at open always use pread. */
void sg_safetensors_set_io(sg_safetensors *st, sg_io *io);

/* Reads tensor t converted to float32 into dst (t->numel floats). */
int sg_safetensors_read_f32(sg_safetensors *st, const sg_st_tensor *t, float *dst);

/* Reads tensor t's stored bytes unconverted into dst (t->nbytes bytes). */
int sg_safetensors_read_raw(sg_safetensors *st, const sg_st_tensor *t, void *dst);

/* Writer: declare every tensor, then write their data in declaration order.
 * The file appears under its final name only after sg_st_writer_finish
 * succeeds (written as PATH.tmp, fsynced, renamed). Declared dtypes are F32,
 * F16, BF16 or F64; float32 data is converted on write. The header carries
 * "__metadata__": {"format": "pt"} and is space-padded to a multiple of 8.
 * After a failed write (ENOSPC, ...) the temp file is already removed and
 * every later call returns the same code; finish or abort still frees w. */
typedef struct sg_st_writer sg_st_writer;
int sg_st_writer_open(const char *path, sg_st_writer **out);
int sg_st_writer_declare(sg_st_writer *w, const char *name, sg_dtype dtype, int ndim,
                         const int64_t *shape);
int sg_st_writer_write(sg_st_writer *w, const char *name, const float *data);
int sg_st_writer_finish(sg_st_writer *w);  /* frees w */
void sg_st_writer_abort(sg_st_writer *w);  /* removes the temp file, frees w */

#endif
