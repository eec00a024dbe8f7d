/* Registry of private scratch directories, emptied on SIGINT/SIGTERM/SIGHUP
 * and at exit. See cleanup.h for why it is built this way. */
#include "cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <unistd.h>

/* One registered directory. seq is odd while an owner rewrites the slot;
 * the signal handler copies live/pid/path and keeps the copy only if seq
 * was even and unchanged around the copy (a seqlock). used is the owners'
 * claim on the slot, taken with compare-and-swap. */
struct slot {
    atomic_uint seq;
    atomic_int used;
    int live;
    pid_t pid;
    char path[PATH_MAX];
};

static struct slot slots[SG_CLEANUP_MAX_DIRS];
static pthread_once_t atexit_once = PTHREAD_ONCE_INIT;
static pthread_mutex_t install_lock = PTHREAD_MUTEX_INITIALIZER;
static int signals_installed;

static void at_exit(void) { sg_cleanup_run(); }
static void install_atexit(void) { atexit(at_exit); }

int sg_cleanup_register_dir(const char *path, int *slot)
{
    size_t len = strlen(path);
    if (len >= PATH_MAX)
        return -ENAMETOOLONG;
    pthread_once(&atexit_once, install_atexit);
    for (int i = 0; i < SG_CLEANUP_MAX_DIRS; i++) {
        int expected = 0;
        if (!atomic_compare_exchange_strong(&slots[i].used, &expected, 1))
            continue;
        struct slot *s = &slots[i];
        atomic_fetch_add(&s->seq, 1); /* odd: being written */
        memcpy(s->path, path, len + 1);
        s->pid = getpid();
        s->live = 1;
        atomic_fetch_add(&s->seq, 1); /* even: consistent */
        *slot = i;
        return 0;
    }
    return -EMFILE;
}

void sg_cleanup_unregister(int slot)
{
    if (slot < 0 || slot >= SG_CLEANUP_MAX_DIRS)
        return;
    struct slot *s = &slots[slot];
    atomic_fetch_add(&s->seq, 1);
    s->live = 0;
    atomic_fetch_add(&s->seq, 1);
    atomic_store(&s->used, 0);
}

/* getdents64 record; the kernel's layout (glibc's dirent64 has the same). */
struct dirent64_rec {
    unsigned long long d_ino;
    long long d_off;
    unsigned short d_reclen;
    unsigned char d_type;
    char d_name[];
};

int sg_cleanup_remove_dir(const char *path)
{
    int first_err = 0;
    /* Files created by another thread while we list are caught by the next
     * pass; unlinking while listing may also make getdents skip entries. */
    for (int pass = 0; pass < 16; pass++) {
        int fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
        if (fd < 0)
            return errno == ENOENT ? 0 : -errno;
        char buf[4096] __attribute__((aligned(8)));
        long n;
        while ((n = syscall(SYS_getdents64, fd, buf, sizeof buf)) > 0) {
            for (long off = 0; off < n;) {
                struct dirent64_rec *d = (struct dirent64_rec *)(buf + off);
                off += d->d_reclen;
                const char *nm = d->d_name;
                if (nm[0] == '.' && (nm[1] == '\0' || (nm[1] == '.' && nm[2] == '\0')))
                    continue;
                if (unlinkat(fd, nm, 0) != 0 && errno != ENOENT && !first_err)
                    first_err = -errno;
            }
        }
        close(fd);
        if (rmdir(path) == 0 || errno == ENOENT)
            return first_err;
        if (errno != ENOTEMPTY && errno != EEXIST)
            return first_err ? first_err : -errno;
    }
    return first_err ? first_err : -ENOTEMPTY;
}

void sg_cleanup_run(void)
{
    int saved = errno;
    pid_t me = getpid();
    for (int i = 0; i < SG_CLEANUP_MAX_DIRS; i++) {
        struct slot *s = &slots[i];
        unsigned s1 = atomic_load(&s->seq);
        if (s1 & 1)
            continue; /* being rewritten by the thread we interrupted */
        int live = s->live;
        pid_t pid = s->pid;
        char path[PATH_MAX];
        if (live)
            memcpy(path, s->path, sizeof path);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load(&s->seq) != s1 || !live || pid != me)
            continue;
        path[PATH_MAX - 1] = '\0';
        sg_cleanup_remove_dir(path);
    }
    errno = saved;
}

static void on_signal(int sig)
{
    sg_cleanup_run();
    /* Die of the same signal, so the parent sees what killed us. */
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    sigaction(sig, &sa, NULL);
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, sig);
    raise(sig); /* pending while the handler blocks it */
    sigprocmask(SIG_UNBLOCK, &set, NULL);
}

int sg_cleanup_install_signals(void)
{
    static const int sigs[] = {SIGINT, SIGTERM, SIGHUP};
    pthread_once(&atexit_once, install_atexit);
    pthread_mutex_lock(&install_lock);
    int err = 0;
    for (size_t i = 0; !signals_installed && i < sizeof sigs / sizeof sigs[0]; i++) {
        struct sigaction old, sa;
        if (sigaction(sigs[i], NULL, &old) != 0) {
            err = -errno;
            break;
        }
        if ((old.sa_flags & SA_SIGINFO) || old.sa_handler != SIG_DFL)
            continue; /* ignored, or the program has its own handler */
        memset(&sa, 0, sizeof sa);
        sa.sa_handler = on_signal;
        sigfillset(&sa.sa_mask); /* a second signal waits for the first cleanup */
        if (sigaction(sigs[i], &sa, NULL) != 0) {
            err = -errno;
            break;
        }
    }
    if (!err)
        signals_installed = 1;
    pthread_mutex_unlock(&install_lock);
    return err;
}
