/* Whole reads and writes on a file descriptor.
 *
 * read(2) and write(2) may move fewer bytes than asked (pipes, signals,
 * Linux's 2 GiB cap per call) or fail with EINTR; these loops resume until
 * the request is done, so callers only see "done", "end of file" or an
 * error. They record no message (return -errno only): each caller names
 * its file and what it was doing in its own sg_fail line. */
#ifndef SG_FD_IO_H
#define SG_FD_IO_H

#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* One read(2) of up to n bytes, retried on EINTR: bytes read (0 at end of
 * file) or -errno. For buffered readers that take what a pipe has now. */
ssize_t sg_read_some(int fd, void *buf, size_t n);

/* Reads n bytes: returns n, fewer only at end of file, or -errno. */
ssize_t sg_read_full(int fd, void *buf, size_t n);

/* Reads n bytes at offset off: returns n, fewer only at end of file, or
 * -errno. The file position is left alone. */
ssize_t sg_pread_full(int fd, void *buf, size_t n, uint64_t off);

/* Writes n bytes: 0 or -errno; a write(2) that moves nothing is -EIO. */
int sg_write_all(int fd, const void *buf, size_t n);

/* Writes n bytes at offset off, as sg_write_all; the position is left alone. */
int sg_pwrite_all(int fd, const void *buf, size_t n, uint64_t off);

/* A directory stream over a copy of the directory descriptor dfd, which
 * stays open and the caller's (closedir closes only the copy): NULL with
 * errno set on failure. For listing a directory one holds open by fd. */
DIR *sg_opendir_fd(int dfd);

#endif
