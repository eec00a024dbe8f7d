#include "config.h"

#include "versions.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <lapacke.h>
#include <stdio.h>
#include <zlib.h>
#include <zstd.h>
#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

int sg_library_versions(sg_library_version *out, int max)
{
    static char lapack[32], pcre2[64];
    lapack_int a = 0, b = 0, c = 0;
    LAPACKE_ilaver(&a, &b, &c);
    snprintf(lapack, sizeof lapack, "%d.%d.%d", (int)a, (int)b, (int)c);
    if (pcre2_config(PCRE2_CONFIG_VERSION, pcre2) < 0)
        snprintf(pcre2, sizeof pcre2, "unknown");
    const sg_library_version all[] = {
        {"openblas", openblas_get_config()},
        {"lapack", lapack},
        {"zstd", ZSTD_versionString()},
        {"zlib", zlibVersion()},
        {"liburing", SG_URING_VERSION},
        {"cjson", cJSON_Version()},
        {"pcre2", pcre2},
    };
    int n = 0;
    for (; n < max && n < (int)(sizeof all / sizeof all[0]); n++)
        out[n] = all[n];
    return n;
}
