/* The stage stream: what one slicegpt-stream filter writes to the next
 * (specified in slicegpt-stream(5); this header is its reference).
 *
 * A stream is a 16-byte preamble (magic "SGSTREAM", version, flags) and a
 * sequence of records. Every record has a fixed 40-byte header (sync
 * "SGRC", type, flags, sequence number, stored and payload lengths, name
 * length, CRC-32C of header and name), a name, the payload (optionally one
 * zstd frame) and a CRC-32C of the stored payload. The last record is an
 * END record; a stream that stops before it is truncated.
 *
 * The header's own checksum comes first so that a damaged length is caught
 * before it is used to read; the name is under it, so an error about a
 * payload can name the record it belongs to. All integers little-endian.
 *
 * The reader checks everything (magic, version, sync, sequence, flags,
 * lengths, both checksums, zstd frame size, nothing after END) and fails
 * with SG_ECHECKSUM, SG_EFORMAT or -errno and a one-line message:
 *   "stdin: stream record 17 (tensor, blk.0.attn_q.weight): checksum mismatch"
 * Records are numbered from 1, as in the sequence field.
 *
 * What payloads hold, type by type, is in stream_records.h. */
#ifndef SG_FRAME_H
#define SG_FRAME_H

#include <stdint.h>

#define SG_FRAME_MAGIC "SGSTREAM"
#define SG_FRAME_VERSION 1u
#define SG_FRAME_PREAMBLE 16
#define SG_FRAME_SYNC "SGRC"
#define SG_FRAME_HEADER 40
#define SG_FRAME_NAME_MAX 4095
/* No payload is larger (sanity bound on lengths read from a stream). */
#define SG_FRAME_PAYLOAD_MAX ((uint64_t)1 << 42)

/* Record flags. */
#define SG_FRAME_ZSTD 1u /* the stored payload is one zstd frame */

typedef enum {
    SG_REC_HEADER = 1, /* JSON: the model, the pipeline so far, the store */
    SG_REC_FILE,       /* a file to carry along (the tokenizer) */
    SG_REC_BLOCK,      /* a section boundary: embeddings, block l, head */
    SG_REC_TENSOR,     /* a float32 tensor by canonical name */
    SG_REC_ACT_REF,    /* a calibration activation chunk: a file in the store */
    SG_REC_COV,        /* a signal's covariance H = sum x^T x */
    SG_REC_ROTATION,   /* a signal's principal axes Q */
    SG_REC_SPECTRUM,   /* a signal's eigenvalues */
    SG_REC_ABORT,      /* a stage failed: stop, pass it on, say nothing more */
    SG_REC_END,        /* the stream is complete */
} sg_rec_type;
#define SG_REC_TYPE_MAX SG_REC_END

/* "header", "tensor", ... or "type 42". */
const char *sg_rec_type_name(int type);

/* A payload given in pieces (a tensor's shape, then its data). */
typedef struct {
    const void *data;
    uint64_t len;
} sg_frame_part;

typedef struct sg_frame_writer sg_frame_writer;

/* Writes the preamble to fd (not closed by the writer). what names the
 * destination in messages ("stdout"). zstd_level > 0 compresses each
 * payload with zstd at that level, kept only when it is smaller. */
int sg_frame_writer_open(int fd, const char *what, int zstd_level, sg_frame_writer **out);

/* Writes one complete record, straight to fd: nothing is held back, so a
 * record written is a record the next stage can read (the pipeline's
 * feedback through the store depends on it). -EPIPE when the reader is
 * gone. */
int sg_frame_write(sg_frame_writer *w, int type, const char *name, const sg_frame_part *parts,
                   int n_parts);

/* The END record; nothing may follow. */
int sg_frame_write_end(sg_frame_writer *w);

void sg_frame_writer_free(sg_frame_writer *w);
/* Bytes written to the fd so far (the preamble included). */
uint64_t sg_frame_writer_bytes(const sg_frame_writer *w);

typedef struct {
    const char *source; /* the reader's "what", for messages */
    int type;
    unsigned flags;
    uint64_t seq;      /* 1, 2, ... */
    uint64_t stored;   /* bytes the payload took in the stream */
    char name[SG_FRAME_NAME_MAX + 1];
    unsigned char *payload; /* len bytes, decompressed; the reader's, valid until the next read */
    uint64_t len;
} sg_record;

typedef struct sg_frame_reader sg_frame_reader;

/* Reads and checks the preamble from fd (not closed by the reader). */
int sg_frame_reader_open(int fd, const char *what, sg_frame_reader **out);

/* Reads the next record: 1 and *rec filled, 0 at the END record (after
 * checking that nothing follows it), or a negative code. */
int sg_frame_read(sg_frame_reader *r, sg_record *rec);

/* Hands the payload buffer of the record just read to the caller, who
 * free()s it; rec->payload stays valid. A large tensor is then neither
 * copied nor kept by the reader once used. */
void *sg_frame_reader_take_payload(sg_frame_reader *r);

void sg_frame_reader_free(sg_frame_reader *r);
/* Bytes read from the fd so far (read ahead included). */
uint64_t sg_frame_reader_bytes(const sg_frame_reader *r);

#endif
