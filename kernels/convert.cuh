/* Conversions and small matrix utilities on device memory: float32 <->
 * float64 (2-D, strided), cuSOLVER's column-major ascending eigenvectors
 * -> our row-major descending columns, mirroring a triangle, the
 * diagonal. All enqueue on `st` and return 0 or a code. */
#ifndef SG_CUDA_CONVERT_CUH
#define SG_CUDA_CONVERT_CUH

#include "cuda_common.cuh"

/* dst (rows, cols; ld ldd) = src (ld lds), widened or narrowed */
int sg_cuda_f32_to_f64(cudaStream_t st, double *dst, int64_t ldd, const float *src, int64_t lds,
                       int64_t rows, int64_t cols);
int sg_cuda_f64_to_f32(cudaStream_t st, float *dst, int64_t ldd, const double *src, int64_t lds,
                       int64_t rows, int64_t cols);

/* x (n, n) row-major, column j = eigenvector n-1-j of a cuSOLVER result v
 * (column-major, ld n, eigenvectors ascending in its columns). */
int sg_cuda_eigvecs_f64(cudaStream_t st, double *x, const double *v, int64_t n);
int sg_cuda_eigvecs_f32(cudaStream_t st, double *x, const float *v, int64_t n);

/* h (d, d) row-major: the lower triangle set from the upper one. */
int sg_cuda_mirror_upper(cudaStream_t st, double *h, int64_t d);

/* h (d, d) row-major: its upper triangle (j >= i) += s's, widened */
int sg_cuda_add_upper_f32(cudaStream_t st, double *h, const float *s, int64_t d);

/* diag(m) += v, for m (n, n; ld ld) */
int sg_cuda_diag_add(cudaStream_t st, double *m, int64_t n, int64_t ld, double v);

/* m (n, n; ld ld) = I */
int sg_cuda_set_identity(cudaStream_t st, double *m, int64_t n, int64_t ld);

#endif
