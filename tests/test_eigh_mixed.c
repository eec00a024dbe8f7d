/* The mixed-precision eigensolver (float32 ssyevd, then float64 refinement;
 * backend.h) reaches float64 quality on the CPU backend, where its driver
 * is the same code the CUDA backend runs.
 *
 * For each matrix, three solves: SG_EIGH_F64 (dsyevd), SG_EIGH_F32 (ssyevd
 * alone) and SG_EIGH_MIXED. Reported and checked:
 *   - eigenvector error ‖x − ±y‖ against dsyevd, over well-separated
 *     eigenvalues (gap to both neighbours ≥ 1e-4·‖A‖);
 *   - eigenvalue error max |λ − λ_f64| / ‖A‖;
 *   - invariant-subspace error ‖Y_restᵀ·X_k‖_F of the leading k vectors
 *     against dsyevd's complement, at a well-separated cut (and, reported
 *     with the truth known, at cuts inside a dense tail, where what a
 *     backward-stable solver guarantees is the Davis–Kahan bound n·ε·‖A‖ /
 *     gap: dsyevd often does better on these matrices because the rounding
 *     of forming V·Λ·Vᵀ lies mostly along the top eigenvectors);
 *   - residual ‖AX − XΛ‖_F / ‖A‖ and orthogonality ‖XᵀX − I‖_F, checked
 *     as LAPACK's own tests do: divided by n·ε they must stay below 10
 *     (a float64 backward error); float32 alone is ~1e8 over.
 * Matrices: (a) A = V·Λ·Vᵀ with eigenvalues spanning 1 .. 1e-8 and
 * clusters, V random orthogonal; (c) a spectrum shaped like an LLM
 * activation covariance (a few outliers, power-law tail, 1% damping);
 * (b) the covariance of real activations of the bundled tinyopt model
 * (skipped when the data is absent); and degenerate edge cases.
 *
 * With a GPU the same matrices go through the CUDA backend's three modes
 * too (its driver is this one; its primitives are cuSOLVER, cuBLAS and
 * kernels/eigh_refine.cu).
 *
 *   tests/test_eigh_mixed               the checks (make check)
 *   tests/test_eigh_mixed N [N...]      times dsyevd, ssyevd and mixed at
 *                                       each N on (a) and (c), on the CPU
 *   tests/test_eigh_mixed --gpu N ...   the same on the GPU (a TAP skip without) */
#include <cblas.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "cpu_kernels.h"
#include "forward.h"
#include "model.h"
#include "model_files.h"
#include "sg_error.h"
#include "tap.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A (n, n) = V·diag(lam)·Vᵀ with V a seeded random orthogonal matrix;
 * v (n, n) receives V (the truth, up to the rounding of forming A). */
static void make_matrix(int64_t n, const double *lam, uint64_t seed, double *a, double *v)
{
    double *vl = malloc(n * n * sizeof(double));
    sg_random_orthogonal(n, seed, v);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            vl[i * n + j] = v[i * n + j] * lam[j];
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)n, (int)n, 1.0, vl, (int)n,
                v, (int)n, 0.0, a, (int)n);
    for (int64_t i = 0; i < n; i++) /* exactly symmetric */
        for (int64_t j = 0; j < i; j++)
            a[i * n + j] = a[j * n + i] = 0.5 * (a[i * n + j] + a[j * n + i]);
    free(vl);
}

typedef struct {
    double *q, *w;
    double seconds;
    int err;
} solve;

static sg_backend *be; /* the backend under test */

static solve run_mode(const double *a, int64_t n, double damp, sg_eigh_mode mode)
{
    size_t bytes = n * n * sizeof(double);
    solve s = {malloc(bytes), malloc(n * sizeof(double)), 0, 0};
    double *h = NULL, *q = NULL;
    s.err = be->ops->alloc(be, bytes, (void **)&h);
    s.err = s.err ? s.err : be->ops->alloc(be, bytes, (void **)&q);
    s.err = s.err ? s.err : be->ops->upload(be, h, a, bytes);
    s.err = s.err ? s.err : be->ops->synchronize(be);
    double t = now();
    s.err = s.err ? s.err : be->ops->eigh(be, h, n, damp, mode, q, s.w);
    s.err = s.err ? s.err : be->ops->synchronize(be);
    s.seconds = now() - t;
    s.err = s.err ? s.err : be->ops->download(be, s.q, q, bytes);
    if (s.err)
        tap_diag("%s eigh mode %d failed: %s", be->ops->name, (int)mode, sg_last_error());
    be->ops->release(be, h);
    be->ops->release(be, q);
    return s;
}

static void solve_free(solve *s)
{
    free(s->q);
    free(s->w);
}

/* ‖x_j − ±y_j‖ for column j of two (n, n) bases */
static double vec_err(const double *x, const double *y, int64_t n, int64_t j)
{
    double dot = 0, e = 0;
    for (int64_t i = 0; i < n; i++)
        dot += x[i * n + j] * y[i * n + j];
    double sgn = dot < 0 ? -1 : 1;
    for (int64_t i = 0; i < n; i++) {
        double d = x[i * n + j] - sgn * y[i * n + j];
        e += d * d;
    }
    return sqrt(e);
}

/* ‖Y[:, k:]ᵀ·X[:, :k]‖_F: how far span X_k leaves span Y_k */
static double subspace_err(const double *x, const double *y, int64_t n, int64_t k)
{
    if (k <= 0 || k >= n)
        return 0;
    double *c = malloc((n - k) * k * sizeof(double)), e = 0;
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(n - k), (int)k, (int)n, 1.0, y + k,
                (int)n, x, (int)n, 0.0, c, (int)k);
    for (int64_t i = 0; i < (n - k) * k; i++)
        e += c[i] * c[i];
    free(c);
    return sqrt(e);
}

/* ‖A·X − X·Λ‖_F / ‖A‖₂ and ‖XᵀX − I‖_F */
static void quality(const double *a, const solve *s, int64_t n, double norm, double *res,
                    double *orth)
{
    double *r = malloc(n * n * sizeof(double)), e = 0;
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0, a, (int)n,
                s->q, (int)n, 0.0, r, (int)n);
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double d = r[i * n + j] - s->q[i * n + j] * s->w[j];
            e += d * d;
        }
    *res = sqrt(e) / norm;
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)n, (int)n, (int)n, 1.0, s->q, (int)n,
                s->q, (int)n, 0.0, r, (int)n);
    e = 0;
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++) {
            double d = r[i * n + j] - (i == j);
            e += d * d;
        }
    *orth = sqrt(e);
    free(r);
}

typedef struct {
    double vec, val, sub, res, orth;
} errors;

/* Errors of s against the float64 solve f; sep: the relative gap that
 * counts as well separated; k: the cut for the subspace error. */
static errors compare(const double *a, int64_t n, const solve *s, const solve *f, double sep,
                      int64_t k, int64_t *n_sep)
{
    errors e = {0};
    double norm = fmax(fabs(f->w[0]), fabs(f->w[n - 1]));
    int64_t count = 0;
    for (int64_t j = 0; j < n; j++) {
        double gap = INFINITY;
        if (j > 0)
            gap = fmin(gap, fabs(f->w[j - 1] - f->w[j]));
        if (j < n - 1)
            gap = fmin(gap, fabs(f->w[j] - f->w[j + 1]));
        e.val = fmax(e.val, fabs(s->w[j] - f->w[j]) / norm);
        if (gap >= sep * norm) {
            e.vec = fmax(e.vec, vec_err(s->q, f->q, n, j));
            count++;
        }
    }
    e.sub = subspace_err(s->q, f->q, n, k);
    quality(a, s, n, norm, &e.res, &e.orth);
    if (n_sep)
        *n_sep = count;
    return e;
}

static void print_errors(const char *what, errors e)
{
    tap_diag("  %-6s vector %.2e  value %.2e  subspace %.2e  residual %.2e  orth %.2e", what,
             e.vec, e.val, e.sub, e.res, e.orth);
}

/* (a): 1 .. 1e-8 geometric, with clusters: tight ones (relative spacing
 * 1e-13, unresolvable even in float64) and loose ones (1e-6, resolved by
 * float64, not by float32). */
static void spectrum_ill(int64_t n, double *lam)
{
    for (int64_t i = 0; i < n; i++)
        lam[i] = pow(10.0, -8.0 * i / (n - 1));
    int64_t at[] = {n / 16, n / 3, 2 * n / 3};
    double spacing[] = {1e-13, 1e-6, 1e-13};
    for (int c = 0; c < 3; c++)
        for (int64_t r = 1; r <= 4 && at[c] + r < n; r++)
            lam[at[c] + r] = lam[at[c]] * (1 - spacing[c] * r);
}

/* (c): like a transformer's residual-stream covariance: a few outlier
 * directions far above a power-law bulk. */
static void spectrum_llm(int64_t n, double *lam)
{
    double outliers[] = {3000, 800, 250, 90};
    for (int64_t i = 0; i < n; i++)
        lam[i] = i < 4 ? outliers[i] : pow((double)i, -1.1) * 10;
}

/* Checks one matrix; returns the mixed solve's time relative to f64. */
static void check_matrix(const char *name, const double *a, const double *truth, int64_t n,
                         double damp, int64_t k_sep, const int64_t *k_tail, int n_tail,
                         int timing)
{
    solve f = run_mode(a, n, damp, SG_EIGH_F64);
    solve s = run_mode(a, n, damp, SG_EIGH_F32);
    solve m = run_mode(a, n, damp, SG_EIGH_MIXED);
    sg_eigh_stats st;
    sg_eigh_last_stats(&st);
    char full[160];
    snprintf(full, sizeof full, "%s: %s", be->ops->name, name);
    name = full;
    if (!tap_ok(!f.err && !s.err && !m.err, "%s: all three solves succeed (n = %lld)", name,
                (long long)n)) {
        solve_free(&f), solve_free(&s), solve_free(&m);
        return;
    }
    /* the damped matrix the solves actually saw, for residuals */
    double *ad = malloc(n * n * sizeof(double)), mean = 0;
    memcpy(ad, a, n * n * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        mean += a[i * n + i];
    for (int64_t i = 0; i < n; i++)
        ad[i * n + i] += damp * mean / n;

    int64_t n_sep;
    errors es = compare(ad, n, &s, &f, 1e-4, k_sep, &n_sep);
    errors em = compare(ad, n, &m, &f, 1e-4, k_sep, NULL);
    errors ef = compare(ad, n, &f, &f, 1e-4, k_sep, NULL);
    tap_diag("%s, n = %lld: %lld well-separated eigenvalues, subspace cut k = %lld", name,
             (long long)n, (long long)n_sep, (long long)k_sep);
    tap_diag("  (errors against dsyevd; residual and orthogonality absolute)");
    print_errors("f32", es);
    print_errors("mixed", em);
    print_errors("f64", ef);
    tap_diag("  mixed: %d sweeps, %lld clusters re-solved (largest %lld, depth %d), last "
             "coupling %.1e·‖A‖, orthogonality %.1e%s",
             st.iterations, (long long)st.clusters, (long long)st.largest, st.depth,
             st.last_coupling / fabs(f.w[0]), st.last_orth,
             st.fallback ? ", FELL BACK to dsyevd" : "");
    if (timing)
        tap_diag("  time: dsyevd %.3f s, ssyevd %.3f s, mixed %.3f s (%.2fx dsyevd)", f.seconds,
                 s.seconds, m.seconds, m.seconds / f.seconds);

    tap_ok(em.vec < 1e-10, "%s: mixed eigenvectors within 1e-10 of dsyevd where separated (%.1e)",
           name, em.vec);
    tap_ok(em.val < 1e-13, "%s: mixed eigenvalues within 1e-13·‖A‖ of dsyevd (%.1e)", name, em.val);
    tap_ok(em.sub < 1e-10, "%s: leading-%lld subspace within 1e-10 of dsyevd's (%.1e)", name,
           (long long)k_sep, em.sub);
    double ne = n * DBL_EPSILON;
    tap_ok(em.res < 10 * ne && em.orth < 10 * ne,
           "%s: mixed backward error: residual %.1f·nε, orthogonality %.1f·nε (dsyevd %.1f, %.1f)",
           name, em.res / ne, em.orth / ne, ef.res / ne, ef.orth / ne);
    tap_ok(!st.fallback, "%s: the refinement converged without falling back", name);
    if (es.vec > 1e-8)
        tap_diag("  float32 alone is %.0fx worse than mixed on separated vectors",
                 es.vec / fmax(em.vec, 1e-16));

    /* cuts inside the dense part: as close to the truth as dsyevd is */
    if (truth && damp == 0)
        for (int t = 0; t < n_tail; t++) {
            int64_t k = k_tail[t];
            double gf = subspace_err(f.q, truth, n, k), gm = subspace_err(m.q, truth, n, k);
            double gs = subspace_err(s.q, truth, n, k);
            double gap = (f.w[k - 1] - f.w[k]) / f.w[0], bound = n * DBL_EPSILON / gap;
            tap_diag("  cut k = %lld (gap %.1e·‖A‖): error to the truth f64 %.1e, mixed %.1e, "
                     "f32 %.1e; backward-stable bound %.1e",
                     (long long)k, gap, gf, gm, gs, bound);
            tap_ok(gm <= bound, "%s: cut %lld within the float64 perturbation bound (%.1e ≤ %.1e)",
                   name, (long long)k, gm, bound);
        }
    free(ad);
    solve_free(&f), solve_free(&s), solve_free(&m);
}

static void check_synthetic(int64_t n, int timing)
{
    double *lam = malloc(n * sizeof(double)), *a = malloc(n * n * sizeof(double));
    double *v = malloc(n * n * sizeof(double));
    char name[64];

    spectrum_ill(n, lam);
    make_matrix(n, lam, 7, a, v);
    int64_t tails[] = {n / 2, 3 * n / 4};
    snprintf(name, sizeof name, "ill-conditioned 1..1e-8");
    check_matrix(name, a, v, n, 0.0, n / 4, tails, 2, timing);
    if (!timing) { /* timing runs keep to one matrix of each kind */
        snprintf(name, sizeof name, "ill-conditioned, damped 1%%");
        check_matrix(name, a, v, n, 0.01, n / 4, NULL, 0, timing);
    }

    spectrum_llm(n, lam);
    make_matrix(n, lam, 11, a, v);
    int64_t cut = (int64_t)(0.7 * n) / 8 * 8;
    if (!timing) {
        snprintf(name, sizeof name, "LLM-like spectrum");
        check_matrix(name, a, v, n, 0.0, 4, &cut, 1, timing);
    }
    snprintf(name, sizeof name, "LLM-like, damped 1%%");
    check_matrix(name, a, v, n, 0.01, 4, NULL, 0, timing);
    free(lam), free(a), free(v);
}

/* (b): the covariance of tinyopt's block outputs on text. */
static void check_real(void)
{
    const char *dir = tap_data_find("tinyopt-250K");
    const char *text = tap_data_find("tinystories-valid-subset/tinystories_valid_first.txt");
    if (!dir || !text) {
        tap_skip("covariance of real activations", "tinyopt-250K or tinystories data absent");
        return;
    }
    sg_model_files *files = NULL;
    sg_model m;
    memset(&m, 0, sizeof m);
    int err = sg_model_files_open(dir, &files);
    err = err ? err : sg_model_load(files, &m);
    if (err) {
        tap_skip("covariance of real activations", sg_last_error());
        if (files)
            sg_model_files_close(files);
        return;
    }
    const sg_model_config *c = &m.cfg;
    /* 16 sequences of 128 byte-level tokens of story text (no tokenizer
     * ships with the model; bytes are real text statistics all the same) */
    enum { NSEQ = 16, LEN = 128 };
    int32_t ids[NSEQ * LEN];
    FILE *fp = fopen(text, "rb");
    for (int i = 0; i < NSEQ * LEN; i++) {
        int ch = fp ? fgetc(fp) : EOF;
        ids[i] = (ch == EOF ? ' ' : ch) % (int)c->vocab_size;
    }
    if (fp)
        fclose(fp);
    int64_t offsets[NSEQ + 1];
    for (int s = 0; s <= NSEQ; s++)
        offsets[s] = s * LEN;
    sg_seqs seqs = {NSEQ, offsets, NULL};
    int64_t D = c->dim, T = NSEQ * LEN;
    float *x = malloc(T * D * sizeof(float));
    err = sg_embed(&m, ids, &seqs, x);
    for (int64_t l = 0; !err && l < c->n_layers; l++) {
        sg_block b;
        err = sg_block_load(files, c, l, &b);
        err = err ? err : sg_block_forward(c, &b, x, x, NULL, &seqs);
        sg_block_free(&b);
    }
    double *h = calloc(D * D, sizeof(double));
    sg_backend *cpu = sg_backend_cpu();
    err = err ? err : cpu->ops->cov_accumulate(cpu, h, D, x, T, 0);
    if (err) {
        tap_skip("covariance of real activations", sg_last_error());
    } else {
        double cond = 0;
        solve f = run_mode(h, D, 0.0, SG_EIGH_F64);
        if (!f.err)
            cond = f.w[0] / f.w[D - 1];
        tap_diag("tinyopt block %lld output covariance: D = %lld, %lld tokens, λmax/λmin %.2e",
                 (long long)c->n_layers - 1, (long long)D, (long long)T, cond);
        solve_free(&f);
        check_matrix("tinyopt activations", h, NULL, D, 0.0, 8, NULL, 0, 0);
        check_matrix("tinyopt activations, damped 1%", h, NULL, D, 0.01, 8, NULL, 0, 0);
    }
    free(h), free(x);
    sg_model_free(&m);
    sg_model_files_close(files);
}

/* eigh on host data through the backend under test */
static int eigh_host(double *h, int64_t n, double damp, double *q, double *w)
{
    solve s = run_mode(h, n, damp, SG_EIGH_MIXED);
    if (!s.err) {
        memcpy(q, s.q, n * n * sizeof(double));
        memcpy(w, s.w, n * sizeof(double));
    }
    solve_free(&s);
    return s.err;
}

/* Degenerate inputs: all eigenvalues equal, a diagonal matrix, tiny n. */
static void check_edges(void)
{
    int64_t n = 100;
    double *h = calloc(n * n, sizeof(double)), *q = malloc(n * n * sizeof(double));
    double *w = malloc(n * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        h[i * n + i] = 2.0;
    int err = eigh_host(h, n, 0.0, q, w);
    double orth = 0, werr = 0;
    for (int64_t i = 0; !err && i < n; i++) {
        werr = fmax(werr, fabs(w[i] - 2.0));
        for (int64_t j = 0; j < n; j++) {
            double dot = 0;
            for (int64_t r = 0; r < n; r++)
                dot += q[r * n + i] * q[r * n + j];
            orth = fmax(orth, fabs(dot - (i == j)));
        }
    }
    tap_ok(!err && werr < 1e-14 && orth < 1e-13, "%s: 2·I: eigenvalues 2, orthonormal basis "
           "(%.1e, %.1e)", be->ops->name, werr, orth);

    for (int64_t i = 0; i < n * n; i++)
        h[i] = 0;
    for (int64_t i = 0; i < n; i++)
        h[i * n + i] = (double)((i * 37) % n) + 1;
    err = eigh_host(h, n, 0.0, q, w);
    int sorted = !err;
    for (int64_t i = 0; sorted && i < n; i++) {
        sorted &= w[i] == (double)(n - i);
        int64_t src = -1;
        for (int64_t r = 0; r < n; r++)
            if ((double)((r * 37) % n) + 1 == w[i])
                src = r;
        sorted &= src >= 0 && fabs(fabs(q[src * n + i]) - 1) < 1e-14;
    }
    tap_ok(sorted, "%s: a permuted diagonal: exact eigenvalues, descending, unit vectors",
           be->ops->name);

    double h1 = 5, q1, w1;
    err = eigh_host(&h1, 1, 0.01, &q1, &w1);
    tap_ok(!err && fabs(w1 - 5.05) < 1e-14 && fabs(fabs(q1) - 1) < 1e-15, "%s: n = 1 with damping",
           be->ops->name);

    double nan_h[4] = {NAN, 0, 0, 1};
    sg_clear_error();
    err = eigh_host(nan_h, 2, 0.01, q, w);
    tap_ok(err == SG_ENUMERIC && strstr(sg_last_error(), "non-finite"),
           "%s: a NaN on the diagonal is refused: %s", be->ops->name, sg_last_error());
    free(h), free(q), free(w);
}

int main(int argc, char **argv)
{
    sg_backend *gpu = sg_backend_cuda_init(0, 0);
    if (argc > 1) {
        int on_gpu = !strcmp(argv[1], "--gpu");
        if (on_gpu && !gpu) {
            char why[1100];
            snprintf(why, sizeof why, "no GPU: %s", sg_last_error());
            tap_skip_all(why);
        }
        be = on_gpu ? gpu : sg_backend_cpu();
        for (int i = 1 + on_gpu; i < argc; i++)
            check_synthetic(atoll(argv[i]), 1);
        if (gpu)
            gpu->ops->free(gpu);
        return tap_done();
    }
    be = sg_backend_cpu();
    check_synthetic(384, 0);
    check_real();
    check_edges();
    if (gpu) {
        be = gpu;
        check_synthetic(384, 0);
        check_real();
        check_edges();
        gpu->ops->free(gpu);
    } else {
        tap_skip("cuda: the same matrices through the CUDA backend", "no GPU");
    }
    return tap_done();
}
