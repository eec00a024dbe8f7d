/* Activation store: chunks in memory under a budget, the rest spilled as
 * byte-shuffled zstd files in a private directory (format in act_store.h). */
#include "act_store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zstd.h>
#include <zstd_errors.h>

#include "cleanup.h"
#include "fd_io.h"
#include "sg_error.h"
#include "uring_io.h"

/* zstd level 1: on gaussian float32 activations with outlier channels it
 * compresses 1.12x at ~2x the speed of level 3 (1.14x); on activations
 * that passed through bf16 it reaches 2.5x (level 3: 2.7x). Compression is
 * on the critical path of capture, the ratio difference is small. */
#define SPILL_LEVEL 1
#define SPILL_MAGIC "SGAC"
#define SPILL_VERSION 1u
#define SPILL_HEADER 48
#define SPILL_SHUFFLED 1u
#define SHUFFLE_FLOATS 65536   /* 256 KiB blocks: fit L2, many zstd blocks each */
#define PIECE_BYTES (1u << 20) /* read/write granule for spill files */

enum { CH_EMPTY = 0, CH_PENDING, CH_MEM, CH_FILE };

typedef struct {
    int state;
    int64_t rows, width;
    float *mem;         /* CH_MEM: (rows, width) */
    int64_t file_id;    /* CH_FILE: name is c<id in hex>.sgac */
    int64_t file_bytes; /* CH_FILE: header + frame */
} chunk;

/* Heap-allocated so a put in flight keeps its pointer across rename and
 * the growth of the signal table. */
typedef struct {
    char *name;
    chunk *chunks; /* indexed by chunk index; n_chunks slots */
    int64_t n_chunks;
    int pending; /* puts in flight */
} signal_rec;

/* Working state of one spill read or write; pooled, one per concurrent
 * operation, created lazily. */
typedef struct spill_ctx {
    struct spill_ctx *next;
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    unsigned char *shuf;     /* SHUFFLE_FLOATS * 4 bytes */
    unsigned char *piece[2]; /* PIECE_BYTES each, 4096-aligned */
} spill_ctx;

struct sg_act_store {
    pthread_mutex_t lock;
    int64_t budget;
    char *dir; /* private spill directory, or NULL */
    int cleanup_slot;
    signal_rec **sigs;
    int n_sigs, cap_sigs;
    int64_t next_file_id;
    spill_ctx *pool;
    sg_io *io; /* shared by every read back (sg_io takes its own lock) */
    sg_act_store_stats_t st;
};

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

static void lock(const sg_act_store *s) { pthread_mutex_lock(&((sg_act_store *)s)->lock); }
static void unlock(const sg_act_store *s) { pthread_mutex_unlock(&((sg_act_store *)s)->lock); }

static signal_rec *find_signal(const sg_act_store *s, const char *name, int *pos)
{
    for (int i = 0; i < s->n_sigs; i++)
        if (strcmp(s->sigs[i]->name, name) == 0) {
            if (pos)
                *pos = i;
            return s->sigs[i];
        }
    return NULL;
}

/* Forgets a signal that a failed put created and that holds nothing. */
static void prune_if_empty(sg_act_store *s, signal_rec *g) /* under the lock */
{
    if (g->pending)
        return;
    for (int64_t i = 0; i < g->n_chunks; i++)
        if (g->chunks[i].state != CH_EMPTY)
            return;
    int pos;
    if (find_signal(s, g->name, &pos) != g)
        return;
    s->sigs[pos] = s->sigs[--s->n_sigs];
    free(g->chunks);
    free(g->name);
    free(g);
}

static const chunk *find_chunk(const sg_act_store *s, const char *name, int64_t index)
{
    signal_rec *g = find_signal(s, name, NULL);
    if (!g || index < 0 || index >= g->n_chunks)
        return NULL;
    const chunk *c = &g->chunks[index];
    return c->state == CH_MEM || c->state == CH_FILE ? c : NULL;
}

static void spill_path(const sg_act_store *s, int64_t id, char *buf, size_t n)
{
    snprintf(buf, n, "%s/c%016llx.sgac", s->dir, (unsigned long long)id);
}

/* ---- pooled working state ---- */

static spill_ctx *pool_take(sg_act_store *s) /* under the lock */
{
    spill_ctx *c = s->pool;
    if (c) {
        s->pool = c->next;
        return c;
    }
    c = calloc(1, sizeof *c);
    if (!c)
        return NULL;
    c->shuf = malloc((size_t)SHUFFLE_FLOATS * 4);
    for (int i = 0; i < 2; i++)
        if (posix_memalign((void **)&c->piece[i], 4096, PIECE_BYTES) != 0)
            c->piece[i] = NULL;
    if (!c->shuf || !c->piece[0] || !c->piece[1]) {
        free(c->shuf);
        free(c->piece[0]);
        free(c->piece[1]);
        free(c);
        return NULL;
    }
    return c;
}

static void pool_give(sg_act_store *s, spill_ctx *c) /* under the lock */
{
    c->next = s->pool;
    s->pool = c;
}

static void ctx_free(spill_ctx *c)
{
    ZSTD_freeCCtx(c->cctx);
    ZSTD_freeDCtx(c->dctx);
    free(c->shuf);
    free(c->piece[0]);
    free(c->piece[1]);
    free(c);
}

/* ---- byte shuffle: (m floats) <-> (4 planes of m bytes) ---- */

static void shuffle(const float *in, unsigned char *out, size_t m)
{
    const unsigned char *b = (const unsigned char *)in;
    unsigned char *p0 = out, *p1 = out + m, *p2 = out + 2 * m, *p3 = out + 3 * m;
    for (size_t i = 0; i < m; i++) {
        p0[i] = b[4 * i];
        p1[i] = b[4 * i + 1];
        p2[i] = b[4 * i + 2];
        p3[i] = b[4 * i + 3];
    }
}

static void unshuffle(const unsigned char *in, float *outf, size_t m)
{
    unsigned char *b = (unsigned char *)outf;
    const unsigned char *p0 = in, *p1 = in + m, *p2 = in + 2 * m, *p3 = in + 3 * m;
    for (size_t i = 0; i < m; i++) {
        b[4 * i] = p0[i];
        b[4 * i + 1] = p1[i];
        b[4 * i + 2] = p2[i];
        b[4 * i + 3] = p3[i];
    }
}

/* ---- spill file header ---- */

typedef struct {
    char magic[4];
    uint32_t version;
    int64_t rows, width;
    uint64_t raw_bytes, frame_bytes;
    uint32_t flags, shuffle_floats;
} spill_header;
_Static_assert(sizeof(spill_header) == SPILL_HEADER, "spill header is 48 bytes");

/* ---- writing ---- */

static int write_fail(const char *path, int err, const char *what)
{
    const char *hint = err == ENOSPC || err == EDQUOT
                           ? " (the spill directory is full: raise the memory budget or "
                             "spill to a larger disk)"
                           : "";
    return sg_fail(-err, "%s: cannot %s spill file: %s%s", path, what, strerror(err), hint);
}

static int write_all(int fd, const void *buf, size_t len, const char *path)
{
    int err = sg_write_all(fd, buf, len);
    return err ? write_fail(path, -err, "write") : 0;
}

static int pwrite_all(int fd, const void *buf, size_t len, off_t off, const char *path)
{
    int err = sg_pwrite_all(fd, buf, len, (uint64_t)off);
    return err ? write_fail(path, -err, "write") : 0;
}

static int zstd_fail(const char *path, const char *what, size_t ret)
{
    return sg_fail(SG_EFORMAT, "%s: zstd %s failed: %s", path, what, ZSTD_getErrorName(ret));
}

/* Compresses (rows, width) floats to a new file at path; on any failure the
 * partial file is removed. *file_bytes: the file's size. */
static int spill_write(spill_ctx *cx, const char *path, const float *data, int64_t rows,
                       int64_t width, int64_t *file_bytes)
{
    size_t n = (size_t)rows * (size_t)width;
    if (!cx->cctx && !(cx->cctx = ZSTD_createCCtx()))
        return sg_fail(-ENOMEM, "%s: cannot allocate a zstd compressor", path);
    ZSTD_CCtx *z = cx->cctx;
    size_t r = ZSTD_CCtx_reset(z, ZSTD_reset_session_and_parameters);
    if (!ZSTD_isError(r))
        r = ZSTD_CCtx_setParameter(z, ZSTD_c_compressionLevel, SPILL_LEVEL);
    if (!ZSTD_isError(r))
        r = ZSTD_CCtx_setParameter(z, ZSTD_c_checksumFlag, 1);
    if (!ZSTD_isError(r))
        r = ZSTD_CCtx_setPledgedSrcSize(z, (unsigned long long)n * 4);
    if (ZSTD_isError(r))
        return zstd_fail(path, "setup", r);

    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        return write_fail(path, errno, "create");
    spill_header h;
    memset(&h, 0, sizeof h);
    int rc = write_all(fd, &h, sizeof h, path); /* filled in at the end */
    uint64_t frame = 0;
    for (size_t off = 0; rc == 0 && off < n; off += SHUFFLE_FLOATS) {
        size_t m = n - off < SHUFFLE_FLOATS ? n - off : SHUFFLE_FLOATS;
        shuffle(data + off, cx->shuf, m);
        ZSTD_inBuffer in = {cx->shuf, m * 4, 0};
        ZSTD_EndDirective mode = off + m == n ? ZSTD_e_end : ZSTD_e_continue;
        for (;;) {
            ZSTD_outBuffer out = {cx->piece[0], PIECE_BYTES, 0};
            r = ZSTD_compressStream2(z, &out, &in, mode);
            if (ZSTD_isError(r)) {
                rc = zstd_fail(path, "compression", r);
                break;
            }
            if ((rc = write_all(fd, out.dst, out.pos, path)) != 0)
                break;
            frame += out.pos;
            if (mode == ZSTD_e_end ? r == 0 : in.pos == in.size)
                break;
        }
    }
    if (rc == 0) {
        memcpy(h.magic, SPILL_MAGIC, 4);
        h.version = SPILL_VERSION;
        h.rows = rows;
        h.width = width;
        h.raw_bytes = (uint64_t)n * 4;
        h.frame_bytes = frame;
        h.flags = SPILL_SHUFFLED;
        h.shuffle_floats = SHUFFLE_FLOATS;
        rc = pwrite_all(fd, &h, sizeof h, 0, path);
    }
    /* No fsync: the file is scratch for this run, never read after a crash. */
    if (close(fd) != 0 && rc == 0)
        rc = write_fail(path, errno, "close");
    if (rc != 0) {
        unlink(path);
        return rc;
    }
    *file_bytes = (int64_t)(sizeof h + frame);
    return 0;
}

/* ---- reading ---- */

/* Re-records an sg_io failure with the spill file's name in front. */
static int io_fail(const char *path, int rc)
{
    char prev[512];
    snprintf(prev, sizeof prev, "%s", sg_last_error());
    if (strstr(prev, path))
        return rc; /* sg_io already named it */
    return sg_fail(rc, "%s: reading spill file: %s", path, prev[0] ? prev : sg_strerror(rc));
}

/* Reads and checks the file at fd (path) holding a (rows, width) chunk and
 * decompresses it into data, reading 1 MiB pieces ahead of zstd. */
static int spill_read(spill_ctx *cx, sg_io *io, int fd, const char *path, int64_t rows,
                      int64_t width, float *data)
{
    struct stat stt;
    if (fstat(fd, &stt) != 0)
        return sg_fail(-errno, "%s: cannot stat spill file: %s", path, strerror(errno));
    if (stt.st_size < SPILL_HEADER)
        return sg_fail(SG_EFORMAT, "%s: truncated spill file (%lld bytes, shorter than its "
                                   "%d-byte header)",
                       path, (long long)stt.st_size, SPILL_HEADER);
    int rc;
    spill_header h;
    if ((rc = sg_io_read(io, fd, &h, sizeof h, 0, path)) != 0)
        return io_fail(path, rc);

    size_t n = (size_t)rows * (size_t)width;
    if (memcmp(h.magic, SPILL_MAGIC, 4) != 0)
        return sg_fail(SG_EFORMAT, "%s: not an activation spill file (bad magic)", path);
    if (h.version != SPILL_VERSION)
        return sg_fail(SG_EFORMAT, "%s: spill file version %u, expected %u", path, h.version,
                       SPILL_VERSION);
    if (h.rows != rows || h.width != width || h.raw_bytes != (uint64_t)n * 4)
        return sg_fail(SG_EFORMAT,
                       "%s: spill file header says (%lld, %lld) floats, %llu bytes, but the "
                       "chunk stored was (%lld, %lld)",
                       path, (long long)h.rows, (long long)h.width,
                       (unsigned long long)h.raw_bytes, (long long)rows, (long long)width);
    if ((h.flags & ~SPILL_SHUFFLED) || ((h.flags & SPILL_SHUFFLED) && h.shuffle_floats == 0))
        return sg_fail(SG_EFORMAT, "%s: spill file has unknown flags %#x", path, h.flags);
    uint64_t have = (uint64_t)stt.st_size - SPILL_HEADER;
    if (have < h.frame_bytes)
        return sg_fail(SG_EFORMAT, "%s: truncated spill file (%llu of %llu bytes)", path,
                       (unsigned long long)stt.st_size,
                       (unsigned long long)(h.frame_bytes + SPILL_HEADER));
    if (have > h.frame_bytes)
        return sg_fail(SG_EFORMAT, "%s: spill file has %llu bytes after its zstd frame", path,
                       (unsigned long long)(have - h.frame_bytes));

    if (!cx->dctx && !(cx->dctx = ZSTD_createDCtx()))
        return sg_fail(-ENOMEM, "%s: cannot allocate a zstd decompressor", path);
    ZSTD_DCtx *z = cx->dctx;
    ZSTD_DCtx_reset(z, ZSTD_reset_session_and_parameters);

    /* Output goes block by block through the shuffle buffer (or straight
     * into data when not shuffled); once all n floats arrived, a 1-byte
     * overflow buffer catches a frame longer than the header says. */
    int shuffled = (h.flags & SPILL_SHUFFLED) != 0;
    size_t blk = shuffled ? h.shuffle_floats : n;
    size_t out_off = 0, cur_m = 0; /* floats delivered; floats in current block */
    unsigned char overflow_byte;
    int overflow = 0;
    ZSTD_outBuffer out;
#define NEXT_BLOCK()                                                                        \
    do {                                                                                    \
        if (out_off == n) {                                                                 \
            out = (ZSTD_outBuffer){&overflow_byte, 1, 0};                                   \
            overflow = 1;                                                                   \
        } else {                                                                            \
            cur_m = n - out_off < blk ? n - out_off : blk;                                  \
            out = shuffled ? (ZSTD_outBuffer){cx->shuf, cur_m * 4, 0}                       \
                           : (ZSTD_outBuffer){data + out_off, cur_m * 4, 0};                \
        }                                                                                   \
    } while (0)
#define DELIVER()                                                                           \
    do {                                                                                    \
        if (shuffled)                                                                       \
            unshuffle(cx->shuf, data + out_off, cur_m);                                     \
        out_off += cur_m;                                                                   \
    } while (0)
    if (shuffled && blk > SHUFFLE_FLOATS)
        return sg_fail(SG_EFORMAT, "%s: spill file shuffle block of %u floats is too large",
                       path, h.shuffle_floats);
    NEXT_BLOCK();

    uint64_t total = h.frame_bytes, submitted = 0, consumed = 0;
    size_t len[2] = {0, 0};
    uint64_t ticket[2] = {0, 0};
    int inflight[2] = {0, 0}, cur = 0;
    size_t ret = 1;
    rc = 0;
    if (total > 0) {
        len[0] = total < PIECE_BYTES ? total : PIECE_BYTES;
        sg_io_req q = {.fd = fd, .buf = cx->piece[0], .len = len[0], .off = SPILL_HEADER,
                       .path = path};
        if ((rc = sg_io_submit(io, &q, 1, &ticket[0])) != 0)
            return io_fail(path, rc);
        inflight[0] = 1;
        submitted = len[0];
    }
    while (consumed < total) {
        rc = sg_io_wait(io, ticket[cur]);
        inflight[cur] = 0;
        if (rc != 0) {
            rc = io_fail(path, rc);
            break;
        }
        if (submitted < total) { /* read the next piece while this one decompresses */
            int nx = cur ^ 1;
            len[nx] = total - submitted < PIECE_BYTES ? total - submitted : PIECE_BYTES;
            sg_io_req q = {.fd = fd, .buf = cx->piece[nx], .len = len[nx],
                           .off = SPILL_HEADER + submitted, .path = path};
            if ((rc = sg_io_submit(io, &q, 1, &ticket[nx])) != 0) {
                rc = io_fail(path, rc);
                break;
            }
            inflight[nx] = 1;
            submitted += len[nx];
        }
        ZSTD_inBuffer in = {cx->piece[cur], len[cur], 0};
        consumed += len[cur];
        for (;;) {
            if (!overflow && out.pos == out.size) {
                DELIVER();
                NEXT_BLOCK();
            }
            ret = ZSTD_decompressStream(z, &out, &in);
            if (ZSTD_isError(ret)) {
                int code = ZSTD_getErrorCode(ret) == ZSTD_error_checksum_wrong ? SG_ECHECKSUM
                                                                                : SG_EFORMAT;
                rc = sg_fail(code, "%s: corrupted spill file (zstd: %s)", path,
                             ZSTD_getErrorName(ret));
                break;
            }
            if (overflow && out.pos > 0) {
                rc = sg_fail(SG_EFORMAT, "%s: corrupted spill file (more data than its header "
                                         "says)", path);
                break;
            }
            if (ret == 0 || (in.pos == in.size && out.pos < out.size))
                break; /* frame complete, or this piece used up */
        }
        if (rc != 0)
            break;
        if (ret == 0) {
            if (in.pos < in.size || consumed < total)
                rc = sg_fail(SG_EFORMAT, "%s: corrupted spill file (data after the zstd "
                                         "frame)", path);
            break;
        }
        cur ^= 1;
    }
    for (int i = 0; i < 2; i++) /* never leave a read into our buffers in flight */
        if (inflight[i])
            sg_io_wait(io, ticket[i]);
    if (rc != 0)
        return rc;
    if (ret != 0)
        return sg_fail(SG_EFORMAT, "%s: truncated spill file (zstd frame incomplete)", path);
    if (!overflow && out.pos == out.size)
        DELIVER();
    if (out_off != n)
        return sg_fail(SG_EFORMAT, "%s: corrupted spill file (%zu of %zu floats)", path,
                       out_off, n);
#undef NEXT_BLOCK
#undef DELIVER
    return 0;
}

/* ---- the store ---- */

static int mkdir_p(const char *dir)
{
    char p[PATH_MAX];
    size_t len = strlen(dir);
    if (len >= sizeof p)
        return -ENAMETOOLONG;
    memcpy(p, dir, len + 1);
    for (size_t i = 1; i <= len; i++) {
        if (p[i] != '/' && p[i] != '\0')
            continue;
        char c = p[i];
        p[i] = '\0';
        if (mkdir(p, 0777) != 0 && errno != EEXIST)
            return -errno;
        p[i] = c;
    }
    struct stat st;
    if (stat(dir, &st) != 0)
        return -errno;
    return S_ISDIR(st.st_mode) ? 0 : -ENOTDIR;
}

int sg_act_store_open(int64_t budget_bytes, const char *spill_dir, sg_act_store **out)
{
    *out = NULL;
    if (budget_bytes < 0)
        return sg_fail(SG_EARG, "activation store: negative memory budget %lld",
                       (long long)budget_bytes);
    if (spill_dir && !*spill_dir)
        return sg_fail(SG_EARG, "activation store: empty spill directory name");
    sg_act_store *s = calloc(1, sizeof *s);
    if (!s)
        return sg_fail(-ENOMEM, "activation store: out of memory");
    pthread_mutex_init(&s->lock, NULL);
    s->budget = budget_bytes;
    s->st.budget_bytes = budget_bytes;
    s->cleanup_slot = -1;
    if (spill_dir) {
        int rc = mkdir_p(spill_dir);
        if (rc != 0) {
            sg_act_store_close(s);
            return sg_fail(rc, "%s: cannot create spill directory: %s", spill_dir,
                           strerror(-rc));
        }
        size_t len = strlen(spill_dir);
        if (len + 64 >= PATH_MAX || !(s->dir = malloc(len + 32))) {
            sg_act_store_close(s);
            return sg_fail(len + 64 >= PATH_MAX ? -ENAMETOOLONG : -ENOMEM,
                           "%s: spill directory name too long or out of memory", spill_dir);
        }
        snprintf(s->dir, len + 32, "%s%sslicegpt-XXXXXX", spill_dir,
                 spill_dir[len - 1] == '/' ? "" : "/");
        if (!mkdtemp(s->dir)) {
            rc = -errno;
            free(s->dir);
            s->dir = NULL;
            sg_act_store_close(s);
            return sg_fail(rc, "%s: cannot create a private spill directory in it: %s",
                           spill_dir, strerror(-rc));
        }
        if ((rc = sg_cleanup_register_dir(s->dir, &s->cleanup_slot)) != 0) {
            sg_act_store_close(s);
            return sg_fail(rc, "%s: cannot register spill directory for cleanup (more than %d "
                               "activation stores open?)",
                           spill_dir, SG_CLEANUP_MAX_DIRS);
        }
    }
    *out = s;
    return 0;
}

int sg_act_store_put(sg_act_store *s, const char *name, int64_t index, const float *data,
                     int64_t rows, int64_t width)
{
    if (!s || !name || !*name || !data)
        return sg_fail(SG_EARG, "activation store: put with a missing argument");
    if (index < 0 || rows <= 0 || width <= 0 || rows > INT64_MAX / 4 / width ||
        (uint64_t)rows * width > SIZE_MAX / 4)
        return sg_fail(SG_EARG, "activation store: put %s[%lld]: bad index or shape (%lld, %lld)",
                       name, (long long)index, (long long)rows, (long long)width);
    int64_t bytes = rows * width * 4;

    lock(s);
    signal_rec *g = find_signal(s, name, NULL);
    if (!g) {
        if (s->n_sigs == s->cap_sigs) {
            int cap = s->cap_sigs ? 2 * s->cap_sigs : 8;
            signal_rec **p = realloc(s->sigs, cap * sizeof *p);
            if (!p)
                goto oom;
            s->sigs = p;
            s->cap_sigs = cap;
        }
        if (!(g = calloc(1, sizeof *g)) || !(g->name = strdup(name))) {
            free(g);
            goto oom;
        }
        s->sigs[s->n_sigs++] = g;
    }
    if (index >= g->n_chunks) {
        int64_t cap = g->n_chunks ? g->n_chunks : 8;
        while (cap <= index)
            cap *= 2;
        if ((uint64_t)cap > SIZE_MAX / sizeof(chunk))
            goto oom;
        chunk *p = realloc(g->chunks, (size_t)cap * sizeof *p);
        if (!p)
            goto oom;
        memset(p + g->n_chunks, 0, (size_t)(cap - g->n_chunks) * sizeof *p);
        g->chunks = p;
        g->n_chunks = cap;
    }
    if (g->chunks[index].state != CH_EMPTY) {
        unlock(s);
        return sg_fail(SG_EARG, "activation store: chunk %s[%lld] is already stored", name,
                       (long long)index);
    }
    int in_memory = s->st.resident_bytes + bytes <= s->budget;
    spill_ctx *cx = NULL;
    int64_t id = -1;
    if (in_memory) { /* reserve now, so concurrent puts never exceed the budget */
        s->st.resident_bytes += bytes;
        if (s->st.resident_bytes > s->st.peak_resident_bytes)
            s->st.peak_resident_bytes = s->st.resident_bytes;
    } else if (!s->dir) {
        int64_t resident = s->st.resident_bytes;
        prune_if_empty(s, g);
        unlock(s);
        return sg_fail(-ENOMEM,
                       "activation store: chunk %s[%lld] (%lld bytes) does not fit the memory "
                       "budget (%lld of %lld bytes in use) and no spill directory is set",
                       name, (long long)index, (long long)bytes, (long long)resident,
                       (long long)s->budget);
    } else {
        if (!(cx = pool_take(s))) {
            prune_if_empty(s, g);
            goto oom;
        }
        id = s->next_file_id++;
    }
    g->chunks[index].state = CH_PENDING;
    g->pending++;
    unlock(s);

    int rc = 0;
    float *mem = NULL;
    int64_t file_bytes = 0;
    double t0 = now_s();
    char path[PATH_MAX];
    if (in_memory) {
        if ((mem = malloc((size_t)bytes)) != NULL)
            memcpy(mem, data, (size_t)bytes);
        else
            rc = sg_fail(-ENOMEM, "activation store: out of memory for chunk %s[%lld] "
                                  "(%lld bytes)",
                         name, (long long)index, (long long)bytes);
    } else {
        spill_path(s, id, path, sizeof path);
        rc = spill_write(cx, path, data, rows, width, &file_bytes);
    }
    double dt = now_s() - t0;

    lock(s);
    chunk *c = &g->chunks[index];
    g->pending--;
    if (cx)
        pool_give(s, cx);
    if (rc != 0) {
        c->state = CH_EMPTY;
        if (in_memory)
            s->st.resident_bytes -= bytes;
        prune_if_empty(s, g);
    } else {
        c->rows = rows;
        c->width = width;
        if (in_memory) {
            c->state = CH_MEM;
            c->mem = mem;
            s->st.chunks_resident++;
        } else {
            c->state = CH_FILE;
            c->file_id = id;
            c->file_bytes = file_bytes;
            s->st.chunks_spilled++;
            s->st.spilled_raw_bytes += bytes;
            s->st.spilled_compressed_bytes += file_bytes;
            s->st.spill_files++;
            s->st.spill_file_bytes += file_bytes;
            s->st.spill_write_seconds += dt;
        }
    }
    unlock(s);
    return rc;

oom:
    unlock(s);
    return sg_fail(-ENOMEM, "activation store: out of memory storing chunk %s[%lld]", name,
                   (long long)index);
}

int sg_act_store_shape(const sg_act_store *s, const char *name, int64_t index, int64_t *rows,
                       int64_t *width)
{
    lock(s);
    const chunk *c = find_chunk(s, name, index);
    if (c) {
        *rows = c->rows;
        *width = c->width;
    }
    unlock(s);
    if (!c)
        return sg_fail(SG_EMISSING, "activation store: no chunk %s[%lld]", name,
                       (long long)index);
    return 0;
}

/* The read-back both get and read_file share. Called with the lock held
 * and an open fd; releases both. */
static int read_back_locked(sg_act_store *s, int fd, const char *path, int64_t rows,
                            int64_t width, float *data)
{
    int rc = 0;
    if (!s->io && (rc = sg_io_init(4, &s->io)) == 0)
        snprintf(s->st.io_backend, sizeof s->st.io_backend, "%s", sg_io_backend(s->io));
    spill_ctx *cx = rc == 0 ? pool_take(s) : NULL;
    if (rc == 0 && !cx)
        rc = sg_fail(-ENOMEM, "activation store: out of memory reading %s", path);
    sg_io *io = s->io;
    unlock(s);
    if (rc != 0) {
        close(fd);
        return rc;
    }
    double t0 = now_s();
    rc = spill_read(cx, io, fd, path, rows, width, data);
    double dt = now_s() - t0;
    close(fd);
    lock(s);
    pool_give(s, cx);
    if (rc == 0) {
        s->st.read_back_raw_bytes += rows * width * 4;
        s->st.spill_read_seconds += dt;
    }
    unlock(s);
    return rc;
}

int sg_act_store_get(sg_act_store *s, const char *name, int64_t index, float *data)
{
    lock(s);
    const chunk *c = find_chunk(s, name, index);
    if (!c) {
        unlock(s);
        return sg_fail(SG_EMISSING, "activation store: no chunk %s[%lld]", name,
                       (long long)index);
    }
    int64_t rows = c->rows, width = c->width;
    if (c->state == CH_MEM) {
        memcpy(data, c->mem, (size_t)(rows * width) * 4);
        unlock(s);
        return 0;
    }
    char path[PATH_MAX];
    spill_path(s, c->file_id, path, sizeof path);
    /* Opened under the lock: a drop racing with us cannot pull the file away. */
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc = fd < 0 ? -errno : 0;
    if (rc != 0)
        rc = sg_fail(rc, "%s: cannot open spill file of chunk %s[%lld]: %s", path, name,
                     (long long)index, strerror(-rc));
    if (rc != 0) {
        unlock(s);
        if (fd >= 0)
            close(fd);
        return rc;
    }
    return read_back_locked(s, fd, path, rows, width, data);
}

int64_t sg_act_store_chunks(const sg_act_store *s, const char *name)
{
    int64_t n = 0;
    lock(s);
    signal_rec *g = find_signal(s, name, NULL);
    for (int64_t i = 0; g && i < g->n_chunks; i++)
        if (g->chunks[i].state == CH_MEM || g->chunks[i].state == CH_FILE)
            n = i + 1;
    unlock(s);
    return n;
}

int sg_act_store_drop(sg_act_store *s, const char *name)
{
    lock(s);
    int pos;
    signal_rec *g = find_signal(s, name, &pos);
    if (!g) {
        unlock(s);
        return sg_fail(SG_EMISSING, "activation store: drop of unknown signal %s", name);
    }
    if (g->pending) {
        unlock(s);
        return sg_fail(SG_EARG, "activation store: drop of %s while a put to it is in progress",
                       name);
    }
    int rc = 0;
    for (int64_t i = 0; i < g->n_chunks; i++) {
        chunk *c = &g->chunks[i];
        if (c->state == CH_MEM) {
            free(c->mem);
            s->st.resident_bytes -= c->rows * c->width * 4;
            s->st.chunks_resident--;
        } else if (c->state == CH_FILE) {
            char path[PATH_MAX];
            spill_path(s, c->file_id, path, sizeof path);
            if (unlink(path) != 0 && rc == 0)
                rc = sg_fail(-errno, "%s: cannot remove spill file: %s", path, strerror(errno));
            s->st.spill_files--;
            s->st.spill_file_bytes -= c->file_bytes;
        }
    }
    s->sigs[pos] = s->sigs[--s->n_sigs];
    unlock(s);
    free(g->chunks);
    free(g->name);
    free(g);
    return rc;
}

int sg_act_store_rename(sg_act_store *s, const char *from, const char *to)
{
    if (!to || !*to)
        return sg_fail(SG_EARG, "activation store: rename of %s to an empty name", from);
    lock(s);
    signal_rec *g = find_signal(s, from, NULL);
    int rc = 0;
    char *copy = NULL;
    if (!g)
        rc = sg_fail(SG_EMISSING, "activation store: rename of unknown signal %s", from);
    else if (strcmp(from, to) == 0)
        rc = 0;
    else if (find_signal(s, to, NULL))
        rc = sg_fail(SG_EARG, "activation store: rename %s to %s: %s exists (drop it first)",
                     from, to, to);
    else if (!(copy = strdup(to)))
        rc = sg_fail(-ENOMEM, "activation store: out of memory");
    else {
        free(g->name);
        g->name = copy;
    }
    unlock(s);
    return rc;
}

void sg_act_store_stats(const sg_act_store *s, sg_act_store_stats_t *st)
{
    lock(s);
    *st = s->st;
    unlock(s);
}

const char *sg_act_store_spill_path(const sg_act_store *s) { return s->dir; }

void sg_act_store_close(sg_act_store *s)
{
    if (!s)
        return;
    for (int i = 0; i < s->n_sigs; i++) {
        signal_rec *g = s->sigs[i];
        for (int64_t j = 0; j < g->n_chunks; j++)
            if (g->chunks[j].state == CH_MEM)
                free(g->chunks[j].mem);
        free(g->chunks);
        free(g->name);
        free(g);
    }
    free(s->sigs);
    if (s->dir) {
        /* Remove before unregistering: a signal in between finds nothing. */
        sg_cleanup_remove_dir(s->dir);
        sg_cleanup_unregister(s->cleanup_slot);
        free(s->dir);
    }
    sg_io_free(s->io);
    while (s->pool) {
        spill_ctx *c = s->pool;
        s->pool = c->next;
        ctx_free(c);
    }
    pthread_mutex_destroy(&s->lock);
    free(s);
}

int sg_act_store_chunk_file(const sg_act_store *s, const char *name, int64_t index, char *buf,
                            size_t n)
{
    lock(s);
    const chunk *c = find_chunk(s, name, index);
    int state = c ? c->state : CH_EMPTY;
    int64_t id = c ? c->file_id : -1;
    unlock(s);
    if (state == CH_EMPTY)
        return sg_fail(SG_EMISSING, "activation store: no chunk %s[%lld]", name,
                       (long long)index);
    if (state != CH_FILE)
        return sg_fail(SG_EARG, "activation store: chunk %s[%lld] is in memory, not in a file",
                       name, (long long)index);
    snprintf(buf, n, "c%016llx.sgac", (unsigned long long)id);
    return 0;
}

int sg_act_store_read_file(sg_act_store *s, const char *path, int64_t rows, int64_t width,
                           float *data)
{
    if (rows <= 0 || width <= 0 || rows > INT64_MAX / 4 / width)
        return sg_fail(SG_EARG, "%s: bad chunk shape (%lld, %lld)", path, (long long)rows,
                       (long long)width);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return sg_fail(-errno, "%s: cannot open spill file: %s", path, strerror(errno));
    lock(s);
    return read_back_locked(s, fd, path, rows, width, data);
}

int sg_act_store_write_file(sg_act_store *s, const char *path, const float *data, int64_t rows,
                            int64_t width)
{
    if (rows <= 0 || width <= 0 || rows > INT64_MAX / 4 / width)
        return sg_fail(SG_EARG, "%s: bad chunk shape (%lld, %lld)", path, (long long)rows,
                       (long long)width);
    lock(s);
    spill_ctx *cx = pool_take(s);
    unlock(s);
    if (!cx)
        return sg_fail(-ENOMEM, "%s: out of memory", path);
    unlink(path); /* spill_write creates it exclusively */
    int64_t bytes;
    int rc = spill_write(cx, path, data, rows, width, &bytes);
    if (!rc) {
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) != 0)
            rc = write_fail(path, errno, "sync");
        if (fd >= 0)
            close(fd);
    }
    lock(s);
    pool_give(s, cx);
    unlock(s);
    return rc;
}

int sg_act_store_install_signal_cleanup(void) { return sg_cleanup_install_signals(); }
