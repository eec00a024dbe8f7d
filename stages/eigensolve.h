/* Stage "eigensolve": the principal directions of a covariance.
 *
 * SliceGPT takes Q = eigenvectors of H + δI with δ = 1% of mean(diag H)
 * (damping, so a rank-deficient H still has a well-defined basis), sorted
 * by eigenvalue, largest first. Solved in float64 by LAPACK's divide and
 * conquer dsyevd, as the reference does: float32 eigenvectors cost real
 * perplexity on large models. */
#ifndef SG_STAGE_EIGENSOLVE_H
#define SG_STAGE_EIGENSOLVE_H

#include <stdint.h>

/* h: (d, d) symmetric, row-major, overwritten. On return q (d, d) row-major
 * holds eigenvector j in column j, eigenvalues (d) descending (damping
 * included, as the reference reports them). damp_frac: 0.01 for SliceGPT. */
int sg_eigh_descending(double *h, int64_t d, double damp_frac, double *q, double *eigenvalues);

/* A random orthogonal (d, d) matrix (QR of a Gaussian matrix, seeded): the
 * control that shows what PCA buys over any rotation. */
int sg_random_orthogonal(int64_t d, uint64_t seed, double *q);

#endif
