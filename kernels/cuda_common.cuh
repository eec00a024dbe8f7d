/* What every CUDA file of the backend shares: the backend's context, the
 * check macros, and launch geometry helpers.
 *
 * The library never exits: each check turns a failed CUDA, cuBLAS or
 * cuSOLVER call into an error code with a one-line message naming the
 * file, the line and the call (sg_error.h), through one reporting
 * function. Use them as
 *     int err = CU(cudaMalloc(&p, bytes));
 *     err = err ? err : CUBLAS(cublasDgemm(...));
 *     if (err) goto done;
 * A kernel launch is followed by CU_LAUNCHED(). */
#ifndef SG_CUDA_COMMON_CUH
#define SG_CUDA_COMMON_CUH

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusolverDn.h>
#include <stddef.h>
#include <stdint.h>

extern "C" {
#include "backend.h"
#include "forward_ops.h"
#include "sg_error.h"
}

/* One allocation made through the backend, for accounting. */
typedef struct {
    void *ptr;
    size_t bytes;
} sg_cuda_block;

typedef struct {
    int device;
    cudaStream_t stream;
    cudaStream_t side;     /* upload_async's queue */
    cudaEvent_t ev_main, ev_side;
    cublasHandle_t blas;
    cusolverDnHandle_t solver;
    size_t cap, in_use, peak;
    sg_cuda_block *blocks; /* live allocations */
    int n_blocks, blocks_cap;
    void *scratch;         /* one growable workspace, counted in in_use */
    size_t scratch_bytes;
    int *info;             /* cuSOLVER's devInfo */
    double *stat;          /* (4) reduction results */
    int64_t *hi;           /* (hi_cap) the eigensolver's run reach */
    double *lam;           /* (hi_cap) eigenvalue estimates */
    int64_t hi_cap;
} sg_cuda;

static inline sg_cuda *sg_cuda_of(sg_backend *be) { return (sg_cuda *)be->ctx; }

/* The one reporting function: records "file:line: expr: what" and returns
 * the code (-ENOMEM for allocation failures, -EIO for the rest). */
int sg_cuda_fail(int code, const char *what, const char *expr, const char *file, int line);
int sg_cuda_rt(cudaError_t e, const char *expr, const char *file, int line);
int sg_cuda_blas(cublasStatus_t s, const char *expr, const char *file, int line);
int sg_cuda_solver(cusolverStatus_t s, const char *expr, const char *file, int line);

#define CU(call) sg_cuda_rt((call), #call, __FILE__, __LINE__)
#define CUBLAS(call) sg_cuda_blas((call), #call, __FILE__, __LINE__)
#define CUSOLVER(call) sg_cuda_solver((call), #call, __FILE__, __LINE__)
#define CU_LAUNCHED() sg_cuda_rt(cudaGetLastError(), "kernel launch", __FILE__, __LINE__)

/* Blocks of `threads` covering n items, capped where a grid-stride loop
 * takes over. */
static inline unsigned sg_blocks(int64_t n, int threads)
{
    int64_t b = (n + threads - 1) / threads;
    return (unsigned)(b < 1 ? 1 : b > 65535 * 16 ? 65535 * 16 : b);
}

/* Scratch of at least `bytes` (grown, never shrunk, within the cap). */
int sg_cuda_scratch(sg_cuda *c, size_t bytes, void **out);

#endif
