#include "slice_steps.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "eigensolve.h"
#include "fold.h"
#include "forward.h"
#include "rotate_slice.h"
#include "sg_error.h"

/* ---- plan ---- */

int64_t sg_slice_plan(const sg_model_config *orig, double sparsity, int64_t round_interval,
                      int slice_head, sg_model_config *c)
{
    int64_t D = orig->dim, d = sg_sliced_dim(D, sparsity, round_interval);
    *c = sg_fold_config(orig);
    c->embed_dim = d;
    for (int64_t l = 0; l < c->n_layers; l++) {
        c->d_in[l] = d;
        c->d_mid[l] = d;
        c->d_out[l] = d;
    }
    if (!slice_head)
        c->d_out[c->n_layers - 1] = D;
    if (c->parallel_block)
        for (int64_t l = 0; l < c->n_layers; l++)
            c->d_mid[l] = c->d_out[l];
    c->head_in_dim = c->d_out[c->n_layers - 1];
    return d;
}

void sg_slice_work_config(const sg_model_config *sliced, int64_t l, int64_t d_mid,
                          sg_model_config *work)
{
    *work = *sliced;
    work->d_mid[l] = d_mid;
    work->d_out[l] = sliced->dim;
}

/* ---- rotations on the backend ---- */

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

/* ---- embeddings ---- */

/* Reads canonical tensor name (rows, cols) into a new buffer. */
static int read_tensor(sg_model_files *f, const char *name, int64_t rows, int64_t cols,
                       float **dst)
{
    int64_t n = rows * (cols ? cols : 1);
    *dst = malloc(n * sizeof(float));
    if (!*dst)
        return sg_fail(-ENOMEM, "%s: %s: out of memory (%lld floats)", sg_model_files_path(f),
                       name, (long long)n);
    int err = sg_model_files_read(f, name, *dst, rows, cols);
    if (err) {
        free(*dst);
        *dst = NULL;
    }
    return err;
}

int sg_slice_embeddings_load(sg_model_files *files, sg_model *m)
{
    memset(m, 0, sizeof *m);
    m->cfg = *sg_model_files_config(files);
    const sg_model_config *c = &m->cfg;
    int err = read_tensor(files, "token_embd.weight", c->vocab_size, c->embed_dim, &m->tok_embd);
    if (!err && c->rope == SG_ROPE_NONE)
        err = read_tensor(files, "position_embd.weight", c->max_positions + c->pos_offset,
                          c->embed_dim, &m->pos_embd);
    /* the head is not needed until the end: it is read again then */
    m->cfg.tied_embeddings = 0;
    if (err)
        sg_model_free(m);
    return err;
}

int sg_slice_embeddings_fold(sg_model *m) { return sg_fold_globals(m); }

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

/* ---- head ---- */

int sg_slice_head_load(sg_model_files *files, sg_model *m)
{
    memset(m, 0, sizeof *m);
    m->cfg = *sg_model_files_config(files);
    const sg_model_config *c = &m->cfg;
    int64_t V = c->vocab_size, D = c->dim;
    int err = read_tensor(files, "output_norm.weight", D, 0, &m->out_norm_w);
    if (!err && c->norm == SG_NORM_LAYER)
        err = read_tensor(files, "output_norm.bias", D, 0, &m->out_norm_b);
    if (!err && c->tied_embeddings) {
        err = read_tensor(files, "token_embd.weight", V, D, &m->tok_embd);
        m->lm_head = m->tok_embd;
    } else if (!err) {
        err = read_tensor(files, "output.weight", V, D, &m->lm_head);
    }
    if (!err && c->lm_head_bias)
        err = read_tensor(files, "output.bias", V, 0, &m->lm_head_b);
    if (err)
        sg_model_free(m);
    return err;
}

int sg_slice_head_fold(sg_model *m)
{
    /* sg_fold_globals unties the head, folds the final norm into it, and
     * for a LayerNorm model also centres the embeddings. The head needs
     * none of the latter (the embeddings were sliced long ago), so fold it
     * as if the norm were RMS: the head comes out the same, and no copy of
     * the embeddings is needed to be centred and thrown away. */
    sg_model_config orig = m->cfg;
    m->cfg.norm = SG_NORM_RMS;
    int err = sg_fold_globals(m);
    m->cfg = orig;
    if (m->tok_embd != m->lm_head)
        free(m->tok_embd);
    m->tok_embd = NULL;
    free(m->pos_embd);
    m->pos_embd = NULL;
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

/* ---- block weights ---- */

int sg_slice_block_input(sg_backend *be, const sg_model_config *o, sg_block *b,
                         const sg_rotation *q_prev, int64_t d_in)
{
    int64_t D = o->dim, qd = o->n_heads * o->head_dim, kvd = o->n_kv_heads * o->head_dim;
    int64_t F = o->ffn_dim;
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
    int64_t D = o->dim, qd = o->n_heads * o->head_dim, F = o->ffn_dim;
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
    int64_t D = o->dim, qd = o->n_heads * o->head_dim, F = o->ffn_dim;
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

/* ---- calibration activations ---- */

int sg_capture_init(sg_capture *c, sg_backend *be, const sg_token_batch *b,
                    int64_t chunk_tokens, int64_t D)
{
    memset(c, 0, sizeof *c);
    c->calib = b;
    c->D = D;
    c->be = be;
    c->first = malloc((b->n_seq + 1) * sizeof(int64_t));
    c->local = malloc((b->n_seq + 1) * sizeof(int64_t));
    if (!c->first || !c->local) {
        sg_capture_free(c);
        return sg_fail(-ENOMEM, "out of memory planning chunks");
    }
    sg_seqs all = {b->n_seq, b->offsets};
    for (int64_t s = 0; s < b->n_seq;) {
        int64_t e = sg_seqs_group_end(&all, s, chunk_tokens);
        c->first[c->n_chunks++] = s;
        if (b->offsets[e] - b->offsets[s] > c->max_tokens)
            c->max_tokens = b->offsets[e] - b->offsets[s];
        s = e;
    }
    c->first[c->n_chunks] = b->n_seq;
    /* every chunk crosses to the backend and back through these: the
     * backend's own host memory (page-locked on a GPU) */
    size_t bytes = c->max_tokens * D * sizeof(float);
    int err = be->ops->host_alloc(be, bytes, (void **)&c->in);
    err = err ? err : be->ops->host_alloc(be, bytes, (void **)&c->mid);
    err = err ? err : be->ops->host_alloc(be, bytes, (void **)&c->out);
    if (err) {
        sg_capture_free(c);
        return err;
    }
    if (be->ops->host_memory) {
        c->din = c->in, c->dmid = c->mid, c->dout = c->out;
        return 0;
    }
    err = be->ops->alloc(be, bytes, (void **)&c->din);
    err = err ? err : be->ops->alloc(be, bytes, (void **)&c->dmid);
    err = err ? err : be->ops->alloc(be, bytes, (void **)&c->dout);
    if (err)
        sg_capture_free(c);
    return err;
}

void sg_capture_free(sg_capture *c)
{
    float *dev[] = {c->din, c->dmid, c->dout}, *host[] = {c->in, c->mid, c->out};
    if (c->be && !c->be->ops->host_memory)
        sg_backend_drain(c->be); /* after an error a copy from these may still be queued */
    for (int i = 0; i < 3; i++)
        if (dev[i] && dev[i] != host[i])
            c->be->ops->release(c->be, dev[i]);
    for (int i = 0; i < 3; i++)
        if (host[i])
            c->be->ops->host_free(c->be, host[i]);
    free(c->first);
    free(c->local);
    c->first = c->local = NULL;
    c->in = c->mid = c->out = c->din = c->dmid = c->dout = NULL;
}

/* host -> backend and back; nothing to do where they are the same buffer */
static int to_backend(sg_backend *be, float *dst, const float *src, int64_t floats)
{
    return dst == src ? 0 : be->ops->upload(be, dst, src, floats * sizeof(float));
}

static int to_host(sg_backend *be, float *dst, const float *src, int64_t floats)
{
    return dst == src ? 0 : be->ops->download(be, dst, src, floats * sizeof(float));
}

/* Sequence layout of chunk i, positions from 0. */
static sg_seqs chunk_seqs(sg_capture *c, int64_t i, int64_t *rows)
{
    const sg_token_batch *b = c->calib;
    sg_seqs all = {b->n_seq, b->offsets};
    int64_t s0 = c->first[i], s1 = c->first[i + 1];
    *rows = b->offsets[s1] - b->offsets[s0];
    return sg_seqs_sub(&all, s0, s1, c->local);
}

/* A captured chunk, c->out (rows, D) on the host and c->dout on the
 * backend: into the store, then to the sink. */
static int keep(sg_capture *c, const char *stored_as, const char *signal, int64_t layer,
                int64_t i, int64_t rows)
{
    int err = sg_act_store_put(c->store, stored_as, i, c->out, rows, c->D);
    return err ? err
               : c->sink(c->sink_ctx, signal, layer, stored_as, i, c->n_chunks, c->out, c->dout,
                         rows);
}

int sg_capture_embeddings(sg_capture *c, const sg_model *m)
{
    int err = 0;
    for (int64_t i = 0; i < c->n_chunks && !err; i++) {
        int64_t rows;
        sg_seqs seqs = chunk_seqs(c, i, &rows);
        err = sg_embed(m, c->calib->ids + c->calib->offsets[c->first[i]], &seqs, c->out);
        err = err ? err : to_backend(c->be, c->dout, c->out, rows * c->D);
        err = err ? err : keep(c, "output", "embeddings", -1, i, rows);
        /* the upload from c->out may still be queued (page-locked memory
         * copies asynchronously): wait before the next chunk overwrites
         * it; the other captures end each chunk with a download, which
         * waits already */
        err = err ? err : c->be->ops->synchronize(c->be);
    }
    return err;
}

int sg_capture_attention(sg_capture *c, const sg_model_config *work, const sg_block *b,
                         int64_t l)
{
    sg_backend *be = c->be;
    int parallel = work->parallel_block, err = 0;
    for (int64_t i = 0; i < c->n_chunks && !err; i++) {
        int64_t rows;
        sg_seqs seqs = chunk_seqs(c, i, &rows);
        err = sg_act_store_get(c->store, "input", i, c->in);
        err = err ? err : to_backend(be, c->din, c->in, rows * b->d_in);
        if (!err)
            err = be->ops->block_forward(be, work, b, c->din, parallel ? c->dout : NULL,
                                         parallel ? NULL : c->dout, &seqs);
        err = err ? err : to_host(be, c->out, c->dout, rows * c->D);
        err = err ? err
                  : keep(c, parallel ? "output" : "residual",
                         parallel ? "block_output" : "attention_output", l, i, rows);
    }
    return err;
}

int sg_capture_mlp(sg_capture *c, const sg_model_config *work, const sg_block *b,
                   const sg_rotation *q_mid, int64_t d_mid, int64_t l)
{
    sg_backend *be = c->be;
    int err = 0;
    for (int64_t i = 0; i < c->n_chunks && !err; i++) {
        int64_t rows, width;
        err = sg_act_store_shape(c->store, "residual", i, &rows, &width);
        err = err ? err : sg_act_store_get(c->store, "residual", i, c->mid);
        err = err ? err : to_backend(be, c->dmid, c->mid, rows * c->D);
        err = err ? err : be->ops->project_rows(be, c->dmid, rows, c->D, q_mid->dev, d_mid, c->din);
        err = err ? err : be->ops->block_forward_mlp(be, work, b, c->din, c->dout, rows);
        err = err ? err : to_host(be, c->out, c->dout, rows * c->D);
        err = err ? err : keep(c, "output", "block_output", l, i, rows);
    }
    return err ? err : sg_act_store_drop(c->store, "residual");
}

int sg_capture_advance(sg_capture *c, const sg_rotation *q, int64_t d)
{
    sg_backend *be = c->be;
    int err = 0;
    if (sg_act_store_chunks(c->store, "input") > 0)
        err = sg_act_store_drop(c->store, "input");
    for (int64_t i = 0; i < c->n_chunks && !err; i++) {
        int64_t rows, width;
        err = sg_act_store_shape(c->store, "output", i, &rows, &width);
        err = err ? err : sg_act_store_get(c->store, "output", i, c->mid);
        err = err ? err : to_backend(be, c->dmid, c->mid, rows * c->D);
        err = err ? err : be->ops->project_rows(be, c->dmid, rows, c->D, q->dev, d, c->din);
        err = err ? err : to_host(be, c->in, c->din, rows * d);
        err = err ? err : sg_act_store_put(c->store, "input", i, c->in, rows, d);
    }
    return err ? err : sg_act_store_drop(c->store, "output");
}

/* ---- covariance and eigensolve ---- */

int sg_slice_cov_init(sg_slice_cov *cov, sg_backend *be, int64_t d, int mixed)
{
    memset(cov, 0, sizeof *cov);
    cov->be = be;
    cov->d = d;
    cov->mixed = mixed;
    return be->ops->alloc(be, d * d * sizeof(double), (void **)&cov->h);
}

void sg_slice_cov_free(sg_slice_cov *cov)
{
    if (cov->h)
        cov->be->ops->release(cov->be, cov->h);
    memset(cov, 0, sizeof *cov);
}

int sg_slice_cov_begin(sg_slice_cov *cov)
{
    cov->tokens = 0;
    return cov->be->ops->zero(cov->be, cov->h, cov->d * cov->d * sizeof(double));
}

int sg_slice_cov_add(sg_slice_cov *cov, const float *x, int64_t rows)
{
    sg_backend *be = cov->be;
    int err = be->ops->cov_accumulate(be, cov->h, cov->d, x, rows, cov->mixed);
    if (!err)
        cov->tokens += rows;
    return err;
}

int sg_slice_axes(sg_backend *be, double *h, int64_t D, int64_t layer, sg_rotation_kind kind,
                  uint64_t seed, double damp_frac, sg_eigh_mode mode, sg_rotation *q,
                  double *eig)
{
    size_t bytes = D * D * sizeof(double);
    int err;
    if (kind == SG_ROTATION_RANDOM) {
        memset(eig, 0, D * sizeof(double));
        err = sg_random_orthogonal(D, seed + 7919 * (uint64_t)(layer + 2), q->host);
        return err || q->dev == q->host ? err : be->ops->upload(be, q->dev, q->host, bytes);
    }
    err = be->ops->eigh(be, h, D, damp_frac, mode, q->dev, eig);
    return err || q->dev == q->host ? err : be->ops->download(be, q->host, q->dev, bytes);
}

struct sg_spectra {
    cJSON *list;
};

sg_spectra *sg_spectra_new(void)
{
    sg_spectra *s = malloc(sizeof *s);
    if (s && !(s->list = cJSON_CreateArray())) {
        free(s);
        s = NULL;
    }
    return s;
}

int sg_spectra_add(sg_spectra *s, const char *signal, int64_t layer, const double *eig,
                   int64_t n)
{
    cJSON *item = cJSON_CreateObject();
    if (!item)
        return sg_fail(-ENOMEM, "out of memory");
    cJSON_AddStringToObject(item, "signal", signal);
    cJSON_AddNumberToObject(item, "layer", (double)layer);
    cJSON_AddItemToObject(item, "eigenvalues", cJSON_CreateDoubleArray(eig, (int)n));
    cJSON_AddItemToArray(s->list, item);
    return 0;
}

int sg_spectra_write(const sg_spectra *s, const char *out_dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/eigenvalues.json", out_dir);
    char *json = cJSON_PrintUnformatted(s->list);
    if (!json)
        return sg_fail(-ENOMEM, "out of memory");
    FILE *f = fopen(path, "w");
    int err = 0, bad = !f || fputs(json, f) < 0;
    if ((f && fclose(f) != 0) || bad)
        err = sg_fail(-EIO, "%s: cannot write eigenvalue spectra", path);
    free(json);
    return err;
}

void sg_spectra_free(sg_spectra *s)
{
    if (!s)
        return;
    cJSON_Delete(s->list);
    free(s);
}
