/* What every fuzz target shares: the input as a file the readers can open.
 *
 * The readers take a path (or an fd), so each input is written to a memfd
 * and handed over as /proc/self/fd/N: no temp files left behind when the
 * fuzzer is killed, and the same bytes through the same open() as a real
 * file. The memfd is made once and rewritten for each input. */
#ifndef SG_FUZZ_COMMON_H
#define SG_FUZZ_COMMON_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

/* Writes data to the process's memfd; returns its fd (its path in *path),
 * or aborts: a harness that cannot make its input is broken, not a finding. */
static int sg_fuzz_file(const uint8_t *data, size_t size, char path[64])
{
    static int fd = -1;
    if (fd < 0) {
        fd = memfd_create("sg-fuzz", MFD_CLOEXEC);
        if (fd < 0) {
            perror("memfd_create");
            abort();
        }
    }
    if (ftruncate(fd, 0) != 0 || lseek(fd, 0, SEEK_SET) != 0) abort();
    size_t done = 0;
    while (done < size) {
        ssize_t w = write(fd, data + done, size - done);
        if (w <= 0) abort();
        done += (size_t)w;
    }
    if (lseek(fd, 0, SEEK_SET) != 0) abort();
    snprintf(path, 64, "/proc/self/fd/%d", fd);
    return fd;
}

#endif
