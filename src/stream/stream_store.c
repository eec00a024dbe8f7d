/* Files through which the stage filters talk back upstream (see
 * stream_store.h). */
#include "stream_store.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sg_error.h"

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

double sg_store_now(void) { return now_s(); }

/* fixed width, so that one pwrite replaces the whole line */
#define FLOW_FMT "%20llu %20llu %d %20.6f\n"
#define FLOW_LEN (20 + 1 + 20 + 1 + 1 + 1 + 20 + 1)

void sg_store_publish_flow(const char *dir, const char *stage, int *fd, const sg_store_flow *f)
{
    if (!dir || !dir[0])
        return;
    if (*fd < 0) {
        char path[4200];
        snprintf(path, sizeof path, "%s/%s.flow", dir, stage);
        *fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (*fd < 0) {
            *fd = -2; /* gone: do not try again */
            return;
        }
    }
    if (*fd < 0)
        return;
    char line[FLOW_LEN + 1];
    snprintf(line, sizeof line, FLOW_FMT, f->in, f->out, f->waiting ? 1 : 0, f->since);
    (void)!pwrite(*fd, line, FLOW_LEN, 0);
}

static int read_flow(const char *dir, const char *stage, sg_store_flow *f)
{
    char path[4200], line[FLOW_LEN + 1];
    snprintf(path, sizeof path, "%s/%s.flow", dir, stage);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t k = pread(fd, line, FLOW_LEN, 0);
    close(fd);
    if (k != FLOW_LEN || line[FLOW_LEN - 1] != '\n')
        return -1; /* being written: judge next time */
    line[FLOW_LEN] = '\0';
    return sscanf(line, "%llu %llu %d %lf", &f->in, &f->out, &f->waiting, &f->since) == 4 ? 1
                                                                                        : -1;
}

/* 0, or a message saying which pair of stages a stuck stream sits between. */
static int check_stall(const char *dir, const sg_store_wait_opts *o, double start)
{
    if (!o->hops || o->stall_s <= 0)
        return 0;
    double now = now_s();
    for (int i = 1; o->hops[i]; i++) {
        sg_store_flow up, me;
        if (read_flow(dir, o->hops[i - 1], &up) != 1)
            continue;
        int got = read_flow(dir, o->hops[i], &me);
        if (got == 0 && now - start > o->stall_s)
            return sg_fail(-ETIMEDOUT,
                           "`slicegpt-stream %s` has not received the stream %.0f s after `%s` "
                           "sent it: something between them holds the stream back (a buffer "
                           "such as `dd bs=1M`?), or %s is missing; join the stages with plain "
                           "pipes",
                           o->hops[i], now - start, o->hops[i - 1], o->hops[i]);
        if (got == 1 && me.waiting && me.in < up.out && now - me.since > o->stall_s &&
            now - start > o->stall_s)
            return sg_fail(-ETIMEDOUT,
                           "`slicegpt-stream %s` has waited %.0f s for %llu bytes that `%s` "
                           "wrote: something between them holds the stream back (a buffer such "
                           "as `dd bs=1M`?); join the stages with plain pipes, or raise "
                           "--stall-timeout",
                           o->hops[i], now - me.since, up.out - me.in, o->hops[i - 1]);
    }
    return 0;
}

int sg_store_put(const char *dir, const char *file, int type, const char *name,
                 const sg_frame_part *parts, int n_parts)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    snprintf(tmp, sizeof tmp, "%s/.%s.%ld.tmp", dir, file, (long)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    /* capture removes the store when it stops; before the end, that means
     * it stopped early, and said why */
    if (fd < 0 && errno == ENOENT)
        return sg_fail(SG_STORE_PEER_FAILED, "%s: the store is gone (capture stopped)", dir);
    if (fd < 0)
        return sg_fail(-errno, "%s: cannot create: %s", tmp, strerror(errno));
    sg_frame_writer *w;
    int err = sg_frame_writer_open(fd, tmp, 0, &w);
    if (!err) {
        err = sg_frame_write(w, type, name, parts, n_parts);
        err = err ? err : sg_frame_write_end(w);
        sg_frame_writer_free(w);
    }
    if (close(fd) != 0 && !err)
        err = sg_fail(-errno, "%s: %s", tmp, strerror(errno));
    /* no fsync: the file is scratch for this run, read by a live process */
    if (!err && rename(tmp, path) != 0)
        err = sg_fail(-errno, "%s: cannot rename into place: %s", path, strerror(errno));
    if (err)
        unlink(tmp);
    return err;
}

/* 1 if watch_fd is a pipe whose reader has gone. */
static int reader_gone(int fd)
{
    if (fd < 0)
        return 0;
    struct pollfd p = {fd, 0, 0};
    return poll(&p, 1, 0) == 1 && (p.revents & (POLLERR | POLLHUP)) != 0;
}

static int read_failed(const char *dir, char *msg, size_t n)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/failed", dir);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    size_t k = fread(msg, 1, n - 1, f);
    fclose(f);
    msg[k] = '\0';
    char *nl = strchr(msg, '\n');
    if (nl)
        *nl = '\0';
    return 1;
}

int sg_store_wait(const char *dir, const char *file, int type, const sg_store_wait_opts *o,
                  sg_record *rec)
{
    char path[4096], msg[1024];
    snprintf(path, sizeof path, "%s/%s", dir, file);
    double start = now_s();
    long sleep_us = 500;
    int fd;
    /* a short poll: the file usually follows within milliseconds to
     * seconds, and a sleep costs nothing against a block's work */
    while ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0) {
        if (errno != ENOENT)
            return sg_fail(-errno, "%s: %s", path, strerror(errno));
        if (read_failed(dir, msg, sizeof msg))
            return sg_fail(SG_STORE_PEER_FAILED, "stopped: %s", msg);
        if (reader_gone(o->watch_fd))
            return sg_fail(-EPIPE, "the next stage closed the pipe while this one waited for "
                                   "%s from %s", path, o->from);
        int stuck = check_stall(dir, o, start);
        if (stuck)
            return stuck;
        if (now_s() - start > o->timeout_s)
            return sg_fail(-ETIMEDOUT,
                           "waited %.0f s for %s from %s; is `slicegpt-stream %s` further down "
                           "the pipe?",
                           o->timeout_s, path, o->from, o->from);
        usleep(sleep_us);
        if (sleep_us < 50000)
            sleep_us *= 2;
    }
    sg_frame_reader *r = NULL;
    unsigned char *copy = NULL;
    int err = sg_frame_reader_open(fd, path, &r);
    int got = err ? err : sg_frame_read(r, rec);
    if (got == 1 && rec->type != type)
        err = sg_fail(SG_EFORMAT, "%s: holds a %s record, expected %s", path,
                      sg_rec_type_name(rec->type), sg_rec_type_name(type));
    else if (got != 1)
        err = got < 0 ? got : sg_fail(SG_EFORMAT, "%s: holds no record", path);
    /* the payload is the reader's and the end record would overwrite it:
     * keep a copy, with the file's name after it for messages */
    if (!err && !(copy = malloc(rec->len + strlen(path) + 1)))
        err = sg_fail(-ENOMEM, "%s: out of memory", path);
    if (!err) {
        memcpy(copy, rec->payload, rec->len);
        strcpy((char *)copy + rec->len, path);
        rec->payload = copy;
        rec->source = (const char *)copy + rec->len;
        sg_record end;
        int e = sg_frame_read(r, &end);
        err = e == 0 ? 0 : e < 0 ? e : sg_fail(SG_EFORMAT, "%s: more than one record", path);
    }
    sg_frame_reader_free(r);
    close(fd);
    if (err) {
        free(copy);
        rec->payload = NULL;
    }
    return err;
}

void sg_store_mark_failed(const char *dir, const char *stage, const char *message)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/failed", dir);
    snprintf(tmp, sizeof tmp, "%s/.failed.%ld.tmp", dir, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f)
        return;
    fprintf(f, "%s: %s\n", stage, message);
    if (fclose(f) == 0)
        (void)!link(tmp, path); /* EEXIST: an earlier failure is the one to report */
    unlink(tmp);
}
