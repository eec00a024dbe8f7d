/* The CPU backend: the reference implementation of backend.h, on host
 * memory, with OpenBLAS and LAPACKE. The operations are the loops of
 * src/model/forward.c and the CPU kernels (cpu_*.c), one op at a time; its
 * eigh runs the shared driver (eigh_mixed.c) on the primitives below. */
#include "backend.h"

#include <cblas.h>
#include <errno.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"
#include "eigh_pair.h"
#include "forward.h"
#include "sg_error.h"
#include "vec_math.h"

void sg_backend_drain(sg_backend *be)
{
    char saved[1024];
    snprintf(saved, sizeof saved, "%s", sg_last_error());
    be->ops->await_uploads(be);
    be->ops->synchronize(be);
    sg_fail(0, "%s", saved);
}

/* Allocations carry their size in a 256-byte header so release can count. */
#define HDR 256

static size_t cpu_in_use, cpu_peak;

static int cpu_alloc(sg_backend *be, size_t bytes, void **out)
{
    void *p;
    if (posix_memalign(&p, HDR, HDR + (bytes ? bytes : 1)))
        return sg_fail(-ENOMEM, "out of memory for a %zu-byte buffer", bytes);
    *(size_t *)p = bytes;
    size_t now = __atomic_add_fetch(&cpu_in_use, bytes, __ATOMIC_RELAXED);
    size_t peak = __atomic_load_n(&cpu_peak, __ATOMIC_RELAXED);
    while (now > peak &&
           !__atomic_compare_exchange_n(&cpu_peak, &peak, now, 0, __ATOMIC_RELAXED,
                                        __ATOMIC_RELAXED))
        ;
    *out = (char *)p + HDR;
    return 0;
}

static void cpu_release(sg_backend *be, void *p)
{
    if (!p)
        return;
    char *base = (char *)p - HDR;
    __atomic_sub_fetch(&cpu_in_use, *(size_t *)base, __ATOMIC_RELAXED);
    free(base);
}

static int cpu_copy(sg_backend *be, void *dst, const void *src, size_t bytes)
{
    if (dst != src)
        memmove(dst, src, bytes);
    return 0;
}

static int cpu_host_alloc(sg_backend *be, size_t bytes, void **out)
{
    if (!(*out = malloc(bytes ? bytes : 1)))
        return sg_fail(-ENOMEM, "out of memory for %zu bytes of buffers", bytes);
    return 0;
}

static void cpu_host_free(sg_backend *be, void *p) { free(p); }

static int cpu_zero(sg_backend *be, void *p, size_t bytes)
{
    memset(p, 0, bytes);
    return 0;
}

static int cpu_sync(sg_backend *be) { return 0; }

static int cpu_await(sg_backend *be) { return 0; }

static void cpu_free(sg_backend *be) {}

static int cpu_memory(sg_backend *be, sg_backend_mem *m)
{
    memset(m, 0, sizeof *m);
    m->in_use = __atomic_load_n(&cpu_in_use, __ATOMIC_RELAXED);
    m->peak = __atomic_load_n(&cpu_peak, __ATOMIC_RELAXED);
    return 0;
}

static int too_big(int64_t v) { return v < 0 || v > 2147483647; }

static int cpu_sgemm(sg_backend *be, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
                     const float *a, int64_t lda, const float *b, int64_t ldb, float beta,
                     float *c, int64_t ldc)
{
    if (too_big(m) || too_big(n) || too_big(k) || too_big(lda) || too_big(ldb) || too_big(ldc))
        return sg_fail(SG_EARG, "sgemm sizes beyond 32 bits (%lld x %lld x %lld)",
                       (long long)m, (long long)n, (long long)k);
    if (m && n)
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
    return 0;
}

/* the stage's own sums (stages/covariance.c) into H's upper triangle,
 * then mirrored: float64 products through a chunk of widened rows, or
 * float32 products of SG_COV_MIXED_ROWS-row slices through S (d, d) */
static int cpu_cov_accumulate(sg_backend *be, double *h, int64_t d, const float *x, int64_t rows,
                              int mixed)
{
    if (rows <= 0)
        return 0;
    void *scratch = malloc(mixed ? d * d * sizeof(float) : SG_COV_CHUNK * d * sizeof(double));
    if (!scratch)
        return sg_fail(-ENOMEM, "out of memory for a covariance %s", mixed ? "slice" : "chunk");
    if (mixed)
        sg_cov_accumulate_upper_mixed(h, scratch, d, x, rows);
    else
        sg_cov_accumulate_upper(h, scratch, d, x, rows);
    free(scratch);
    sg_cov_mirror_upper(h, d);
    return 0;
}

#define ROT_CHUNK 512

static int cpu_rotate_reader(sg_backend *be, const float *w, int64_t rows, int64_t D,
                             const double *q, int64_t d, float *out)
{
    return sg_rotate_reader_into(w, rows, D, q, d, out);
}

static int cpu_rotate_writer(sg_backend *be, const float *w, int64_t D, int64_t cols,
                             const double *q, int64_t d, float *out)
{
    int64_t chunk = cols < ROT_CHUNK ? cols : ROT_CHUNK;
    double *a = malloc(D * chunk * sizeof(double)), *c = malloc(d * chunk * sizeof(double));
    if (!a || !c) {
        free(a), free(c);
        return sg_fail(-ENOMEM, "out of memory rotating a writer");
    }
    for (int64_t c0 = 0; c0 < cols; c0 += chunk) {
        int64_t n = cols - c0 < chunk ? cols - c0 : chunk;
        for (int64_t i = 0; i < D; i++)
            for (int64_t j = 0; j < n; j++)
                a[i * n + j] = w[i * cols + c0 + j];
        /* C (d, n) = Q[:, :d]ᵀ (d, D)·A (D, n) */
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)n, (int)D, 1.0, q,
                    (int)D, a, (int)n, 0.0, c, (int)n);
        for (int64_t i = 0; i < d; i++)
            for (int64_t j = 0; j < n; j++)
                out[i * cols + c0 + j] = (float)c[i * n + j];
    }
    free(a), free(c);
    return 0;
}

static int cpu_norm_rows(sg_backend *be, float *x, int64_t rows, int64_t d, sg_norm_kind kind,
                         int64_t norm_dim, double eps, const float *w, const float *b)
{
    /* forward.c's own loop, which reads these three fields of the config */
    static _Thread_local sg_model_config cfg;
    cfg.norm = kind;
    cfg.norm_dim = norm_dim;
    cfg.norm_eps = eps;
    sg_norm_rows(&cfg, x, rows, d, w, b);
    return 0;
}

static int cpu_rope(sg_backend *be, float *x, int64_t n, int64_t n_heads, int64_t head_dim,
                    int64_t rope_dim, sg_rope_layout layout, int64_t pos0, const double *inv_freq)
{
    if (layout == SG_ROPE_NONE)
        return 0;
    if (rope_dim > head_dim || rope_dim % 2)
        return sg_fail(SG_EARG, "rope over %lld of %lld head coordinates", (long long)rope_dim,
                       (long long)head_dim);
    int64_t half = rope_dim / 2;
    for (int64_t t = 0; t < n; t++) {
        float *row = x + t * n_heads * head_dim;
        for (int64_t i = 0; i < half; i++) {
            double ang = (double)(pos0 + t) * inv_freq[i];
            float cs = (float)cos(ang), sn = (float)sin(ang);
            int64_t i0 = layout == SG_ROPE_PAIRS ? 2 * i : i;
            int64_t i1 = layout == SG_ROPE_PAIRS ? 2 * i + 1 : i + half;
            for (int64_t h = 0; h < n_heads; h++) {
                float *v = row + h * head_dim, x0 = v[i0], x1 = v[i1];
                v[i0] = x0 * cs - x1 * sn;
                v[i1] = x0 * sn + x1 * cs;
            }
        }
    }
    return 0;
}

static int cpu_attention(sg_backend *be, const float *q, const float *k, const float *v,
                         float *out, int64_t n, int64_t nh, int64_t nkv, int64_t hd)
{
    if (nkv <= 0 || nh % nkv)
        return sg_fail(SG_EARG, "%lld query heads do not group over %lld key/value heads",
                       (long long)nh, (long long)nkv);
    float *scratch = malloc(sg_attention_scratch_floats(nh, nkv, hd, n) * sizeof(float));
    if (!scratch)
        return sg_fail(-ENOMEM, "cpu backend: out of memory for attention scores");
    sg_attention_causal(nh, nkv, hd, q, k, v, out, n, scratch);
    free(scratch);
    return 0;
}

static int cpu_activation(sg_backend *be, sg_act act, float *up, const float *gate, int64_t n)
{
    if (act == SG_ACT_SILU) { /* forward.c's vectorised SiLU, the same numbers */
        sg_silu_mul(up, gate, n);
        return 0;
    }
    if (gate)
        for (int64_t i = 0; i < n; i++)
            up[i] *= sg_activation(act, gate[i]);
    else
        for (int64_t i = 0; i < n; i++)
            up[i] = sg_activation(act, up[i]);
    return 0;
}

static int cpu_add(sg_backend *be, float *y, const float *x, int64_t rows, int64_t cols,
                   int64_t x_stride)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            y[r * cols + c] += x[r * x_stride + c];
    return 0;
}

/* ---- the eigensolver primitives on host memory ---- */

static int cpu_dgemm(sg_backend *be, int ta, int tb, int64_t m, int64_t n, int64_t k,
                     double alpha, const double *a, int64_t lda, const double *b, int64_t ldb,
                     double beta, double *c, int64_t ldc)
{
    if (too_big(m) || too_big(n) || too_big(k) || too_big(lda) || too_big(ldb) || too_big(ldc))
        return sg_fail(SG_EARG, "dgemm sizes beyond 32 bits (%lld x %lld x %lld)",
                       (long long)m, (long long)n, (long long)k);
    if (m && n)
        cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    (int)m, (int)n, (int)k, alpha, a, (int)lda, b, (int)ldb, beta, c, (int)ldc);
    return 0;
}

static int cpu_eigh_f32(sg_backend *be, const double *a, int64_t n, int64_t lda, double *x,
                        double *w)
{
    /* the workspace sizes of ssyevd's documentation, given explicitly: its
     * own query returns them as a float, which rounds them down past 2^24
     * (n > ~2900) before LAPACK 3.12 */
    int64_t lwork = 1 + 6 * n + 2 * n * n, liwork = 3 + 5 * n;
    float *af = malloc(n * n * sizeof(float)), *wf = malloc(n * sizeof(float));
    float *work = malloc(lwork * sizeof(float));
    lapack_int *iwork = malloc(liwork * sizeof(lapack_int));
    if (!af || !wf || !work || !iwork) {
        free(af), free(wf), free(work), free(iwork);
        return sg_fail(-ENOMEM, "out of memory for a float32 eigensolve");
    }
    /* column-major: A is symmetric, and its eigenvectors come back in
     * columns, i.e. row-major rows: X[i][j] = af[(n-1-j)·n + i] below */
    for (int64_t i = 0; i < n; i++)
        for (int64_t j = 0; j < n; j++)
            af[i * n + j] = (float)a[i * lda + j];
    lapack_int info = LAPACKE_ssyevd_work(LAPACK_COL_MAJOR, 'V', 'U', (lapack_int)n, af,
                                          (lapack_int)n, wf, work, (lapack_int)lwork, iwork,
                                          (lapack_int)liwork);
    free(work), free(iwork);
    if (!info)
        for (int64_t j = 0; j < n; j++) {
            w[j] = wf[n - 1 - j];
            for (int64_t i = 0; i < n; i++)
                x[i * n + j] = af[(n - 1 - j) * n + i];
        }
    free(af), free(wf);
    return info ? sg_fail(SG_ENUMERIC, "ssyevd failed (info %d) on a %lld x %lld matrix",
                          (int)info, (long long)n, (long long)n)
                : 0;
}

static int cpu_eigh_f64(sg_backend *be, const double *a, int64_t n, int64_t lda, double *x,
                        double *w)
{
    double *wa = malloc(n * sizeof(double));
    if (!wa)
        return sg_fail(-ENOMEM, "out of memory for eigenvalues");
    for (int64_t i = 0; i < n; i++)
        memcpy(x + i * n, a + i * lda, n * sizeof(double));
    /* dsyevd leaves eigenvectors in the columns, eigenvalues ascending */
    lapack_int info = LAPACKE_dsyevd(LAPACK_ROW_MAJOR, 'V', 'U', (lapack_int)n, x, (lapack_int)n, wa);
    if (!info) {
        for (int64_t j = 0; j < n; j++)
            w[j] = wa[n - 1 - j];
        for (int64_t i = 0; i < n; i++)
            for (int64_t j = 0; j < n / 2; j++) {
                double t = x[i * n + j];
                x[i * n + j] = x[i * n + n - 1 - j];
                x[i * n + n - 1 - j] = t;
            }
    }
    free(wa);
    return info ? sg_fail(SG_ENUMERIC, "dsyevd failed (info %d) on a %lld x %lld matrix",
                          (int)info, (long long)n, (long long)n)
                : 0;
}

static int cpu_diag_get(sg_backend *be, const double *m, int64_t n, int64_t ld, double *out)
{
    for (int64_t i = 0; i < n; i++)
        out[i] = m[i * ld + i];
    return 0;
}

static int cpu_diag_add(sg_backend *be, double *m, int64_t n, int64_t ld, double v)
{
    for (int64_t i = 0; i < n; i++)
        m[i * ld + i] += v;
    return 0;
}

static int cpu_set_identity(sg_backend *be, double *m, int64_t n, int64_t ld)
{
    for (int64_t i = 0; i < n; i++) {
        memset(m + i * ld, 0, n * sizeof(double));
        m[i * ld + i] = 1.0;
    }
    return 0;
}

static int cpu_couple(sg_backend *be, const double *s, const double *g, int64_t n, int64_t ld,
                      const double *lam, const double t[3], int64_t *hi)
{
    sg_pair_rule rule = {t[0], t[1], t[2]};
    for (int64_t i = 0; i < n; i++) {
        hi[i] = i;
        for (int64_t j = n - 1; j > i; j--) {
            double c, sij = 0.5 * (s[i * ld + j] + s[j * ld + i]);
            double gij = g ? 0.5 * (g[i * ld + j] + g[j * ld + i]) : 0;
            if (sg_pair_kind(sij, gij, lam[i], lam[j], rule, &c) == 2) {
                hi[i] = j;
                break;
            }
        }
    }
    return 0;
}

static int cpu_correction(sg_backend *be, double *s, const double *g, int64_t n, int64_t ld,
                          const double *lam, const double t[3], double *stat)
{
    sg_pair_rule rule = {t[0], t[1], t[2]};
    double me = 0, mc = 0, mo = 0;
    for (int64_t i = 0; i < n; i++) {
        double eii = (1.0 - g[i * ld + i]) / 2;
        s[i * ld + i] = eii;
        me = fmax(me, fabs(eii));
        mo = fmax(mo, fabs(2 * eii));
        for (int64_t j = i + 1; j < n; j++) {
            double c, gij, eij, eji;
            sg_pair_correction(s, g, ld, i, j, lam, rule, &eij, &eji, &gij, &c);
            s[i * ld + j] = eij;
            s[j * ld + i] = eji;
            me = fmax(me, fmax(fabs(eij), fabs(eji)));
            mc = fmax(mc, c);
            mo = fmax(mo, fabs(gij));
        }
    }
    stat[0] = me;
    stat[1] = mc;
    stat[2] = mo;
    return 0;
}

static int cpu_copy2d(sg_backend *be, double *dst, int64_t ldd, const double *src, int64_t lds,
                      int64_t rows, int64_t cols, int kind)
{
    for (int64_t i = 0; i < rows; i++)
        memmove(dst + i * ldd, src + i * lds, cols * sizeof(double));
    return 0;
}

static const sg_eigh_prims cpu_prims = {
    .dgemm = cpu_dgemm,
    .eigh_f32 = cpu_eigh_f32,
    .eigh_f64 = cpu_eigh_f64,
    .diag_get = cpu_diag_get,
    .diag_add = cpu_diag_add,
    .set_identity = cpu_set_identity,
    .couple = cpu_couple,
    .correction = cpu_correction,
    .copy2d = cpu_copy2d,
};

static int cpu_project_rows(sg_backend *be, const float *x, int64_t rows, int64_t D,
                            const double *q, int64_t d, float *out)
{
    return sg_project_rows(x, rows, D, q, d, out);
}

static int cpu_block_forward(sg_backend *be, const sg_model_config *cfg, const sg_block *b,
                             const float *x_in, float *x_out, float *mid, const sg_seqs *seqs)
{
    return sg_block_forward(cfg, b, x_in, x_out, mid, seqs);
}

static int cpu_block_forward_mlp(sg_backend *be, const sg_model_config *cfg, const sg_block *b,
                                 const float *mid, float *x_out, int64_t tokens)
{
    return sg_block_forward_mlp(cfg, b, mid, x_out, tokens);
}

static int cpu_eigh(sg_backend *be, double *h, int64_t d, double damp_frac, sg_eigh_mode mode,
                    double *q, double *eigenvalues)
{
    if (mode == SG_EIGH_F64) /* exactly the stage's solve */
        return sg_eigh_descending(h, d, damp_frac, q, eigenvalues);
    return sg_eigh_run(be, &cpu_prims, h, d, damp_frac, mode, q, eigenvalues);
}

static const sg_backend_ops cpu_ops = {
    .name = "cpu",
    .host_memory = 1,
    .free = cpu_free,
    .alloc = cpu_alloc,
    .release = cpu_release,
    .host_alloc = cpu_host_alloc,
    .host_free = cpu_host_free,
    .upload = cpu_copy,
    .upload_async = cpu_copy,
    .await_uploads = cpu_await,
    .download = cpu_copy,
    .copy = cpu_copy,
    .zero = cpu_zero,
    .synchronize = cpu_sync,
    .memory = cpu_memory,
    .sgemm = cpu_sgemm,
    .cov_accumulate = cpu_cov_accumulate,
    .eigh = cpu_eigh,
    .rotate_reader = cpu_rotate_reader,
    .rotate_writer = cpu_rotate_writer,
    .project_rows = cpu_project_rows,
    .block_forward = cpu_block_forward,
    .block_forward_mlp = cpu_block_forward_mlp,
    .norm_rows = cpu_norm_rows,
    .rope = cpu_rope,
    .attention = cpu_attention,
    .activation = cpu_activation,
    .add = cpu_add,
};

static sg_backend cpu_backend = {&cpu_ops, NULL};

sg_backend *sg_backend_cpu(void) { return &cpu_backend; }

const sg_eigh_prims *sg_eigh_prims_cpu(void) { return &cpu_prims; }
