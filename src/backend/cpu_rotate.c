#include "cpu_kernels.h"

#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sg_error.h"

#define ROW_CHUNK 512

static int oom(const char *what) { return sg_fail(-ENOMEM, "out of memory rotating %s", what); }

int sg_rotate_reader_into(const float *w, int64_t rows, int64_t D, const double *q, int64_t d,
                          float *out)
{
    int64_t chunk = rows < ROW_CHUNK ? rows : ROW_CHUNK;
    double *a = malloc(chunk * D * sizeof(double)), *c = malloc(chunk * d * sizeof(double));
    if (!a || !c) {
        free(a);
        free(c);
        return oom("a reader");
    }
    for (int64_t r0 = 0; r0 < rows; r0 += chunk) {
        int64_t n = rows - r0 < chunk ? rows - r0 : chunk;
        for (int64_t i = 0; i < n * D; i++)
            a[i] = w[r0 * D + i];
        /* C (n, d) = A (n, D) · Q[:, :d] (D, d); Q's leading dimension is D */
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)d, (int)D, 1.0, a,
                    (int)D, q, (int)D, 0.0, c, (int)d);
        for (int64_t i = 0; i < n * d; i++)
            out[r0 * d + i] = (float)c[i];
    }
    free(a);
    free(c);
    return 0;
}

int sg_rotate_reader(float **w, int64_t rows, int64_t D, const double *q, int64_t d)
{
    float *out = malloc(rows * d * sizeof(float));
    if (!out)
        return oom("a reader");
    int err = sg_rotate_reader_into(*w, rows, D, q, d, out);
    if (err) {
        free(out);
        return err;
    }
    free(*w);
    *w = out;
    return 0;
}

int sg_rotate_writer(float **w, float **bias, int64_t D, int64_t cols, const double *q,
                     int64_t d)
{
    double *a = malloc(D * cols * sizeof(double)), *c = malloc(d * cols * sizeof(double));
    float *out = malloc(d * cols * sizeof(float));
    if (!a || !c || !out) {
        free(a);
        free(c);
        free(out);
        return oom("a writer");
    }
    for (int64_t i = 0; i < D * cols; i++)
        a[i] = (*w)[i];
    /* C (d, cols) = Q[:, :d]ᵀ (d, D) · W (D, cols) */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d, (int)cols, (int)D, 1.0, q,
                (int)D, a, (int)cols, 0.0, c, (int)cols);
    for (int64_t i = 0; i < d * cols; i++)
        out[i] = (float)c[i];
    free(*w);
    *w = out;
    if (bias && *bias) {
        float *b = malloc(d * sizeof(float));
        if (!b) {
            free(a);
            free(c);
            return oom("a bias");
        }
        for (int64_t j = 0; j < d; j++) {
            double acc = 0;
            for (int64_t i = 0; i < D; i++)
                acc += q[i * D + j] * (*bias)[i];
            b[j] = (float)acc;
        }
        free(*bias);
        *bias = b;
    }
    free(a);
    free(c);
    return 0;
}

int sg_shortcut_matrix(const double *q_a, int64_t d_a, const double *q_b, int64_t d_b,
                       int64_t D, float **out)
{
    int64_t cols = q_b ? d_b : D;
    float *s = malloc(d_a * cols * sizeof(float));
    if (!s)
        return oom("a shortcut");
    if (!q_b) {
        for (int64_t i = 0; i < d_a; i++)
            for (int64_t j = 0; j < D; j++)
                s[i * D + j] = (float)q_a[j * D + i];
    } else {
        double *c = malloc(d_a * d_b * sizeof(double));
        if (!c) {
            free(s);
            return oom("a shortcut");
        }
        cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)d_a, (int)d_b, (int)D, 1.0,
                    q_a, (int)D, q_b, (int)D, 0.0, c, (int)d_b);
        for (int64_t i = 0; i < d_a * d_b; i++)
            s[i] = (float)c[i];
        free(c);
    }
    *out = s;
    return 0;
}

int sg_project_rows(const float *x, int64_t T, int64_t D, const double *q, int64_t d, float *out)
{
    float *qf = malloc(D * d * sizeof(float));
    if (!qf)
        return oom("activations");
    for (int64_t i = 0; i < D; i++)
        for (int64_t j = 0; j < d; j++)
            qf[i * d + j] = (float)q[i * D + j];
    for (int64_t r0 = 0; r0 < T; r0 += 8192) {
        int64_t n = T - r0 < 8192 ? T - r0 : 8192;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)d, (int)D, 1.0f,
                    x + r0 * D, (int)D, qf, (int)d, 0.0f, out + r0 * d, (int)d);
    }
    free(qf);
    return 0;
}
