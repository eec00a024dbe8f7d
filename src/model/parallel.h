/* A small pool of worker threads for the CPU forward pass and kernels.
 *
 * OpenBLAS threads each GEMM on its own, which pays for large products but
 * not for the many small ones of attention, nor for the loops between
 * GEMMs, which then run on one core while OpenBLAS's idle threads spin in
 * sched_yield. Here the work is cut into items (row slices, attention
 * tiles) that the pool's workers take in turn, each calling OpenBLAS
 * single-threaded on its own item.
 *
 * Results never depend on timing: an item's output is computed by one
 * worker, alone, in a fixed order, and items write disjoint memory. How
 * the work is cut depends only on its size and on sg_parallel_workers(). */
#ifndef SG_PARALLEL_H
#define SG_PARALLEL_H

#include <stdint.h>

/* Workers in the pool, the caller included: OpenBLAS's own thread count
 * at first use (OPENBLAS_NUM_THREADS, else the online CPUs), so one knob
 * sets both. */
int sg_parallel_workers(void);

/* Runs fn(ctx, i, worker) for every i in [0, n), items handed out in
 * order to whichever worker is free; worker is in [0, sg_parallel_workers())
 * and indexes per-worker scratch. OpenBLAS runs single-threaded meanwhile.
 * Returns when all are done. Called from inside an item, or while another
 * thread uses the pool, it runs the items itself (worker 0 then being
 * that thread's: nested callers must not share worker-0 scratch with
 * their caller). */
void sg_parallel_for(int64_t n, void (*fn)(void *ctx, int64_t i, int worker), void *ctx);

/* Rows [*a, *b) of slice i of n rows cut into k near-equal slices. */
static inline void sg_slice_rows(int64_t n, int64_t k, int64_t i, int64_t *a, int64_t *b)
{
    *a = n * i / k;
    *b = n * (i + 1) / k;
}

/* How many slices to cut `rows` rows into: at least one per worker (when
 * there are enough rows), about min_rows each otherwise coarser. */
int64_t sg_parallel_slices(int64_t rows, int64_t min_rows);

#endif
