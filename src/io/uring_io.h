/* Asynchronous file reads: io_uring when the kernel allows it, pread
 * otherwise.
 *
 * Containers often refuse io_uring (ENOSYS, or EPERM under seccomp); then
 * every call still works, through pread, and sg_io_backend() says so, so
 * the program can print a one-line notice. SG_IO=pread in the environment
 * forces the fallback (tests use it). Requests are large and, where the
 * file was opened with O_DIRECT, aligned; short reads and -EAGAIN are
 * resubmitted until the request is complete or fails.
 *
 * Each request is cut into pieces of at most 4 MiB (smaller for requests
 * under queue_depth * 4 MiB, so that many are in flight) and the pieces go
 * to a worker thread owned by the sg_io: with io_uring one thread keeps up
 * to queue_depth reads in the ring; with pread, up to 8 threads read in
 * parallel. So sg_io_submit really returns at once and the reads progress
 * while the caller computes.
 *
 * Threads: every call takes the sg_io's lock, so threads may share one,
 * but a ticket must be waited for by one thread, once. Errors are recorded
 * (sg_fail) in the thread that calls sg_io_read or sg_io_wait. One sg_io
 * per thread is the simple rule. */
#ifndef SG_URING_IO_H
#define SG_URING_IO_H

#include <stddef.h>
#include <stdint.h>

/* Alignment O_DIRECT needs for offsets, lengths and buffers. */
#define SG_IO_ALIGN 4096

typedef struct sg_io sg_io;

typedef struct {
    int fd;
    void *buf;
    size_t len;
    uint64_t off;
    /* Optional (zero when initialised as {fd, buf, len, off}): */
    size_t min_len;   /* 0: all len bytes must exist; else only the first
                         min_len (the rest may lie past the end of the file,
                         as the rounded-up tail of an O_DIRECT read does, and
                         may or may not be read) */
    const char *path; /* names the file in messages; kept until sg_io_wait */
} sg_io_req;

/* queue_depth: requests in flight at most (e.g. 64; 0 means 64). Fails
 * only for lack of memory or threads, or an SG_IO value other than
 * "io_uring" or "pread" (SG_EARG). */
int sg_io_init(unsigned queue_depth, sg_io **out);
/* Waits for every batch still in flight (their buffers are written until
 * then), then frees. NULL is ignored. */
void sg_io_free(sg_io *io);

/* "io_uring" or "pread". */
const char *sg_io_backend(const sg_io *io);
/* Why it fell back ("io_uring refused: Operation not permitted",
 * "SG_IO=pread in the environment"); NULL if it did not. */
const char *sg_io_fallback_reason(const sg_io *io);

/* Reads len bytes at off of fd into buf; returns when all arrived. A read
 * past the end of the file is an error (SG_EFORMAT, "truncated"). path
 * (may be NULL) names the file in messages. */
int sg_io_read(sg_io *io, int fd, void *buf, size_t len, uint64_t off, const char *path);

/* Submits a batch of reads and returns at once with a ticket; sg_io_wait
 * blocks until all of them completed (0) or one failed (its error; the
 * batch's other reads have then finished or been dropped, so its buffers
 * are free again either way). The buffers must stay valid until then. */
int sg_io_submit(sg_io *io, const sg_io_req *reqs, int n, uint64_t *ticket);
int sg_io_wait(sg_io *io, uint64_t ticket);

/* O_DIRECT. sg_io_open_direct opens path read-only with O_DIRECT where the
 * filesystem allows it (*direct = 1), else buffered (*direct = 0); the
 * caller closes *fd. O_DIRECT reads bypass the page cache, which a model
 * larger than RAM would only churn, but need SG_IO_ALIGN-aligned offsets,
 * lengths and buffers. If a read of an O_DIRECT fd fails with EINVAL (a
 * filesystem that accepted the flag at open but not the read), the fd is
 * switched to buffered reads (fcntl) and the read retried, whatever the
 * call; sg_io_direct_fallbacks counts those switches. */
int sg_io_open_direct(const char *path, int *fd, int *direct);

/* Reads any range (unaligned offset, length or buffer) of fd, O_DIRECT or
 * not: the aligned span around it is read through a posix_memalign'ed
 * bounce buffer and only the asked bytes are copied out. Errors as
 * sg_io_read. Aligned ranges into aligned buffers skip the bounce. */
int sg_io_read_direct(sg_io *io, int fd, void *buf, size_t len, uint64_t off,
                      const char *path);

unsigned sg_io_direct_fallbacks(const sg_io *io);

#endif
