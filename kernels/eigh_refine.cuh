/* The two O(n²) steps of the mixed eigensolver's sweep (backend.h, "The
 * mixed eigensolver"): which pairs are clustered, and the correction E.
 * The pair rule and correction are the CPU's (src/eigh_pair.h). */
#ifndef SG_CUDA_EIGH_REFINE_CUH
#define SG_CUDA_EIGH_REFINE_CUH

#include "cuda_common.cuh"

/* hi (device, n): the largest j > i clustered with i, or i. g NULL: G = I.
 * lam (device, n); t = {κ, τ, γ}. */
int sg_cuda_couple(cudaStream_t st, const double *s, const double *g, int64_t n, int64_t ld,
                   const double *lam, const double t[3], int64_t *hi);

/* S ← E in place; lam NULL: E = (I − G)/2. stat (device, 3) receives max
 * |e|, max c, max |g − I| (zeroed here first; NaN counts as infinite). */
int sg_cuda_correction(cudaStream_t st, double *s, const double *g, int64_t n, int64_t ld,
                       const double *lam, const double t[3], double *stat);

#endif
