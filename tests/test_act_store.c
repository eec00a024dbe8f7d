/* Activation store: chunks round-trip bit-exactly whether they stay in
 * memory or spill to disk; the budget bounds resident memory; drop, rename
 * and close clean up; a damaged spill file is a clean error naming it; a
 * run killed by SIGTERM or SIGINT leaves no spill files behind. Ends with
 * the compression ratio and speed on activation-like data. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "act_store.h"
#include "sg_error.h"
#include "tap.h"

/* ---- data ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;
static double uniform(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((rng >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static double gauss(void) { return sqrt(-2 * log(uniform())) * cos(2 * M_PI * uniform()); }

/* Like a residual stream: per-channel scales spread over ~e^±1, and a few
 * channels ~50x larger (the "massive activations" of LLMs). (rows, width) */
static float *activations(int64_t rows, int64_t width)
{
    float *x = malloc(rows * width * sizeof *x);
    float *scale = malloc(width * sizeof *scale);
    for (int64_t j = 0; j < width; j++)
        scale[j] = (float)exp(0.5 * gauss()) * (j % 683 == 5 ? 50.0f : 1.0f);
    for (int64_t i = 0; i < rows * width; i++)
        x[i] = scale[i % width] * (float)gauss();
    free(scale);
    return x;
}

/* Rounds to bfloat16 precision, as activations computed in bf16 are. */
static void round_bf16(float *x, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t v;
        memcpy(&v, &x[i], 4);
        v = (v + 0x7fff + ((v >> 16) & 1)) & 0xffff0000u;
        memcpy(&x[i], &v, 4);
    }
}

/* Puts a chunk and reads it back bit-exactly (NaN payloads included). */
static int round_trip(sg_act_store *s, const char *name, int64_t index, const float *x,
                      int64_t rows, int64_t width)
{
    int64_t r = 0, w = 0;
    if (sg_act_store_shape(s, name, index, &r, &w) != 0 || r != rows || w != width)
        return 0;
    float *y = malloc(rows * width * sizeof *y);
    memset(y, 0xa5, rows * width * sizeof *y);
    int rc = sg_act_store_get(s, name, index, y);
    int same = rc == 0 && memcmp(x, y, rows * width * sizeof *y) == 0;
    free(y);
    return same;
}

/* ---- directories ---- */

static int count_entries(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            n++;
    closedir(d);
    return n;
}

/* Path of the one spill file in dir (tests with a single spilled chunk). */
static const char *only_file(const char *dir)
{
    static char path[4096];
    DIR *d = opendir(dir);
    struct dirent *e;
    path[0] = '\0';
    while (d && (e = readdir(d)))
        if (e->d_name[0] != '.')
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
    if (d)
        closedir(d);
    return path;
}

static int exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static char *fresh_dir(void) { return strdup(tap_tmpdir()); }

/* Removes leftovers of a case that is expected to leave some (the control
 * case) so the test itself leaves nothing. */
static void remove_tree(const char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", dir);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec * 1e-9;
}

/* ---- cases ---- */

static void in_memory(void)
{
    sg_act_store *s;
    tap_ok(sg_act_store_open(1 << 20, NULL, &s) == 0, "open a memory-only store of 1 MiB");
    float *a = activations(7, 33), *b = activations(1, 1000);
    tap_ok(sg_act_store_put(s, "input", 0, a, 7, 33) == 0 &&
               sg_act_store_put(s, "input", 1, b, 1, 1000) == 0,
           "put two chunks of different shapes");
    tap_ok(round_trip(s, "input", 0, a, 7, 33) && round_trip(s, "input", 1, b, 1, 1000),
           "both read back bit-exactly");
    tap_ok(sg_act_store_chunks(s, "input") == 2 && sg_act_store_chunks(s, "other") == 0,
           "chunk count 2, 0 for an unknown signal");
    sg_act_store_stats_t st;
    sg_act_store_stats(s, &st);
    tap_ok(st.resident_bytes == (7 * 33 + 1000) * 4 && st.chunks_spilled == 0 &&
               sg_act_store_spill_path(s) == NULL,
           "resident bytes = the two chunks, nothing spilled, no spill dir");

    sg_clear_error();
    tap_ok(sg_act_store_put(s, "input", 1, b, 1, 1000) == SG_EARG,
           "putting the same chunk twice is an error: %s", sg_last_error());
    float *huge = activations(300, 1000); /* 1.2 MB > what is left of 1 MiB */
    int rc = sg_act_store_put(s, "capture", 0, huge, 300, 1000);
    tap_ok(rc == -ENOMEM && strstr(sg_last_error(), "no spill directory"),
           "over budget without a spill dir: -ENOMEM, \"%s\"", sg_last_error());
    tap_ok(sg_act_store_chunks(s, "capture") == 0 && sg_act_store_rename(s, "input",
                                                                         "capture") == 0,
           "the failed put left no trace (its name is free)");
    float y[7 * 33];
    tap_ok(sg_act_store_get(s, "input", 0, y) == SG_EMISSING,
           "get of a missing chunk: SG_EMISSING (%s)", sg_last_error());
    tap_ok(sg_act_store_put(s, "x", -1, a, 7, 33) == SG_EARG &&
               sg_act_store_put(s, "x", 0, a, 0, 33) == SG_EARG,
           "negative index and empty shape rejected");
    sg_act_store_close(s);
    free(a);
    free(b);
    free(huge);
}

static void forced_spill(void)
{
    char *root = fresh_dir();
    char sub[4200];
    snprintf(sub, sizeof sub, "%s/not/yet/there", root);
    sg_act_store *s;
    tap_ok(sg_act_store_open(0, sub, &s) == 0, "open with budget 0 creates the spill dir");
    const char *priv = sg_act_store_spill_path(s);
    tap_ok(priv && strncmp(priv, sub, strlen(sub)) == 0 && strstr(priv, "/slicegpt-"),
           "private directory %s", priv ? priv : "(none)");

    /* odd shapes: one float, one row, one column, a width over the 64K
     * shuffle block, a block boundary falling mid-row */
    static const int64_t shapes[][2] = {{1, 1}, {1, 70001}, {513, 1}, {3, 65537}, {129, 4099}};
    const char *names[] = {"input", "attn_residual"};
    float *data[2][5];
    int ok = 1;
    for (int g = 0; g < 2; g++)
        for (int i = 0; i < 5; i++) {
            data[g][i] = activations(shapes[i][0], shapes[i][1]);
            ok &= sg_act_store_put(s, names[g], i, data[g][i], shapes[i][0], shapes[i][1]) == 0;
        }
    /* values compression must not bend */
    uint32_t special[] = {0x7fc00001u, 0xffc12345u, 0x7f800000u, 0xff800000u, 0x80000000u,
                          0x00000001u, 0x807fffffu, 0x7f7fffffu};
    float *specials = activations(shapes[4][0], shapes[4][1]);
    memcpy(specials, special, sizeof special);
    ok &= sg_act_store_put(s, "specials", 0, specials, shapes[4][0], shapes[4][1]) == 0;
    tap_ok(ok, "put 11 chunks of 5 odd shapes in 3 signals, all spilled");
    tap_ok(count_entries(priv) == 11, "11 spill files on disk (%d)", count_entries(priv));

    ok = 1;
    for (int g = 1; g >= 0; g--) /* out of order on purpose */
        for (int i = 4; i >= 0; i--)
            ok &= round_trip(s, names[g], i, data[g][i], shapes[i][0], shapes[i][1]);
    tap_ok(ok, "every chunk reads back bit-exactly, in reverse order");
    tap_ok(round_trip(s, "specials", 0, specials, shapes[4][0], shapes[4][1]),
           "NaN payloads, infinities, -0 and subnormals survive");
    free(specials);

    sg_act_store_stats_t st;
    sg_act_store_stats(s, &st);
    tap_ok(st.peak_resident_bytes == 0 && st.chunks_spilled == 11 && st.spill_files == 11,
           "stats: peak resident 0, 11 chunks spilled, 11 files");
    tap_diag("spilled %lld raw bytes into %lld file bytes; reads through %s",
             (long long)st.spilled_raw_bytes, (long long)st.spilled_compressed_bytes,
             st.io_backend);

    /* drop */
    tap_ok(sg_act_store_drop(s, "attn_residual") == 0 && count_entries(priv) == 6,
           "drop deletes the signal's 5 files (6 left)");
    tap_ok(sg_act_store_chunks(s, "attn_residual") == 0 &&
               sg_act_store_drop(s, "attn_residual") == SG_EMISSING,
           "a dropped signal is gone; dropping it again is SG_EMISSING");
    sg_act_store_drop(s, "specials");

    /* rename without copying: same files, new name */
    tap_ok(sg_act_store_rename(s, "input", "next_input") == 0 && count_entries(priv) == 5,
           "rename keeps the 5 files");
    ok = sg_act_store_chunks(s, "input") == 0;
    for (int i = 0; i < 5; i++)
        ok &= round_trip(s, "next_input", i, data[0][i], shapes[i][0], shapes[i][1]);
    tap_ok(ok, "renamed signal reads back under its new name only");
    float one[1] = {1};
    sg_act_store_put(s, "input", 0, one, 1, 1);
    tap_ok(sg_act_store_rename(s, "next_input", "input") == SG_EARG,
           "rename onto an existing signal refused: %s", sg_last_error());
    tap_ok(sg_act_store_rename(s, "nothing", "x") == SG_EMISSING,
           "rename of an unknown signal: SG_EMISSING");
    tap_ok(sg_act_store_drop(s, "input") == 0 && sg_act_store_drop(s, "next_input") == 0 &&
               count_entries(priv) == 0,
           "after dropping everything the private dir is empty");

    char priv_copy[4200];
    snprintf(priv_copy, sizeof priv_copy, "%s", priv);
    sg_act_store_put(s, "input", 0, data[0][4], shapes[4][0], shapes[4][1]);
    sg_act_store_close(s);
    tap_ok(!exists(priv_copy) && exists(sub) && count_entries(sub) == 0,
           "close removes the private dir (and its file), keeps the spill dir");

    sg_act_store *s1, *s2;
    sg_act_store_open(0, sub, &s1);
    sg_act_store_open(0, sub, &s2);
    tap_ok(strcmp(sg_act_store_spill_path(s1), sg_act_store_spill_path(s2)) != 0,
           "two stores on one spill dir get different private dirs");
    sg_act_store_close(s1);
    sg_act_store_close(s2);
    for (int g = 0; g < 2; g++)
        for (int i = 0; i < 5; i++)
            free(data[g][i]);
    remove_tree(root);
    free(root);
}

static void budget_bound(void)
{
    char *root = fresh_dir();
    const int64_t rows = 100, width = 333, bytes = rows * width * 4;
    sg_act_store *s;
    sg_act_store_open(3 * bytes + bytes / 2, root, &s);
    float *x[10];
    int ok = 1;
    for (int i = 0; i < 10; i++) {
        x[i] = activations(rows, width);
        ok &= sg_act_store_put(s, "capture", i, x[i], rows, width) == 0;
    }
    sg_act_store_stats_t st;
    sg_act_store_stats(s, &st);
    tap_ok(ok && st.chunks_resident == 3 && st.chunks_spilled == 7,
           "budget of 3.5 chunks: the first 3 stay in memory, 7 spill");
    tap_ok(st.peak_resident_bytes <= st.budget_bytes && st.resident_bytes == 3 * bytes,
           "peak resident %lld <= budget %lld", (long long)st.peak_resident_bytes,
           (long long)st.budget_bytes);
    ok = 1;
    for (int i = 0; i < 10; i++)
        ok &= round_trip(s, "capture", i, x[i], rows, width);
    tap_ok(ok, "memory and spilled chunks all read back bit-exactly");
    sg_act_store_drop(s, "capture");
    sg_act_store_stats(s, &st);
    tap_ok(st.resident_bytes == 0 && st.spill_files == 0 && st.spill_file_bytes == 0,
           "drop frees the memory and the files");
    sg_act_store_put(s, "next", 0, x[0], rows, width);
    sg_act_store_stats(s, &st);
    tap_ok(st.chunks_resident == 1 && st.chunks_spilled == 7,
           "freed budget takes the next chunk in memory again");
    float *big = activations(3 * rows, width); /* 3 chunks > the 2.5 left */
    tap_ok(sg_act_store_put(s, "big", 0, big, 3 * rows, width) == 0 &&
               round_trip(s, "big", 0, big, 3 * rows, width) &&
               count_entries(sg_act_store_spill_path(s)) == 1,
           "a chunk larger than what is left of the budget goes to disk");
    free(big);
    sg_act_store_close(s);
    for (int i = 0; i < 10; i++)
        free(x[i]);
    tap_ok(count_entries(root) == 0, "nothing left in the spill dir");
    rmdir(root);
    free(root);
}

/* One chunk spilled, its file damaged by `damage`, then a get. */
static void damaged(const char *what, void (*damage)(const char *path), int want1, int want2,
                    const char *word)
{
    char *root = fresh_dir();
    sg_act_store *s;
    sg_act_store_open(0, root, &s);
    float *x = activations(64, 1000);
    sg_act_store_put(s, "input", 0, x, 64, 1000);
    char path[4200];
    snprintf(path, sizeof path, "%s", only_file(sg_act_store_spill_path(s)));
    damage(path);
    float *y = malloc(64 * 1000 * sizeof *y);
    sg_clear_error();
    int rc = sg_act_store_get(s, "input", 0, y);
    tap_ok((rc == want1 || rc == want2) && strstr(sg_last_error(), path) &&
               (!word || strstr(sg_last_error(), word)),
           "%s: %s, \"%s\"", what, sg_strerror(rc), sg_last_error());
    sg_act_store_close(s);
    tap_ok(count_entries(root) == 0, "%s: close still removes everything", what);
    rmdir(root);
    free(root);
    free(x);
    free(y);
}

static void flip_at(const char *path, off_t off)
{
    int fd = open(path, O_RDWR);
    unsigned char c;
    if (off < 0)
        off += lseek(fd, 0, SEEK_END);
    if (pread(fd, &c, 1, off) == 1) {
        c ^= 0x10;
        if (pwrite(fd, &c, 1, off) != 1)
            perror("pwrite");
    }
    close(fd);
}
static void flip_middle(const char *path)
{
    struct stat st;
    stat(path, &st);
    flip_at(path, st.st_size / 2);
}
static void flip_checksum(const char *path) { flip_at(path, -1); }
static void flip_rows(const char *path) { flip_at(path, 8); }
static void cut_half(const char *path)
{
    struct stat st;
    stat(path, &st);
    if (truncate(path, st.st_size / 2) != 0)
        perror("truncate");
}
static void cut_header(const char *path)
{
    if (truncate(path, 20) != 0)
        perror("truncate");
}
static void append_junk(const char *path)
{
    FILE *f = fopen(path, "ab");
    fputs("junk", f);
    fclose(f);
}
static void delete_file(const char *path) { unlink(path); }

/* A child that spills, tells the parent, then keeps spilling (so the
 * signal may land mid-write) until killed. */
static void spill_forever(const char *root, int sig, int install, int ready_fd)
{
    signal(sig, SIG_DFL); /* make check may start us with SIGINT ignored */
    if (install && sg_act_store_install_signal_cleanup() != 0)
        _exit(2);
    sg_act_store *s;
    if (sg_act_store_open(0, root, &s) != 0)
        _exit(3);
    float *x = activations(64, 1000);
    for (int i = 0; i < 4; i++)
        if (sg_act_store_put(s, "input", i, x, 64, 1000) != 0)
            _exit(4);
    if (write(ready_fd, "r", 1) != 1)
        _exit(5);
    for (int64_t i = 0;; i++) {
        sg_act_store_put(s, "capture", i % 16, x, 64, 1000);
        if (i % 16 == 15)
            sg_act_store_drop(s, "capture");
    }
}

static void killed(int sig, const char *signame, int install)
{
    char *root = fresh_dir();
    int p[2];
    if (pipe(p) != 0)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        spill_forever(root, sig, install, p[1]);
    }
    close(p[1]);
    char c = 0;
    int ready = read(p[0], &c, 1) == 1;
    close(p[0]);
    usleep(30000);
    int entries = -1;
    if (ready) {
        char priv[4200];
        DIR *d = opendir(root);
        struct dirent *e;
        while (d && (e = readdir(d)))
            if (e->d_name[0] != '.')
                snprintf(priv, sizeof priv, "%s/%s", root, e->d_name);
        if (d)
            closedir(d);
        entries = count_entries(priv);
    }
    kill(pid, sig);
    int status = 0;
    for (int t = 0; t < 500 && waitpid(pid, &status, WNOHANG) == 0; t++)
        usleep(10000);
    if (kill(pid, 0) == 0) { /* still alive after 5 s: the handler hung */
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
    }
    int died = WIFSIGNALED(status) && WTERMSIG(status) == sig;
    if (install)
        tap_ok(ready && died && count_entries(root) == 0,
               "child killed by %s while spilling (%d files at the time) dies of it and "
               "leaves the spill dir empty",
               signame, entries);
    else /* control: shows the check above can fail */
        tap_ok(ready && died && count_entries(root) == 1,
               "control: without the handler, %s leaves the private dir behind", signame);
    remove_tree(root);
    free(root);
}

static void exit_without_close(void)
{
    char *root = fresh_dir();
    pid_t pid = fork();
    if (pid == 0) {
        sg_act_store *s;
        float x[100] = {1};
        if (sg_act_store_open(0, root, &s) != 0 || sg_act_store_put(s, "input", 0, x, 10, 10))
            _exit(3);
        exit(0); /* no close: the atexit hook cleans */
    }
    int status;
    waitpid(pid, &status, 0);
    tap_ok(WIFEXITED(status) && WEXITSTATUS(status) == 0 && count_entries(root) == 0,
           "exit() without close leaves the spill dir empty (atexit)");
    remove_tree(root);
    free(root);

    /* ...but a forked child exiting must not take its parent's files */
    root = fresh_dir();
    sg_act_store *s;
    sg_act_store_open(0, root, &s);
    float *x = activations(10, 10);
    sg_act_store_put(s, "input", 0, x, 10, 10);
    pid = fork();
    if (pid == 0)
        exit(0);
    waitpid(pid, &status, 0);
    tap_ok(round_trip(s, "input", 0, x, 10, 10),
           "a forked child's exit leaves the parent's spill files alone");
    sg_act_store_close(s);
    rmdir(root);
    free(root);
    free(x);
}

/* write() errors, two ways: a full disk (a 64 KiB tmpfs mounted in a
 * private mount namespace; needs CAP_SYS_ADMIN, skipped otherwise), and
 * RLIMIT_FSIZE, which fails writes past 64 KiB with EFBIG through the same
 * path and works for any user. Runs in a child; returns 77 for a skip. */
static int failing_write_child(const char *root, int full_disk, int msg_fd)
{
    if (full_disk) {
        if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) ||
            mount("tmpfs", root, "tmpfs", 0, "size=64k") != 0)
            return 77;
    } else {
        signal(SIGXFSZ, SIG_IGN);
        struct rlimit rl = {65536, 65536};
        setrlimit(RLIMIT_FSIZE, &rl);
    }
    sg_act_store *s;
    if (sg_act_store_open(0, root, &s) != 0)
        return 3;
    float *x = activations(100, 1000); /* ~360 KB compressed */
    int rc = sg_act_store_put(s, "input", 0, x, 100, 1000);
    dprintf(msg_fd, "%s", sg_last_error());
    int code = rc != (full_disk ? -ENOSPC : -EFBIG)                         ? 4
               : !strstr(sg_last_error(), sg_act_store_spill_path(s))       ? 5
               : count_entries(sg_act_store_spill_path(s)) != 0             ? 6
               : sg_act_store_chunks(s, "input") != 0                       ? 7
               : sg_act_store_put(s, "input", 0, x, 10, 10) != 0            ? 8
               : !round_trip(s, "input", 0, x, 10, 10)                      ? 9
                                                                            : 0;
    sg_act_store_close(s);
    if (count_entries(root) != 0)
        code = 10;
    return code;
}

static void write_error(int full_disk)
{
    const char *what = full_disk ? "disk full (ENOSPC)" : "file size limit (EFBIG)";
    char *root = fresh_dir();
    int p[2];
    if (pipe(p) != 0)
        return;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        _exit(failing_write_child(root, full_disk, p[1]));
    }
    close(p[1]);
    char msg[1024] = "";
    ssize_t n = read(p[0], msg, sizeof msg - 1);
    msg[n > 0 ? n : 0] = '\0';
    close(p[0]);
    int status;
    waitpid(pid, &status, 0);
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    if (code == 77)
        tap_skip(what, "cannot mount a tmpfs here (needs CAP_SYS_ADMIN)");
    else
        tap_ok(code == 0,
               "%s: a clean error naming the file, the partial file removed, the store "
               "still usable, nothing left after close (exit %d): \"%s\"",
               what, code, msg);
    remove_tree(root);
    free(root);
}

static void forced_pread(void)
{
    char *root = fresh_dir();
    const char *old = getenv("SG_IO");
    char *saved = old ? strdup(old) : NULL;
    setenv("SG_IO", "pread", 1);
    sg_act_store *s;
    sg_act_store_open(0, root, &s);
    float *x = activations(300, 5000); /* 6 MB: several 1 MiB pieces */
    int ok = sg_act_store_put(s, "input", 0, x, 300, 5000) == 0 &&
             round_trip(s, "input", 0, x, 300, 5000);
    sg_act_store_stats_t st;
    sg_act_store_stats(s, &st);
    tap_ok(ok && strcmp(st.io_backend, "pread") == 0,
           "SG_IO=pread: a 6 MB spilled chunk reads back bit-exactly through %s",
           st.io_backend);
    sg_act_store_close(s);
    if (saved)
        setenv("SG_IO", saved, 1);
    else
        unsetenv("SG_IO");
    free(saved);
    free(x);
    rmdir(root);
    free(root);
}

struct worker {
    sg_act_store *s;
    int id, ok;
};

static void *work(void *arg)
{
    struct worker *w = arg;
    char name[32];
    snprintf(name, sizeof name, "signal%d", w->id);
    float *x[8];
    w->ok = 1;
    for (int i = 0; i < 8; i++) {
        x[i] = malloc(50 * 777 * sizeof(float));
        for (int j = 0; j < 50 * 777; j++)
            x[i][j] = (float)(w->id * 1000 + i) + j * 1e-3f;
        w->ok &= sg_act_store_put(w->s, name, i, x[i], 50, 777) == 0;
    }
    for (int i = 0; i < 8; i++) {
        w->ok &= round_trip(w->s, name, i, x[i], 50, 777);
        free(x[i]);
    }
    w->ok &= sg_act_store_drop(w->s, name) == 0;
    return NULL;
}

static void threads(void)
{
    char *root = fresh_dir();
    sg_act_store *s;
    const int64_t bytes = 50 * 777 * 4;
    sg_act_store_open(5 * bytes, root, &s);
    struct worker w[4];
    pthread_t t[4];
    for (int i = 0; i < 4; i++) {
        w[i] = (struct worker){s, i, 0};
        pthread_create(&t[i], NULL, work, &w[i]);
    }
    int ok = 1;
    for (int i = 0; i < 4; i++) {
        pthread_join(t[i], NULL);
        ok &= w[i].ok;
    }
    sg_act_store_stats_t st;
    sg_act_store_stats(s, &st);
    tap_ok(ok && st.peak_resident_bytes <= 5 * bytes && st.chunks_spilled >= 3 &&
               count_entries(sg_act_store_spill_path(s)) == 0,
           "4 threads put, get and drop 8 chunks each; peak %lld <= budget, %lld spilled",
           (long long)st.peak_resident_bytes, (long long)st.chunks_spilled);
    sg_act_store_close(s);
    rmdir(root);
    free(root);
}

/* Compression ratio and speed on activation-like data, full float32 and
 * bf16-rounded; SG_ACT_BENCH_CHUNKS sets the number of 16 MiB chunks. */
static void measure(void)
{
    const char *env = getenv("SG_ACT_BENCH_CHUNKS");
    int chunks = env ? atoi(env) : 4;
    const int64_t rows = 1024, width = 4096, bytes = rows * width * 4;
    for (int bf = 0; bf < 2; bf++) {
        char *root = fresh_dir();
        sg_act_store *s;
        sg_act_store_open(0, root, &s);
        float *x = activations(rows, width), *y = malloc(bytes);
        if (bf)
            round_bf16(x, rows * width);
        int ok = 1;
        double t0 = now_s();
        for (int i = 0; i < chunks; i++)
            ok &= sg_act_store_put(s, "input", i, x, rows, width) == 0;
        double t1 = now_s();
        for (int i = 0; i < chunks; i++)
            ok &= sg_act_store_get(s, "input", i, y) == 0;
        double t2 = now_s();
        ok &= memcmp(x, y, bytes) == 0;
        sg_act_store_stats_t st;
        sg_act_store_stats(s, &st);
        double mb = chunks * bytes / 1e6;
        tap_ok(ok && st.spilled_compressed_bytes < st.spilled_raw_bytes,
               "%s activations (%d chunks of %lldx%lld): ratio %.3f, put %.0f MB/s, get %.0f "
               "MB/s",
               bf ? "bf16-rounded" : "float32", chunks, (long long)rows, (long long)width,
               (double)st.spilled_raw_bytes / st.spilled_compressed_bytes, mb / (t1 - t0),
               mb / (t2 - t1));
        sg_act_store_close(s);
        free(x);
        free(y);
        rmdir(root);
        free(root);
    }
}

int main(void)
{
    in_memory();
    forced_spill();
    budget_bound();

    damaged("a flipped byte in the data", flip_middle, SG_ECHECKSUM, SG_EFORMAT, "corrupt");
    damaged("a flipped byte in the checksum", flip_checksum, SG_ECHECKSUM, SG_ECHECKSUM,
            "corrupt");
    damaged("a flipped byte in the header's rows", flip_rows, SG_EFORMAT, SG_EFORMAT, "header");
    damaged("a file cut in half", cut_half, SG_EFORMAT, SG_EFORMAT, "truncated");
    damaged("a file cut inside its header", cut_header, SG_EFORMAT, SG_EFORMAT, "truncated");
    damaged("bytes appended", append_junk, SG_EFORMAT, SG_EFORMAT, "after");
    damaged("a deleted file", delete_file, -ENOENT, -ENOENT, "cannot open");

    killed(SIGTERM, "SIGTERM", 1);
    killed(SIGINT, "SIGINT", 1);
    killed(SIGTERM, "SIGTERM", 0);
    exit_without_close();
    write_error(0);
    write_error(1);
    forced_pread();
    threads();
    measure();
    return tap_done();
}
