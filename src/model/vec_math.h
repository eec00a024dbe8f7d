/* The forward pass's elementwise loops, vectorised: softmax rows,
 * SiLU-gated products and log-sum-exp over logits. Each has an AVX2+FMA
 * version (chosen at run time from CPUID) and a scalar one with the same
 * polynomial exp (Cephes' expf: |relative error| < 2 ulp over the float
 * range), so results agree with libm's expf to float32 rounding whichever
 * runs. Accumulation stays float32 where the scalar code was float32
 * (softmax sums) and float64 where it was float64 (log-sum-exp). */
#ifndef SG_VEC_MATH_H
#define SG_VEC_MATH_H

#include <stdint.h>

/* x[0..n) = softmax of x[0..n); x[n..total) = 0 (the causal mask). */
void sg_softmax_row(float *x, int64_t n, int64_t total);

/* up[i] *= silu(gate[i]) = gate[i] / (1 + exp(-gate[i])), i < n;
 * with gate NULL, up[i] = silu(up[i]). */
void sg_silu_mul(float *up, const float *gate, int64_t n);

/* log(sum_j exp(row[j])) over n values, the sum in float64. */
double sg_logsumexp(const float *row, int64_t n);

#endif
