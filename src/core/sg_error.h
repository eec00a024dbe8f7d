/* Error convention for the whole library.
 *
 * Every library function returns 0 on success or a negative code: -errno for
 * system failures, or one of the SG_E* codes below (all below -4096, so they
 * never collide with errno values). The function that detects a problem also
 * records a one-line message naming the file, the tensor or key, and the
 * problem with sg_fail(); callers that only pass the code up do not touch it.
 * Programs print sg_last_error() and exit non-zero. The library never exits. */
#ifndef SG_ERROR_H
#define SG_ERROR_H

enum {
    SG_OK = 0,
    SG_EFORMAT = -4097,      /* a file is malformed or truncated */
    SG_EMISSING = -4098,     /* a required tensor, key or file is absent */
    SG_ESHAPE = -4099,       /* a tensor has the wrong shape */
    SG_EUNSUPPORTED = -4100, /* valid input we do not handle (dtype, arch) */
    SG_EARG = -4101,         /* a bad argument or option value */
    SG_ECHECKSUM = -4102,    /* a stream record failed its checksum */
    SG_ENUMERIC = -4103,     /* a numeric routine failed (eigensolver, NaN) */
};

/* Records "formatted message" as the last error of this thread and returns
 * code, so a failure reads: return sg_fail(SG_EFORMAT, "%s: ...", path);
 * control characters in the message (from names read from input files)
 * are recorded escaped, as \xNN, so a message is always one plain line. */
int sg_fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Copies s[0..len) into buf (n bytes, always terminated) with every
 * control character (below 0x20, and 0x7f) written as \xNN; returns buf.
 * For printing strings that come from input files. */
#include <stddef.h>
const char *sg_escape(const char *s, size_t len, char *buf, size_t n);

/* The message recorded by the last sg_fail() in this thread, or "" if none. */
const char *sg_last_error(void);

/* A short generic description of a code ("malformed file", strerror(-e)). */
const char *sg_strerror(int code);

/* Clears the recorded message (tests use it between cases). */
void sg_clear_error(void);

#endif
