/* The check macros' reporting functions and the scratch workspace. */
#include "cuda_common.cuh"

#include <errno.h>

int sg_cuda_fail(int code, const char *what, const char *expr, const char *file, int line)
{
    return sg_fail(code, "%s:%d: %s: %s", file, line, expr, what);
}

int sg_cuda_rt(cudaError_t e, const char *expr, const char *file, int line)
{
    if (e == cudaSuccess)
        return 0;
    cudaGetLastError(); /* clear a sticky-free error so the next call is clean */
    return sg_cuda_fail(e == cudaErrorMemoryAllocation ? -ENOMEM : -EIO, cudaGetErrorString(e),
                        expr, file, line);
}

static const char *blas_status(cublasStatus_t s)
{
    switch (s) {
    case CUBLAS_STATUS_NOT_INITIALIZED: return "cuBLAS not initialized";
    case CUBLAS_STATUS_ALLOC_FAILED: return "cuBLAS allocation failed";
    case CUBLAS_STATUS_INVALID_VALUE: return "cuBLAS invalid value";
    case CUBLAS_STATUS_ARCH_MISMATCH: return "cuBLAS architecture mismatch";
    case CUBLAS_STATUS_EXECUTION_FAILED: return "cuBLAS execution failed";
    case CUBLAS_STATUS_INTERNAL_ERROR: return "cuBLAS internal error";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "cuBLAS not supported";
    default: return "cuBLAS error";
    }
}

int sg_cuda_blas(cublasStatus_t s, const char *expr, const char *file, int line)
{
    if (s == CUBLAS_STATUS_SUCCESS)
        return 0;
    return sg_cuda_fail(s == CUBLAS_STATUS_ALLOC_FAILED ? -ENOMEM : -EIO, blas_status(s), expr,
                        file, line);
}

int sg_cuda_solver(cusolverStatus_t s, const char *expr, const char *file, int line)
{
    if (s == CUSOLVER_STATUS_SUCCESS)
        return 0;
    const char *what = s == CUSOLVER_STATUS_ALLOC_FAILED     ? "cuSOLVER allocation failed"
                       : s == CUSOLVER_STATUS_INVALID_VALUE  ? "cuSOLVER invalid value"
                       : s == CUSOLVER_STATUS_EXECUTION_FAILED ? "cuSOLVER execution failed"
                       : s == CUSOLVER_STATUS_NOT_INITIALIZED ? "cuSOLVER not initialized"
                                                              : "cuSOLVER error";
    return sg_cuda_fail(s == CUSOLVER_STATUS_ALLOC_FAILED ? -ENOMEM : -EIO, what, expr, file,
                        line);
}

int sg_cuda_scratch(sg_cuda *c, size_t bytes, void **out)
{
    if (bytes <= c->scratch_bytes) {
        *out = c->scratch;
        return 0;
    }
    bytes = (bytes + 0xfffff) & ~(size_t)0xfffff; /* whole MiB: fewer regrowths */
    size_t without = c->in_use - c->scratch_bytes;
    if (c->cap && without + bytes > c->cap)
        return sg_fail(-ENOMEM, "CUDA workspace of %zu MiB would pass the %zu MiB cap (%zu MiB in use)",
                       bytes >> 20, c->cap >> 20, without >> 20);
    int err = CU(cudaStreamSynchronize(c->stream));
    if (c->scratch)
        err = err ? err : CU(cudaFree(c->scratch));
    c->scratch = NULL;
    c->in_use = without;
    c->scratch_bytes = 0;
    err = err ? err : CU(cudaMalloc(&c->scratch, bytes));
    if (err)
        return err;
    c->scratch_bytes = bytes;
    c->in_use += bytes;
    if (c->in_use > c->peak)
        c->peak = c->in_use;
    *out = c->scratch;
    return 0;
}
