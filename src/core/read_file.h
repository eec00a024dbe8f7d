/* Reading a whole (small) file: configs, indexes, tokenizers, texts. */
#ifndef SG_READ_FILE_H
#define SG_READ_FILE_H

#include <stddef.h>

/* Reads path into a malloc'ed, NUL-terminated buffer (*len excludes the
 * NUL). A missing file is SG_EMISSING; with max_bytes > 0 a larger file is
 * SG_EFORMAT ("larger than ..."), so a wrong path cannot exhaust memory. */
int sg_read_file(const char *path, size_t max_bytes, char **buf, size_t *len);

#endif
