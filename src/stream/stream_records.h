/* The payloads of the stage stream's records (framing in frame.h; the
 * whole format in slicegpt-stream(5)). Integers are little-endian i64
 * unless said otherwise, matrices row-major.
 *
 *   header    UTF-8 JSON object: "format", "source", "config" (the original
 *             model, every field of sg_model_config), "stages" (who has
 *             worked on the stream), "store" (the scratch directory, once
 *             capture made it), "slicing" (sparsity and the sliced config,
 *             once slice planned it)
 *   file      the file's bytes; the name is the file name ("tokenizer.bin")
 *   block     u32 phase (0 begin, 1 end), u32 kind (0 embeddings, 1 block,
 *             2 head), i64 layer (-1 unless a block); name "embeddings",
 *             "blk.<l>" or "head"
 *   tensor    u32 dtype (0 = float32), u32 ndim (1..4), i64 shape[ndim],
 *             then the elements; name canonical ("blk.0.attn_q.weight")
 *   act-ref   i64 layer, index, count, rows, width, then the chunk file's
 *             path relative to the store (no NUL); name: the signal
 *   covariance i64 layer, d, tokens, then f64 H (d, d), symmetric
 *   rotation  i64 layer, D, then f64 Q (D, D), principal direction j in
 *             column j, largest eigenvalue first
 *   spectrum  i64 layer, n, then f64 eigenvalues[n], descending
 *   abort     UTF-8 message; name: the stage that failed
 *   end       u64 records before this one
 *
 * Signals (act-ref, covariance, rotation, spectrum) are named
 * "embeddings", "blk.<l>.attention_output" or "blk.<l>.block_output".
 *
 * Readers return SG_EFORMAT, naming the record, when a payload's size or
 * contents disagree with its type. */
#ifndef SG_STREAM_RECORDS_H
#define SG_STREAM_RECORDS_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "frame.h"
#include "model_config.h"

/* ---- header ---- */
int sg_rec_write_header(sg_frame_writer *w, const cJSON *header);
/* *header: a new object the caller deletes. */
int sg_rec_read_header(const sg_record *rec, cJSON **header);

/* Every field of cfg, by name (exact: doubles print so they read back
 * identical). */
cJSON *sg_config_to_json(const sg_model_config *cfg);
/* what names the source for messages. */
int sg_config_from_json(const cJSON *json, sg_model_config *cfg, const char *what);

/* ---- file ---- */
int sg_rec_write_file(sg_frame_writer *w, const char *name, const void *data, uint64_t len);

/* ---- block (section boundary) ---- */
typedef enum { SG_SECTION_EMBEDDINGS, SG_SECTION_BLOCK, SG_SECTION_HEAD } sg_section_kind;
typedef struct {
    int end;              /* 0 begin, 1 end */
    sg_section_kind kind;
    int64_t layer;        /* block index; -1 for embeddings and head */
} sg_rec_block;
int sg_rec_write_block(sg_frame_writer *w, const sg_rec_block *b);
int sg_rec_read_block(const sg_record *rec, sg_rec_block *b);
/* "embeddings", "blk.3", "head" */
void sg_section_name(const sg_rec_block *b, char *buf, size_t n);

/* ---- tensor ---- */
int sg_rec_write_tensor(sg_frame_writer *w, const char *name, const float *data, int ndim,
                        const int64_t *shape);
/* *data points into rec's payload (8-byte aligned), valid until the next read. */
int sg_rec_read_tensor(const sg_record *rec, int *ndim, int64_t shape[4], const float **data);

/* ---- act-ref ---- */
typedef struct {
    int64_t layer, index, count, rows, width;
    char path[1024]; /* relative to the store directory */
} sg_rec_act_ref;
int sg_rec_write_act_ref(sg_frame_writer *w, const char *signal, const sg_rec_act_ref *a);
int sg_rec_read_act_ref(const sg_record *rec, sg_rec_act_ref *a);

/* ---- covariance, rotation, spectrum ---- */
/* A square (or vector) float64 payload after a few i64 fields. */
typedef struct {
    int64_t layer;
    int64_t n;            /* d (covariance), D (rotation), count (spectrum) */
    int64_t tokens;       /* covariance only */
    const double *values; /* n*n, or n for a spectrum; points into the payload */
} sg_rec_matrix;
int sg_rec_write_cov(sg_frame_writer *w, const char *signal, int64_t layer, int64_t d,
                     int64_t tokens, const double *h);
int sg_rec_write_rotation(sg_frame_writer *w, const char *signal, int64_t layer, int64_t D,
                          const double *q);
int sg_rec_write_spectrum(sg_frame_writer *w, const char *signal, int64_t layer, int64_t n,
                          const double *eig);
/* For a record of type covariance, rotation or spectrum. */
int sg_rec_read_matrix(const sg_record *rec, sg_rec_matrix *m);

/* Signal names: "embeddings" (layer -1), "blk.<l>.<what>". */
void sg_signal_name(const char *what, int64_t layer, char *buf, size_t n);
/* The part after "blk.<l>." ("attention_output"), or the whole name. */
const char *sg_signal_kind(const char *name);

/* ---- abort ---- */
int sg_rec_write_abort(sg_frame_writer *w, const char *stage, const char *message);

/* "stdin: stream record 17 (tensor, blk.0.attn_q.weight)": how messages
 * name a record (a static buffer per thread, overwritten by the next call). */
const char *sg_rec_label(const sg_record *rec);

#endif
