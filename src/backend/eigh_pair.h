/* The mixed eigensolver's test and correction for one pair (i, j) of
 * eigenvector estimates (backend.h, "The mixed eigensolver"), written
 * once for the CPU backend's loops and the CUDA kernels. */
#ifndef SG_EIGH_PAIR_H
#define SG_EIGH_PAIR_H

#include <math.h>
#include <stdint.h>

#include "host_device.h"

/* t = {κ, τ, γ} of backend.h, by value so a kernel can take it */
typedef struct {
    double kappa, tau, gamma;
} sg_pair_rule;

/* 0 resolved, 1 separated, 2 clustered; *c the coupling left */
SG_HOST_DEVICE static inline int sg_pair_kind(double s, double g, double li, double lj,
                                              sg_pair_rule t, double *c)
{
    double gap = fabs(lj - li);
    *c = fmax(fabs(s - lj * g), fabs(s - li * g));
    if (*c <= t.tau)
        return 0;
    return gap > t.gamma && *c <= t.kappa * gap ? 1 : 2;
}

/* E's entries (i, j) and (j, i), i ≠ j, from S and G (ld ld): the
 * first-order correction where the pair is separated, else the
 * orthogonalization (δ_ij − g_ij)/2; lam NULL: orthogonalization only.
 * *gij = the symmetrized g_ij, *c = the coupling (0 without lam). */
SG_HOST_DEVICE static inline void sg_pair_correction(const double *s, const double *g, int64_t ld,
                                                     int64_t i, int64_t j, const double *lam,
                                                     sg_pair_rule t, double *eij, double *eji,
                                                     double *gij, double *c)
{
    *gij = 0.5 * (g[i * ld + j] + g[j * ld + i]);
    *c = 0;
    if (lam) {
        double sij = 0.5 * (s[i * ld + j] + s[j * ld + i]);
        if (sg_pair_kind(sij, *gij, lam[i], lam[j], t, c) == 1) {
            *eij = (sij - lam[j] * *gij) / (lam[j] - lam[i]);
            *eji = (sij - lam[i] * *gij) / (lam[i] - lam[j]);
            return;
        }
    }
    *eij = *eji = -*gij / 2;
}

#endif
