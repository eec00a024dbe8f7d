#include "cpu_kernels.h"

#include <errno.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sg_error.h"

int sg_eigh_descending(double *h, int64_t d, double damp_frac, double *q, double *eigenvalues)
{
    double mean_diag = 0;
    for (int64_t i = 0; i < d; i++)
        mean_diag += h[i * d + i];
    mean_diag /= d;
    for (int64_t i = 0; i < d; i++) {
        if (!isfinite(h[i * d + i]))
            return sg_fail(SG_ENUMERIC, "covariance has a non-finite diagonal entry at %lld",
                           (long long)i);
        h[i * d + i] += damp_frac * mean_diag;
    }
    double *w = malloc(d * sizeof(double));
    if (!w)
        return sg_fail(-ENOMEM, "out of memory for eigenvalues");
    /* dsyevd leaves eigenvectors in the columns of h, eigenvalues ascending */
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int)d, h, (lapack_int)d, w);
    if (info != 0) {
        free(w);
        return sg_fail(SG_ENUMERIC, "dsyevd failed (info %d) on a %lld x %lld covariance",
                       (int)info, (long long)d, (long long)d);
    }
    for (int64_t j = 0; j < d; j++) {
        int64_t src = d - 1 - j;
        eigenvalues[j] = w[src];
        for (int64_t i = 0; i < d; i++)
            q[i * d + j] = h[i * d + src];
    }
    free(w);
    return 0;
}

static uint64_t splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

int sg_random_orthogonal(int64_t d, uint64_t seed, double *q)
{
    double *tau = malloc(d * sizeof(double));
    if (!tau)
        return sg_fail(-ENOMEM, "out of memory for a random rotation");
    for (int64_t i = 0; i < d * d; i++) {
        double u1 = ((splitmix(&seed) >> 11) + 1.0) / 9007199254740993.0;
        double u2 = (splitmix(&seed) >> 11) / 9007199254740992.0;
        q[i] = sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
    }
    lapack_int info = LAPACKE_dgeqrf(LAPACK_ROW_MAJOR, (lapack_int)d, (lapack_int)d, q,
                                     (lapack_int)d, tau);
    if (!info)
        info = LAPACKE_dorgqr(LAPACK_ROW_MAJOR, (lapack_int)d, (lapack_int)d, (lapack_int)d, q,
                              (lapack_int)d, tau);
    free(tau);
    return info ? sg_fail(SG_ENUMERIC, "QR of a random matrix failed (info %d)", (int)info) : 0;
}
