/* Minimal TAP producer for the test programs: each check prints
 * "ok N - what" or "not ok N - what", and tap_done() prints the plan and
 * returns the exit status.
 *
 * One way to skip, so the harness counts every skip the same: tap_skip()
 * for one check that cannot run here, tap_skip_all() for the rest of the
 * program. Tests needing shared data call tap_data_path(), which calls
 * tap_skip_all() when it is absent, or tap_data_find() and tap_skip(). */
#ifndef SG_TAP_H
#define SG_TAP_H

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static int tap_count, tap_failed;

static inline int tap_ok(int cond, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("%sok %d - ", cond ? "" : "not ", ++tap_count);
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
    fflush(stdout);
    if (!cond)
        tap_failed++;
    return cond;
}

static inline void tap_diag(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    printf("# ");
    vprintf(fmt, ap);
    printf("\n");
    va_end(ap);
}

static inline int tap_done(void)
{
    printf("1..%d\n", tap_count);
    return tap_failed ? 1 : 0;
}

/* One skipped check, with the reason. */
static inline void tap_skip(const char *what, const char *why)
{
    printf("ok %d - %s # SKIP %s\n", ++tap_count, what, why);
    fflush(stdout); /* as tap_ok: a forked child must not print it again */
}

/* Skips the rest of the program and exits. Before any check this is TAP's
 * skip-all plan ("1..0 # SKIP why"); after some, a plan of 0 would
 * contradict the lines already printed, so the rest becomes one skipped
 * check and the plan counts what ran (a failure among it still fails). */
static inline void tap_skip_all(const char *why)
{
    if (tap_count == 0) {
        printf("1..0 # SKIP %s\n", why);
        exit(0);
    }
    tap_skip("the remaining checks", why);
    exit(tap_done());
}

/* Path of a file under the shared data folder ($SG_DATA, default
 * ../shared/data relative to the source tree). Skips the program if absent. */
static inline const char *tap_data_find(const char *rel);

static inline const char *tap_data_path(const char *rel)
{
    const char *path = tap_data_find(rel);
    if (!path) {
        char why[4200];
        const char *root = getenv("SG_DATA");
        snprintf(why, sizeof why, "%s/%s not present", root ? root : "../shared/data", rel);
        tap_skip_all(why);
    }
    return path;
}

/* Like tap_data_path, but returns NULL instead of skipping, for programs
 * that run other checks too. */
static inline const char *tap_data_find(const char *rel)
{
    static char buf[8][4096];
    static int next;
    const char *root = getenv("SG_DATA");
    char *out = buf[next++ % 8];
    snprintf(out, 4096, "%s/%s", root ? root : "../shared/data", rel);
    struct stat st;
    return stat(out, &st) == 0 ? out : NULL;
}


/* A fresh empty directory for a test's files, under $TMPDIR. */
static inline const char *tap_tmpdir(void)
{
    static char dir[256];
    const char *t = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/sgtest.XXXXXX", t ? t : "/tmp");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        exit(1);
    }
    return dir;
}

#endif
