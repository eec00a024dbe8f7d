/* Resume: the state file of a run in progress (format in resume.h). */
#include "resume.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crc32c.h"
#include "fd_io.h"
#include "read_file.h"
#include "sg_error.h"

#define STATE_MAGIC "SGRS"
#define STATE_VERSION 1u

void sg_test_kill_at(const char *point)
{
    const char *at = getenv("SG_TEST_KILL_AT"), *sig = getenv("SG_TEST_KILL_SIGNAL");
    if (!at || strcmp(at, point))
        return;
    /* TERM and INT go through the program's handlers, as a kill or ^C would */
    raise(sig && !strcmp(sig, "TERM") ? SIGTERM : sig && !strcmp(sig, "INT") ? SIGINT : SIGKILL);
    raise(SIGKILL); /* a handler that returned */
}

void sg_resume_chunk_path(const char *dir, int64_t last, int64_t c, char *buf, size_t n)
{
    snprintf(buf, n, "%s/" SG_RESUME_CHUNK_FMT, dir, (unsigned)(last + 1), (unsigned)c);
}

uint64_t sg_resume_hash(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    if (!h)
        h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static uint64_t hash_stat(uint64_t h, const char *name, const struct stat *sb)
{
    int64_t v[3] = {sb->st_size, sb->st_mtim.tv_sec, sb->st_mtim.tv_nsec};
    h = sg_resume_hash(h, name, strlen(name) + 1);
    return sg_resume_hash(h, v, sizeof v);
}

static int by_name(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int sg_resume_hash_files(const char *path, uint64_t *h)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return sg_fail(-errno, "%s: %s", path, strerror(errno));
    if (!S_ISDIR(sb.st_mode)) {
        *h = hash_stat(*h, "", &sb);
        return 0;
    }
    DIR *d = opendir(path);
    if (!d)
        return sg_fail(-errno, "%s: %s", path, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    int err = 0;
    struct dirent *e;
    while (!err && (e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            char **p = realloc(names, cap * sizeof *p);
            if (!p) {
                err = sg_fail(-ENOMEM, "out of memory");
                break;
            }
            names = p;
        }
        if (!(names[n] = strdup(e->d_name)))
            err = sg_fail(-ENOMEM, "out of memory");
        else
            n++;
    }
    closedir(d);
    if (!err)
        qsort(names, n, sizeof *names, by_name);
    for (size_t i = 0; i < n; i++) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", path, names[i]);
        if (!err && stat(p, &sb) == 0 && S_ISREG(sb.st_mode))
            *h = hash_stat(*h, names[i], &sb);
        free(names[i]);
    }
    free(names);
    return err;
}

/* ---- the state file ---- */

typedef struct {
    char *buf;
    size_t n, cap;
    int oom;
} sbuf;

static void put(sbuf *b, const void *data, size_t n)
{
    if (b->oom)
        return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n)
            cap *= 2;
        char *p = realloc(b->buf, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->buf = p, b->cap = cap;
    }
    memcpy(b->buf + b->n, data, n);
    b->n += n;
}

static void put_text(sbuf *b, const char *s)
{
    uint64_t n = s ? strlen(s) : 0;
    put(b, &n, sizeof n);
    put(b, s ? s : "", n);
}

static int write_durably(const char *dir, const char *name, const void *data, size_t len)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        return sg_fail(-errno, "%s: %s", tmp, strerror(errno));
    const char *p = data;
    size_t done = 0;
    int e = 0;
    while (!e && done < len) {
        ssize_t k = write(fd, p + done, len - done);
        if (k < 0 && errno != EINTR)
            e = errno;
        else if (k > 0)
            done += k;
    }
    if (!e && fsync(fd) != 0)
        e = errno;
    if (close(fd) != 0 && !e)
        e = errno;
    if (!e && rename(tmp, path) != 0)
        e = errno;
    if (e) {
        unlink(tmp);
        return sg_fail(-e, "%s: %s", path, strerror(e));
    }
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd); /* the rename itself durable */
        close(dfd);
    }
    return 0;
}

/* Removes the chunk files of every step but keep (-2: all). */
static void remove_chunks(int dfd, int64_t keep)
{
    DIR *d = sg_opendir_fd(dfd);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        unsigned g, c;
        char again[256];
        if (sscanf(e->d_name, SG_RESUME_CHUNK_FMT, &g, &c) != 2)
            continue;
        snprintf(again, sizeof again, SG_RESUME_CHUNK_FMT, g, c);
        size_t n = strlen(again);
        /* the name itself, or its .tmp (never anything else) */
        if (strncmp(again, e->d_name, n) || (e->d_name[n] && strcmp(e->d_name + n, ".tmp")))
            continue;
        if ((int64_t)g != keep + 1 || e->d_name[n])
            unlinkat(dfd, e->d_name, 0);
    }
    closedir(d);
}

void sg_resume_remove(int dfd)
{
    unlinkat(dfd, SG_RESUME_STATE, 0);
    unlinkat(dfd, SG_RESUME_STATE ".tmp", 0);
    remove_chunks(dfd, -2);
}

int sg_resume_save(const char *dir, const sg_resume_state *st)
{
    sbuf b = {0};
    uint32_t version = STATE_VERSION;
    put(&b, STATE_MAGIC, 4);
    put(&b, &version, 4);
    put(&b, &st->fingerprint, 8);
    put(&b, &st->last, 8);
    put(&b, &st->D, 8);
    put(&b, &st->n_chunks, 8);
    put(&b, &st->width, 8);
    put(&b, st->rows, st->n_chunks * sizeof(int64_t));
    int32_t shard = st->next_shard;
    put(&b, &shard, 4);
    put_text(&b, st->weight_map);
    put_text(&b, st->spectra);
    if (st->q)
        put(&b, st->q, st->D * st->D * sizeof(double));
    uint32_t crc = b.oom ? 0 : sg_crc32c(0, b.buf, b.n);
    put(&b, &crc, 4);
    int err = b.oom ? sg_fail(-ENOMEM, "out of memory") : 0;
    err = err ? err : write_durably(dir, SG_RESUME_STATE, b.buf, b.n);
    free(b.buf);
    if (err)
        return err;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        remove_chunks(dfd, st->last);
        close(dfd);
    }
    return 0;
}

typedef struct {
    const char *p;
    size_t n, at;
} rbuf;

static int get(rbuf *r, void *out, size_t n)
{
    if (r->n - r->at < n)
        return -1;
    memcpy(out, r->p + r->at, n);
    r->at += n;
    return 0;
}

static int get_text(rbuf *r, char **s)
{
    uint64_t n;
    if (get(r, &n, 8) || r->n - r->at < n || !(*s = malloc(n + 1)))
        return -1;
    memcpy(*s, r->p + r->at, n);
    (*s)[n] = '\0';
    r->at += n;
    return 0;
}

int sg_resume_load(const char *dir, sg_resume_state *st)
{
    memset(st, 0, sizeof *st);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, SG_RESUME_STATE);
    if (access(path, F_OK) != 0)
        return sg_fail(SG_EMISSING, "%s: no resume state", path);
    char *buf;
    size_t n;
    int err = sg_read_file(path, 0, &buf, &n);
    if (err)
        return err;
    rbuf r = {buf, n, 0};
    char magic[4];
    uint32_t version, crc;
    int32_t shard;
    int bad = n < 8 || get(&r, magic, 4) || memcmp(magic, STATE_MAGIC, 4) ||
              get(&r, &version, 4) || version != STATE_VERSION;
    if (!bad && (n < 12 || (memcpy(&crc, buf + n - 4, 4), crc != sg_crc32c(0, buf, n - 4)))) {
        free(buf);
        return sg_fail(SG_ECHECKSUM, "%s: checksum mismatch", path);
    }
    bad = bad || get(&r, &st->fingerprint, 8) || get(&r, &st->last, 8) || get(&r, &st->D, 8) ||
          get(&r, &st->n_chunks, 8) || get(&r, &st->width, 8) || st->width < 0 ||
          st->width > st->D || st->D <= 0 || st->D > 1 << 20 || st->n_chunks < 0 ||
          st->n_chunks > (int64_t)(n / 8);
    if (!bad) {
        st->rows = malloc((st->n_chunks + 1) * sizeof(int64_t));
        bad = !st->rows || get(&r, st->rows, st->n_chunks * sizeof(int64_t)) ||
              get(&r, &shard, 4) || get_text(&r, &st->weight_map) || get_text(&r, &st->spectra);
    }
    if (!bad) {
        st->next_shard = shard;
        /* the rotation, or nothing for the identity; then the checksum */
        size_t qb = (size_t)st->D * st->D * sizeof(double);
        if (r.n - r.at != 4)
            bad = r.n - r.at != qb + 4 || !(st->q = malloc(qb)) || get(&r, st->q, qb);
    }
    free(buf);
    if (bad) {
        sg_resume_state_free(st);
        return sg_fail(SG_EFORMAT, "%s: not a resume state of this version", path);
    }
    return 0;
}

void sg_resume_state_free(sg_resume_state *st)
{
    free(st->rows);
    free(st->weight_map);
    free(st->spectra);
    free(st->q);
    memset(st, 0, sizeof *st);
}
