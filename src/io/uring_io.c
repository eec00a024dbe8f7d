/* Asynchronous reads over io_uring, or pread worker threads where the
 * kernel refuses io_uring.
 *
 * Requests are cut into pieces; pieces wait in one FIFO; worker threads
 * take them: the io_uring worker keeps up to depth of them in the ring and
 * reaps completions, each pread worker reads one at a time. A piece that
 * comes back short, -EAGAIN or -EINTR goes back to the front of the FIFO
 * for the remainder; one that hits the end of the file before its min
 * length fails its batch, and the batch's pieces not yet started are then
 * dropped. A batch is done when every piece finished or was dropped; the
 * waiter is woken then and turns the first failure into sg_fail() in its
 * own thread (the message was formatted by the worker). */
#include "uring_io.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sg_error.h"

#define IO_PIECE_MAX ((size_t)4 << 20)
#define IO_PIECE_MIN ((size_t)256 << 10)
#define IO_PIECE_ROUND ((size_t)64 << 10) /* keeps aligned requests aligned */
#define IO_BOUNCE_MAX ((size_t)16 << 20)
#define IO_MAX_PREAD_THREADS 8
#define IO_MAX_DEPTH 4096

typedef struct io_batch io_batch;

typedef struct io_piece {
    struct io_piece *next; /* in the pending FIFO */
    io_batch *b;
    int fd;
    unsigned char *buf;
    uint64_t off;
    size_t len, need, done; /* need: bytes that must arrive (<= len) */
    const char *path;
    int in_ring;            /* submitted to the ring, not yet reaped */
} io_piece;

struct io_batch {
    io_batch *next; /* live batches */
    uint64_t ticket;
    int remaining;  /* pieces not yet finished or dropped */
    int err;
    char msg[512];
    int n_pieces;
    io_piece pieces[];
};

struct sg_io {
    int uring;     /* 1: the io_uring worker; 0: pread workers */
    int ring_live; /* ring initialised (freed at the end) */
    struct io_uring ring;
    unsigned depth;
    char reason[256]; /* empty unless fallen back */

    pthread_mutex_t mu;
    pthread_cond_t work; /* pieces were queued, or stop */
    pthread_cond_t done; /* a batch completed */
    io_piece *head, *tail;
    unsigned inflight; /* pieces in the ring (io_uring worker only) */
    io_batch *batches;
    uint64_t next_ticket;
    int stop;
    int n_threads;
    pthread_t threads[IO_MAX_PREAD_THREADS];
    unsigned direct_fallbacks;
};

/* ---------------------------------------------------------------- queue */

static void push_front(sg_io *io, io_piece *p)
{
    p->next = io->head;
    io->head = p;
    if (!io->tail)
        io->tail = p;
}

static io_piece *pop(sg_io *io)
{
    io_piece *p = io->head;
    if (p) {
        io->head = p->next;
        if (!io->head)
            io->tail = NULL;
        p->next = NULL;
    }
    return p;
}

/* Under the lock. */
static void finish_piece(sg_io *io, io_piece *p)
{
    if (--p->b->remaining == 0)
        pthread_cond_broadcast(&io->done);
}

static const char *piece_path(const io_piece *p)
{
    return p->path ? p->path : "(unnamed file)";
}

/* Under the lock: records the batch's first failure. rc is a negative code. */
static void fail_piece(sg_io *io, io_piece *p, int rc)
{
    io_batch *b = p->b;
    if (!b->err) {
        b->err = rc;
        if (rc == SG_EFORMAT)
            snprintf(b->msg, sizeof b->msg,
                     "%s: truncated: end of file at byte %llu, but %llu bytes were to be "
                     "read from offset %llu",
                     piece_path(p), (unsigned long long)(p->off + p->done),
                     (unsigned long long)p->need, (unsigned long long)p->off);
        else
            snprintf(b->msg, sizeof b->msg, "%s: read of %zu bytes at offset %llu failed: %s",
                     piece_path(p), p->len - p->done, (unsigned long long)(p->off + p->done),
                     strerror(-rc));
    }
    finish_piece(io, p);
}

/* Under the lock: EINVAL on an O_DIRECT fd means the filesystem will not do
 * this direct read; switch the fd to buffered reads. 1 if switched (or
 * already switched by another piece), so the piece should be retried. */
static int drop_direct(sg_io *io, int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0)
        return 0;
    if (!(fl & O_DIRECT))
        return 0;
    if (fcntl(fd, F_SETFL, fl & ~O_DIRECT) != 0)
        return 0;
    io->direct_fallbacks++;
    return 1;
}

/* Under the lock: what one completion (res = bytes or -errno) means for p.
 * was_direct: p's fd had O_DIRECT when the read was issued. Returns 1 if p
 * goes back to the queue for its remainder. A short read that still
 * covers p->need ends p: the rest of a rounded-up O_DIRECT read lies past
 * the end of the file, and asking for it at an unaligned offset would
 * only earn EINVAL. */
static int complete_piece(sg_io *io, io_piece *p, long res, int was_direct)
{
    if (res == -EAGAIN || res == -EINTR)
        return 1;
    if (res == -EINVAL && was_direct) {
        drop_direct(io, p->fd); /* or another piece already did */
        return 1;
    }
    if (res < 0) {
        fail_piece(io, p, (int)res);
        return 0;
    }
    p->done += (size_t)res;
    if (p->done >= p->need)
        finish_piece(io, p);
    else if (res == 0)
        fail_piece(io, p, SG_EFORMAT);
    else
        return 1;
    return 0;
}

/* --------------------------------------------------------------- workers */

static int fd_is_direct(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    return fl >= 0 && (fl & O_DIRECT);
}

/* One pread of the rest of p, outside the lock. */
static long pread_once(io_piece *p)
{
    size_t n = p->len - p->done;
    ssize_t got = pread(p->fd, p->buf + p->done, n, (off_t)(p->off + p->done));
    return got < 0 ? -(long)errno : (long)got;
}

static void *pread_worker(void *arg)
{
    sg_io *io = arg;
    pthread_mutex_lock(&io->mu);
    for (;;) {
        while (!io->head && !io->stop)
            pthread_cond_wait(&io->work, &io->mu);
        io_piece *p = pop(io);
        if (!p)
            break; /* stop, and nothing left */
        if (p->b->err) {
            finish_piece(io, p); /* its batch failed: drop it */
            continue;
        }
        int requeue = 1;
        while (requeue) {
            pthread_mutex_unlock(&io->mu);
            int direct = fd_is_direct(p->fd);
            long res = pread_once(p);
            pthread_mutex_lock(&io->mu);
            requeue = complete_piece(io, p, res, direct && res == -EINVAL);
        }
    }
    pthread_mutex_unlock(&io->mu);
    return NULL;
}

/* The io_uring worker: fills the ring from the FIFO, reaps completions.
 * sqe user_data is the piece; the direct flag of its fd is remembered in
 * the low bit (pieces are 8-aligned). */
static void *uring_worker(void *arg)
{
    sg_io *io = arg;
    pthread_mutex_lock(&io->mu);
    for (;;) {
        while (io->head && io->inflight < io->depth) {
            io_piece *p = pop(io);
            if (p->b->err) {
                finish_piece(io, p);
                continue;
            }
            struct io_uring_sqe *sqe = io_uring_get_sqe(&io->ring);
            if (!sqe) {
                push_front(io, p);
                break;
            }
            size_t n = p->len - p->done;
            int direct = fd_is_direct(p->fd);
            io_uring_prep_read(sqe, p->fd, p->buf + p->done, (unsigned)n, p->off + p->done);
            io_uring_sqe_set_data(sqe, (void *)((uintptr_t)p | (uintptr_t)direct));
            /* A buffered read of uncached data is first tried without
             * blocking, then handed to a kernel worker anyway; going there
             * at once measured 20-40% faster on cold reads (bench_loader).
             * O_DIRECT reads are truly asynchronous and stay inline. */
            if (!direct)
                io_uring_sqe_set_flags(sqe, IOSQE_ASYNC);
            p->in_ring = 1;
            io->inflight++;
        }
        if (io->inflight == 0) {
            if (io->stop && !io->head)
                break;
            if (!io->head)
                pthread_cond_wait(&io->work, &io->mu);
            continue;
        }
        pthread_mutex_unlock(&io->mu);
        /* One syscall submits what was queued (and anything an earlier
         * submit left in the ring) and waits for at least one completion. */
        int rc;
        do
            rc = io_uring_submit_and_wait(&io->ring, 1);
        while (rc == -EINTR || rc == -EAGAIN || rc == -EBUSY);
        pthread_mutex_lock(&io->mu);
        if (rc < 0) {
            /* The ring itself failed (should not happen after the probe at
             * init): from now on this thread reads with pread, starting
             * with the pieces the ring still holds. Should the kernel
             * complete some of them after all, it writes the same bytes. */
            snprintf(io->reason, sizeof io->reason, "io_uring failed: %s", strerror(-rc));
            io->uring = 0;
            for (io_batch *b = io->batches; b; b = b->next)
                for (int i = 0; i < b->n_pieces; i++)
                    if (b->pieces[i].in_ring) {
                        b->pieces[i].in_ring = 0;
                        push_front(io, &b->pieces[i]);
                    }
            io->inflight = 0;
            break;
        }
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&io->ring, head, cqe)
        {
            uintptr_t data = (uintptr_t)io_uring_cqe_get_data(cqe);
            io_piece *p = (io_piece *)(data & ~(uintptr_t)1);
            io->inflight--;
            p->in_ring = 0;
            if (complete_piece(io, p, cqe->res, (data & 1) && cqe->res == -EINVAL))
                push_front(io, p);
            seen++;
        }
        io_uring_cq_advance(&io->ring, seen);
    }
    pthread_mutex_unlock(&io->mu);
    if (!io->uring)
        pread_worker(io); /* the fallback after a ring failure */
    return NULL;
}

/* ------------------------------------------------------------------ init */

/* A NOP round trip and an IORING_OP_READ probe: a ring that seccomp or an
 * old kernel lets us create but not use is refused here. */
static int uring_probe(struct io_uring *ring, char *why, size_t whysz)
{
    struct io_uring_probe *probe = io_uring_get_probe_ring(ring);
    int ok = probe && io_uring_opcode_supported(probe, IORING_OP_READ);
    if (probe)
        io_uring_free_probe(probe);
    if (!ok) {
        snprintf(why, whysz, "io_uring refused: the kernel has no IORING_OP_READ");
        return -1;
    }
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    io_uring_prep_nop(sqe);
    int rc = io_uring_submit(ring);
    struct io_uring_cqe *cqe = NULL;
    if (rc >= 0)
        rc = io_uring_wait_cqe(ring, &cqe);
    if (rc >= 0) {
        rc = cqe->res;
        io_uring_cqe_seen(ring, cqe);
    }
    if (rc < 0) {
        snprintf(why, whysz, "io_uring refused: %s", strerror(-rc));
        return -1;
    }
    return 0;
}

int sg_io_init(unsigned queue_depth, sg_io **out)
{
    *out = NULL;
    const char *env = getenv("SG_IO");
    if (env && *env && strcmp(env, "pread") && strcmp(env, "io_uring"))
        return sg_fail(SG_EARG, "SG_IO=%s: expected io_uring or pread", env);
    sg_io *io = calloc(1, sizeof *io);
    if (!io)
        return sg_fail(-ENOMEM, "io: out of memory");
    io->depth = queue_depth ? queue_depth : 64;
    if (io->depth > IO_MAX_DEPTH)
        io->depth = IO_MAX_DEPTH;
    io->next_ticket = 1;
    pthread_mutex_init(&io->mu, NULL);
    pthread_cond_init(&io->work, NULL);
    pthread_cond_init(&io->done, NULL);

    if (env && !strcmp(env, "pread")) {
        snprintf(io->reason, sizeof io->reason, "SG_IO=pread in the environment");
    } else {
        int rc = io_uring_queue_init(io->depth, &io->ring, 0);
        if (rc < 0) {
            /* ENOSYS (old kernel, gVisor), EPERM (seccomp, io_uring_disabled),
             * ENOMEM (RLIMIT_MEMLOCK on kernels before 5.12), ... */
            snprintf(io->reason, sizeof io->reason, "io_uring refused: %s", strerror(-rc));
        } else {
            io->ring_live = 1;
            if (uring_probe(&io->ring, io->reason, sizeof io->reason) == 0)
                io->uring = 1;
        }
    }
    io->n_threads = io->uring ? 1 : (int)(io->depth < IO_MAX_PREAD_THREADS ? io->depth
                                                                          : IO_MAX_PREAD_THREADS);
    for (int i = 0; i < io->n_threads; i++) {
        int rc = pthread_create(&io->threads[i], NULL, io->uring ? uring_worker : pread_worker,
                                io);
        if (rc) {
            io->n_threads = i;
            sg_io_free(io);
            return sg_fail(-rc, "io: cannot start a reader thread: %s", strerror(rc));
        }
    }
    *out = io;
    return 0;
}

void sg_io_free(sg_io *io)
{
    if (!io)
        return;
    pthread_mutex_lock(&io->mu);
    io->stop = 1;
    pthread_cond_broadcast(&io->work);
    pthread_mutex_unlock(&io->mu);
    /* the workers leave only once the queue and the ring are empty */
    for (int i = 0; i < io->n_threads; i++)
        pthread_join(io->threads[i], NULL);
    if (io->ring_live)
        io_uring_queue_exit(&io->ring);
    for (io_batch *b = io->batches, *next; b; b = next) {
        next = b->next;
        free(b);
    }
    pthread_mutex_destroy(&io->mu);
    pthread_cond_destroy(&io->work);
    pthread_cond_destroy(&io->done);
    free(io);
}

const char *sg_io_backend(const sg_io *io) { return io->uring ? "io_uring" : "pread"; }

const char *sg_io_fallback_reason(const sg_io *io)
{
    return io->reason[0] ? io->reason : NULL;
}

unsigned sg_io_direct_fallbacks(const sg_io *io) { return io->direct_fallbacks; }

/* ------------------------------------------------------------ submitting */

/* Piece size for a request of len bytes: so that a request fills the
 * queue, but no piece is below 256 KiB nor above 4 MiB. */
static size_t piece_size(const sg_io *io, size_t len)
{
    size_t s = (len / io->depth + IO_PIECE_ROUND - 1) / IO_PIECE_ROUND * IO_PIECE_ROUND;
    return s < IO_PIECE_MIN ? IO_PIECE_MIN : s > IO_PIECE_MAX ? IO_PIECE_MAX : s;
}

int sg_io_submit(sg_io *io, const sg_io_req *reqs, int n, uint64_t *ticket)
{
    *ticket = 0;
    if (n < 0)
        return sg_fail(SG_EARG, "io: %d requests", n);
    size_t n_pieces = 0;
    for (int i = 0; i < n; i++) {
        if (reqs[i].min_len > reqs[i].len || (reqs[i].len && !reqs[i].buf))
            return sg_fail(SG_EARG, "%s: bad read request (%zu bytes, min %zu)",
                           reqs[i].path ? reqs[i].path : "io", reqs[i].len, reqs[i].min_len);
        size_t ps = piece_size(io, reqs[i].len);
        size_t need = reqs[i].min_len ? reqs[i].min_len : reqs[i].len;
        n_pieces += (need + ps - 1) / ps; /* pieces wholly past need are not read */
    }
    if (n_pieces > INT32_MAX)
        return sg_fail(SG_EARG, "io: batch too large");
    io_batch *b = calloc(1, sizeof *b + n_pieces * sizeof(io_piece));
    if (!b)
        return sg_fail(-ENOMEM, "io: out of memory for %zu reads", n_pieces);
    b->n_pieces = b->remaining = (int)n_pieces;
    io_piece *p = b->pieces;
    for (int i = 0; i < n; i++) {
        const sg_io_req *r = &reqs[i];
        size_t need = r->min_len ? r->min_len : r->len, ps = piece_size(io, r->len);
        for (size_t at = 0; at < need; at += ps, p++) {
            p->b = b;
            p->fd = r->fd;
            p->buf = (unsigned char *)r->buf + at;
            p->off = r->off + at;
            p->len = r->len - at < ps ? r->len - at : ps;
            p->need = need - at < p->len ? need - at : p->len;
            p->path = r->path;
        }
    }
    pthread_mutex_lock(&io->mu);
    b->ticket = io->next_ticket++;
    b->next = io->batches;
    io->batches = b;
    for (int i = 0; i < b->n_pieces; i++) {
        io_piece *q = &b->pieces[i];
        if (io->tail)
            io->tail->next = q;
        else
            io->head = q;
        io->tail = q;
    }
    if (b->n_pieces)
        pthread_cond_broadcast(&io->work);
    pthread_mutex_unlock(&io->mu);
    *ticket = b->ticket;
    return 0;
}

int sg_io_wait(sg_io *io, uint64_t ticket)
{
    pthread_mutex_lock(&io->mu);
    io_batch **link = &io->batches;
    while (*link && (*link)->ticket != ticket)
        link = &(*link)->next;
    io_batch *b = *link;
    if (!b) {
        pthread_mutex_unlock(&io->mu);
        return sg_fail(SG_EARG, "io: ticket %llu is not pending (already waited for?)",
                       (unsigned long long)ticket);
    }
    while (b->remaining > 0)
        pthread_cond_wait(&io->done, &io->mu);
    /* relink: other batches may have been added in front meanwhile */
    for (link = &io->batches; *link != b; link = &(*link)->next)
        ;
    *link = b->next;
    pthread_mutex_unlock(&io->mu);
    int err = b->err;
    if (err)
        sg_fail(err, "%s", b->msg);
    free(b);
    return err;
}

int sg_io_read(sg_io *io, int fd, void *buf, size_t len, uint64_t off, const char *path)
{
    sg_io_req r = {fd, buf, len, off, 0, path};
    uint64_t ticket;
    int rc = sg_io_submit(io, &r, 1, &ticket);
    return rc ? rc : sg_io_wait(io, ticket);
}

/* --------------------------------------------------------------- O_DIRECT */

int sg_io_open_direct(const char *path, int *fd, int *direct)
{
    *direct = 1;
    *fd = open(path, O_RDONLY | O_CLOEXEC | O_DIRECT);
    if (*fd < 0 && errno == EINVAL) { /* tmpfs and friends */
        *direct = 0;
        *fd = open(path, O_RDONLY | O_CLOEXEC);
    }
    if (*fd < 0) {
        int e = errno;
        *direct = 0;
        return sg_fail(e == ENOENT ? SG_EMISSING : -e, "%s: cannot open: %s", path,
                       strerror(e));
    }
    return 0;
}

int sg_io_read_direct(sg_io *io, int fd, void *buf, size_t len, uint64_t off,
                      const char *path)
{
    const uint64_t A = SG_IO_ALIGN;
    if (((uintptr_t)buf | off | len) % A == 0 || !fd_is_direct(fd))
        return sg_io_read(io, fd, buf, len, off, path);
    uint64_t start = off / A * A, end = off + len, aend = (end + A - 1) / A * A;
    size_t bsz = aend - start < IO_BOUNCE_MAX ? (size_t)(aend - start) : IO_BOUNCE_MAX;
    void *bounce = NULL;
    if (posix_memalign(&bounce, A, bsz))
        return sg_fail(-ENOMEM, "%s: out of memory for a %zu-byte read buffer",
                       path ? path : "io", bsz);
    int rc = 0;
    for (uint64_t ws = start; rc == 0 && ws < end; ws += bsz) {
        size_t wlen = aend - ws < bsz ? (size_t)(aend - ws) : bsz;
        uint64_t wend = ws + wlen < end ? ws + wlen : end; /* last byte wanted + 1 */
        sg_io_req r = {fd, bounce, wlen, ws, (size_t)(wend - ws), path};
        uint64_t ticket;
        rc = sg_io_submit(io, &r, 1, &ticket);
        if (rc == 0)
            rc = sg_io_wait(io, ticket);
        if (rc == 0) {
            uint64_t from = ws > off ? ws : off;
            memcpy((unsigned char *)buf + (from - off), (unsigned char *)bounce + (from - ws),
                   (size_t)(wend - from));
        }
    }
    free(bounce);
    return rc;
}
