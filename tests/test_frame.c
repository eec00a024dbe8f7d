/* The stage stream format (frame.h, stream_records.h, slicegpt-stream(5)):
 *  - CRC-32C gives the standard check value, in both implementations;
 *  - every record type round-trips, with zstd off and on;
 *  - a record built by hand from the man page's layout reads back;
 *  - every truncation and every flipped byte of a stream is a clean error,
 *    and a damaged payload is reported as "stream record N (type, name):
 *    checksum mismatch";
 *  - bad magic, version, sequence, trailing data are named;
 *  - a block section round-trips through the section reader;
 *  - the store's feedback files: published, awaited, timed out, failed;
 *  - activation chunks named by one store and read by path by another. */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "act_store.h"
#include "crc32c.h"
#include "frame.h"
#include "sg_error.h"
#include "stream_model.h"
#include "stream_records.h"
#include "stream_store.h"
#include "synth_model.h"
#include "tap.h"

static const char *tmp;

/* ---- helpers: a stream in a temporary file ---- */

static int open_tmp(const char *name)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", tmp, name);
    return open(path, O_RDWR | O_CREAT | O_TRUNC, 0600);
}

/* Reads a whole fd from the start. */
static unsigned char *slurp_fd(int fd, size_t *n)
{
    off_t end = lseek(fd, 0, SEEK_END);
    unsigned char *b = malloc(end + 1);
    *n = pread(fd, b, end, 0) == end ? (size_t)end : 0;
    return b;
}

/* A fd holding bytes b[0..n), positioned at the start. */
static int fd_of(const unsigned char *b, size_t n)
{
    int fd = open_tmp("bytes");
    if (write(fd, b, n) != (ssize_t)n)
        abort();
    lseek(fd, 0, SEEK_SET);
    return fd;
}

/* Reads every record of fd; returns the first error, or 0 after the end
 * record; *records: how many were read. */
static int read_all(int fd, int *records)
{
    sg_frame_reader *r;
    sg_record rec;
    *records = 0;
    int got = sg_frame_reader_open(fd, "test", &r);
    if (got)
        return got;
    while ((got = sg_frame_read(r, &rec)) == 1)
        ++*records;
    sg_frame_reader_free(r);
    return got;
}

/* ---- the sample stream: one record of every type ---- */

static sg_model_config sample_config(void)
{
    sg_model_config c;
    sg_synth_config(SG_ARCH_LLAMA, 16, 2, 2, 1, 8, 24, 40, &c);
    c.rope_scaling = SG_ROPE_SCALE_LLAMA3;
    c.rope_factor = 8;
    c.rope_low_freq_factor = 1.0 / 3.0; /* needs all 17 digits to come back */
    c.n_rope_freq_factors = 3;
    c.rope_freq_factors[0] = 1.0f;
    c.rope_freq_factors[1] = 0.1f;
    c.rope_freq_factors[2] = 3.14159f;
    c.norm_eps = 1e-6;
    return c;
}

static float tensor[6 * 16];
static double cov[4 * 4], eig[4];
static const char file_bytes[] = "tokenizer bytes\0with a NUL";

static int write_sample(sg_frame_writer *w)
{
    for (int i = 0; i < 6 * 16; i++)
        tensor[i] = sinf(i * 0.37f) * 3;
    for (int i = 0; i < 16; i++)
        cov[i] = i % 5 == 0 ? 2.0 + i : 0.25 * i;
    for (int i = 0; i < 4; i++)
        eig[i] = 4.0 - i;
    sg_model_config c = sample_config();
    cJSON *h = cJSON_CreateObject();
    cJSON_AddStringToObject(h, "format", "slicegpt-stream");
    cJSON_AddItemToObject(h, "config", sg_config_to_json(&c));
    int err = sg_rec_write_header(w, h);
    cJSON_Delete(h);
    sg_rec_block begin = {0, SG_SECTION_BLOCK, 0}, end = {1, SG_SECTION_BLOCK, 0};
    int64_t shape[2] = {6, 16};
    sg_rec_act_ref a = {3, 1, 4, 6, 16, "c0000000000000007.sgac"};
    err = err ? err : sg_rec_write_file(w, "tokenizer.bin", file_bytes, sizeof file_bytes);
    err = err ? err : sg_rec_write_block(w, &begin);
    err = err ? err : sg_rec_write_tensor(w, "blk.0.attn_q.weight", tensor, 2, shape);
    err = err ? err : sg_rec_write_block(w, &end);
    err = err ? err : sg_rec_write_act_ref(w, "blk.3.attention_output", &a);
    err = err ? err : sg_rec_write_cov(w, "blk.3.attention_output", 3, 4, 1234, cov);
    err = err ? err : sg_rec_write_rotation(w, "blk.3.attention_output", 3, 4, cov);
    err = err ? err : sg_rec_write_spectrum(w, "blk.3.attention_output", 3, 4, eig);
    err = err ? err : sg_rec_write_abort(w, "eig", "something broke");
    return err ? err : sg_frame_write_end(w);
}
#define SAMPLE_RECORDS 10 /* before the end record */

/* The sample stream's bytes, written with zstd at level (0: off). */
static unsigned char *sample_bytes(int level, size_t *n)
{
    int fd = open_tmp("sample");
    sg_frame_writer *w;
    int err = sg_frame_writer_open(fd, "sample", level, &w);
    err = err ? err : write_sample(w);
    sg_frame_writer_free(w);
    unsigned char *b = err ? NULL : slurp_fd(fd, n);
    close(fd);
    return b;
}

/* ---- tests ---- */

static void test_crc(void)
{
    tap_ok(sg_crc32c(0, "123456789", 9) == 0xE3069283u,
           "CRC-32C of \"123456789\" is the standard check value E3069283");
    unsigned char buf[1000];
    uint64_t s = 5;
    for (int i = 0; i < 1000; i++)
        buf[i] = (unsigned char)((s = s * 6364136223846793005ull + 1) >> 56);
    int same = 1;
    for (int off = 0; off < 9; off++)
        for (int len = 0; len < 300; len += 7)
            same &= sg_crc32c(0, buf + off, len) == sg_crc32c_portable(0, buf + off, len);
    same &= sg_crc32c(sg_crc32c(0, buf, 333), buf + 333, 667) == sg_crc32c(0, buf, 1000);
    tap_ok(same, "CRC-32C: hardware and table versions agree, and it extends piecewise");
}

static void test_round_trip(int level)
{
    size_t n;
    unsigned char *b = sample_bytes(level, &n);
    int fd = fd_of(b, n);
    sg_frame_reader *r;
    sg_record rec;
    int err = sg_frame_reader_open(fd, "test", &r), ok = !err, got, zstd = 0;
    const char *what = level ? "zstd on" : "zstd off";

    ok &= sg_frame_read(r, &rec) == 1 && rec.type == SG_REC_HEADER && rec.seq == 1;
    cJSON *h = NULL;
    sg_model_config c, want = sample_config();
    ok &= sg_rec_read_header(&rec, &h) == 0 &&
          sg_config_from_json(cJSON_GetObjectItem(h, "config"), &c, "test") == 0 &&
          memcmp(&c, &want, sizeof c) == 0;
    cJSON_Delete(h);
    tap_ok(ok, "%s: header and model config round-trip exactly", what);

    ok = sg_frame_read(r, &rec) == 1 && rec.type == SG_REC_FILE &&
         !strcmp(rec.name, "tokenizer.bin") && rec.len == sizeof file_bytes &&
         !memcmp(rec.payload, file_bytes, rec.len);
    sg_rec_block blk;
    ok &= sg_frame_read(r, &rec) == 1 && sg_rec_read_block(&rec, &blk) == 0 && !blk.end &&
          blk.kind == SG_SECTION_BLOCK && blk.layer == 0 && !strcmp(rec.name, "blk.0");
    int ndim;
    int64_t shape[4];
    const float *x;
    ok &= sg_frame_read(r, &rec) == 1 && sg_rec_read_tensor(&rec, &ndim, shape, &x) == 0 &&
          ndim == 2 && shape[0] == 6 && shape[1] == 16 && !memcmp(x, tensor, sizeof tensor);
    zstd |= rec.flags & SG_FRAME_ZSTD;
    ok &= sg_frame_read(r, &rec) == 1 && sg_rec_read_block(&rec, &blk) == 0 && blk.end;
    tap_ok(ok, "%s: file, block boundaries and tensor round-trip", what);

    sg_rec_act_ref a;
    ok = sg_frame_read(r, &rec) == 1 && sg_rec_read_act_ref(&rec, &a) == 0 && a.layer == 3 &&
         a.index == 1 && a.count == 4 && a.rows == 6 && a.width == 16 &&
         !strcmp(a.path, "c0000000000000007.sgac") && !strcmp(rec.name, "blk.3.attention_output");
    sg_rec_matrix m;
    ok &= sg_frame_read(r, &rec) == 1 && rec.type == SG_REC_COV &&
          sg_rec_read_matrix(&rec, &m) == 0 && m.layer == 3 && m.n == 4 && m.tokens == 1234 &&
          !memcmp(m.values, cov, sizeof cov);
    zstd |= rec.flags & SG_FRAME_ZSTD;
    ok &= sg_frame_read(r, &rec) == 1 && rec.type == SG_REC_ROTATION &&
          sg_rec_read_matrix(&rec, &m) == 0 && m.n == 4 && !memcmp(m.values, cov, sizeof cov);
    ok &= sg_frame_read(r, &rec) == 1 && rec.type == SG_REC_SPECTRUM &&
          sg_rec_read_matrix(&rec, &m) == 0 && m.n == 4 && !memcmp(m.values, eig, sizeof eig);
    ok &= sg_frame_read(r, &rec) == 1 && rec.type == SG_REC_ABORT && !strcmp(rec.name, "eig") &&
          rec.len == strlen("something broke");
    tap_ok(ok, "%s: act-ref, covariance, rotation, spectrum and abort round-trip", what);

    got = sg_frame_read(r, &rec);
    tap_ok(got == 0 && rec.type == SG_REC_END && rec.seq == SAMPLE_RECORDS + 1,
           "%s: the end record ends the stream", what);
    if (level)
        tap_ok(zstd, "zstd on: compressible payloads are stored compressed");
    else
        tap_ok(!zstd, "zstd off: nothing is compressed");
    sg_frame_reader_free(r);
    close(fd);
    free(b);
}

/* The layout of slicegpt-stream(5), written out by hand. */
static unsigned char *put(unsigned char *p, const void *v, size_t n)
{
    memcpy(p, v, n);
    return p + n;
}
static unsigned char *put16(unsigned char *p, uint16_t v) { return put(p, &v, 2); }
static unsigned char *put32(unsigned char *p, uint32_t v) { return put(p, &v, 4); }
static unsigned char *put64(unsigned char *p, uint64_t v) { return put(p, &v, 8); }

/* A record header: sync, type, flags, sequence, stored and payload length,
 * name length, then the CRC-32C of those 36 bytes and the name. */
static unsigned char *put_header_z(unsigned char *p, uint16_t type, uint16_t flags, uint64_t seq,
                                   uint64_t stored, uint64_t len, const char *name)
{
    unsigned char *h = p;
    p = put(p, "SGRC", 4);
    p = put16(p, type);
    p = put16(p, flags);
    p = put64(p, seq);
    p = put64(p, stored);
    p = put64(p, len);
    p = put32(p, (uint32_t)strlen(name));
    p = put32(p, sg_crc32c(sg_crc32c(0, h, 36), name, strlen(name)));
    return put(p, name, strlen(name));
}
static unsigned char *put_header(unsigned char *p, uint16_t type, uint64_t seq, uint64_t len,
                                 const char *name)
{
    return put_header_z(p, type, 0, seq, len, len, name);
}

static void test_by_hand(void)
{
    unsigned char buf[256], *p = buf;
    p = put(p, "SGSTREAM", 8);
    p = put32(p, 1); /* version */
    p = put32(p, 0); /* flags */
    p = put_header(p, SG_REC_FILE, 1, 5, "notes.txt");
    p = put(p, "hello", 5);
    p = put32(p, sg_crc32c(0, "hello", 5));
    uint64_t before = 1; /* the end record's payload: records before it */
    p = put_header(p, SG_REC_END, 2, 8, "");
    p = put64(p, before);
    p = put32(p, sg_crc32c(0, &before, 8));
    int fd = fd_of(buf, p - buf), records;
    int err = read_all(fd, &records);
    close(fd);
    tap_ok(err == 0 && records == 1, "a stream built by hand from the documented layout reads");
}

/* A header whose lengths claim a terabyte, with its checksum right (found
 * by tests/fuzz/fuzz_stream): the reader must find the stream short, not
 * try to reserve the terabyte first and fail for want of memory. */
static void test_huge_lengths(void)
{
    unsigned char buf[256], *p = buf;
    p = put(p, "SGSTREAM", 8);
    p = put32(p, 1);
    p = put32(p, 0);
    p = put_header(p, SG_REC_FILE, 1, (uint64_t)1 << 40, "huge");
    p = put(p, "hello", 5);
    int fd = fd_of(buf, p - buf), records;
    int err = read_all(fd, &records);
    close(fd);
    tap_ok(err == SG_EFORMAT && strstr(sg_last_error(), "truncated in record 1"),
           "a 1 TiB record with 5 bytes behind it is truncated: %s", sg_last_error());

    p = buf + SG_FRAME_PREAMBLE;
    p = put_header_z(p, SG_REC_FILE, SG_FRAME_ZSTD, 1, 5, (uint64_t)1 << 40, "huge");
    p = put(p, "hello", 5);
    p = put32(p, sg_crc32c(0, "hello", 5));
    fd = fd_of(buf, p - buf);
    err = read_all(fd, &records);
    close(fd);
    tap_ok(err == SG_EFORMAT && strstr(sg_last_error(), "cannot hold"),
           "5 zstd bytes claiming 1 TiB: %s", sg_last_error());

    /* a payload read in several growing steps (1, 2, then the rest of 3 MiB
     * and 5 bytes), raw and zstd, a small one after it in the same buffer */
    size_t big = (3u << 20) + 5;
    unsigned char *data = malloc(big);
    for (size_t i = 0; i < big; i++)
        data[i] = (unsigned char)(i * 2654435761u >> 13);
    int same = 1;
    for (int level = 0; level <= 3; level += 3) {
        fd = open_tmp("big");
        sg_frame_writer *w = NULL;
        sg_frame_part part = {data, big}, small = {"hello", 5};
        if (sg_frame_writer_open(fd, "test", level, &w) ||
            sg_frame_write(w, SG_REC_FILE, "big", &part, 1) ||
            sg_frame_write(w, SG_REC_FILE, "small", &small, 1) || sg_frame_write_end(w))
            same = 0;
        sg_frame_writer_free(w);
        lseek(fd, 0, SEEK_SET);
        sg_frame_reader *r = NULL;
        sg_record rec;
        same = same && sg_frame_reader_open(fd, "test", &r) == 0;
        same = same && sg_frame_read(r, &rec) == 1 && rec.len == big &&
               !memcmp(rec.payload, data, big);
        same = same && sg_frame_read(r, &rec) == 1 && rec.len == 5 &&
               !memcmp(rec.payload, "hello", 5);
        same = same && sg_frame_read(r, &rec) == 0;
        sg_frame_reader_free(r);
        close(fd);
    }
    free(data);
    tap_ok(same, "a 3 MiB payload read in growing steps comes back whole, raw and zstd");
}

/* Every prefix of the stream must fail cleanly, never read as complete. */
static void test_truncated(void)
{
    size_t n;
    unsigned char *b = sample_bytes(0, &n);
    int clean = 1, records;
    for (size_t k = 0; k < n; k++) {
        int fd = fd_of(b, k);
        sg_clear_error();
        int err = read_all(fd, &records);
        close(fd);
        clean &= err == SG_EFORMAT && sg_last_error()[0];
    }
    tap_ok(clean, "every one of the %zu truncations is a format error with a message", n);
    int fd = fd_of(b, n - 2);
    read_all(fd, &records);
    close(fd);
    tap_ok(strstr(sg_last_error(), "truncated in record 11 (end") != NULL,
           "a truncated record is named (%s)", sg_last_error());
    fd = fd_of(b, 0);
    read_all(fd, &records);
    close(fd);
    tap_ok(strstr(sg_last_error(), "empty stream") != NULL, "an empty stream says so (%s)",
           sg_last_error());
    free(b);
}

/* Every single flipped byte is caught; payload damage names the record. */
static void test_flipped(int level)
{
    size_t n;
    unsigned char *b = sample_bytes(level, &n);
    int caught = 1, named = 1, records, checksums = 0;
    for (size_t k = 0; k < n; k++) {
        b[k] ^= 0x10;
        int fd = fd_of(b, n);
        sg_clear_error();
        int err = read_all(fd, &records);
        close(fd);
        b[k] ^= 0x10;
        caught &= err < 0;
        if (err == SG_ECHECKSUM) {
            checksums++;
            named &= strstr(sg_last_error(), "checksum mismatch") != NULL &&
                     strstr(sg_last_error(), "test: stream record ") != NULL;
        }
    }
    tap_ok(caught, "%s: each of the %zu flipped bytes is an error", level ? "zstd" : "raw", n);
    tap_ok(named && checksums > (int)n / 2,
           "%s: %d of them checksum mismatches, each naming the record", level ? "zstd" : "raw",
           checksums);
    free(b);
}

static void test_flip_message(void)
{
    size_t n;
    unsigned char *b = sample_bytes(0, &n);
    /* the middle of the tensor's payload */
    unsigned char *at = memmem(b, n, "blk.0.attn_q.weight", 19);
    at[19 + 8 + 16 + 40] ^= 1;
    int fd = fd_of(b, n), records;
    int err = read_all(fd, &records);
    close(fd);
    tap_ok(err == SG_ECHECKSUM &&
               !strcmp(sg_last_error(),
                       "test: stream record 4 (tensor, blk.0.attn_q.weight): checksum mismatch"),
           "a damaged tensor: \"%s\"", sg_last_error());
    at[19 + 8 + 16 + 40] ^= 1;
    at[-2] ^= 1; /* inside the header's own checksum */
    fd = fd_of(b, n);
    err = read_all(fd, &records);
    close(fd);
    tap_ok(err == SG_ECHECKSUM &&
               strstr(sg_last_error(), "stream record 4: header checksum mismatch"),
           "a damaged header: \"%s\"", sg_last_error());
    free(b);
}

static void test_bad_preamble_and_order(void)
{
    size_t n;
    unsigned char *b = sample_bytes(0, &n);
    int records;
    b[0] = 'X';
    int fd = fd_of(b, n);
    int err = read_all(fd, &records);
    close(fd);
    tap_ok(err == SG_EFORMAT && strstr(sg_last_error(), "bad magic"), "bad magic: %s",
           sg_last_error());
    b[0] = 'S';
    b[8] = 2;
    fd = fd_of(b, n);
    err = read_all(fd, &records);
    close(fd);
    tap_ok(err == SG_EFORMAT &&
               strstr(sg_last_error(), "stream version 2, this program reads version 1"),
           "bad version: %s", sg_last_error());
    b[8] = 1;

    /* the file record twice: the second is out of sequence */
    unsigned char *f = memmem(b, n, "SGRC\x02\x00", 6);
    unsigned char *g = memmem(f + 1, n - (f + 1 - b), "SGRC", 4);
    size_t flen = g - f;
    unsigned char *dup = malloc(n + flen);
    memcpy(dup, b, g - b);
    memcpy(dup + (g - b), f, flen);
    memcpy(dup + (g - b) + flen, g, n - (g - b));
    fd = fd_of(dup, n + flen);
    err = read_all(fd, &records);
    close(fd);
    tap_ok(err == SG_EFORMAT && strstr(sg_last_error(), "lost or repeated"),
           "a repeated record: %s", sg_last_error());
    free(dup);

    unsigned char *more = malloc(n + 1);
    memcpy(more, b, n);
    more[n] = 0;
    fd = fd_of(more, n + 1);
    err = read_all(fd, &records);
    close(fd);
    tap_ok(err == SG_EFORMAT && strstr(sg_last_error(), "data after the end record"),
           "trailing data: %s", sg_last_error());
    free(more);
    free(b);
}

/* A block written as a section reads back into the same tensors. */
typedef struct {
    sg_block *got, *want;
} pair;

static int same_tensor(const char *name, float **p, int64_t rows, int64_t cols, void *ctx)
{
    pair *b = ctx;
    float **q = (float **)((char *)b->want + ((char *)p - (char *)b->got));
    return memcmp(*p, *q, rows * (cols ? cols : 1) * sizeof(float))
               ? sg_fail(SG_EFORMAT, "%s differs", name)
               : 0;
}

static int fill(const char *name, float **p, int64_t rows, int64_t cols, void *ctx)
{
    for (int64_t i = 0; i < rows * (cols ? cols : 1); i++)
        (*p)[i] = (float)(i % 17) - 3.5f + name[6];
    return 0;
}

static void test_section(void)
{
    sg_model_config c;
    sg_synth_config(SG_ARCH_OPT, 16, 2, 2, 2, 8, 24, 40, &c);
    sg_block b;
    sg_block_alloc(&c, 1, &b);
    sg_block_visit(&c, 1, &b, fill, NULL);
    int fd = open_tmp("section");
    sg_frame_writer *w;
    int err = sg_frame_writer_open(fd, "section", 0, &w);
    err = err ? err : sg_section_write_block(w, &c, 1, &b);
    err = err ? err : sg_frame_write_end(w);
    sg_frame_writer_free(w);
    lseek(fd, 0, SEEK_SET);
    sg_frame_reader *r;
    sg_record rec;
    sg_section sec;
    err = err ? err : sg_frame_reader_open(fd, "section", &r);
    int got;
    while (!err && (got = sg_frame_read(r, &rec)) == 1) {
        sg_rec_block blk;
        if (rec.type == SG_REC_BLOCK && !(err = sg_rec_read_block(&rec, &blk)) && !blk.end)
            sg_section_begin(&sec, &blk);
        else if (rec.type == SG_REC_TENSOR)
            err = sg_section_add(&sec, &rec, r);
    }
    err = err ? err : sg_section_check(&sec, &c);
    /* visit the received block, compare each tensor with the original */
    pair both = {&sec.b, &b};
    err = err ? err : sg_block_visit(&c, 1, &sec.b, same_tensor, &both);
    tap_ok(!err, "a block section round-trips (%s)", err ? sg_last_error() : "same tensors");
    sg_model_config other = c;
    other.ffn_dim = 20;
    err = sg_section_check(&sec, &other);
    tap_ok(err == SG_ESHAPE && strstr(sg_last_error(), "blk.1.ffn_up.weight"),
           "a section checked against another config names the tensor: %s", sg_last_error());
    sg_section_free(&sec);
    sg_block_free(&b);
    sg_frame_reader_free(r);
    close(fd);
}

static void test_store(void)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/store", tmp);
    mkdir(dir, 0700);
    double q[4] = {1, 0, 0, 1};
    int64_t f[2] = {0, 2};
    sg_frame_part parts[2] = {{f, sizeof f}, {q, sizeof q}};
    sg_store_wait_opts o = {1.0, -1, "eig"};
    sg_record rec;
    int err = sg_store_put(dir, "blk.0.block_output.rot", SG_REC_ROTATION, "blk.0.block_output",
                           parts, 2);
    err = err ? err : sg_store_wait(dir, "blk.0.block_output.rot", SG_REC_ROTATION, &o, &rec);
    sg_rec_matrix m;
    tap_ok(!err && sg_rec_read_matrix(&rec, &m) == 0 && m.n == 2 && !memcmp(m.values, q, sizeof q),
           "a feedback file is published and read back");
    if (!err)
        free(rec.payload);
    o.timeout_s = 0.05;
    err = sg_store_wait(dir, "never.rot", SG_REC_ROTATION, &o, &rec);
    tap_ok(err == -ETIMEDOUT && strstr(sg_last_error(), "never.rot from eig"),
           "waiting gives up after the timeout: %s", sg_last_error());
    sg_store_mark_failed(dir, "cov", "stdin: it broke");
    sg_store_mark_failed(dir, "eig", "a later failure");
    err = sg_store_wait(dir, "never.rot", SG_REC_ROTATION, &o, &rec);
    tap_ok(err == SG_STORE_PEER_FAILED && strstr(sg_last_error(), "cov: stdin: it broke"),
           "a failed stage stops the wait, the first failure kept: %s", sg_last_error());
    char gone[4200];
    snprintf(gone, sizeof gone, "%s/nowhere", dir);
    err = sg_store_put(gone, "plan", SG_REC_HEADER, "header", parts, 1);
    tap_ok(err == SG_STORE_PEER_FAILED, "publishing into a removed store means capture stopped");
}

/* Chunks named across processes: one store writes them (budget 0: all
 * files), another, without a directory of its own, reads them by path. */
static void test_chunk_by_path(void)
{
    sg_act_store *writer = NULL, *reader = NULL, *memory = NULL;
    float x[3 * 5], y[3 * 5];
    for (int i = 0; i < 15; i++)
        x[i] = i * 0.5f - 3;
    char rel[64], path[4200];
    int err = sg_act_store_open(0, tmp, &writer);
    err = err ? err : sg_act_store_open(0, NULL, &reader);
    err = err ? err : sg_act_store_put(writer, "residual", 2, x, 3, 5);
    err = err ? err : sg_act_store_chunk_file(writer, "residual", 2, rel, sizeof rel);
    snprintf(path, sizeof path, "%s/%s", err ? "" : sg_act_store_spill_path(writer), rel);
    err = err ? err : sg_act_store_read_file(reader, path, 3, 5, y);
    tap_ok(!err && !memcmp(x, y, sizeof x), "a chunk file named by one store is read by another");
    err = sg_act_store_read_file(reader, path, 5, 3, y);
    tap_ok(err == SG_EFORMAT, "read with the wrong shape: %s", sg_last_error());
    err = sg_act_store_open(1 << 20, NULL, &memory);
    err = err ? err : sg_act_store_put(memory, "input", 0, x, 3, 5);
    err = err ? err : sg_act_store_chunk_file(memory, "input", 0, rel, sizeof rel);
    tap_ok(err == SG_EARG, "a chunk held in memory has no file: %s", sg_last_error());
    sg_act_store_close(writer);
    sg_act_store_close(reader);
    sg_act_store_close(memory);
}

int main(void)
{
    tmp = tap_tmpdir();
    test_crc();
    test_round_trip(0);
    test_round_trip(3);
    test_by_hand();
    test_huge_lengths();
    test_truncated();
    test_flipped(0);
    test_flipped(3);
    test_flip_message();
    test_bad_preamble_and_order();
    test_section();
    test_store();
    test_chunk_by_path();
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", tmp);
    return tap_done();
}
