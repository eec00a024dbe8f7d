/* Stage "rotate/slice" on a backend: the steps that rotate a block's
 * weights by the signals' axes and cut them, build the shortcuts, and
 * rotate the embeddings and the head. The arithmetic is the backend's
 * (rotate_reader, rotate_writer); on a host-memory backend the weights
 * are rotated where they are, by the CPU kernels the backend's ops are. */
#include "rotate_slice.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"
#include "sg_error.h"

int sg_rotation_alloc(sg_backend *be, int64_t D, sg_rotation *q)
{
    q->dev = NULL;
    if (!(q->host = malloc(D * D * sizeof(double))))
        return sg_fail(-ENOMEM, "out of memory for a rotation of width %lld", (long long)D);
    if (be->ops->host_memory) {
        q->dev = q->host;
        return 0;
    }
    int err = be->ops->alloc(be, D * D * sizeof(double), (void **)&q->dev);
    if (err) {
        free(q->host);
        q->host = NULL;
    }
    return err;
}

void sg_rotation_free(sg_backend *be, sg_rotation *q)
{
    if (q->dev && q->dev != q->host)
        be->ops->release(be, q->dev);
    free(q->host);
    q->host = q->dev = NULL;
}

int sg_rotation_identity(sg_backend *be, int64_t D, sg_rotation *q)
{
    memset(q->host, 0, D * D * sizeof(double));
    for (int64_t i = 0; i < D; i++)
        q->host[i * D + i] = 1.0;
    return q->dev == q->host ? 0 : be->ops->upload(be, q->dev, q->host, D * D * sizeof(double));
}

/* A reader's rows go through the device this many bytes at a time, so an
 * embedding matrix of any vocabulary fits beside one block. */
#define READER_STAGING_BYTES ((int64_t)256 << 20)

/* A reader rotated on the backend from the host and back, *w (rows, D)
 * -> (rows, d) = W·Q_d in row chunks (its rows are independent). */
static int rotate_through(sg_backend *be, float **w, int64_t rows, int64_t D,
                          const sg_rotation *q, int64_t d)
{
    int64_t chunk = READER_STAGING_BYTES / (D * (int64_t)sizeof(float));
    chunk = chunk < 1 ? 1 : chunk > rows ? rows : chunk;
    float *out = malloc(rows * d * sizeof(float)), *din = NULL, *dout = NULL;
    if (!out)
        return sg_fail(-ENOMEM, "out of memory rotating a (%lld, %lld) reader", (long long)rows,
                       (long long)D);
    int err = be->ops->alloc(be, chunk * D * sizeof(float), (void **)&din);
    err = err ? err : be->ops->alloc(be, chunk * d * sizeof(float), (void **)&dout);
    for (int64_t r0 = 0; r0 < rows && !err; r0 += chunk) {
        int64_t m = rows - r0 < chunk ? rows - r0 : chunk;
        err = be->ops->upload(be, din, *w + r0 * D, m * D * sizeof(float));
        err = err ? err : be->ops->rotate_reader(be, din, m, D, q->dev, d, dout);
        err = err ? err : be->ops->download(be, out + r0 * d, dout, m * d * sizeof(float));
    }
    be->ops->release(be, din);
    be->ops->release(be, dout);
    if (err) {
        free(out);
        return err;
    }
    free(*w);
    *w = out;
    return 0;
}

/* A global (embeddings, head: host memory) *w (rows, D) -> (rows, d) =
 * W·Q_d, rotated on the backend. */
static int global_reader(sg_backend *be, float **w, int64_t rows, int64_t D,
                         const sg_rotation *q, int64_t d)
{
    if (be->ops->host_memory)
        return sg_rotate_reader(w, rows, D, q->host, d);
    return rotate_through(be, w, rows, D, q, d);
}

/* A block's tensors live in backend memory (sg_block_to_backend) while it
 * is sliced: each rotation makes a new tensor there and drops the old. */

/* In backend memory: a reader *w (n, D) -> (n, d) = W·Q_d, or a writer
 * *w (D, n) -> (d, n) = Q_dᵀ·W; the new tensor replaces the old. */
static int rotate_in_backend(sg_backend *be, int is_writer, float **w, int64_t n, int64_t D,
                             const sg_rotation *q, int64_t d)
{
    float *out = NULL;
    int err = be->ops->alloc(be, n * d * sizeof(float), (void **)&out);
    if (!err && is_writer)
        err = be->ops->rotate_writer(be, *w, D, n, q->dev, d, out);
    else if (!err)
        err = be->ops->rotate_reader(be, *w, n, D, q->dev, d, out);
    if (err) {
        if (out)
            be->ops->release(be, out);
        return err;
    }
    be->ops->release(be, *w);
    *w = out;
    return 0;
}

/* *w (rows, D) -> (rows, d) = W·Q_d */
static int reader(sg_backend *be, float **w, int64_t rows, int64_t D, const sg_rotation *q,
                  int64_t d)
{
    if (be->ops->host_memory)
        return sg_rotate_reader(w, rows, D, q->host, d);
    return rotate_in_backend(be, 0, w, rows, D, q, d);
}

/* The shortcut Q[:, :d]ᵀ (d, D), built on the host (a transpose) and
 * moved into backend memory. */
static int shortcut_matrix(sg_backend *be, const sg_rotation *q, int64_t d, int64_t D,
                           float **out)
{
    float *s;
    int err = sg_shortcut_matrix(q->host, d, NULL, 0, D, &s);
    if (err || be->ops->host_memory) {
        *out = err ? NULL : s;
        return err;
    }
    err = be->ops->alloc(be, d * D * sizeof(float), (void **)out);
    err = err ? err : be->ops->upload(be, *out, s, d * D * sizeof(float));
    /* the upload reads s (pageable) before it returns */
    free(s);
    return err;
}

/* A writer and its bias (when there is one). */
static int writer(sg_backend *be, float **w, float **bias, int64_t D, int64_t cols,
                  const sg_rotation *q, int64_t d)
{
    if (be->ops->host_memory)
        return sg_rotate_writer(w, bias, D, cols, q->host, d);
    int err = rotate_in_backend(be, 1, w, cols, D, q, d);
    return err || !bias || !*bias ? err : rotate_in_backend(be, 1, bias, 1, D, q, d);
}

/* *s (d_a, D) -> (d_a, d_b) = S·Q_b[:, :d_b]: a reader rotation of its rows */
static int shortcut_extend(sg_backend *be, float **s, int64_t d_a, int64_t D,
                           const sg_rotation *q, int64_t d_b)
{
    return reader(be, s, d_a, D, q, d_b);
}

int sg_slice_embeddings_rotate(sg_backend *be, sg_model *m, const sg_model_config *orig,
                               const sg_model_config *sliced, const sg_rotation *q0)
{
    int64_t D = orig->dim, d = sliced->embed_dim;
    int err = global_reader(be, &m->tok_embd, orig->vocab_size, D, q0, d);
    if (!err && m->pos_embd)
        err = global_reader(be, &m->pos_embd, orig->max_positions + orig->pos_offset, D, q0, d);
    m->cfg = *sliced;
    return err;
}

int sg_slice_head_rotate(sg_backend *be, sg_model *m, const sg_model_config *orig,
                         const sg_model_config *sliced, const sg_rotation *q_last)
{
    int err = global_reader(be, &m->lm_head, orig->vocab_size, orig->dim, q_last,
                            sliced->head_in_dim);
    m->cfg = *sliced;
    return err;
}

int sg_slice_block_input(sg_backend *be, const sg_model_config *o, sg_block *b,
                         const sg_rotation *q_prev, int64_t d_in)
{
    int64_t D = o->dim, qd = o->n_heads * o->head_dim, kvd = o->n_kv_heads * o->head_dim;
    int64_t F = b->d_ffn;
    int err = reader(be, &b->wq, qd, D, q_prev, d_in);
    err = err ? err : reader(be, &b->wk, kvd, D, q_prev, d_in);
    err = err ? err : reader(be, &b->wv, kvd, D, q_prev, d_in);
    if (o->parallel_block) {
        err = err ? err : reader(be, &b->w_up, F, D, q_prev, d_in);
        if (o->gated_mlp)
            err = err ? err : reader(be, &b->w_gate, F, D, q_prev, d_in);
    }
    err = err ? err : shortcut_matrix(be, q_prev, d_in, D, &b->attn_shortcut);
    b->d_in = d_in;
    b->d_mid = D;
    b->d_out = D;
    return err;
}

int sg_slice_block_mid(sg_backend *be, const sg_model_config *o, sg_block *b,
                       const sg_rotation *q_mid, int64_t d_in, int64_t d_mid)
{
    int64_t D = o->dim, qd = o->n_heads * o->head_dim, F = b->d_ffn;
    int err = writer(be, &b->wo, &b->bo, D, qd, q_mid, d_mid);
    err = err ? err : shortcut_extend(be, &b->attn_shortcut, d_in, D, q_mid, d_mid);
    err = err ? err : reader(be, &b->w_up, F, D, q_mid, d_mid);
    if (o->gated_mlp)
        err = err ? err : reader(be, &b->w_gate, F, D, q_mid, d_mid);
    err = err ? err : shortcut_matrix(be, q_mid, d_mid, D, &b->mlp_shortcut);
    b->d_mid = d_mid;
    return err;
}

int sg_slice_block_output(sg_backend *be, const sg_model_config *o, sg_block *b,
                          const sg_rotation *q_out, int64_t d_in, int64_t d_mid, int64_t d_out)
{
    int64_t D = o->dim, qd = o->n_heads * o->head_dim, F = b->d_ffn;
    int err;
    if (o->parallel_block) {
        err = writer(be, &b->wo, &b->bo, D, qd, q_out, d_out);
        err = err ? err : writer(be, &b->w_down, &b->b_down, D, F, q_out, d_out);
        err = err ? err : shortcut_extend(be, &b->attn_shortcut, d_in, D, q_out, d_out);
        b->d_mid = d_out; /* a parallel block's attention writes the output directly */
    } else {
        err = writer(be, &b->w_down, &b->b_down, D, F, q_out, d_out);
        err = err ? err : shortcut_extend(be, &b->mlp_shortcut, d_mid, D, q_out, d_out);
    }
    b->d_out = d_out;
    return err;
}
