#include "sg_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_message[1024];

const char *sg_escape(const char *s, size_t len, char *buf, size_t n)
{
    size_t k = 0;
    for (size_t i = 0; i < len && k + 1 < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) {
            if (k + 5 > n - 1)
                break;
            k += (size_t)snprintf(buf + k, n - k, "\\x%02x", c);
        } else {
            buf[k++] = (char)c;
        }
    }
    if (n)
        buf[k] = '\0';
    return buf;
}

int sg_fail(int code, const char *fmt, ...)
{
    /* messages carry names read from input files: a control byte among
     * them (CR, ESC, ...) must not reach a terminal or break the line */
    char raw[sizeof last_message];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(raw, sizeof raw, fmt, ap);
    va_end(ap);
    sg_escape(raw, strlen(raw), last_message, sizeof last_message);
    return code;
}

const char *sg_last_error(void) { return last_message; }

void sg_clear_error(void) { last_message[0] = '\0'; }

const char *sg_strerror(int code)
{
    switch (code) {
    case SG_OK: return "success";
    case SG_EFORMAT: return "malformed file";
    case SG_EMISSING: return "missing tensor, key or file";
    case SG_ESHAPE: return "wrong tensor shape";
    case SG_EUNSUPPORTED: return "unsupported";
    case SG_EARG: return "bad argument";
    case SG_ECHECKSUM: return "checksum mismatch";
    case SG_ENUMERIC: return "numeric failure";
    default: return code < 0 && code > -4096 ? strerror(-code) : "unknown error";
    }
}
