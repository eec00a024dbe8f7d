#include "device_sim.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "forward_ops.h"
#include "sg_error.h"

/* An upload from page-locked memory: on a GPU it runs when the stream
 * reaches it, so its source must stay as it was until the next point
 * that waits for the stream (download, synchronize). */
typedef struct {
    const void *src;
    size_t n;
    uint64_t hash;
} pending;

typedef struct {
    pthread_mutex_t lock; /* the slicer's helper thread pins host memory */
    void **ptr;
    size_t *bytes;
    int n, cap;
    void **pinned; /* host_alloc'ed, with their sizes */
    size_t *pinned_bytes;
    int n_pinned, pinned_cap;
    pending *pend;
    int n_pend, pend_cap;
    void **queued; /* upload_async destinations not yet awaited, with sizes */
    size_t *queued_bytes;
    int n_queued, queued_cap;
    int violations;
    size_t mem_cap, in_use; /* bytes it may hand out (0: any), bytes out */
    long allocations, fail_at; /* made so far; the one to refuse (0: none) */
    sg_backend_ops ops;
} sim;

static sim *of(const sg_backend *be) { return (sim *)be->ctx; }
static sg_backend *cpu(void) { return sg_backend_cpu(); }

/* 1: [p, p + bytes) lies in one allocation */
static int owned(sim *s, const void *p, size_t bytes)
{
    int found = 0;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < s->n && !found; i++) {
        const char *b = s->ptr[i];
        found = (const char *)p >= b && (const char *)p + bytes <= b + s->bytes[i];
    }
    pthread_mutex_unlock(&s->lock);
    return found;
}

/* 1: [p, p + bytes) overlaps a destination of upload_async not yet
 * awaited, which on a GPU may still be being written */
static int in_flight(sim *s, const void *p, size_t bytes)
{
    int hit = 0;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < s->n_queued && !hit; i++)
        hit = (const char *)p < (const char *)s->queued[i] + s->queued_bytes[i] &&
              (const char *)s->queued[i] < (const char *)p + (bytes ? bytes : 1);
    pthread_mutex_unlock(&s->lock);
    return hit;
}

static int dev(sg_backend *be, const void *p, size_t bytes, const char *op)
{
    if (p && in_flight(of(be), p, bytes)) {
        of(be)->violations++;
        return sg_fail(SG_EARG, "device sim: %s reads %p before await_uploads", op, p);
    }
    if (!p || owned(of(be), p, bytes))
        return 0;
    of(be)->violations++;
    return sg_fail(SG_EARG, "device sim: %s given %zu bytes at %p, not device memory", op, bytes, p);
}

static int host(sg_backend *be, const void *p, const char *op)
{
    if (!owned(of(be), p, 1))
        return 0;
    of(be)->violations++;
    return sg_fail(SG_EARG, "device sim: %s given device memory %p as its host side", op, p);
}

static uint64_t fnv(const void *p, size_t n)
{
    const unsigned char *c = p;
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ c[i]) * 1099511628211ull;
    return h;
}

static int is_pinned(sim *s, const void *p)
{
    int found = 0;
    pthread_mutex_lock(&s->lock);
    for (int i = 0; i < s->n_pinned && !found; i++)
        found = (const char *)p >= (const char *)s->pinned[i] &&
                (const char *)p < (const char *)s->pinned[i] + s->pinned_bytes[i];
    pthread_mutex_unlock(&s->lock);
    return found;
}

/* The stream has drained: every pending upload's source must be as it
 * was when the upload was queued. */
static int drained(sg_backend *be, const char *where)
{
    sim *s = of(be);
    int err = 0;
    for (int i = 0; i < s->n_pend; i++)
        if (!err && fnv(s->pend[i].src, s->pend[i].n) != s->pend[i].hash) {
            s->violations++;
            err = sg_fail(SG_EARG, "device sim: the source of an upload of %zu bytes changed "
                          "before the stream reached it (seen at %s)", s->pend[i].n, where);
        }
    s->n_pend = 0;
    return err;
}

/* Appends (p, bytes) to a list that grows by doubling; 0 or -ENOMEM. */
static int list_add(void ***ptr, size_t **sizes, int *n, int *cap, void *p, size_t bytes)
{
    if (*n == *cap) {
        int c = *cap ? 2 * *cap : 64;
        void **np = realloc(*ptr, c * sizeof *np);
        if (np)
            *ptr = np;
        size_t *ns = np ? realloc(*sizes, c * sizeof *ns) : NULL;
        if (!ns)
            return -ENOMEM;
        *sizes = ns;
        *cap = c;
    }
    (*ptr)[*n] = p;
    (*sizes)[(*n)++] = bytes;
    return 0;
}

/* Removes p from the list; 1 if it was there (*bytes its size). */
static int list_remove(void **ptr, size_t *sizes, int *n, void *p, size_t *bytes)
{
    for (int i = 0; i < *n; i++)
        if (ptr[i] == p) {
            *bytes = sizes[i];
            ptr[i] = ptr[--*n];
            sizes[i] = sizes[*n];
            return 1;
        }
    return 0;
}

static int s_alloc(sg_backend *be, size_t bytes, void **out)
{
    sim *s = of(be);
    pthread_mutex_lock(&s->lock);
    int refuse = 0, over = 0;
    if (s->fail_at && ++s->allocations == s->fail_at)
        refuse = 1;
    else if (!s->fail_at)
        s->allocations++;
    over = s->mem_cap && s->in_use + bytes > s->mem_cap;
    /* never 0 bytes, so every allocation has an address of its own */
    void *p = refuse || over ? NULL : malloc(bytes ? bytes : 1);
    int err = p ? list_add(&s->ptr, &s->bytes, &s->n, &s->cap, p, bytes) : -ENOMEM;
    if (!err)
        s->in_use += bytes;
    size_t in_use = s->in_use;
    pthread_mutex_unlock(&s->lock);
    if (refuse)
        return sg_fail(-ENOMEM, "device sim: allocation %ld refused, as asked", s->fail_at);
    if (over)
        return sg_fail(-ENOMEM, "device sim: %zu bytes would pass the %zu-byte cap (%zu in use)",
                       bytes, s->mem_cap, in_use);
    if (err) {
        free(p);
        return sg_fail(-ENOMEM, "device sim: out of memory for %zu bytes", bytes);
    }
    *out = p;
    return 0;
}

static void s_release(sg_backend *be, void *p)
{
    sim *s = of(be);
    size_t bytes = 0;
    if (p && in_flight(s, p, 1)) {
        s->violations++;
        sg_fail(SG_EARG, "device sim: release of %p while an upload_async into it is queued", p);
    }
    pthread_mutex_lock(&s->lock);
    int found = list_remove(s->ptr, s->bytes, &s->n, p, &bytes);
    if (found)
        s->in_use -= bytes;
    else if (p)
        s->violations++;
    pthread_mutex_unlock(&s->lock);
    if (found)
        free(p);
    else if (p)
        sg_fail(SG_EARG, "device sim: release of %p, not an allocation", p);
}

static int s_host_alloc(sg_backend *be, size_t bytes, void **out)
{
    sim *s = of(be);
    int err = cpu()->ops->host_alloc(cpu(), bytes, out);
    if (err)
        return err;
    pthread_mutex_lock(&s->lock);
    err = list_add(&s->pinned, &s->pinned_bytes, &s->n_pinned, &s->pinned_cap, *out,
                   bytes ? bytes : 1);
    pthread_mutex_unlock(&s->lock);
    if (err) {
        cpu()->ops->host_free(cpu(), *out);
        return sg_fail(-ENOMEM, "device sim: out of memory");
    }
    return 0;
}

/* freeing a buffer an upload may still read is the same mistake */
static void s_host_free(sg_backend *be, void *p)
{
    sim *s = of(be);
    size_t bytes = 0;
    pthread_mutex_lock(&s->lock);
    list_remove(s->pinned, s->pinned_bytes, &s->n_pinned, p, &bytes);
    pthread_mutex_unlock(&s->lock);
    /* an upload from it that no download or synchronize has waited for */
    for (int i = 0; i < s->n_pend; i++)
        if ((const char *)s->pend[i].src >= (const char *)p &&
            (const char *)s->pend[i].src < (const char *)p + bytes) {
            s->violations++;
            sg_fail(SG_EARG, "device sim: host_free of %p while an upload from it is queued", p);
            s->pend[i--] = s->pend[--s->n_pend];
        }
    cpu()->ops->host_free(cpu(), p);
}

static int s_upload(sg_backend *be, void *d, const void *h, size_t n)
{
    sim *s = of(be);
    int err = dev(be, d, n, "upload");
    err = err ? err : host(be, h, "upload");
    if (err)
        return err;
    memcpy(d, h, n);
    if (is_pinned(s, h)) {
        if (s->n_pend == s->pend_cap) {
            int cap = s->pend_cap ? 2 * s->pend_cap : 16;
            pending *p = realloc(s->pend, cap * sizeof *p);
            if (!p)
                return sg_fail(-ENOMEM, "device sim: out of memory");
            s->pend = p;
            s->pend_cap = cap;
        }
        s->pend[s->n_pend++] = (pending){h, n, fnv(h, n)};
    }
    return 0;
}

static int s_download(sg_backend *be, void *h, const void *d, size_t n)
{
    int err = dev(be, d, n, "download");
    err = err ? err : host(be, h, "download");
    err = err ? err : drained(be, "a download");
    return err ? err : (memcpy(h, d, n), 0);
}

static int s_copy(sg_backend *be, void *d, const void *src, size_t n)
{
    int err = dev(be, d, n, "copy");
    err = err ? err : dev(be, src, n, "copy");
    return err ? err : (memmove(d, src, n), 0);
}

static int s_zero(sg_backend *be, void *p, size_t n)
{
    int err = dev(be, p, n, "zero");
    return err ? err : (memset(p, 0, n), 0);
}

/* Copies now, as upload does (its source is checked at the next drain),
 * and marks the destination in flight until await_uploads. */
static int s_upload_async(sg_backend *be, void *d, const void *h, size_t n)
{
    sim *s = of(be);
    int err = s_upload(be, d, h, n);
    if (err)
        return err;
    pthread_mutex_lock(&s->lock);
    err = list_add(&s->queued, &s->queued_bytes, &s->n_queued, &s->queued_cap, d, n);
    pthread_mutex_unlock(&s->lock);
    return err ? sg_fail(-ENOMEM, "device sim: out of memory") : 0;
}

static int s_await(sg_backend *be)
{
    sim *s = of(be);
    pthread_mutex_lock(&s->lock);
    s->n_queued = 0;
    pthread_mutex_unlock(&s->lock);
    return 0;
}

static int s_sync(sg_backend *be) { return drained(be, "synchronize"); }

static int s_memory(sg_backend *be, sg_backend_mem *m)
{
    memset(m, 0, sizeof *m);
    for (int i = 0; i < of(be)->n; i++)
        m->in_use += of(be)->bytes[i];
    return 0;
}

/* the extent of a row-major (rows, cols) matrix with leading dimension ld */
static size_t extent(int64_t rows, int64_t cols, int64_t ld, size_t elem)
{
    return rows <= 0 || cols <= 0 ? 0 : ((rows - 1) * ld + cols) * elem;
}

static int s_sgemm(sg_backend *be, int ta, int tb, int64_t m, int64_t n, int64_t k, float alpha,
                   const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
                   int64_t ldc)
{
    int err = dev(be, a, ta ? extent(k, m, lda, 4) : extent(m, k, lda, 4), "sgemm A");
    err = err ? err : dev(be, b, tb ? extent(n, k, ldb, 4) : extent(k, n, ldb, 4), "sgemm B");
    err = err ? err : dev(be, c, extent(m, n, ldc, 4), "sgemm C");
    return err ? err : cpu()->ops->sgemm(cpu(), ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

static int s_cov(sg_backend *be, double *h, int64_t d, const float *x, int64_t rows, int mixed)
{
    int err = dev(be, h, d * d * 8, "cov_accumulate H");
    err = err ? err : dev(be, x, rows * d * 4, "cov_accumulate X");
    return err ? err : cpu()->ops->cov_accumulate(cpu(), h, d, x, rows, mixed);
}

static int s_eigh(sg_backend *be, double *h, int64_t d, double damp, sg_eigh_mode mode, double *q,
                  double *w)
{
    int err = dev(be, h, d * d * 8, "eigh H");
    err = err ? err : dev(be, q, d * d * 8, "eigh Q");
    err = err ? err : host(be, w, "eigh eigenvalues");
    return err ? err : cpu()->ops->eigh(cpu(), h, d, damp, mode, q, w);
}

static int s_reader(sg_backend *be, const float *w, int64_t rows, int64_t D, const double *q,
                    int64_t d, float *out)
{
    int err = dev(be, w, rows * D * 4, "rotate_reader W");
    err = err ? err : dev(be, q, D * D * 8, "rotate_reader Q");
    err = err ? err : dev(be, out, rows * d * 4, "rotate_reader out");
    return err ? err : cpu()->ops->rotate_reader(cpu(), w, rows, D, q, d, out);
}

static int s_writer(sg_backend *be, const float *w, int64_t D, int64_t cols, const double *q,
                    int64_t d, float *out)
{
    int err = dev(be, w, D * cols * 4, "rotate_writer W");
    err = err ? err : dev(be, q, D * D * 8, "rotate_writer Q");
    err = err ? err : dev(be, out, d * cols * 4, "rotate_writer out");
    return err ? err : cpu()->ops->rotate_writer(cpu(), w, D, cols, q, d, out);
}

static int s_project(sg_backend *be, const float *x, int64_t rows, int64_t D, const double *q,
                     int64_t d, float *out)
{
    int err = dev(be, x, rows * D * 4, "project_rows X");
    err = err ? err : dev(be, q, D * D * 8, "project_rows Q");
    err = err ? err : dev(be, out, rows * d * 4, "project_rows out");
    return err ? err : cpu()->ops->project_rows(cpu(), x, rows, D, q, d, out);
}

static int s_norm(sg_backend *be, float *x, int64_t rows, int64_t d, sg_norm_kind kind,
                  int64_t norm_dim, double eps, const float *w, const float *b)
{
    int err = dev(be, x, rows * d * 4, "norm_rows x");
    err = err ? err : dev(be, w, d * 4, "norm_rows w");
    err = err ? err : dev(be, b, d * 4, "norm_rows b");
    return err ? err : cpu()->ops->norm_rows(cpu(), x, rows, d, kind, norm_dim, eps, w, b);
}

static int s_rope(sg_backend *be, float *x, int64_t n, int64_t nh, int64_t hd, int64_t rope_dim,
                  sg_rope_layout layout, int64_t pos0, const double *inv_freq)
{
    int err = dev(be, x, n * nh * hd * 4, "rope x");
    err = err ? err : host(be, inv_freq, "rope inv_freq");
    return err ? err : cpu()->ops->rope(cpu(), x, n, nh, hd, rope_dim, layout, pos0, inv_freq);
}

static int s_attention(sg_backend *be, const float *q, const float *k, const float *v, float *out,
                       int64_t n, int64_t nh, int64_t nkv, int64_t hd)
{
    int err = dev(be, q, n * nh * hd * 4, "attention q");
    err = err ? err : dev(be, k, n * nkv * hd * 4, "attention k");
    err = err ? err : dev(be, v, n * nkv * hd * 4, "attention v");
    err = err ? err : dev(be, out, n * nh * hd * 4, "attention out");
    return err ? err : cpu()->ops->attention(cpu(), q, k, v, out, n, nh, nkv, hd);
}

static int s_activation(sg_backend *be, sg_act act, float *up, const float *gate, int64_t n)
{
    int err = dev(be, up, n * 4, "activation up");
    err = err ? err : dev(be, gate, n * 4, "activation gate");
    return err ? err : cpu()->ops->activation(cpu(), act, up, gate, n);
}

static int s_add(sg_backend *be, float *y, const float *x, int64_t rows, int64_t cols,
                 int64_t stride)
{
    int err = dev(be, y, rows * cols * 4, "add y");
    err = err ? err : dev(be, x, stride ? rows * cols * 4 : cols * 4, "add x");
    return err ? err : cpu()->ops->add(cpu(), y, x, rows, cols, stride);
}

static void s_free(sg_backend *be)
{
    sim *s = of(be);
    for (int i = 0; i < s->n; i++)
        free(s->ptr[i]);
    pthread_mutex_destroy(&s->lock);
    free(s->ptr);
    free(s->bytes);
    free(s->pinned);
    free(s->pinned_bytes);
    free(s->pend);
    free(s->queued);
    free(s->queued_bytes);
    free(s);
    free(be);
}

sg_backend *device_sim_new(size_t cap)
{
    sg_backend *be = calloc(1, sizeof *be);
    sim *s = calloc(1, sizeof *s);
    if (!be || !s) {
        free(be), free(s);
        return NULL;
    }
    s->ops = (sg_backend_ops){
        .name = "device-sim",
        .host_memory = 0,
        .free = s_free,
        .alloc = s_alloc,
        .release = s_release,
        .host_alloc = s_host_alloc,
        .host_free = s_host_free,
        .upload = s_upload,
        .upload_async = s_upload_async,
        .await_uploads = s_await,
        .download = s_download,
        .copy = s_copy,
        .zero = s_zero,
        .synchronize = s_sync,
        .memory = s_memory,
        .sgemm = s_sgemm,
        .cov_accumulate = s_cov,
        .eigh = s_eigh,
        .rotate_reader = s_reader,
        .rotate_writer = s_writer,
        .project_rows = s_project,
        .block_forward = sg_block_forward_ops, /* composed, as on CUDA */
        .block_forward_mlp = sg_block_forward_mlp_ops,
        .norm_rows = s_norm,
        .rope = s_rope,
        .attention = s_attention,
        .activation = s_activation,
        .add = s_add,
    };
    s->mem_cap = cap;
    pthread_mutex_init(&s->lock, NULL);
    be->ops = &s->ops;
    be->ctx = s;
    return be;
}

int device_sim_violations(const sg_backend *be) { return of(be)->violations; }

long device_sim_allocations(const sg_backend *be) { return of(be)->allocations; }

void device_sim_fail_at(sg_backend *be, long n)
{
    of(be)->fail_at = n;
    of(be)->allocations = 0;
}
