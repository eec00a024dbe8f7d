/* The stage stream's framing: preamble, record headers, checksums, zstd
 * (format in frame.h and slicegpt-stream(5)). */
#include "frame.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zstd.h>

#include "crc32c.h"
#include "fd_io.h"
#include "sg_error.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the stream format is little-endian; this code stores host integers as they are"
#endif

static const char *const type_names[] = {
    [SG_REC_HEADER] = "header",     [SG_REC_FILE] = "file",
    [SG_REC_BLOCK] = "block",       [SG_REC_TENSOR] = "tensor",
    [SG_REC_ACT_REF] = "act-ref",   [SG_REC_COV] = "covariance",
    [SG_REC_ROTATION] = "rotation", [SG_REC_SPECTRUM] = "spectrum",
    [SG_REC_ABORT] = "abort",       [SG_REC_END] = "end",
};

const char *sg_rec_type_name(int type)
{
    static _Thread_local char other[32];
    if (type >= 1 && type <= SG_REC_TYPE_MAX)
        return type_names[type];
    snprintf(other, sizeof other, "type %d", type);
    return other;
}

/* The fixed record header, as it lies in the stream. */
typedef struct {
    char sync[4];
    uint16_t type, flags;
    uint64_t seq, stored, len;
    uint32_t name_len, crc;
} rec_header;
_Static_assert(sizeof(rec_header) == SG_FRAME_HEADER, "record header is 40 bytes");

static uint32_t header_crc(const rec_header *h, const char *name)
{
    return sg_crc32c(sg_crc32c(0, h, offsetof(rec_header, crc)), name, h->name_len);
}

/* ---- writing ---- */

struct sg_frame_writer {
    int fd;
    char *what;
    int level;
    ZSTD_CCtx *cctx;
    unsigned char *zbuf;
    size_t zcap;
    uint64_t seq;
    uint64_t bytes; /* written to fd so far */
    int ended;
};

static int write_all(sg_frame_writer *w, const void *buf, uint64_t len)
{
    int err = sg_write_all(w->fd, buf, (size_t)len);
    if (!err)
        w->bytes += len;
    if (err == -EPIPE)
        return sg_fail(-EPIPE, "%s: the next stage closed the pipe", w->what);
    if (err)
        return sg_fail(err, "%s: write failed: %s", w->what, strerror(-err));
    return 0;
}

int sg_frame_writer_open(int fd, const char *what, int zstd_level, sg_frame_writer **out)
{
    *out = NULL;
    sg_frame_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->what = strdup(what))) {
        free(w);
        return sg_fail(-ENOMEM, "%s: out of memory", what);
    }
    w->fd = fd;
    w->level = zstd_level;
    unsigned char pre[SG_FRAME_PREAMBLE] = {0};
    uint32_t version = SG_FRAME_VERSION;
    memcpy(pre, SG_FRAME_MAGIC, 8);
    memcpy(pre + 8, &version, 4);
    int err = write_all(w, pre, sizeof pre);
    if (err) {
        sg_frame_writer_free(w);
        return err;
    }
    *out = w;
    return 0;
}

/* Compresses the parts into w->zbuf; *n: the frame's size. */
static int compress_parts(sg_frame_writer *w, const sg_frame_part *parts, int n_parts,
                          uint64_t total, size_t *n)
{
    size_t bound = ZSTD_compressBound(total);
    if (bound > w->zcap) {
        unsigned char *b = realloc(w->zbuf, bound);
        if (!b)
            return sg_fail(-ENOMEM, "%s: out of memory compressing a record", w->what);
        w->zbuf = b;
        w->zcap = bound;
    }
    if (!w->cctx && !(w->cctx = ZSTD_createCCtx()))
        return sg_fail(-ENOMEM, "%s: cannot allocate a zstd compressor", w->what);
    ZSTD_CCtx_reset(w->cctx, ZSTD_reset_session_and_parameters);
    ZSTD_CCtx_setParameter(w->cctx, ZSTD_c_compressionLevel, w->level);
    ZSTD_CCtx_setPledgedSrcSize(w->cctx, total);
    ZSTD_outBuffer out = {w->zbuf, bound, 0};
    for (int i = 0; i <= n_parts; i++) {
        ZSTD_inBuffer in = {i < n_parts ? parts[i].data : NULL, i < n_parts ? parts[i].len : 0, 0};
        ZSTD_EndDirective mode = i == n_parts ? ZSTD_e_end : ZSTD_e_continue;
        size_t r;
        do {
            r = ZSTD_compressStream2(w->cctx, &out, &in, mode);
            if (ZSTD_isError(r))
                return sg_fail(SG_EFORMAT, "%s: zstd compression failed: %s", w->what,
                               ZSTD_getErrorName(r));
        } while (mode == ZSTD_e_end ? r != 0 : in.pos < in.size);
    }
    *n = out.pos;
    return 0;
}

int sg_frame_write(sg_frame_writer *w, int type, const char *name, const sg_frame_part *parts,
                   int n_parts)
{
    size_t name_len = strlen(name);
    if (w->ended)
        return sg_fail(SG_EARG, "%s: record written after the end record", w->what);
    if (type < 1 || type > SG_REC_TYPE_MAX || name_len > SG_FRAME_NAME_MAX)
        return sg_fail(SG_EARG, "%s: bad record (type %d, name of %zu bytes)", w->what, type,
                       name_len);
    uint64_t total = 0;
    for (int i = 0; i < n_parts; i++)
        total += parts[i].len;
    if (total > SG_FRAME_PAYLOAD_MAX)
        return sg_fail(SG_EARG, "%s: record %s of %llu bytes is larger than a stream allows",
                       w->what, name, (unsigned long long)total);

    rec_header h;
    memset(&h, 0, sizeof h);
    memcpy(h.sync, SG_FRAME_SYNC, 4);
    h.type = (uint16_t)type;
    h.seq = w->seq + 1;
    h.len = total;
    h.stored = total;
    h.name_len = (uint32_t)name_len;
    size_t zn = 0;
    if (w->level > 0 && total > 64) {
        int err = compress_parts(w, parts, n_parts, total, &zn);
        if (err)
            return err;
        if (zn < total) { /* incompressible payloads (most weights) stay raw */
            h.flags = SG_FRAME_ZSTD;
            h.stored = zn;
        }
    }
    h.crc = header_crc(&h, name);
    uint32_t crc = 0;
    int err = write_all(w, &h, sizeof h);
    err = err ? err : write_all(w, name, name_len);
    if (h.flags & SG_FRAME_ZSTD) {
        crc = sg_crc32c(0, w->zbuf, zn);
        err = err ? err : write_all(w, w->zbuf, zn);
    } else {
        for (int i = 0; i < n_parts && !err; i++) {
            crc = sg_crc32c(crc, parts[i].data, parts[i].len);
            err = write_all(w, parts[i].data, parts[i].len);
        }
    }
    err = err ? err : write_all(w, &crc, 4);
    if (!err)
        w->seq++;
    return err;
}

int sg_frame_write_end(sg_frame_writer *w)
{
    uint64_t before = w->seq;
    sg_frame_part p = {&before, 8};
    int err = sg_frame_write(w, SG_REC_END, "", &p, 1);
    if (!err)
        w->ended = 1;
    return err;
}

void sg_frame_writer_free(sg_frame_writer *w)
{
    if (!w)
        return;
    ZSTD_freeCCtx(w->cctx);
    free(w->zbuf);
    free(w->what);
    free(w);
}

/* ---- reading ---- */

#define READ_BUF (1 << 16)

struct sg_frame_reader {
    int fd;
    char *what;
    unsigned char buf[READ_BUF]; /* bytes read ahead: buf[pos .. end) */
    size_t pos, end;
    unsigned char *payload, *stored; /* grown as records need */
    uint64_t payload_cap, stored_cap;
    ZSTD_DCtx *dctx;
    uint64_t seq;
    uint64_t bytes; /* read from fd so far */
    int ended;
};

uint64_t sg_frame_writer_bytes(const sg_frame_writer *w) { return w ? w->bytes : 0; }
uint64_t sg_frame_reader_bytes(const sg_frame_reader *r) { return r ? r->bytes : 0; }

/* Reads up to n bytes; fewer only at end of input. Returns bytes read or -errno. */
static int64_t read_upto(sg_frame_reader *r, void *dst, uint64_t n)
{
    unsigned char *d = dst;
    uint64_t got = 0;
    while (got < n) {
        if (r->pos < r->end) {
            size_t k = r->end - r->pos < n - got ? r->end - r->pos : (size_t)(n - got);
            memcpy(d + got, r->buf + r->pos, k);
            r->pos += k;
            got += k;
            continue;
        }
        /* large reads go straight to the destination */
        int direct = n - got >= READ_BUF;
        size_t want = direct ? (size_t)(n - got) : READ_BUF;
        ssize_t k = sg_read_some(r->fd, direct ? d + got : r->buf, want);
        if (k < 0)
            return sg_fail((int)k, "%s: read failed: %s", r->what, strerror((int)-k));
        if (k == 0)
            break;
        r->bytes += (uint64_t)k;
        if (direct) {
            got += (uint64_t)k;
        } else {
            r->pos = 0;
            r->end = (size_t)k;
        }
    }
    return (int64_t)got;
}

int sg_frame_reader_open(int fd, const char *what, sg_frame_reader **out)
{
    *out = NULL;
    sg_frame_reader *r = calloc(1, sizeof *r);
    if (!r || !(r->what = strdup(what))) {
        free(r);
        return sg_fail(-ENOMEM, "%s: out of memory", what);
    }
    r->fd = fd;
    unsigned char pre[SG_FRAME_PREAMBLE];
    int64_t got = read_upto(r, pre, sizeof pre);
    int err = got < 0 ? (int)got : 0;
    uint32_t version, flags;
    memcpy(&version, pre + 8, 4);
    memcpy(&flags, pre + 12, 4);
    if (err)
        ;
    else if (got == 0)
        err = sg_fail(SG_EFORMAT, "%s: empty stream (the stage before this one wrote nothing)",
                      what);
    else if (got < (int64_t)sizeof pre || memcmp(pre, SG_FRAME_MAGIC, 8) != 0)
        err = sg_fail(SG_EFORMAT,
                      "%s: not a slicegpt-stream stream (bad magic); it should come from a "
                      "stage such as `slicegpt-stream load`",
                      what);
    else if (version != SG_FRAME_VERSION)
        err = sg_fail(SG_EFORMAT, "%s: stream version %u, this program reads version %u", what,
                      version, SG_FRAME_VERSION);
    else if (flags != 0)
        err = sg_fail(SG_EFORMAT, "%s: stream preamble has unknown flags %#x", what, flags);
    if (err) {
        sg_frame_reader_free(r);
        return err;
    }
    *out = r;
    return 0;
}

static int grow(sg_frame_reader *r, unsigned char **buf, uint64_t *cap, uint64_t n)
{
    if (n <= *cap)
        return 0;
    unsigned char *b = realloc(*buf, n ? n : 1);
    if (!b)
        return sg_fail(-ENOMEM, "%s: out of memory for a record of %llu bytes", r->what,
                       (unsigned long long)n);
    *buf = b;
    *cap = n;
    return 0;
}

/* Reads n payload bytes into *buf, grown as the bytes arrive (doubling from
 * 1 MiB) rather than to n up front: the lengths come from the header, and
 * a damaged or hostile one (its checksum is no defence against a writer
 * that computes it) must not make the reader reserve terabytes before the
 * stream turns out to be short. Returns bytes read (fewer at end of
 * input) or a negative code. */
static int64_t read_grown(sg_frame_reader *r, unsigned char **buf, uint64_t *cap, uint64_t n)
{
    uint64_t got = 0, step = (uint64_t)1 << 20;
    int err = grow(r, buf, cap, n < step ? n : step);
    while (!err && got < n) {
        uint64_t want = *cap < n ? *cap : n;
        int64_t k = read_upto(r, *buf + got, want - got);
        if (k < 0)
            return k;
        got += (uint64_t)k;
        if (got < want)
            break;
        if (got < n)
            err = grow(r, buf, cap, n - got < *cap ? *cap + (n - got) : 2 * *cap);
    }
    return err ? err : (int64_t)got;
}

/* The most a zstd frame of n bytes can decompress to: every block takes
 * at least 3 bytes of header and 1 of content, and yields at most 128 KiB. */
static uint64_t zstd_max_len(uint64_t n) { return (n / 4 + 1) * ZSTD_BLOCKSIZE_MAX; }

int sg_frame_read(sg_frame_reader *r, sg_record *rec)
{
    if (r->ended)
        return sg_fail(SG_EARG, "%s: read past the end record", r->what);
    uint64_t n = r->seq + 1;
    rec_header h;
    int64_t got = read_upto(r, &h, sizeof h);
    if (got < 0)
        return (int)got;
    if (got == 0)
        return sg_fail(SG_EFORMAT,
                       "%s: stream ended after record %llu without an end record (a stage "
                       "before this one stopped)",
                       r->what, (unsigned long long)r->seq);
    if (got < (int64_t)sizeof h)
        return sg_fail(SG_EFORMAT, "%s: stream truncated in the header of record %llu", r->what,
                       (unsigned long long)n);
    if (memcmp(h.sync, SG_FRAME_SYNC, 4) != 0)
        return sg_fail(SG_EFORMAT, "%s: stream record %llu: bad record sync (stream out of step)",
                       r->what, (unsigned long long)n);
    if (h.name_len > SG_FRAME_NAME_MAX)
        return sg_fail(SG_ECHECKSUM, "%s: stream record %llu: header checksum mismatch", r->what,
                       (unsigned long long)n);
    got = read_upto(r, rec->name, h.name_len);
    if (got < 0)
        return (int)got;
    if (got < h.name_len)
        return sg_fail(SG_EFORMAT, "%s: stream truncated in the name of record %llu", r->what,
                       (unsigned long long)n);
    rec->name[h.name_len] = '\0';
    if (header_crc(&h, rec->name) != h.crc)
        return sg_fail(SG_ECHECKSUM, "%s: stream record %llu: header checksum mismatch", r->what,
                       (unsigned long long)n);
    /* the header is sound from here on: messages can name the record */
    const char *tn = sg_rec_type_name(h.type);
    if (h.seq != n)
        return sg_fail(SG_EFORMAT,
                       "%s: stream record %llu (%s, %s) says it is record %llu: records were "
                       "lost or repeated",
                       r->what, (unsigned long long)n, tn, rec->name, (unsigned long long)h.seq);
    if (h.type < 1 || h.type > SG_REC_TYPE_MAX)
        return sg_fail(SG_EFORMAT, "%s: stream record %llu (%s, %s): unknown record type",
                       r->what, (unsigned long long)n, tn, rec->name);
    if ((h.flags & ~SG_FRAME_ZSTD) || h.stored > SG_FRAME_PAYLOAD_MAX ||
        h.len > SG_FRAME_PAYLOAD_MAX || (!(h.flags & SG_FRAME_ZSTD) && h.stored != h.len))
        return sg_fail(SG_EFORMAT,
                       "%s: stream record %llu (%s, %s): bad flags %#x or lengths (%llu stored, "
                       "%llu payload)",
                       r->what, (unsigned long long)n, tn, rec->name, h.flags,
                       (unsigned long long)h.stored, (unsigned long long)h.len);
    int zstd = (h.flags & SG_FRAME_ZSTD) != 0;
    if (zstd && h.len > zstd_max_len(h.stored))
        return sg_fail(SG_EFORMAT,
                       "%s: stream record %llu (%s, %s): %llu zstd bytes cannot hold a "
                       "%llu-byte payload",
                       r->what, (unsigned long long)n, tn, rec->name,
                       (unsigned long long)h.stored, (unsigned long long)h.len);
    uint32_t crc;
    got = zstd ? read_grown(r, &r->stored, &r->stored_cap, h.stored)
               : read_grown(r, &r->payload, &r->payload_cap, h.stored);
    if (got < 0)
        return (int)got;
    unsigned char *dst = zstd ? r->stored : r->payload;
    if ((uint64_t)got == h.stored)
        got = read_upto(r, &crc, 4) == 4 ? got : -1;
    if ((uint64_t)got != h.stored)
        return sg_fail(SG_EFORMAT, "%s: stream truncated in record %llu (%s, %s)", r->what,
                       (unsigned long long)n, tn, rec->name);
    if (sg_crc32c(0, dst, h.stored) != crc)
        return sg_fail(SG_ECHECKSUM, "%s: stream record %llu (%s, %s): checksum mismatch",
                       r->what, (unsigned long long)n, tn, rec->name);
    if (zstd) {
        int err = grow(r, &r->payload, &r->payload_cap, h.len);
        if (err)
            return err;
        if (!r->dctx && !(r->dctx = ZSTD_createDCtx()))
            return sg_fail(-ENOMEM, "%s: cannot allocate a zstd decompressor", r->what);
        size_t k = ZSTD_decompressDCtx(r->dctx, r->payload, h.len, r->stored, h.stored);
        if (ZSTD_isError(k) || k != h.len)
            return sg_fail(SG_EFORMAT,
                           "%s: stream record %llu (%s, %s): zstd payload does not decompress "
                           "to its %llu bytes (%s)",
                           r->what, (unsigned long long)n, tn, rec->name,
                           (unsigned long long)h.len,
                           ZSTD_isError(k) ? ZSTD_getErrorName(k) : "wrong size");
    }
    r->seq = n;
    rec->source = r->what;
    rec->type = h.type;
    rec->flags = h.flags;
    rec->seq = n;
    rec->stored = h.stored;
    rec->payload = r->payload;
    rec->len = h.len;
    if (h.type != SG_REC_END)
        return 1;

    uint64_t before;
    if (h.len != 8 || (memcpy(&before, r->payload, 8), before != n - 1))
        return sg_fail(SG_EFORMAT, "%s: stream record %llu (end): record count does not match",
                       r->what, (unsigned long long)n);
    unsigned char extra;
    got = read_upto(r, &extra, 1);
    if (got < 0)
        return (int)got;
    if (got > 0)
        return sg_fail(SG_EFORMAT, "%s: data after the end record (record %llu)", r->what,
                       (unsigned long long)n);
    r->ended = 1;
    return 0;
}

void *sg_frame_reader_take_payload(sg_frame_reader *r)
{
    void *p = r->payload;
    r->payload = NULL;
    r->payload_cap = 0;
    return p;
}

void sg_frame_reader_free(sg_frame_reader *r)
{
    if (!r)
        return;
    ZSTD_freeDCtx(r->dctx);
    free(r->payload);
    free(r->stored);
    free(r->what);
    free(r);
}
