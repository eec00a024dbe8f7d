#include "sg_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char last_message[1024];

int sg_fail(int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_message, sizeof last_message, fmt, ap);
    va_end(ap);
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
