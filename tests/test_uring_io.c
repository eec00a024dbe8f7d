/* sg_io: a 40 MB file of known pseudo-random bytes read back in many
 * unaligned ranges, in one batch and in overlapping batches, through
 * io_uring and through the pread fallback (SG_IO=pread); a read past the
 * end of the file fails cleanly naming the file; O_DIRECT reads of
 * unaligned ranges through the bounce buffer, and the switch to buffered
 * reads when a direct read is refused. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sg_error.h"
#include "tap.h"
#include "uring_io.h"

/* not a multiple of 4096, so the last O_DIRECT block is partial */
#define FILE_BYTES ((size_t)40 * 1000 * 1000 + 1234)

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static unsigned char *expected; /* the file's bytes */

static int write_file(const char *path)
{
    expected = malloc(FILE_BYTES);
    uint64_t s = 42;
    for (size_t i = 0; i < FILE_BYTES; i += 8) {
        uint64_t v = splitmix64(&s);
        memcpy(expected + i, &v, FILE_BYTES - i < 8 ? FILE_BYTES - i : 8);
    }
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(expected, 1, FILE_BYTES, f) != FILE_BYTES || fclose(f))
        return -1;
    return 0;
}

/* A random range: mostly small and unaligned, some several MiB long (so
 * they are split into pieces), a few ending exactly at the end. */
static void random_range(uint64_t *s, uint64_t *off, size_t *len)
{
    uint64_t r = splitmix64(s);
    switch (r % 8) {
    case 0: *len = 1 + splitmix64(s) % (9u << 20); break;
    case 1: *len = 1 + splitmix64(s) % 17; break;
    default: *len = 1 + splitmix64(s) % (300u << 10); break;
    }
    *off = splitmix64(s) % (FILE_BYTES - *len + 1);
    if (r % 29 == 0)
        *off = FILE_BYTES - *len;
}

/* Reads in several ways on one sg_io; label says which backend. */
static void check_reads(sg_io *io, int fd, const char *path, const char *label)
{
    /* the whole file at once */
    unsigned char *all = malloc(FILE_BYTES);
    memset(all, 0, FILE_BYTES);
    int rc = sg_io_read(io, fd, all, FILE_BYTES, 0, path);
    tap_ok(rc == 0 && !memcmp(all, expected, FILE_BYTES), "%s: whole 40 MB file in one read",
           label);
    free(all);

    /* 300 unaligned ranges in one batch, into one buffer at unaligned spots */
    enum { N = 300 };
    sg_io_req reqs[N];
    size_t total = 0;
    uint64_t s = 7;
    for (int i = 0; i < N; i++) {
        random_range(&s, &reqs[i].off, &reqs[i].len);
        total += reqs[i].len + 3;
    }
    total += 1; /* the first range starts at buf + 1 */
    unsigned char *buf = malloc(total);
    memset(buf, 0xa5, total);
    size_t at = 1;
    for (int i = 0; i < N; i++) {
        reqs[i].fd = fd;
        reqs[i].buf = buf + at;
        reqs[i].min_len = 0;
        reqs[i].path = path;
        at += reqs[i].len + 3;
    }
    uint64_t ticket;
    rc = sg_io_submit(io, reqs, N, &ticket);
    if (rc == 0)
        rc = sg_io_wait(io, ticket);
    int bad = -1;
    for (int i = 0; i < N && bad < 0; i++)
        if (memcmp(reqs[i].buf, expected + reqs[i].off, reqs[i].len))
            bad = i;
    tap_ok(rc == 0 && bad < 0, "%s: %d random unaligned ranges (%.1f MB) in one batch%s", label,
           N, total / 1e6, bad >= 0 ? " (a range differs)" : "");
    /* the bytes between ranges were not touched */
    int clobbered = buf[0] != 0xa5;
    for (int i = 0; i < N; i++)
        for (int k = 0; k < 3; k++)
            clobbered |= ((unsigned char *)reqs[i].buf)[reqs[i].len + k] != 0xa5;
    tap_ok(!clobbered, "%s: no byte outside the ranges written", label);

    /* two batches in flight, waited for in the opposite order */
    memset(buf, 0, total);
    uint64_t t1, t2;
    int rc1 = sg_io_submit(io, reqs, N / 2, &t1);
    int rc2 = sg_io_submit(io, reqs + N / 2, N - N / 2, &t2);
    rc2 = rc2 ? rc2 : sg_io_wait(io, t2);
    rc1 = rc1 ? rc1 : sg_io_wait(io, t1);
    bad = -1;
    for (int i = 0; i < N && bad < 0; i++)
        if (memcmp(reqs[i].buf, expected + reqs[i].off, reqs[i].len))
            bad = i;
    tap_ok(rc1 == 0 && rc2 == 0 && bad < 0, "%s: two batches waited for in reverse order",
           label);
    rc = sg_io_wait(io, t1);
    tap_ok(rc == SG_EARG, "%s: waiting twice for a ticket is SG_EARG", label);

    /* past the end of the file */
    sg_clear_error();
    rc = sg_io_read(io, fd, buf, 5000, FILE_BYTES - 100, path);
    tap_ok(rc == SG_EFORMAT && strstr(sg_last_error(), path) &&
               strstr(sg_last_error(), "truncated"),
           "%s: read past the end: SG_EFORMAT, \"%s\"", label, sg_last_error());
    rc = sg_io_read(io, fd, buf, 10, FILE_BYTES + 4096, path);
    tap_ok(rc == SG_EFORMAT, "%s: read wholly past the end is SG_EFORMAT", label);

    /* one failing request fails its batch; the others were still read */
    sg_io_req mixed[3] = {{fd, buf, 1000, 10, 0, path},
                          {fd, buf + 1000, 2000, FILE_BYTES - 1000, 0, path},
                          {fd, buf + 3000, 1000, 5000, 0, path}};
    rc = sg_io_submit(io, mixed, 3, &ticket);
    rc = rc ? rc : sg_io_wait(io, ticket);
    tap_ok(rc == SG_EFORMAT && strstr(sg_last_error(), path),
           "%s: a batch with one read past the end fails with that read's error", label);

    /* min_len: the tail may lie past the end */
    sg_io_req tail = {fd, buf, 8192, FILE_BYTES - 500, 500, path};
    rc = sg_io_submit(io, &tail, 1, &ticket);
    rc = rc ? rc : sg_io_wait(io, ticket);
    tap_ok(rc == 0 && !memcmp(buf, expected + FILE_BYTES - 500, 500),
           "%s: min_len lets a read run past the end of the file", label);

    /* a bad descriptor: the errno, naming the file */
    rc = sg_io_read(io, -1, buf, 100, 0, "/no/such/file");
    tap_ok(rc == -EBADF && strstr(sg_last_error(), "/no/such/file"),
           "%s: bad descriptor gives -EBADF naming the file", label);

    /* zero-length reads and empty batches complete */
    rc = sg_io_read(io, fd, buf, 0, 0, path);
    int rc0 = sg_io_submit(io, NULL, 0, &ticket);
    rc0 = rc0 ? rc0 : sg_io_wait(io, ticket);
    tap_ok(rc == 0 && rc0 == 0, "%s: empty read and empty batch complete", label);
    free(buf);
}

static void check_direct(sg_io *io, const char *path, const char *label)
{
    int fd, direct;
    int rc = sg_io_open_direct(path, &fd, &direct);
    if (!tap_ok(rc == 0, "%s: sg_io_open_direct opens the file", label))
        return;
    tap_diag("%s: O_DIRECT %s on this filesystem", label, direct ? "accepted" : "refused");

    /* unaligned ranges through the bounce buffer, 2 of them > 16 MiB */
    uint64_t s = 99;
    int bad = 0, failed = 0;
    for (int i = 0; i < 40; i++) {
        uint64_t off;
        size_t len;
        random_range(&s, &off, &len);
        if (i < 2) {
            len = (size_t)(17 + i) << 20;
            off = 12345 + i;
        }
        if (i == 2) { /* the very end of the file, partial last block */
            off = FILE_BYTES - 10000;
            len = 10000;
        }
        unsigned char *buf = malloc(len + 1);
        if (sg_io_read_direct(io, fd, buf + 1, len, off, path))
            failed++;
        else if (memcmp(buf + 1, expected + off, len))
            bad++;
        free(buf);
    }
    tap_ok(!failed && !bad, "%s: 40 unaligned ranges with sg_io_read_direct (%d failed, %d wrong)",
           label, failed, bad);

    /* aligned range into an aligned buffer: no bounce */
    void *abuf = NULL;
    posix_memalign(&abuf, SG_IO_ALIGN, 1 << 20);
    rc = sg_io_read_direct(io, fd, abuf, 1 << 20, 8 * SG_IO_ALIGN, path);
    tap_ok(rc == 0 && !memcmp(abuf, expected + 8 * SG_IO_ALIGN, 1 << 20),
           "%s: aligned direct read", label);

    rc = sg_io_read_direct(io, fd, abuf, 5000, FILE_BYTES - 4000, path);
    tap_ok(rc == SG_EFORMAT && strstr(sg_last_error(), path),
           "%s: direct read past the end: SG_EFORMAT naming the file", label);

    /* An unaligned buffer on an O_DIRECT fd: the kernel says EINVAL, the fd
     * is switched to buffered reads and the read still succeeds. */
    if (direct) {
        unsigned before = sg_io_direct_fallbacks(io);
        unsigned char *buf = malloc(100001);
        rc = sg_io_read(io, fd, buf + 1, 100000, 777, path);
        int still_direct = (fcntl(fd, F_GETFL) & O_DIRECT) != 0;
        tap_ok(rc == 0 && !memcmp(buf + 1, expected + 777, 100000) && !still_direct &&
                   sg_io_direct_fallbacks(io) == before + 1,
               "%s: EINVAL on an O_DIRECT read falls back to buffered reads", label);
        free(buf);
    } else {
        tap_skip("EINVAL on an O_DIRECT read falls back to buffered reads",
                 "O_DIRECT refused at open; the buffered fd was tested above");
    }
    free(abuf);
    close(fd);
}

int main(void)
{
    const char *dir = tap_tmpdir();
    char path[512];
    snprintf(path, sizeof path, "%s/bytes.bin", dir);
    if (write_file(path))
        tap_skip_all("cannot write the test file");
    int fd = open(path, O_RDONLY);

    unsetenv("SG_IO");
    sg_io *io = NULL;
    int rc = sg_io_init(16, &io);
    tap_ok(rc == 0 && io, "sg_io_init");
    if (!io)
        return tap_done();
    if (strcmp(sg_io_backend(io), "io_uring")) {
        tap_diag("io_uring refused in this environment (%s): only the pread path is tested",
                 sg_io_fallback_reason(io));
    } else {
        tap_ok(sg_io_fallback_reason(io) == NULL, "io_uring: no fallback reason");
        check_reads(io, fd, path, "io_uring");
        check_direct(io, path, "io_uring");
    }
    sg_io_free(io);

    setenv("SG_IO", "pread", 1);
    rc = sg_io_init(16, &io);
    tap_ok(rc == 0 && !strcmp(sg_io_backend(io), "pread") && sg_io_fallback_reason(io) &&
               strstr(sg_io_fallback_reason(io), "SG_IO=pread"),
           "SG_IO=pread forces the fallback and says why");
    check_reads(io, fd, path, "pread");
    check_direct(io, path, "pread");

    /* a batch left unwaited: free waits for it before the buffer goes */
    unsigned char *buf = malloc(8 << 20);
    sg_io_req r = {fd, buf, 8 << 20, 0, 0, path};
    uint64_t ticket;
    sg_io_submit(io, &r, 1, &ticket);
    sg_io_free(io);
    tap_ok(!memcmp(buf, expected, 8 << 20), "sg_io_free completes unwaited batches");
    free(buf);

    setenv("SG_IO", "bogus", 1);
    rc = sg_io_init(16, &io);
    tap_ok(rc == SG_EARG && strstr(sg_last_error(), "SG_IO=bogus"),
           "an unknown SG_IO value is refused: %s", sg_last_error());
    unsetenv("SG_IO");

    close(fd);
    unlink(path);
    rmdir(dir);
    free(expected);
    return tap_done();
}
