/* Stage "capture": the calibration activations through each block. */
#include "capture.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "forward_ops.h"
#include "sg_error.h"

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
    sg_seqs all = {b->n_seq, b->offsets, NULL};
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
    sg_seqs all = {b->n_seq, b->offsets, NULL};
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
    if (err || !c->sink)
        return err;
    return c->sink(c->sink_ctx, signal, layer, stored_as, i, c->n_chunks, c->out, c->dout, rows);
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

/* Chunk i of a sequential block's MLP input on the backend: "residual"
 * projected on Q_mid's d_mid columns, into c->din (*rows of them); q_mid
 * NULL (nothing rotated): "residual" as it is. */
static int mlp_input(sg_capture *c, int64_t i, const sg_rotation *q_mid, int64_t d_mid,
                     int64_t *rows)
{
    int64_t width;
    int err = sg_act_store_shape(c->store, "residual", i, rows, &width);
    if (!q_mid) {
        err = err ? err : sg_act_store_get(c->store, "residual", i, c->in);
        return err ? err : to_backend(c->be, c->din, c->in, *rows * c->D);
    }
    err = err ? err : sg_act_store_get(c->store, "residual", i, c->mid);
    err = err ? err : to_backend(c->be, c->dmid, c->mid, *rows * c->D);
    return err ? err
               : c->be->ops->project_rows(c->be, c->dmid, *rows, c->D, q_mid->dev, d_mid, c->din);
}

int sg_capture_mlp(sg_capture *c, const sg_model_config *work, const sg_block *b,
                   const sg_rotation *q_mid, int64_t d_mid, int64_t l)
{
    sg_backend *be = c->be;
    int err = 0;
    for (int64_t i = 0; i < c->n_chunks && !err; i++) {
        int64_t rows;
        err = mlp_input(c, i, q_mid, d_mid, &rows);
        err = err ? err : be->ops->block_forward_mlp(be, work, b, c->din, c->dout, rows);
        err = err ? err : to_host(be, c->out, c->dout, rows * c->D);
        err = err ? err : keep(c, "output", "block_output", l, i, rows);
    }
    return err ? err : sg_act_store_drop(c->store, "residual");
}

int sg_capture_ffn(sg_capture *c, const sg_model_config *work, const sg_block *b,
                   const sg_rotation *q_mid, int64_t d_mid, sg_ffn_stats *stats, int keep_hidden)
{
    int parallel = work->parallel_block;
    if (keep_hidden && (parallel || !c->be->ops->host_memory))
        return sg_fail(SG_EARG, "the hidden units are kept for a sequential block on a "
                                "host-memory backend only");
    int err = sg_ffn_stats_begin(stats);
    for (int64_t i = 0; i < c->n_chunks && !err; i++) {
        int64_t rows, width;
        if (parallel) { /* the block's input, as it is */
            err = sg_act_store_shape(c->store, "input", i, &rows, &width);
            err = err ? err : sg_act_store_get(c->store, "input", i, c->in);
            err = err ? err : to_backend(c->be, c->din, c->in, rows * width);
        } else {
            err = mlp_input(c, i, q_mid, d_mid, &rows);
        }
        err = err ? err : sg_ffn_stats_add(stats, work, b, c->din, rows);
        if (!err && keep_hidden)
            err = sg_act_store_put(c->store, "hidden", i, stats->hidden, rows, stats->F);
    }
    return err;
}

int sg_capture_mlp_kept(sg_capture *c, const sg_block *b, sg_ffn_stats *stats, int64_t l)
{
    int err = 0;
    for (int64_t i = 0; i < c->n_chunks && !err; i++) {
        int64_t rows;
        err = mlp_input(c, i, NULL, c->D, &rows);
        err = err ? err : sg_act_store_get(c->store, "hidden", i, stats->hidden);
        if (!err)
            sg_ffn_keep_columns(stats, stats->hidden, rows);
        err = err ? err : sg_block_mlp_down_ops(c->be, b, stats->hidden, c->din, rows, c->dout);
        err = err ? err : keep(c, "output", "block_output", l, i, rows);
    }
    err = err ? err : sg_act_store_drop(c->store, "hidden");
    return err ? err : sg_act_store_drop(c->store, "residual");
}

int sg_capture_advance(sg_capture *c, const sg_rotation *q, int64_t d)
{
    sg_backend *be = c->be;
    int err = 0;
    if (sg_act_store_chunks(c->store, "input") > 0)
        err = sg_act_store_drop(c->store, "input");
    if (!q) /* nothing rotated, nothing cut: the outputs are the inputs */
        return err ? err : sg_act_store_rename(c->store, "output", "input");
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
