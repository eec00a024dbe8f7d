#include "fd_io.h"

#include <errno.h>
#include <unistd.h>

/* Each call asks for at most 1 GiB: Linux moves at most 0x7ffff000 bytes
 * per call anyway, and other systems refuse counts above INT_MAX. */
#define FD_IO_CHUNK ((size_t)1 << 30)

static size_t chunk(size_t n)
{
    return n > FD_IO_CHUNK ? FD_IO_CHUNK : n;
}

ssize_t sg_read_some(int fd, void *buf, size_t n)
{
    for (;;) {
        ssize_t k = read(fd, buf, chunk(n));
        if (k >= 0)
            return k;
        if (errno != EINTR)
            return -errno;
    }
}

ssize_t sg_read_full(int fd, void *buf, size_t n)
{
    unsigned char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t k = sg_read_some(fd, p + got, n - got);
        if (k < 0)
            return k;
        if (k == 0)
            break;
        got += (size_t)k;
    }
    return (ssize_t)got;
}

ssize_t sg_pread_full(int fd, void *buf, size_t n, uint64_t off)
{
    unsigned char *p = buf;
    size_t got = 0;
    while (got < n) {
        ssize_t k = pread(fd, p + got, chunk(n - got), (off_t)(off + got));
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        if (k == 0)
            break;
        got += (size_t)k;
    }
    return (ssize_t)got;
}

int sg_write_all(int fd, const void *buf, size_t n)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t k = write(fd, p, chunk(n));
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        if (k == 0)
            return -EIO;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

int sg_pwrite_all(int fd, const void *buf, size_t n, uint64_t off)
{
    const unsigned char *p = buf;
    while (n > 0) {
        ssize_t k = pwrite(fd, p, chunk(n), (off_t)off);
        if (k < 0 && errno == EINTR)
            continue;
        if (k < 0)
            return -errno;
        if (k == 0)
            return -EIO;
        p += k;
        n -= (size_t)k;
        off += (uint64_t)k;
    }
    return 0;
}

DIR *sg_opendir_fd(int dfd)
{
    int copy = dup(dfd);
    if (copy < 0)
        return NULL;
    DIR *d = fdopendir(copy);
    if (!d) {
        int e = errno;
        close(copy);
        errno = e;
    }
    return d;
}
