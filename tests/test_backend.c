/* Every operation of backend.h on every backend there is (ggml's
 * test-backend-ops): first that every slot of every table is filled (the
 * CPU's, the pretend device's, CUDA's wherever it was built, GPU or
 * not); then the CPU backend against straightforward float64 loops (and,
 * for the float64 eigensolve, the stage's own dsyevd), then the CUDA
 * backend, when sg_backend_cuda_init finds a GPU, against the same
 * references. Without a GPU the CUDA checks are TAP skips; the CPU
 * checks always run. */
#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "compare.h"
#include "cpu_kernels.h"
#include "device_sim.h"
#include "forward.h"
#include "sg_error.h"
#include "tap.h"

static sg_backend *cpu, *gpu;

/* ---- data and comparisons ---- */

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static double urand(void) /* uniform in [-1, 1) */
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (double)(rng >> 11) / 4503599627370496.0 - 1.0;
}

static float *frand(int64_t n, double scale)
{
    float *x = malloc(n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)(scale * urand());
    return x;
}

static double *drand_(int64_t n)
{
    double *x = malloc(n * sizeof(double));
    for (int64_t i = 0; i < n; i++)
        x[i] = urand();
    return x;
}

/* test_rel_diff's measure (compare.h) against a float64 reference, and
 * between float64 results */
static double frel_d(const float *a, const double *b, int64_t n)
{
    double e = 0, s = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs(a[i] - b[i]));
        s = fmax(s, fabs(b[i]));
    }
    return isnan(e) ? INFINITY : e / s;
}

static double drel(const double *a, const double *b, int64_t n)
{
    double e = 0, s = 1e-300;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs(a[i] - b[i]));
        s = fmax(s, fabs(b[i]));
    }
    return isnan(e) ? INFINITY : e / s;
}

/* ---- moving data ---- */

static void *put(sg_backend *be, const void *host, size_t bytes)
{
    void *p = NULL;
    if (be->ops->alloc(be, bytes, &p) || (host && be->ops->upload(be, p, host, bytes))) {
        printf("Bail out! %s: alloc/upload of %zu bytes: %s\n", be->ops->name, bytes,
               sg_last_error());
        exit(1);
    }
    return p;
}

static void *get(sg_backend *be, const void *dev, size_t bytes)
{
    void *h = malloc(bytes);
    if (be->ops->download(be, h, dev, bytes)) {
        printf("Bail out! %s: download: %s\n", be->ops->name, sg_last_error());
        exit(1);
    }
    return h;
}

static void drop(sg_backend *be, void *p) { be->ops->release(be, p); }

static void skip_gpu(const char *what)
{
    char buf[256];
    snprintf(buf, sizeof buf, "cuda: %s", what);
    tap_skip(buf, "no GPU");
}

/* ---- every slot filled ---- */

/* A table's function slots by name. The assertions below stop the build
 * when backend.h gains a slot these lists lack: the slots from the first
 * to the end of the struct are all function pointers, so their count is
 * the bytes they span over the size of one. */
typedef struct {
    const char *name;
    size_t at;
} slot;

#define OP(f) {#f, offsetof(sg_backend_ops, f)}
static const slot op_slots[] = {
    OP(free),
    /* memory */
    OP(alloc), OP(release), OP(host_alloc), OP(host_free), OP(upload), OP(upload_async),
    OP(await_uploads), OP(download), OP(copy), OP(zero), OP(synchronize), OP(memory),
    /* dense linear algebra and the SliceGPT stages */
    OP(sgemm), OP(cov_accumulate), OP(eigh), OP(rotate_reader), OP(rotate_writer),
    OP(project_rows),
    /* the forward pass */
    OP(block_forward), OP(block_forward_mlp), OP(norm_rows), OP(rope), OP(attention),
    OP(activation), OP(add),
};
#define N_OPS ((int)(sizeof op_slots / sizeof *op_slots))
_Static_assert(N_OPS * sizeof(void (*)(void)) ==
                   sizeof(sg_backend_ops) - offsetof(sg_backend_ops, free),
               "op_slots lacks a slot of sg_backend_ops");

#define PRIM(f) {#f, offsetof(sg_eigh_prims, f)}
static const slot prim_slots[] = {
    PRIM(dgemm), PRIM(eigh_f32), PRIM(eigh_f64), PRIM(diag_get), PRIM(diag_add),
    PRIM(set_identity), PRIM(couple), PRIM(correction), PRIM(copy2d),
};
#define N_PRIMS ((int)(sizeof prim_slots / sizeof *prim_slots))
_Static_assert(N_PRIMS * sizeof(void (*)(void)) == sizeof(sg_eigh_prims),
               "prim_slots lacks a slot of sg_eigh_prims");

/* Names the empty slots of table into buf (", "-separated); their count.
 * A slot is read as bytes: every function pointer has one size here. */
static int empty_slots(const void *table, const slot *s, int n, char *buf, size_t cap)
{
    int empty = 0;
    buf[0] = 0;
    for (int i = 0; i < n; i++) {
        void (*f)(void);
        memcpy(&f, (const char *)table + s[i].at, sizeof f);
        if (!f) {
            size_t len = strlen(buf);
            snprintf(buf + len, cap - len, "%s%s", empty++ ? ", " : "", s[i].name);
        }
    }
    return empty;
}

static void t_slots(const char *who, const sg_backend_ops *ops, const sg_eigh_prims *prims)
{
    char empty[1024];
    int n = empty_slots(ops, op_slots, N_OPS, empty, sizeof empty);
    tap_ok(ops->name && !n, "%s: a name and all %d op slots filled%s%s", who, N_OPS,
           n ? "; empty: " : "", empty);
    if (!prims)
        return;
    n = empty_slots(prims, prim_slots, N_PRIMS, empty, sizeof empty);
    tap_ok(!n, "%s: all %d eigensolver primitives filled%s%s", who, N_PRIMS, n ? "; empty: " : "",
           empty);
}

static void t_tables(void)
{
    t_slots("cpu", cpu->ops, sg_eigh_prims_cpu());
    sg_backend *sim = device_sim_new(0);
    if (!sim) {
        printf("Bail out! out of memory for the pretend device\n");
        exit(1);
    }
    t_slots("device-sim", sim->ops, NULL); /* its eigh is the CPU's */
    sim->ops->free(sim);
    /* the table exists wherever CUDA was built, GPU or not */
    if (sg_backend_cuda_ops()) {
        t_slots("cuda", sg_backend_cuda_ops(), sg_eigh_prims_cuda());
    } else {
        tap_skip("cuda: all op slots filled", "built without CUDA");
        tap_skip("cuda: all eigensolver primitives filled", "built without CUDA");
    }
}

/* ---- memory ---- */

static void t_memory(sg_backend *be)
{
    sg_backend_mem m0, m1;
    int64_t n = 1000;
    float *h = frand(n, 1);
    be->ops->memory(be, &m0);
    float *a = put(be, h, n * 4), *b = put(be, NULL, n * 4);
    be->ops->memory(be, &m1);
    int err = be->ops->copy(be, b, a, n * 4);
    float *back = get(be, b, n * 4);
    tap_ok(!err && memcmp(back, h, n * 4) == 0 && m1.in_use >= m0.in_use + 2 * n * 4 &&
               m1.peak >= m1.in_use,
           "%s: alloc, upload, copy, download round trip; %zu bytes counted in use",
           be->ops->name, m1.in_use - m0.in_use);
    drop(be, a), drop(be, b), free(back), free(h);
}

/* ---- GEMM ---- */

static void ref_gemm(int ta, int tb, int64_t m, int64_t n, int64_t k, double alpha,
                     const double *a, int64_t lda, const double *b, int64_t ldb, double beta,
                     double *c, int64_t ldc)
{
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            double s = 0;
            for (int64_t l = 0; l < k; l++)
                s += (ta ? a[l * lda + i] : a[i * lda + l]) * (tb ? b[j * ldb + l] : b[l * ldb + j]);
            c[i * ldc + j] = alpha * s + beta * c[i * ldc + j];
        }
}

/* C (m, n) on each transpose pair, A and B stored with padded rows:
 * the table's sgemm, or with f64 the eigensolver primitives' dgemm on the
 * same memory. */
static void t_gemm(sg_backend *be, int f64)
{
    const sg_eigh_prims *prims = be == cpu ? sg_eigh_prims_cpu() : sg_eigh_prims_cuda();
    const int64_t m = 37, n = 29, k = 41, pad = 3;
    double worst = 0;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            int64_t ar = ta ? k : m, ac = ta ? m : k, br = tb ? n : k, bc = tb ? k : n;
            int64_t lda = ac + pad, ldb = bc + pad, ldc = n + pad;
            double *a = drand_(ar * lda), *b = drand_(br * ldb), *c = drand_(m * ldc);
            double *ref = malloc(m * ldc * sizeof(double));
            memcpy(ref, c, m * ldc * sizeof(double));
            ref_gemm(ta, tb, m, n, k, 0.75, a, lda, b, ldb, 0.5, ref, ldc);
            double e;
            if (f64) {
                double *da = put(be, a, ar * lda * 8), *db = put(be, b, br * ldb * 8);
                double *dc = put(be, c, m * ldc * 8);
                int err = prims->dgemm(be, ta, tb, m, n, k, 0.75, da, lda, db, ldb, 0.5, dc, ldc);
                double *out = get(be, dc, m * ldc * 8);
                e = err ? INFINITY : drel(out, ref, m * ldc);
                drop(be, da), drop(be, db), drop(be, dc), free(out);
            } else {
                float *fa = malloc(ar * lda * 4), *fb = malloc(br * ldb * 4), *fc = malloc(m * ldc * 4);
                for (int64_t i = 0; i < ar * lda; i++)
                    fa[i] = (float)(a[i] = (float)a[i]);
                for (int64_t i = 0; i < br * ldb; i++)
                    fb[i] = (float)(b[i] = (float)b[i]);
                for (int64_t i = 0; i < m * ldc; i++)
                    fc[i] = (float)(c[i] = (float)c[i]);
                memcpy(ref, c, m * ldc * sizeof(double));
                ref_gemm(ta, tb, m, n, k, 0.75, a, lda, b, ldb, 0.5, ref, ldc);
                float *da = put(be, fa, ar * lda * 4), *db = put(be, fb, br * ldb * 4);
                float *dc = put(be, fc, m * ldc * 4);
                int err = be->ops->sgemm(be, ta, tb, m, n, k, 0.75f, da, lda, db, ldb, 0.5f, dc, ldc);
                float *out = get(be, dc, m * ldc * 4);
                e = err ? INFINITY : frel_d(out, ref, m * ldc);
                drop(be, da), drop(be, db), drop(be, dc), free(out), free(fa), free(fb), free(fc);
            }
            worst = fmax(worst, e);
            free(a), free(b), free(c), free(ref);
        }
    tap_ok(worst < (f64 ? 1e-14 : 2e-6), "%s: %s, all four transpose pairs, padded strides (%.1e)",
           be->ops->name, f64 ? "dgemm" : "sgemm", worst);
}

/* ---- covariance ---- */

static void t_cov(sg_backend *be)
{
    const int64_t d = 48, r1 = 700, r2 = 1500; /* the second call spans CPU chunks */
    float *x = frand((r1 + r2) * d, 3);
    double *h0 = drand_(d * d), *ref = malloc(d * d * sizeof(double));
    for (int64_t i = 0; i < d; i++) /* a symmetric starting H */
        for (int64_t j = 0; j < i; j++)
            h0[i * d + j] = h0[j * d + i];
    for (int64_t i = 0; i < d; i++)
        for (int64_t j = 0; j < d; j++) {
            double s = h0[i * d + j];
            for (int64_t t = 0; t < r1 + r2; t++)
                s += (double)x[t * d + i] * x[t * d + j];
            ref[i * d + j] = s;
        }
    double *dh = put(be, h0, d * d * 8);
    float *dx = put(be, x, (r1 + r2) * d * 4);
    int err = be->ops->cov_accumulate(be, dh, d, dx, r1, 0);
    err = err ? err : be->ops->cov_accumulate(be, dh, d, dx + r1 * d, r2, 0);
    double *h = get(be, dh, d * d * 8);
    double e = err ? INFINITY : drel(h, ref, d * d);
    tap_ok(e < 1e-14, "%s: covariance H += XᵀX in two calls, float64 sums, symmetric (%.1e)",
           be->ops->name, e);
    drop(be, dh), drop(be, dx), free(h), free(x), free(h0), free(ref);
}

/* ---- eigensolver ---- */

/* A random covariance (n, n): XᵀX of n + 40 rows with uneven column scales. */
/* The mixed covariance (float32 slices of SG_COV_MIXED_ROWS rows, added
 * in float64) against the exact float64 sum, on activations shaped like a
 * residual stream: a few outlier directions 30x the bulk, a non-zero
 * mean. Its error is held to the size of the inputs' own float32
 * rounding (2⁻²⁴ relative), which no covariance of float32 activations
 * can beat. Also the symmetric, one-call-at-a-time contract. */
static void t_cov_mixed(sg_backend *be)
{
    const int64_t d = 96, rows = 9000; /* 8 full slices and a partial one */
    float *x = malloc(rows * d * sizeof(float));
    for (int64_t t = 0; t < rows; t++)
        for (int64_t i = 0; i < d; i++)
            x[t * d + i] = (float)((i % 17 == 0 ? 30.0 : 1.0) * urand() + 0.5);
    double *ref = calloc(d * d, sizeof(double)), worst_diag = 0;
    for (int64_t t = 0; t < rows; t++)
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < d; j++)
                ref[i * d + j] += (double)x[t * d + i] * x[t * d + j];
    double *dh = put(be, NULL, d * d * 8);
    float *dx = put(be, x, rows * d * 4);
    int err = be->ops->zero(be, dh, d * d * 8);
    err = err ? err : be->ops->cov_accumulate(be, dh, d, dx, 5000, 1);
    err = err ? err : be->ops->cov_accumulate(be, dh, d, dx + 5000 * d, rows - 5000, 1);
    double *h = get(be, dh, d * d * 8);
    double e = err ? INFINITY : drel(h, ref, d * d);
    int symmetric = !err;
    for (int64_t i = 0; !err && i < d; i++) {
        worst_diag = fmax(worst_diag, fabs(h[i * d + i] / ref[i * d + i] - 1));
        for (int64_t j = 0; j < i; j++)
            symmetric &= h[i * d + j] == h[j * d + i];
    }
    /* for scale: one float32 running sum over all rows, what a plain
     * float32 covariance does */
    double naive = 0;
    for (int64_t i = 0; i < d; i++) {
        float acc = 0;
        for (int64_t t = 0; t < rows; t++)
            acc += x[t * d + i] * x[t * d + i];
        naive = fmax(naive, fabs(acc / ref[i * d + i] - 1));
    }
    tap_diag("%s: mixed covariance: diagonal off by %.1e at worst; a float32 running sum, "
             "by %.1e", be->ops->name, worst_diag, naive);
    const double u = 5.96e-8; /* 2⁻²⁴ */
    tap_ok(e < 4 * u && worst_diag < 4 * u && symmetric,
           "%s: mixed covariance within 4·2⁻²⁴ of the float64 sum (%.1e of max |H|), twice "
           "what rounding the inputs to float32 costs; symmetric", be->ops->name, e);
    drop(be, dh), drop(be, dx), free(h), free(x), free(ref);
}

static double *random_cov(int64_t n)
{
    int64_t rows = n + 40;
    float *x = frand(rows * n, 1);
    for (int64_t t = 0; t < rows; t++)
        for (int64_t j = 0; j < n; j++)
            x[t * n + j] *= (float)(1.0 + 30.0 / (1 + j));
    double *h = calloc(n * n, sizeof(double));
    cpu->ops->cov_accumulate(cpu, h, n, x, rows, 0);
    free(x);
    return h;
}

static int eigh_on(sg_backend *be, const double *h, int64_t n, double damp, sg_eigh_mode mode,
                   double *q, double *w)
{
    double *dh = put(be, h, n * n * 8), *dq = put(be, NULL, n * n * 8);
    int err = be->ops->eigh(be, dh, n, damp, mode, dq, w);
    if (!err) {
        double *hq = get(be, dq, n * n * 8);
        memcpy(q, hq, n * n * 8);
        free(hq);
    } else {
        tap_diag("%s eigh: %s", be->ops->name, sg_last_error());
    }
    drop(be, dh), drop(be, dq);
    return err;
}

/* max over columns of ‖x_j − ±y_j‖ where eigenvalue j is separated from
 * its neighbours by ≥ 1e-5·λmax (two float64 solvers agree on a vector to
 * ~ε‖A‖/gap, no better), and the max relative eigenvalue error */
static void eig_diff(const double *q, const double *w, const double *q0, const double *w0,
                     int64_t n, double *vec, double *val)
{
    *vec = *val = 0;
    for (int64_t j = 0; j < n; j++) {
        double gap = INFINITY, dot = 0, e = 0;
        if (j > 0)
            gap = fmin(gap, w0[j - 1] - w0[j]);
        if (j < n - 1)
            gap = fmin(gap, w0[j] - w0[j + 1]);
        *val = fmax(*val, fabs(w[j] - w0[j]) / fabs(w0[0]));
        if (gap < 1e-5 * fabs(w0[0]))
            continue;
        for (int64_t i = 0; i < n; i++)
            dot += q[i * n + j] * q0[i * n + j];
        for (int64_t i = 0; i < n; i++) {
            double d = q[i * n + j] - (dot < 0 ? -1 : 1) * q0[i * n + j];
            e += d * d;
        }
        *vec = fmax(*vec, sqrt(e));
    }
}

static void t_eigh(sg_backend *be)
{
    const int64_t n = 160;
    double *h = random_cov(n), *hs = malloc(n * n * 8);
    double *q0 = malloc(n * n * 8), *w0 = malloc(n * 8), *q = malloc(n * n * 8), *w = malloc(n * 8);
    /* the reference: the stage's own solve */
    memcpy(hs, h, n * n * 8);
    sg_eigh_descending(hs, n, 0.01, q0, w0);
    const char *names[] = {"f64", "mixed", "f32"};
    for (int mode = SG_EIGH_F64; mode <= SG_EIGH_F32; mode++) {
        double vec = INFINITY, val = INFINITY;
        int err = eigh_on(be, h, n, 0.01, (sg_eigh_mode)mode, q, w);
        if (!err)
            eig_diff(q, w, q0, w0, n, &vec, &val);
        int sorted = 1;
        for (int64_t j = 1; j < n; j++)
            sorted &= w[j] <= w[j - 1];
        /* float32 alone: values only (its vectors for close eigenvalues are
         * what the other two modes exist to fix) */
        double tv = mode == SG_EIGH_F32 ? INFINITY : 1e-10, tl = mode == SG_EIGH_F32 ? 1e-5 : 1e-13;
        tap_ok(!err && sorted && vec < tv && val < tl,
               "%s: eigh %s, damped, descending, vs dsyevd: vectors %.1e, values %.1e",
               be->ops->name, names[mode], vec, val);
    }
    free(h), free(hs), free(q0), free(w0), free(q), free(w);
}

/* ---- rotations ---- */

static void t_rotate(sg_backend *be)
{
    const int64_t D = 72, d = 56, rows = 600, cols = 530; /* more than one CPU chunk */
    double *q = malloc(D * D * 8);
    sg_random_orthogonal(D, 5, q);
    float *wr = frand(rows * D, 1), *ww = frand(D * cols, 1);
    /* references: the products summed in float64 here, not by the stage
     * functions the CPU backend itself calls */
    double *rr = malloc(rows * d * 8), *rw = malloc(d * cols * 8);
    for (int64_t r = 0; r < rows; r++) /* W (rows, D)·Q[:, :d] */
        for (int64_t j = 0; j < d; j++) {
            double s = 0;
            for (int64_t k = 0; k < D; k++)
                s += (double)wr[r * D + k] * q[k * D + j];
            rr[r * d + j] = s;
        }
    for (int64_t j = 0; j < d; j++) /* Q[:, :d]ᵀ·W (D, cols) */
        for (int64_t c = 0; c < cols; c++) {
            double s = 0;
            for (int64_t k = 0; k < D; k++)
                s += q[k * D + j] * ww[k * cols + c];
            rw[j * cols + c] = s;
        }

    double *dq = put(be, q, D * D * 8);
    float *dwr = put(be, wr, rows * D * 4), *dww = put(be, ww, D * cols * 4);
    float *dor = put(be, NULL, rows * d * 4), *dow = put(be, NULL, d * cols * 4);
    int err = be->ops->rotate_reader(be, dwr, rows, D, dq, d, dor);
    err = err ? err : be->ops->rotate_writer(be, dww, D, cols, dq, d, dow);
    float *or_ = get(be, dor, rows * d * 4), *ow = get(be, dow, d * cols * 4);
    double er = err ? INFINITY : frel_d(or_, rr, rows * d);
    double ew = err ? INFINITY : frel_d(ow, rw, d * cols);
    /* float64 sums rounded once to float32: 2⁻²⁴ of max |out| at most; 2·2⁻²⁴ allowed */
    tap_ok(er < 1.2e-7 && ew < 1.2e-7, "%s: rotate reader W·Q_d (%.1e) and writer Q_dᵀ·W (%.1e) "
           "match float64 sums rounded to float32", be->ops->name, er, ew);
    drop(be, dq), drop(be, dwr), drop(be, dww), drop(be, dor), drop(be, dow);
    free(q), free(wr), free(ww), free(rr), free(rw), free(or_), free(ow);
}

/* ---- norms ---- */

static void ref_norm(float *x, int64_t rows, int64_t d, sg_norm_kind kind, int64_t norm_dim,
                     double eps, const float *w, const float *b, double *out)
{
    for (int64_t r = 0; r < rows; r++) {
        const float *v = x + r * d;
        double mean = 0, ss = 0;
        if (kind == SG_NORM_LAYER) {
            for (int64_t i = 0; i < d; i++)
                mean += v[i];
            mean /= d;
        }
        for (int64_t i = 0; i < d; i++)
            ss += (v[i] - mean) * (v[i] - mean);
        double inv = 1 / sqrt(ss / (kind == SG_NORM_LAYER ? d : norm_dim) + eps);
        for (int64_t i = 0; i < d; i++)
            out[r * d + i] = (v[i] - mean) * inv * (w ? w[i] : 1) + (b ? b[i] : 0);
    }
}

static void t_norm(sg_backend *be)
{
    const int64_t rows = 33, d = 200;
    float *x = frand(rows * d, 4), *w = frand(d, 1), *b = frand(d, 1);
    for (int64_t i = 0; i < rows * d; i += 7)
        x[i] += 3.0f; /* a non-zero mean for LayerNorm */
    double *ref = malloc(rows * d * 8), worst = 0;
    struct {
        sg_norm_kind kind;
        int64_t norm_dim;
        int wb;
    } cases[] = {{SG_NORM_RMS, d, 1}, {SG_NORM_RMS, 256, 0}, {SG_NORM_LAYER, d, 1},
                 {SG_NORM_LAYER, d, 0}};
    for (int c = 0; c < 4; c++) {
        const float *cw = cases[c].wb ? w : NULL, *cb = cases[c].wb && cases[c].kind == SG_NORM_LAYER ? b : NULL;
        ref_norm(x, rows, d, cases[c].kind, cases[c].norm_dim, 1e-5, cw, cb, ref);
        float *dx = put(be, x, rows * d * 4), *dw = put(be, w, d * 4), *db = put(be, b, d * 4);
        int err = be->ops->norm_rows(be, dx, rows, d, cases[c].kind, cases[c].norm_dim, 1e-5,
                                     cw ? dw : NULL, cb ? db : NULL);
        float *out = get(be, dx, rows * d * 4);
        worst = fmax(worst, err ? INFINITY : frel_d(out, ref, rows * d));
        drop(be, dx), drop(be, dw), drop(be, db), free(out);
    }
    tap_ok(worst < 2e-6, "%s: RMSNorm (own and sliced norm_dim) and LayerNorm, with and without "
           "weight and bias (%.1e)", be->ops->name, worst);
    free(x), free(w), free(b), free(ref);
}

/* ---- rope ---- */

static void t_rope(sg_backend *be)
{
    const int64_t n = 19, nh = 3, hd = 32, pos0 = 5;
    float *x = frand(n * nh * hd, 2);
    double worst = 0;
    for (int layout = SG_ROPE_HALF; layout <= SG_ROPE_PAIRS; layout++)
        for (int partial = 0; partial < 2; partial++) {
            int64_t rd = partial ? 20 : hd, half = rd / 2;
            double inv[64];
            for (int64_t i = 0; i < half; i++)
                inv[i] = pow(10000.0, -2.0 * i / rd) / (i % 3 ? 1 : 4.0); /* some scaled */
            double *ref = malloc(n * nh * hd * 8);
            for (int64_t t = 0; t < n; t++)
                for (int64_t h = 0; h < nh; h++) {
                    const float *v = x + (t * nh + h) * hd;
                    double *o = ref + (t * nh + h) * hd;
                    for (int64_t i = 0; i < hd; i++)
                        o[i] = v[i];
                    for (int64_t i = 0; i < half; i++) {
                        int64_t i0 = layout == SG_ROPE_PAIRS ? 2 * i : i;
                        int64_t i1 = layout == SG_ROPE_PAIRS ? 2 * i + 1 : i + half;
                        double a = (pos0 + t) * inv[i];
                        o[i0] = v[i0] * cos(a) - v[i1] * sin(a);
                        o[i1] = v[i0] * sin(a) + v[i1] * cos(a);
                    }
                }
            float *dx = put(be, x, n * nh * hd * 4);
            int err = be->ops->rope(be, dx, n, nh, hd, rd, (sg_rope_layout)layout, pos0, inv);
            float *out = get(be, dx, n * nh * hd * 4);
            worst = fmax(worst, err ? INFINITY : frel_d(out, ref, n * nh * hd));
            drop(be, dx), free(out), free(ref);
        }
    tap_ok(worst < 2e-6, "%s: RoPE rotate_half and pairs, full and partial, from position %lld "
           "(%.1e)", be->ops->name, (long long)pos0, worst);
    free(x);
}

/* ---- attention ---- */

static void ref_attention(const float *q, const float *k, const float *v, double *out, int64_t n,
                          int64_t nh, int64_t nkv, int64_t hd)
{
    double *p = malloc(n * sizeof(double));
    for (int64_t h = 0; h < nh; h++) {
        int64_t g = h / (nh / nkv);
        for (int64_t i = 0; i < n; i++) {
            double max = -INFINITY, sum = 0;
            for (int64_t j = 0; j <= i; j++) {
                double s = 0;
                for (int64_t c = 0; c < hd; c++)
                    s += (double)q[i * nh * hd + h * hd + c] * k[j * nkv * hd + g * hd + c];
                p[j] = s / sqrt((double)hd);
                max = fmax(max, p[j]);
            }
            for (int64_t j = 0; j <= i; j++)
                sum += p[j] = exp(p[j] - max);
            for (int64_t c = 0; c < hd; c++) {
                double o = 0;
                for (int64_t j = 0; j <= i; j++)
                    o += p[j] / sum * v[j * nkv * hd + g * hd + c];
                out[i * nh * hd + h * hd + c] = o;
            }
        }
    }
    free(p);
}

static void t_attention(sg_backend *be)
{
    struct {
        int64_t n, nh, nkv, hd;
    } cases[] = {{23, 4, 2, 16}, {1, 2, 2, 8}, {150, 8, 2, 128}, {97, 6, 1, 64}, {40, 2, 1, 80}};
    double worst = 0;
    for (int c = 0; c < 5; c++) {
        int64_t n = cases[c].n, nh = cases[c].nh, nkv = cases[c].nkv, hd = cases[c].hd;
        float *q = frand(n * nh * hd, 2), *k = frand(n * nkv * hd, 2), *v = frand(n * nkv * hd, 1);
        double *ref = malloc(n * nh * hd * 8);
        ref_attention(q, k, v, ref, n, nh, nkv, hd);
        float *dq = put(be, q, n * nh * hd * 4), *dk = put(be, k, n * nkv * hd * 4);
        float *dv = put(be, v, n * nkv * hd * 4), *dout = put(be, NULL, n * nh * hd * 4);
        int err = be->ops->attention(be, dq, dk, dv, dout, n, nh, nkv, hd);
        float *out = get(be, dout, n * nh * hd * 4);
        double e = err ? INFINITY : frel_d(out, ref, n * nh * hd);
        if (e > 1e-5)
            tap_diag("attention n %lld heads %lld/%lld hd %lld: %.1e", (long long)n, (long long)nh,
                     (long long)nkv, (long long)hd, e);
        worst = fmax(worst, e);
        drop(be, dq), drop(be, dk), drop(be, dv), drop(be, dout);
        free(q), free(k), free(v), free(ref), free(out);
    }
    tap_ok(worst < 1e-5, "%s: causal GQA attention, head dims 8..128, 1..150 tokens (%.1e)",
           be->ops->name, worst);

    sg_clear_error();
    int err = be->ops->attention(be, NULL, NULL, NULL, NULL, 4, 6, 4, 16);
    tap_ok(err == SG_EARG, "%s: 6 query heads over 4 kv heads refused: %s", be->ops->name,
           sg_last_error());
}

/* ---- activation and add ---- */

static double ref_act(sg_act a, double x)
{
    switch (a) {
    case SG_ACT_SILU: return x / (1 + exp(-x));
    case SG_ACT_RELU: return x > 0 ? x : 0;
    case SG_ACT_GELU_TANH: return 0.5 * x * (1 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)));
    case SG_ACT_GELU: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    }
    return x;
}

static void t_activation(sg_backend *be)
{
    const int64_t n = 3001;
    float *up = frand(n, 6), *gate = frand(n, 6);
    double *ref = malloc(n * 8), worst = 0;
    for (int a = SG_ACT_SILU; a <= SG_ACT_GELU; a++)
        for (int gated = 0; gated < 2; gated++) {
            for (int64_t i = 0; i < n; i++)
                ref[i] = gated ? up[i] * ref_act((sg_act)a, gate[i]) : ref_act((sg_act)a, up[i]);
            float *du = put(be, up, n * 4), *dg = put(be, gate, n * 4);
            int err = be->ops->activation(be, (sg_act)a, du, gated ? dg : NULL, n);
            float *out = get(be, du, n * 4);
            worst = fmax(worst, err ? INFINITY : frel_d(out, ref, n));
            drop(be, du), drop(be, dg), free(out);
        }
    tap_ok(worst < 2e-6, "%s: SiLU, ReLU, GELU (tanh and erf), gated and plain (%.1e)",
           be->ops->name, worst);
    free(up), free(gate), free(ref);
}

static void t_add(sg_backend *be)
{
    const int64_t rows = 17, cols = 301;
    float *y = frand(rows * cols, 1), *x = frand(rows * cols, 1), *bias = frand(cols, 1);
    float *ref = malloc(rows * cols * 4);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            ref[r * cols + c] = (y[r * cols + c] + x[r * cols + c]) + bias[c];
    float *dy = put(be, y, rows * cols * 4), *dx = put(be, x, rows * cols * 4);
    float *db = put(be, bias, cols * 4);
    int err = be->ops->add(be, dy, dx, rows, cols, cols);
    err = err ? err : be->ops->add(be, dy, db, rows, cols, 0);
    float *out = get(be, dy, rows * cols * 4);
    tap_ok(!err && memcmp(out, ref, rows * cols * 4) == 0,
           "%s: residual add and bias broadcast, exact", be->ops->name);
    drop(be, dy), drop(be, dx), drop(be, db), free(y), free(x), free(bias), free(ref), free(out);
}

/* ---- the same ops on the GPU, against the CPU backend ---- */

/* Runs one op's test on the GPU when there is one, else a skip; the
 * reference loops make "against the CPU" transitive (both against the
 * same float64 answer, with the same tolerances). */
#define ON_GPU(what, call)   \
    do {                     \
        if (gpu)             \
            call;            \
        else                 \
            skip_gpu(what);  \
    } while (0)

/* A bigger covariance through the whole GPU path against the CPU backend:
 * the sizes where cuSOLVER and the refinement recursion do real work. */
static void t_eigh_big(sg_backend *be)
{
    const int64_t n = 700;
    double *h = random_cov(n), *q0 = malloc(n * n * 8), *w0 = malloc(n * 8);
    double *q = malloc(n * n * 8), *w = malloc(n * 8), vec, val;
    int err = eigh_on(cpu, h, n, 0.01, SG_EIGH_F64, q0, w0);
    for (int mode = SG_EIGH_F64; mode <= SG_EIGH_MIXED; mode++) {
        err = err ? err : eigh_on(be, h, n, 0.01, (sg_eigh_mode)mode, q, w);
        vec = val = INFINITY;
        if (!err)
            eig_diff(q, w, q0, w0, n, &vec, &val);
        tap_ok(!err && vec < 1e-9 && val < 1e-13, "%s: eigh %s at n = %lld vs the CPU's dsyevd: "
               "vectors %.1e, values %.1e", be->ops->name, mode == SG_EIGH_F64 ? "f64" : "mixed",
               (long long)n, vec, val);
    }
    free(h), free(q0), free(w0), free(q), free(w);
}

int main(void)
{
    cpu = sg_backend_cpu();
    gpu = sg_backend_cuda_init(0, 0);
    if (gpu)
        tap_diag("CUDA backend: %s", gpu->ops->name);
    else
        tap_diag("no CUDA backend: %s", sg_last_error());

    t_tables();
    t_memory(cpu);
    ON_GPU("memory round trip", t_memory(gpu));
    t_gemm(cpu, 0);
    ON_GPU("sgemm", t_gemm(gpu, 0));
    t_gemm(cpu, 1);
    ON_GPU("dgemm", t_gemm(gpu, 1));
    t_cov(cpu);
    ON_GPU("covariance", t_cov(gpu));
    t_cov_mixed(cpu);
    ON_GPU("mixed covariance", t_cov_mixed(gpu));
    t_eigh(cpu);
    ON_GPU("eigh", t_eigh(gpu));
    t_eigh_big(cpu);
    ON_GPU("eigh n = 700 f64", t_eigh_big(gpu));
    if (!gpu)
        skip_gpu("eigh n = 700 mixed");
    t_rotate(cpu);
    ON_GPU("rotate", t_rotate(gpu));
    t_norm(cpu);
    ON_GPU("norm", t_norm(gpu));
    t_rope(cpu);
    ON_GPU("rope", t_rope(gpu));
    t_attention(cpu);
    if (gpu)
        t_attention(gpu);
    else
        skip_gpu("attention"), skip_gpu("attention head grouping refused");
    t_activation(cpu);
    ON_GPU("activation", t_activation(gpu));
    t_add(cpu);
    ON_GPU("add", t_add(gpu));

    if (gpu) {
        sg_backend_mem m;
        gpu->ops->memory(gpu, &m);
        tap_ok(m.in_use == m.workspace, "cuda: every buffer released (%zu bytes left beside a "
               "%zu-byte workspace, peak %zu)", m.in_use - m.workspace, m.workspace, m.peak);
        gpu->ops->free(gpu);
    } else {
        skip_gpu("every buffer released");
    }
    return tap_done();
}
