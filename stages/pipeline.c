#include "pipeline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fold.h"
#include "forward_ops.h"
#include "plan.h"
#include "resume.h"
#include "sg_error.h"
#include "evaluate.h"

const char *const sg_stage_names[SG_N_STAGES] = {"load", "fold", "capture", "covariance",
                                                 "eigensolve", "rotate/slice", "write"};

void sg_pipeline_tick(sg_pipeline *p, int stage)
{
    double now = sg_now();
    p->seconds[stage] += now - p->clock;
    p->clock = now;
}

/* Where the schedule is, for the progress line: block l (0-based; -1 the
 * embeddings, n_layers the head) in stage `what`. Blocks before l are done. */
static void show(sg_pipeline *p, int64_t l, const char *what)
{
    int64_t n = p->orig->n_layers;
    if (l < 0)
        sg_progress_update(p->progress, 0, "embeddings, %s", what);
    else if (l >= n)
        sg_progress_update(p->progress, n, "head, %s", what);
    else
        sg_progress_update(p->progress, l, "block %lld/%lld %s", (long long)l + 1, (long long)n,
                           what);
}

/* The axes of a signal: what capture produced until now is capture time,
 * what the transport takes to answer is eigensolve time. */
static int axes(sg_pipeline *p, const char *signal, int64_t layer, sg_rotation *q)
{
    sg_pipeline_tick(p, SG_STAGE_CAPTURE);
    show(p, layer, sg_stage_names[SG_STAGE_EIG]);
    int err = p->io->axes(p, signal, layer, q);
    sg_pipeline_tick(p, SG_STAGE_EIG);
    return err;
}

/* Runs a capture whose signal needs no axes (kept in the original basis):
 * its chunks go to the store, not to the covariance. */
static int capture_unsunk(sg_pipeline *p, int (*run)(sg_pipeline *p, void *arg), void *arg)
{
    sg_capture_sink sink = p->cap.sink;
    p->cap.sink = NULL;
    int err = run(p, arg);
    p->cap.sink = sink;
    return err;
}

static int capture_embeddings(sg_pipeline *p, void *m)
{
    return sg_capture_embeddings(&p->cap, m);
}

static int embeddings(sg_pipeline *p, sg_rotation *q0)
{
    /* kept as they are, or no signal is rotated at all (--method nystrom) */
    int kept = sg_embeddings_kept(&p->sliced) || p->sliced.residual_kept;
    sg_model m;
    show(p, -1, sg_stage_names[SG_STAGE_LOAD]);
    int err = p->io->embeddings(p, &m);
    if (err)
        return err;
    if (p->capture) {
        show(p, -1, sg_stage_names[SG_STAGE_CAPTURE]);
        err = kept ? capture_unsunk(p, capture_embeddings, &m) : capture_embeddings(p, &m);
    }
    /* nothing rotated: no rotations were allocated (sg_pipeline_run) */
    if (!err && !p->sliced.residual_kept)
        err = kept ? sg_rotation_identity(p->be, p->orig->dim, q0)
                   : axes(p, "embeddings", -1, q0);
    if (!err && p->capture) /* kept: the outputs are the next inputs as they are */
        err = sg_capture_advance(&p->cap, kept ? NULL : q0, p->sliced.embed_dim);
    if (!err && p->slice) {
        show(p, -1, sg_stage_names[SG_STAGE_ROTATE]);
        if (kept)
            m.cfg = p->sliced; /* the table as it was */
        else
            err = sg_slice_embeddings_rotate(p->be, &m, p->orig, &p->sliced, q0);
        sg_pipeline_tick(p, SG_STAGE_ROTATE);
        err = err ? err : p->io->put_embeddings(p, &m);
        sg_pipeline_tick(p, SG_STAGE_WRITE);
    }
    sg_model_free(&m);
    return err;
}

typedef struct {
    const sg_model_config *work;
    const sg_block *b;
    int64_t l;
} capture_step;

static int capture_attention(sg_pipeline *p, void *arg)
{
    capture_step *a = arg;
    return sg_capture_attention(&p->cap, a->work, a->b, a->l);
}

typedef struct {
    const sg_model_config *work;
    const sg_block *b;
    const sg_rotation *q_mid; /* NULL: nothing rotated */
    int64_t d_mid, l;
    sg_ffn_stats *hidden_kept; /* the cut MLP's hidden units are in the store */
} mlp_step;

static int capture_mlp(sg_pipeline *p, void *arg)
{
    mlp_step *a = arg;
    if (a->hidden_kept)
        return sg_capture_mlp_kept(&p->cap, a->b, a->hidden_kept, a->l);
    return sg_capture_mlp(&p->cap, a->work, a->b, a->q_mid, a->d_mid, a->l);
}

/* dst = src, both copies (a shared basis: the block output keeps Q_mid) */
static int rotation_copy(sg_backend *be, int64_t D, const sg_rotation *src, sg_rotation *dst)
{
    size_t bytes = D * D * sizeof(double);
    memcpy(dst->host, src->host, bytes);
    return dst->dev == dst->host ? 0 : be->ops->upload(be, dst->dev, dst->host, bytes);
}

/* --method nystrom: block l's MLP cut to the plan's hidden width, from
 * the statistics of its inputs (the store's "residual", or a parallel
 * block's "input"); before the capture that runs the MLP. q_mid NULL:
 * nothing rotated. *kept (may be NULL) is set where the hidden units
 * stayed in the store for sg_capture_mlp_kept: a sequential block whose
 * output is captured, on a host-memory backend, where computing them
 * again costs more than keeping them (a GPU computes them again). */
static int prune_ffn(sg_pipeline *p, const sg_model_config *work, sg_block *b, int64_t l,
                     const sg_rotation *q_mid, int64_t d_mid, int *kept)
{
    int64_t f = sg_layer_ffn(&p->sliced, l);
    if (kept)
        *kept = 0;
    if (f >= b->d_ffn || !p->capture || !p->slice)
        return 0;
    if (!p->ffn)
        return sg_fail(SG_EARG, "block %lld: cutting the MLP's hidden width needs calibration "
                                "statistics only `run` gathers (--method nystrom)",
                       (long long)l);
    int keep_hidden = kept && p->be->ops->host_memory;
    show(p, l, "MLP statistics");
    int err = sg_capture_ffn(&p->cap, work, b, q_mid, d_mid, p->ffn, keep_hidden);
    sg_pipeline_tick(p, SG_STAGE_CAPTURE);
    show(p, l, "MLP pruning");
    err = err ? err : sg_prune_ffn(p->ffn, work, b, f);
    sg_pipeline_tick(p, SG_STAGE_ROTATE);
    if (!err && kept)
        *kept = keep_hidden;
    return err;
}

/* Block l: rotated by q_prev (known) on its input side; finds q_mid and
 * q_out on the way. With the residual stream kept (--method nystrom)
 * every rotation is the identity and nothing is rotated or cut: only the
 * MLP's hidden width changes. */
static int block(sg_pipeline *p, int64_t l, sg_rotation *q_prev, sg_rotation *q_mid,
                 sg_rotation *q_out)
{
    const sg_model_config *o = p->orig;
    int64_t d_in = p->sliced.d_in[l], d_mid = p->sliced.d_mid[l], d_out = p->sliced.d_out[l];
    /* with the embeddings kept the last block writes the original basis:
     * its output needs no axes, so no capture of its output either */
    int last = l == o->n_layers - 1, out_kept = last && sg_embeddings_kept(&p->sliced);
    /* --shared-basis: the output keeps the mid basis, its capture feeds
     * only the next block's inputs, and the MLP shortcut (the identity) is
     * not stored */
    int shared = p->sliced.shared_basis[l];
    int whole = p->sliced.residual_kept;
    sg_backend *be = p->be;
    sg_block b;
    sg_model_config work;
    int on_host = 0; /* b brought back for put_block */
    show(p, l, sg_stage_names[SG_STAGE_LOAD]);
    int err = p->io->block(p, l, &b);
    if (err)
        return err;
    if (!whole && (err = sg_slice_block_input(be, o, &b, q_prev, d_in)))
        goto out;
    sg_slice_work_config(&p->sliced, l, o->dim, &work);
    sg_pipeline_tick(p, SG_STAGE_ROTATE);
    /* a parallel block's MLP reads the block's input: cut it before the
     * capture runs the whole block */
    if (o->parallel_block && (err = prune_ffn(p, &work, &b, l, NULL, d_in, NULL)))
        goto out;

    /* first capture: the residual after attention (sequential blocks) or
     * the whole block's output (parallel blocks), in the original basis */
    show(p, l, sg_stage_names[p->capture ? SG_STAGE_CAPTURE : SG_STAGE_ROTATE]);
    if (p->capture) {
        capture_step a = {&work, &b, l};
        err = whole || (out_kept && o->parallel_block) ? capture_unsunk(p, capture_attention, &a)
                                                       : capture_attention(p, &a);
        if (err)
            goto out;
        sg_pipeline_tick(p, SG_STAGE_CAPTURE); /* axes() would; an identity does not */
    }
    char point[32];
    snprintf(point, sizeof point, "mid:%lld", (long long)l);
    sg_test_kill_at(point);
    if (p->io->halfway && (err = p->io->halfway(p, l)))
        goto out;
    if (!o->parallel_block) {
        if (!whole && (err = axes(p, "attention_output", l, q_mid)))
            goto out;
        if (!whole && (err = sg_slice_block_mid(be, o, &b, q_mid, d_in, d_mid)))
            goto out;
        work.d_mid[l] = d_mid;
        sg_pipeline_tick(p, SG_STAGE_ROTATE);
        /* no output to capture: the last block's, when its basis is known
         * (the embeddings' kept one, or none rotated) */
        int no_output = out_kept || (whole && last), hidden_kept = 0;
        if ((err = prune_ffn(p, &work, &b, l, whole ? NULL : q_mid, d_mid,
                             no_output || !whole ? NULL : &hidden_kept)))
            goto out;
        show(p, l, sg_stage_names[p->capture ? SG_STAGE_CAPTURE : SG_STAGE_ROTATE]);
        /* second capture: the block output */
        mlp_step m = {&work, &b, whole ? NULL : q_mid, d_mid, l, hidden_kept ? p->ffn : NULL};
        if (p->capture && !no_output &&
            (err = shared || whole ? capture_unsunk(p, capture_mlp, &m) : capture_mlp(p, &m)))
            goto out;
        if (p->capture && no_output && (err = sg_act_store_drop(p->cap.store, "residual")))
            goto out;
    }
    if (p->capture)
        sg_pipeline_tick(p, SG_STAGE_CAPTURE); /* as above */
    err = whole      ? 0
          : out_kept ? sg_rotation_identity(be, o->dim, q_out)
          : shared   ? rotation_copy(be, o->dim, q_mid, q_out)
                     : axes(p, "block_output", l, q_out);
    if (err)
        goto out;
    show(p, l, sg_stage_names[SG_STAGE_ROTATE]);
    if (p->slice && !whole)
        err = sg_slice_block_output(be, o, &b, q_out, d_in, d_mid, d_out);
    sg_pipeline_tick(p, SG_STAGE_ROTATE);
    /* the next block's inputs: this block's output in the new basis, cut */
    if (!err && p->capture && !last)
        err = sg_capture_advance(&p->cap, whole ? NULL : q_out, d_out);
    if (!err && p->slice) {
        err = sg_block_to_host(be, o, &b);
        on_host = !err;
        if (on_host && shared) {
            free(b.mlp_shortcut); /* Q_midᵀQ_mid on the kept dims: the identity */
            b.mlp_shortcut = NULL;
        }
        sg_pipeline_tick(p, SG_STAGE_ROTATE);
        show(p, l, sg_stage_names[SG_STAGE_WRITE]);
        err = err ? err : p->io->put_block(p, l, &b);
        sg_pipeline_tick(p, SG_STAGE_WRITE);
    }
out:
    if (on_host)
        sg_block_free(&b);
    else
        sg_block_drop(be, &b);
    return err;
}

/* The head: folded with the final norm and rotated by the last Q (not
 * where nothing is rotated), or, with the embeddings kept, the final norm
 * alone (the head is the table). */
static int head(sg_pipeline *p, const sg_rotation *q_last)
{
    sg_model m;
    int64_t n = p->orig->n_layers;
    show(p, n, sg_stage_names[SG_STAGE_LOAD]);
    int err = p->io->head(p, &m);
    if (err)
        return err;
    show(p, n, sg_stage_names[SG_STAGE_ROTATE]);
    m.cfg = *p->orig;
    if (sg_embeddings_kept(&p->sliced)) {
        if (m.lm_head != m.tok_embd)
            free(m.lm_head);
        free(m.tok_embd);
        m.lm_head = m.tok_embd = NULL;
        m.cfg = p->sliced;
    } else {
        err = sg_slice_head_fold(&m);
        sg_pipeline_tick(p, SG_STAGE_FOLD);
        if (p->sliced.residual_kept) /* Q is the identity: nothing to rotate */
            m.cfg = p->sliced;
        else
            err = err ? err : sg_slice_head_rotate(p->be, &m, p->orig, &p->sliced, q_last);
    }
    sg_pipeline_tick(p, SG_STAGE_ROTATE);
    sg_test_kill_at("head");
    err = err ? err : p->io->put_head(p, &m);
    sg_pipeline_tick(p, SG_STAGE_WRITE);
    sg_model_free(&m);
    return err;
}

int sg_pipeline_run(sg_pipeline *p)
{
    int64_t D = p->orig->dim;
    sg_rotation q[3] = {{0}}; /* the input's, the middle's and the output's rotation */
    p->clock = sg_now();
    int err = p->io->widths(p, &p->sliced);
    /* nothing rotated (--method nystrom): no rotation is allocated, and
     * every step that would read one skips it (D² doubles each, on the
     * host and the backend) */
    for (int i = 0; i < 3 && !err && !p->sliced.residual_kept; i++)
        err = sg_rotation_alloc(p->be, D, &q[i]);
    sg_rotation *q_prev = &q[0], *q_mid = &q[1], *q_out = &q[2];
    /* a step is a block; with capture the rate counts calibration tokens
     * through the whole model (the capture transport reads its batch in
     * embeddings(), so the count is set after it) */
    sg_progress_begin(p->progress, p->phase ? p->phase : "slice", p->orig->n_layers, 0);
    /* a resume with resume_q NULL: the identity, nothing rotated or allocated */
    if (!err && p->resume && p->resume_q) {
        size_t bytes = D * D * sizeof(double);
        memcpy(q_prev->host, p->resume_q, bytes);
        if (q_prev->dev != q_prev->host)
            err = p->be->ops->upload(p->be, q_prev->dev, q_prev->host, bytes);
    } else if (!err && !p->resume) {
        err = embeddings(p, q_prev);
        if (!err && p->io->checkpoint)
            err = p->io->checkpoint(p, -1, q_prev);
        sg_test_kill_at("embeddings");
    }
    if (!err && p->progress && p->capture && p->cap.calib)
        p->progress->tokens = p->cap.calib->offsets[p->cap.calib->n_seq];
    for (int64_t l = p->resume ? p->resume_at : 0; l < p->orig->n_layers && !err; l++) {
        err = block(p, l, q_prev, q_mid, q_out);
        if (!err && p->io->checkpoint)
            err = p->io->checkpoint(p, l, q_out);
        char point[32];
        snprintf(point, sizeof point, "block:%lld", (long long)l);
        sg_test_kill_at(point);
        sg_rotation *swap = q_prev; /* this block's output is the next one's input */
        q_prev = q_out;
        q_out = swap;
    }
    if (!err && p->slice)
        err = head(p, q_prev);
    if (err)
        sg_progress_break(p->progress); /* the error message gets its own line */
    else
        sg_progress_end(p->progress);
    for (int i = 0; i < 3; i++)
        if (q[i].host)
            sg_rotation_free(p->be, &q[i]);
    return err;
}
