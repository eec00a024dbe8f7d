#include "read_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd_io.h"
#include "sg_error.h"

int sg_read_file(const char *path, size_t max_bytes, char **buf, size_t *len)
{
    *buf = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return sg_fail(e == ENOENT ? SG_EMISSING : -e, "%s: cannot open: %s", path, strerror(e));
    }
    /* grow as we go: pipes and /proc files have no useful st_size */
    size_t cap = 1 << 16, n = 0;
    char *b = malloc(cap);
    int err = 0;
    for (;;) {
        if (!b) {
            err = sg_fail(-ENOMEM, "%s: out of memory", path);
            break;
        }
        size_t want = cap - 1 - n;
        ssize_t k = sg_read_full(fd, b + n, want);
        if (k < 0) {
            err = sg_fail((int)k, "%s: read error: %s", path, strerror((int)-k));
            break;
        }
        n += (size_t)k;
        if (max_bytes && n > max_bytes) {
            err = sg_fail(SG_EFORMAT, "%s: larger than %zu bytes", path, max_bytes);
            break;
        }
        if ((size_t)k < want) /* end of file */
            break;
        char *g = realloc(b, cap *= 2); /* full: the file may go on */
        if (!g)
            free(b);
        b = g;
    }
    close(fd);
    if (err) {
        free(b);
        return err;
    }
    b[n] = '\0';
    *buf = b;
    *len = n;
    return 0;
}
