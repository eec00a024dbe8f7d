/* The mixed-precision eigensolver driver every backend shares
 * (sg_eigh_run): the damping and checks of every backend's eigh, and the
 * float32 solve refined in float64 (the method is described in
 * backend.h), written once against a backend's sg_eigh_prims and its
 * alloc, release and copy, so it runs wherever those do. */
#include "backend.h"

#include <errno.h>
#include <float.h>
#include <lapacke.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sg_error.h"

#define MIX_KAPPA 1e-3   /* a pair is clustered when its correction would exceed this */
#define MIX_GAMMA 1e4    /* pairs closer than this many ε‖A‖ are never separated */
#define MIX_SMALL 48     /* runs this short are solved by dsyevd on the host */
#define MIX_MAXIT 12     /* refinement sweeps before giving up (dsyevd instead) */
#define MIX_MAXDEPTH 6   /* nested sub-problems; deeper ones use eigh_f64 */
#define MIX_POLISH 4     /* orthogonalization-only steps at most */
#define MIX_PRE_ORTH 1e-10 /* ‖XᵀX − I‖_max a sweep starts from */

/* Thresholds of one solve, absolute, inherited by its sub-problems. */
typedef struct {
    double rule[3]; /* κ, τ (the rounding floor of couplings), γ */
    double conv;    /* sweeps stop when every coupling is below this */
    double orth;    /* polishing stops when ‖G − I‖_max is below this */
} mix_tol;

static _Thread_local sg_eigh_stats mix_stats;

void sg_eigh_last_stats(sg_eigh_stats *out) { *out = mix_stats; }

typedef struct {
    sg_backend *be;
    const sg_eigh_prims *p;
} mixer;

static int mix_alloc(mixer *c, int64_t count, double **out)
{
    return c->be->ops->alloc(c->be, (size_t)count * sizeof(double), (void **)out);
}

static void mix_release(mixer *c, double *p)
{
    if (p)
        c->be->ops->release(c->be, p);
}

/* Runs of clustered pairs: hi[i] is the farthest j > i clustered with i;
 * index i is linked to i + 1 while some pair reaching past i started at
 * or before i. Writes starts and lengths of runs of two or more; returns
 * their count. */
static int64_t mix_runs(const int64_t *hi, int64_t n, int64_t *start, int64_t *len)
{
    int64_t count = 0, reach = -1, a = 0;
    for (int64_t i = 0; i < n; i++) {
        if (hi[i] > reach)
            reach = hi[i];
        if (reach > i)
            continue; /* i is linked to i + 1 */
        if (i > a) {
            start[count] = a;
            len[count++] = i - a + 1;
        }
        a = i + 1;
    }
    return count;
}

static int mix_refine(mixer *c, const double *a, int64_t n, int64_t lda, double *x, double *w,
                      int depth, const mix_tol *tol);

/* The run's Rayleigh quotient B (m, m; ld ldb) as a problem of its own:
 * T (m, m; ld m) its eigenvectors in columns, mu (host, m) descending.
 * tol: the parent's thresholds (B's entries carry the parent's rounding). */
static int mix_subproblem(mixer *c, const double *b, int64_t m, int64_t ldb, double *t,
                          double *mu, int depth, const mix_tol *tol)
{
    sg_backend *be = c->be;
    int err = 0;
    mix_stats.clusters++;
    if (m > mix_stats.largest)
        mix_stats.largest = m;
    if (depth > mix_stats.depth)
        mix_stats.depth = depth;

    if (m <= MIX_SMALL) {
        /* short: dsyevd on the host, where a call costs microseconds */
        double *hb = malloc(m * m * sizeof(double)), *hw = malloc(m * sizeof(double));
        double *ht = malloc(m * m * sizeof(double));
        if (!hb || !hw || !ht) {
            free(hb), free(hw), free(ht);
            return sg_fail(-ENOMEM, "out of memory for a %lld-wide eigenvalue cluster",
                           (long long)m);
        }
        err = c->p->copy2d(be, hb, m, b, ldb, m, m, SG_COPY_D2H);
        if (!err) {
            lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int)m, hb,
                                             (lapack_int)m, hw);
            if (info)
                err = sg_fail(SG_ENUMERIC, "dsyevd failed (info %d) on a %lld-wide cluster",
                              (int)info, (long long)m);
        }
        if (!err) {
            for (int64_t j = 0; j < m; j++) {
                mu[j] = hw[m - 1 - j];
                for (int64_t i = 0; i < m; i++)
                    ht[i * m + j] = hb[i * m + (m - 1 - j)];
            }
            err = c->p->copy2d(be, t, m, ht, m, m, m, SG_COPY_H2D);
        }
        free(hb), free(hw), free(ht);
        return err;
    }
    if (depth >= MIX_MAXDEPTH)
        return c->p->eigh_f64(be, b, m, ldb, t, mu);

    /* Start from the identity when B is nearly diagonal already (a run
     * re-solved in a later sweep), else from a float32 solve at the run's
     * own scale: of B − μI, μ the middle of its diagonal, since a run's
     * eigenvalues may sit close together far from zero (damping puts a
     * whole tail there) and float32 resolves only relative to ‖B − μI‖. */
    int64_t *hi = malloc(3 * m * sizeof(int64_t)), longest = 0;
    double *shifted = NULL, lo = INFINITY, up = -INFINITY;
    if (!hi)
        return sg_fail(-ENOMEM, "out of memory for an eigenvalue cluster");
    err = c->p->diag_get(be, b, m, ldb, mu);
    err = err ? err : c->p->couple(be, b, NULL, m, ldb, mu, tol->rule, hi);
    if (!err) {
        int64_t runs = mix_runs(hi, m, hi + m, hi + 2 * m);
        for (int64_t r = 0; r < runs; r++)
            if (hi[2 * m + r] > longest)
                longest = hi[2 * m + r];
        for (int64_t i = 0; i < m; i++)
            lo = fmin(lo, mu[i]), up = fmax(up, mu[i]);
    }
    free(hi);
    double shift = 0.5 * (lo + up);
    err = err ? err : mix_alloc(c, m * m, &shifted);
    err = err ? err : c->p->copy2d(be, shifted, m, b, ldb, m, m, SG_COPY_D2D);
    err = err ? err : c->p->diag_add(be, shifted, m, m, -shift);
    if (!err)
        err = longest <= m / 2 ? c->p->set_identity(be, t, m, m)
                               : c->p->eigh_f32(be, shifted, m, m, t, mu);
    err = err ? err : mix_refine(c, shifted, m, m, t, mu, depth, tol);
    for (int64_t i = 0; !err && i < m; i++)
        mu[i] += shift;
    mix_release(c, shifted);
    return err;
}

/* Refines X (n, n; ld n), approximate eigenvectors of A (n, n; ld lda), in
 * place to float64 accuracy; w (host, n) = eigenvalues, descending, with
 * X's columns in the same order. */
static int mix_refine(mixer *c, const double *a, int64_t n, int64_t lda, double *x, double *w,
                      int depth, const mix_tol *tol)
{
    sg_backend *be = c->be;
    const sg_backend_ops *o = be->ops;
    const sg_eigh_prims *p = c->p;
    double *g = NULL, *pm = NULL, *s = NULL, *xn = NULL, *t = NULL;
    double *lam = malloc(n * sizeof(double)), *dg = malloc(n * sizeof(double));
    int64_t *hi = malloc(3 * n * sizeof(int64_t)), *perm = malloc(n * sizeof(int64_t));
    int err = 0, converged = 0, whole = 0;
    if (!lam || !dg || !hi || !perm)
        err = sg_fail(-ENOMEM, "out of memory refining a %lld x %lld eigenproblem",
                      (long long)n, (long long)n);
    err = err ? err : mix_alloc(c, n * n, &g);
    err = err ? err : mix_alloc(c, n * n, &pm);
    err = err ? err : mix_alloc(c, n * n, &s);
    err = err ? err : mix_alloc(c, n * n, &xn);
    double *cur = x, *other = xn;

    for (int it = 0; !err && it < MIX_MAXIT && !converged; it++) {
        /* G (n, n) = XᵀX, and X orthonormalized first: where eigenvalues
         * crowd far from zero (a damped tail), a loss of orthogonality g
         * shows as couplings λ·g, huge against the gaps, and Rayleigh–Ritz
         * in a non-orthonormal basis depends on the shift. */
        double stat[3];
        err = p->dgemm(be, 1, 0, n, n, n, 1.0, cur, n, cur, n, 0.0, g, n);
        for (int k = 0; !err && k < MIX_POLISH; k++) {
            err = p->correction(be, s, g, n, n, NULL, tol->rule, stat);
            if (err || stat[2] <= MIX_PRE_ORTH)
                break;
            err = o->copy(be, other, cur, n * n * sizeof(double));
            err = err ? err : p->dgemm(be, 0, 0, n, n, n, 1.0, cur, n, s, n, 1.0, other, n);
            double *tmp = cur;
            cur = other;
            other = tmp;
            err = err ? err : p->dgemm(be, 1, 0, n, n, n, 1.0, cur, n, cur, n, 0.0, g, n);
        }
        /* P (n, n) = A·X;  S (n, n) = XᵀP */
        err = err ? err : p->dgemm(be, 0, 0, n, n, n, 1.0, a, lda, cur, n, 0.0, pm, n);
        err = err ? err : p->dgemm(be, 1, 0, n, n, n, 1.0, cur, n, pm, n, 0.0, s, n);
        err = err ? err : p->diag_get(be, s, n, n, lam);
        err = err ? err : p->diag_get(be, g, n, n, dg);
        if (err)
            break;
        for (int64_t i = 0; i < n; i++)
            lam[i] /= dg[i];
        err = p->couple(be, s, g, n, n, lam, tol->rule, hi);
        int64_t runs = err ? 0 : mix_runs(hi, n, hi + n, hi + 2 * n);
        /* Rayleigh–Ritz on each run: X_c ← X_c·T, S and G likewise. */
        for (int64_t r = 0; !err && r < runs; r++) {
            int64_t a0 = hi[n + r], m = hi[2 * n + r];
            if (m == n) {
                whole = 1; /* nothing to split: this level cannot help */
                break;
            }
            if (!t)
                err = mix_alloc(c, n * n, &t);
            err = err ? err : mix_subproblem(c, s + a0 * n + a0, m, n, t, dg, depth + 1, tol);
            /* the columns: M[:, c] (n, m) = M[:, c]·T (m, m), for X, S, G */
            double *mats[3] = {cur, s, g};
            for (int k = 0; !err && k < 3; k++) {
                err = p->dgemm(be, 0, 0, n, m, m, 1.0, mats[k] + a0, n, t, m, 0.0, pm, m);
                err = err ? err : p->copy2d(be, mats[k] + a0, n, pm, m, n, m, SG_COPY_D2D);
            }
            /* the rows: M[c, :] (m, n) = Tᵀ·M[c, :], for S and G */
            for (int k = 1; !err && k < 3; k++) {
                err = p->dgemm(be, 1, 0, m, n, m, 1.0, t, m, mats[k] + a0 * n, n, 0.0, pm, n);
                err = err ? err : p->copy2d(be, mats[k] + a0 * n, n, pm, n, m, n, SG_COPY_D2D);
            }
            err = err ? err : p->diag_get(be, s + a0 * n + a0, m, n, lam + a0);
            err = err ? err : p->diag_get(be, g + a0 * n + a0, m, n, dg);
            for (int64_t i = 0; !err && i < m; i++)
                lam[a0 + i] /= dg[i];
        }
        if (err || whole)
            break;
        /* X ← X + X·E */
        err = p->correction(be, s, g, n, n, lam, tol->rule, stat);
        err = err ? err : o->copy(be, other, cur, n * n * sizeof(double));
        err = err ? err : p->dgemm(be, 0, 0, n, n, n, 1.0, cur, n, s, n, 1.0, other, n);
        if (err)
            break;
        double *tmp = cur;
        cur = other;
        other = tmp;
        if (depth == 0) {
            mix_stats.iterations = it + 1;
            mix_stats.last_coupling = stat[1];
            mix_stats.last_orth = stat[2];
        }
        if (!(stat[0] <= 1e3)) /* NaN or divergence: dsyevd below */
            break;
        converged = stat[1] <= tol->conv; /* every coupling was noise */
    }
    /* X ← X·(I − (G − I)/2) until orthonormal to rounding: the second-order
     * loss of orthogonality of the last update, at most max|E|² */
    for (int k = 0; !err && converged && k < MIX_POLISH; k++) {
        double stat[3];
        err = p->dgemm(be, 1, 0, n, n, n, 1.0, cur, n, cur, n, 0.0, g, n);
        err = err ? err : p->correction(be, s, g, n, n, NULL, tol->rule, stat);
        if (err || stat[2] <= tol->orth)
            break;
        err = o->copy(be, other, cur, n * n * sizeof(double));
        err = err ? err : p->dgemm(be, 0, 0, n, n, n, 1.0, cur, n, s, n, 1.0, other, n);
        double *tmp = cur;
        cur = other;
        other = tmp;
        if (k == MIX_POLISH - 1)
            converged = 0;
    }

    if (!err && !converged) {
        /* No answer of float32 quality leaves here: solve it in float64. */
        if (depth == 0)
            mix_stats.fallback = 1;
        err = p->eigh_f64(be, a, n, lda, x, w);
    } else if (!err) {
        /* eigenvalues descending, the columns with them (insertion sort:
         * the order is nearly right already) */
        for (int64_t i = 0; i < n; i++)
            perm[i] = i;
        for (int64_t i = 1; i < n; i++) {
            int64_t k = perm[i], j = i;
            while (j > 0 && lam[perm[j - 1]] < lam[k]) {
                perm[j] = perm[j - 1];
                j--;
            }
            perm[j] = k;
        }
        for (int64_t j = 0; j < n; j++)
            w[j] = lam[perm[j]];
        int identity = 1;
        for (int64_t j = 0; j < n; j++)
            identity &= perm[j] == j;
        if (!identity || cur != x) {
            double *dst = cur == x ? other : x;
            for (int64_t j = 0; !err && j < n;) {
                int64_t k = 1; /* copy runs of consecutive columns at once */
                while (j + k < n && perm[j + k] == perm[j] + k)
                    k++;
                err = p->copy2d(be, dst + j, n, cur + perm[j], n, n, k, SG_COPY_D2D);
                j += k;
            }
            if (!err && dst != x)
                err = o->copy(be, x, dst, n * n * sizeof(double));
        }
    }
    mix_release(c, g);
    mix_release(c, pm);
    mix_release(c, s);
    mix_release(c, xn);
    mix_release(c, t);
    free(lam), free(dg), free(hi), free(perm);
    return err;
}

int sg_eigh_run(sg_backend *be, const sg_eigh_prims *p, double *h, int64_t d, double damp_frac,
                sg_eigh_mode mode, double *q, double *eigenvalues)
{
    if (d <= 0)
        return sg_fail(SG_EARG, "eigensolve of an empty matrix");
    double *diag = malloc(d * sizeof(double)), mean = 0;
    if (!diag)
        return sg_fail(-ENOMEM, "out of memory for a diagonal");
    int err = p->diag_get(be, h, d, d, diag);
    for (int64_t i = 0; !err && i < d; i++) {
        if (!isfinite(diag[i]))
            err = sg_fail(SG_ENUMERIC, "covariance has a non-finite diagonal entry at %lld",
                          (long long)i);
        mean += diag[i];
    }
    free(diag);
    if (err)
        return err;
    if (damp_frac != 0) {
        err = p->diag_add(be, h, d, d, damp_frac * mean / d);
        if (err)
            return err;
    }
    memset(&mix_stats, 0, sizeof mix_stats);
    switch (mode) {
    case SG_EIGH_F64: return p->eigh_f64(be, h, d, d, q, eigenvalues);
    case SG_EIGH_F32: return p->eigh_f32(be, h, d, d, q, eigenvalues);
    case SG_EIGH_MIXED: {
        mixer c = {be, p};
        err = p->eigh_f32(be, h, d, d, q, eigenvalues);
        if (err)
            return err;
        double u = DBL_EPSILON * fmax(fabs(eigenvalues[0]), fabs(eigenvalues[d - 1]));
        mix_tol tol = {{MIX_KAPPA, 2 * u, MIX_GAMMA * u}, 4 * sqrt((double)d) * u,
                       4 * sqrt((double)d) * DBL_EPSILON};
        return mix_refine(&c, h, d, d, q, eigenvalues, 0, &tol);
    }
    }
    return sg_fail(SG_EARG, "unknown eigensolver mode %d", (int)mode);
}
