#include "jsonl_reader.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "sg_error.h"

#define MAX_LINE (64 << 20)

struct sg_jsonl {
    gzFile gz;
    char *path;
    char *buf;
    size_t cap;
    int64_t lineno;
};

int sg_jsonl_open(const char *path, sg_jsonl **out)
{
    sg_jsonl *r = calloc(1, sizeof *r);
    if (!r || !(r->path = strdup(path)) || !(r->buf = malloc(r->cap = 4096))) {
        if (r)
            free(r->path);
        free(r);
        return sg_fail(-ENOMEM, "%s: out of memory", path);
    }
    errno = 0;
    r->gz = gzopen(path, "rb");
    if (!r->gz) {
        int e = errno ? errno : ENOMEM;
        sg_jsonl_close(r);
        return sg_fail(-e, "%s: %s", path, strerror(e));
    }
    gzbuffer(r->gz, 1 << 17);
    *out = r;
    return 0;
}

int sg_jsonl_next(sg_jsonl *r, const char **line, size_t *len, int64_t *lineno)
{
    size_t n = 0;
    for (;;) {
        if (r->cap - n < 2) {
            if (r->cap >= MAX_LINE)
                return sg_fail(SG_EFORMAT, "%s:%lld: line longer than %d MiB", r->path,
                               (long long)r->lineno + 1, MAX_LINE >> 20);
            char *b = realloc(r->buf, r->cap * 2);
            if (!b)
                return sg_fail(-ENOMEM, "%s: out of memory for a line", r->path);
            r->buf = b;
            r->cap *= 2;
        }
        if (!gzgets(r->gz, r->buf + n, (int)(r->cap - n))) {
            int zerr;
            const char *msg = gzerror(r->gz, &zerr);
            if (zerr != Z_OK && zerr != Z_BUF_ERROR)
                return sg_fail(SG_EFORMAT, "%s:%lld: %s", r->path, (long long)r->lineno + 1,
                               zerr == Z_ERRNO ? strerror(errno) : msg);
            if (zerr == Z_BUF_ERROR) /* the compressed data stops early */
                return sg_fail(SG_EFORMAT, "%s:%lld: truncated gzip data", r->path,
                               (long long)r->lineno + 1);
            if (n == 0)
                return 0;
            break; /* a last line without a newline */
        }
        n += strlen(r->buf + n);
        if (n > 0 && r->buf[n - 1] == '\n')
            break;
        if (gzeof(r->gz)) {
            int zerr;
            gzerror(r->gz, &zerr);
            if (zerr == Z_BUF_ERROR) /* a line cut by the end of the compressed data */
                return sg_fail(SG_EFORMAT, "%s:%lld: truncated gzip data", r->path,
                               (long long)r->lineno + 1);
            break;
        }
    }
    if (n > 0 && r->buf[n - 1] == '\n')
        r->buf[--n] = 0;
    if (n > 0 && r->buf[n - 1] == '\r')
        r->buf[--n] = 0;
    *line = r->buf;
    *len = n;
    *lineno = ++r->lineno;
    return 1;
}

void sg_jsonl_close(sg_jsonl *r)
{
    if (!r)
        return;
    if (r->gz)
        gzclose(r->gz);
    free(r->path);
    free(r->buf);
    free(r);
}
