/* The libraries the program runs with and their versions, as each reports
 * itself at run time (liburing, which has no such call in the versions
 * Debian ships, as configure found it), for run records (--report). */
#ifndef SG_VERSIONS_H
#define SG_VERSIONS_H

typedef struct {
    const char *name;    /* "openblas", "lapack", "zstd", "liburing", "cjson", "pcre2" */
    const char *version; /* "OpenBLAS 0.3.21 DYNAMIC_ARCH ...", "1.5.4", ... */
} sg_library_version;

/* Fills up to max entries; returns how many. The strings are static. */
int sg_library_versions(sg_library_version *out, int max);

#endif
