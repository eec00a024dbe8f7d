/* Lines of a JSONL file, plain or gzip-compressed (zlib reads either: a
 * file without the gzip magic is passed through as it is), one at a time
 * with their line numbers, for error messages that name both. */
#ifndef SG_JSONL_READER_H
#define SG_JSONL_READER_H

#include <stddef.h>
#include <stdint.h>

typedef struct sg_jsonl sg_jsonl;

int sg_jsonl_open(const char *path, sg_jsonl **out);

/* The next line, without its newline, NUL-terminated, in a buffer the
 * reader owns until the next call; *lineno counts from 1. Returns 1 with a
 * line, 0 at the end of the file, or a negative code (a read or
 * decompression error, a line over 64 MiB) with the message recorded. */
int sg_jsonl_next(sg_jsonl *r, const char **line, size_t *len, int64_t *lineno);

void sg_jsonl_close(sg_jsonl *r);

#endif
