#include "parallel.h"

#include <cblas.h>
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#define CPU_RELAX() _mm_pause()
#else
#define CPU_RELAX() ((void)0)
#endif

#define MAX_WORKERS 256
/* Pause rounds a worker spins before sleeping: about 50 µs, long enough to
 * catch the next item set of a block forward, short enough not to steal
 * a core from other work between passes. */
#define SPIN_ROUNDS 4000

typedef void (*item_fn)(void *ctx, int64_t i, int worker);

static struct {
    pthread_once_t once;
    int workers;             /* caller included */
    pthread_mutex_t busy;    /* held by the thread whose items run */
    pthread_mutex_t m;
    pthread_cond_t wake, done;
    /* the current item set */
    item_fn fn;
    void *ctx;
    int64_t n;
    int64_t next;            /* atomic: the next item to hand out */
    unsigned long gen;       /* atomic: bumped for every item set */
    int active;              /* atomic: workers still on this set */
} pool = {.once = PTHREAD_ONCE_INIT,
          .busy = PTHREAD_MUTEX_INITIALIZER,
          .m = PTHREAD_MUTEX_INITIALIZER,
          .wake = PTHREAD_COND_INITIALIZER,
          .done = PTHREAD_COND_INITIALIZER};

static _Thread_local int in_item;

static void run_items(int worker)
{
    int64_t i;
    in_item = 1;
    while ((i = __atomic_fetch_add(&pool.next, 1, __ATOMIC_ACQ_REL)) < pool.n)
        pool.fn(pool.ctx, i, worker);
    in_item = 0;
}

static void *worker_main(void *arg)
{
    int worker = (int)(intptr_t)arg;
    unsigned long seen = 0;
    for (;;) {
        unsigned long gen;
        int spins = 0;
        while ((gen = __atomic_load_n(&pool.gen, __ATOMIC_ACQUIRE)) == seen &&
               spins++ < SPIN_ROUNDS)
            CPU_RELAX();
        if (gen == seen) {
            pthread_mutex_lock(&pool.m);
            while ((gen = __atomic_load_n(&pool.gen, __ATOMIC_ACQUIRE)) == seen)
                pthread_cond_wait(&pool.wake, &pool.m);
            pthread_mutex_unlock(&pool.m);
        }
        seen = gen;
        run_items(worker);
        if (__atomic_sub_fetch(&pool.active, 1, __ATOMIC_ACQ_REL) == 0) {
            pthread_mutex_lock(&pool.m);
            pthread_cond_signal(&pool.done);
            pthread_mutex_unlock(&pool.m);
        }
    }
    return NULL;
}

static void pool_init(void)
{
    int n = openblas_get_num_threads();
    if (n < 1)
        n = 1;
    if (n > MAX_WORKERS)
        n = MAX_WORKERS;
    pool.workers = 1;
    for (int w = 1; w < n; w++) {
        pthread_t t;
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        int rc = pthread_create(&t, &attr, worker_main, (void *)(intptr_t)w);
        pthread_attr_destroy(&attr);
        if (rc)
            break; /* fewer workers: the same results, more slowly */
        pool.workers++;
    }
}

int sg_parallel_workers(void)
{
    pthread_once(&pool.once, pool_init);
    return pool.workers;
}

int64_t sg_parallel_slices(int64_t rows, int64_t min_rows)
{
    int64_t p = sg_parallel_workers(), k = rows / (min_rows > 0 ? min_rows : 1);
    if (k >= 2 * p)
        return 2 * p;
    if (k >= p)
        return p;
    return k > 1 ? k : 1;
}

void sg_parallel_for(int64_t n, void (*fn)(void *ctx, int64_t i, int worker), void *ctx)
{
    int workers = sg_parallel_workers();
    if (n <= 0)
        return;
    if (workers == 1 || n == 1 || in_item || pthread_mutex_trylock(&pool.busy)) {
        for (int64_t i = 0; i < n; i++)
            fn(ctx, i, 0);
        return;
    }
    int blas = openblas_get_num_threads();
    if (blas != 1)
        openblas_set_num_threads(1);
    pool.fn = fn;
    pool.ctx = ctx;
    pool.n = n;
    __atomic_store_n(&pool.next, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&pool.active, workers - 1, __ATOMIC_RELAXED);
    pthread_mutex_lock(&pool.m);
    __atomic_add_fetch(&pool.gen, 1, __ATOMIC_ACQ_REL);
    pthread_cond_broadcast(&pool.wake);
    pthread_mutex_unlock(&pool.m);
    run_items(0);
    int spins = 0;
    while (__atomic_load_n(&pool.active, __ATOMIC_ACQUIRE) && spins++ < SPIN_ROUNDS)
        CPU_RELAX();
    if (__atomic_load_n(&pool.active, __ATOMIC_ACQUIRE)) {
        pthread_mutex_lock(&pool.m);
        while (__atomic_load_n(&pool.active, __ATOMIC_ACQUIRE))
            pthread_cond_wait(&pool.done, &pool.m);
        pthread_mutex_unlock(&pool.m);
    }
    if (blas != 1)
        openblas_set_num_threads(blas);
    pthread_mutex_unlock(&pool.busy);
}
