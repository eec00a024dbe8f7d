#include "slicer.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "act_store.h"
#include "capture.h"
#include "covariance.h"
#include "evaluate.h"
#include "fold.h"
#include "forward.h"
#include "forward_ops.h"
#include "pipeline.h"
#include "sg_error.h"
#include "load.h"
#include "rotate_slice.h"
#include "write_model.h"

void sg_slice_options_default(sg_slice_options *o)
{
    memset(o, 0, sizeof *o);
    sg_plan_options_default(&o->plan);
    o->seed = 42;
    o->damp_frac = 0.01;
    o->out_dtype = SG_DT_F32;
}

/* The next block, prepared while the GPU works on the current one
 * (device path only: on the CPU the cores are busy with the current
 * block, and the memory bound holds one block). A helper thread loads it,
 * folds it and moves it into page-locked memory; the main thread then
 * queues its upload on the backend's second queue, halfway through the
 * current block, so the copy overlaps the current block's MLP half. The
 * helper is the only user of the model files while it runs. */
typedef struct {
    pthread_t thread;
    int running;
    sg_backend *be;
    sg_model_files *files;
    const sg_model_config *cfg;
    int64_t l;
    sg_block b;     /* its tensors live in arena */
    void *arena;
    int err;
    char msg[1024]; /* the helper's error message (sg_error is per thread) */
    sg_block dev;   /* b queued into backend memory (upload_async) */
    int uploaded;
} next_block;

static void *prepare_block(void *arg)
{
    next_block *n = arg;
    n->err = sg_block_load(n->files, n->cfg, n->l, &n->b);
    if (!n->err && n->l + 1 < n->cfg->n_layers)
        sg_model_files_prefetch_block(n->files, n->l + 1);
    if (!n->err)
        n->err = sg_fold_block(n->cfg, &n->b);
    if (!n->err)
        n->err = sg_block_pin(n->be, n->cfg, &n->b, &n->arena);
    if (n->err) {
        sg_block_free(&n->b);
        snprintf(n->msg, sizeof n->msg, "%s", sg_last_error());
    }
    return NULL;
}

static int next_block_start(next_block *n, sg_backend *be, sg_model_files *files,
                            const sg_model_config *cfg, int64_t l)
{
    memset(n, 0, sizeof *n);
    n->be = be, n->files = files, n->cfg = cfg, n->l = l;
    if (pthread_create(&n->thread, NULL, prepare_block, n))
        return sg_fail(-EAGAIN, "cannot start the thread that loads block %lld", (long long)l);
    n->running = 1;
    return 0;
}

/* Waits for the helper, then queues the block's upload. */
static int next_block_upload(next_block *n)
{
    if (n->running) {
        pthread_join(n->thread, NULL);
        n->running = 0;
        if (n->err)
            return sg_fail(n->err, "%s", n->msg);
    }
    if (n->uploaded || !n->arena)
        return 0;
    int err = sg_block_to_backend_async(n->be, n->cfg, &n->b, &n->dev);
    n->uploaded = !err;
    return err;
}

/* *dev = the prepared block in backend memory, ready for the work queued
 * after this; its page-locked host copy is dropped. */
static int next_block_take(next_block *n, sg_block *dev)
{
    sg_backend *be = n->be;
    int err = next_block_upload(n);
    err = err ? err : be->ops->await_uploads(be);
    err = err ? err : be->ops->synchronize(be); /* the copies are done: arena is free */
    if (err)
        return err;
    *dev = n->dev;
    be->ops->host_free(be, n->arena);
    memset(n, 0, sizeof *n);
    return 0;
}

/* After an error elsewhere: waits for the helper and the copies and drops
 * everything, leaving the message of the error that stopped the run. */
static void next_block_discard(next_block *n)
{
    if (!n->running && !n->arena && !n->uploaded)
        return;
    if (n->running)
        pthread_join(n->thread, NULL);
    if (n->uploaded || n->arena)
        sg_backend_drain(n->be); /* queued copies land before anything goes */
    if (n->uploaded)
        sg_block_backend_release(n->be, &n->dev);
    if (n->arena)
        n->be->ops->host_free(n->be, n->arena);
    memset(n, 0, sizeof *n);
}

/* The fused run: the pipeline's transport in one process. A captured
 * chunk goes into the covariance, a signal's axes are the covariance's
 * eigenvectors, blocks come from the model files and go to the writer. */
typedef struct {
    const sg_slice_options *o;
    sg_model_files *files;
    sg_model_writer *w;
    sg_model_config sliced;
    sg_slice_cov cov;
    double *eig;                    /* (D) */
    sg_spectra *spectra;            /* eigenvalues per signal, written beside the model */
    next_block next;                /* the block after the current one (GPU runs) */
} fused;

static int fused_widths(sg_pipeline *p, sg_model_config *sliced)
{
    fused *f = p->ctx;
    *sliced = f->sliced;
    return 0;
}

/* Each captured chunk goes into the covariance (the store has it already). */
static int fused_chunk(void *ctx, const char *signal, int64_t layer, const char *stored_as,
                       int64_t chunk, int64_t n_chunks, const float *x, const float *x_dev,
                       int64_t rows)
{
    sg_pipeline *p = ctx;
    fused *f = p->ctx;
    double t = sg_now();
    int err = chunk == 0 ? sg_slice_cov_begin(&f->cov) : 0;
    err = err ? err : sg_slice_cov_add(&f->cov, x_dev, rows);
    double spent = sg_now() - t;
    p->seconds[SG_STAGE_COV] += spent;
    p->clock += spent; /* not capture time */
    return err;
}

static int fused_axes(sg_pipeline *p, const char *signal, int64_t layer, sg_rotation *q)
{
    fused *f = p->ctx;
    const sg_slice_options *o = f->o;
    int err = sg_slice_axes(p->be, f->cov.h, p->orig->dim, layer, o->rotation, o->seed,
                            o->damp_frac, o->eigh, q, f->eig);
    return err ? err : sg_spectra_add(f->spectra, signal, layer, f->eig, p->orig->dim);
}

static int fused_embeddings(sg_pipeline *p, sg_model *m)
{
    fused *f = p->ctx;
    sg_model_files_prefetch_block(f->files, 0);
    int err = sg_slice_embeddings_load(f->files, m);
    sg_pipeline_tick(p, SG_STAGE_LOAD);
    if (err)
        return err;
    if ((err = sg_slice_embeddings_fold(m)))
        sg_model_free(m);
    sg_pipeline_tick(p, SG_STAGE_FOLD);
    return err;
}

/* Block l, loaded and folded on the host, is sliced where the backend
 * keeps it: on a GPU it is uploaded once (or was, while block l-1 ran);
 * on the CPU it never moves. */
static int fused_block(sg_pipeline *p, int64_t l, sg_block *b)
{
    fused *f = p->ctx;
    const sg_model_config *o = p->orig;
    sg_backend *be = p->be;
    int on_host = be->ops->host_memory, err;
    memset(b, 0, sizeof *b);
    if (!on_host && f->next.l == l && (f->next.running || f->next.uploaded)) {
        /* prepared and queued while the previous block ran: "load" is
         * what is left of that wait */
        err = next_block_take(&f->next, b);
        sg_pipeline_tick(p, SG_STAGE_LOAD);
    } else {
        sg_block host;
        err = sg_block_load(f->files, o, l, &host);
        sg_pipeline_tick(p, SG_STAGE_LOAD);
        if (err)
            return err;
        if (l + 1 < o->n_layers)
            sg_model_files_prefetch_block(f->files, l + 1); /* overlaps with this block's work */
        err = sg_fold_block(o, &host);
        sg_pipeline_tick(p, SG_STAGE_FOLD);
        if (!err && !on_host)
            err = sg_block_to_backend(be, o, &host, b);
        if (on_host && !err)
            *b = host;
        else
            sg_block_free(&host); /* the host holds no block while the device works */
    }
    if (!err && !on_host && l + 1 < o->n_layers)
        err = next_block_start(&f->next, be, f->files, o, l + 1);
    if (err)
        sg_block_drop(be, b);
    return err;
}

/* halfway: the next block's upload overlaps the rest of this one */
static int fused_halfway(sg_pipeline *p, int64_t l)
{
    fused *f = p->ctx;
    return f->next.l == l + 1 ? next_block_upload(&f->next) : 0; /* started on a GPU only */
}

static int fused_head(sg_pipeline *p, sg_model *m)
{
    fused *f = p->ctx;
    int err = sg_slice_head_load(f->files, m);
    sg_pipeline_tick(p, SG_STAGE_LOAD);
    return err;
}

static int fused_put_embeddings(sg_pipeline *p, sg_model *m)
{
    return sg_model_writer_embeddings(((fused *)p->ctx)->w, m);
}

static int fused_put_block(sg_pipeline *p, int64_t l, sg_block *b)
{
    return sg_model_writer_block(((fused *)p->ctx)->w, l, b);
}

static int fused_put_head(sg_pipeline *p, sg_model *m)
{
    return sg_model_writer_head(((fused *)p->ctx)->w, m);
}

static const sg_pipeline_io fused_io = {
    .widths = fused_widths,
    .embeddings = fused_embeddings,
    .block = fused_block,
    .halfway = fused_halfway,
    .head = fused_head,
    .axes = fused_axes,
    .put_embeddings = fused_put_embeddings,
    .put_block = fused_put_block,
    .put_head = fused_put_head,
};

static int64_t physical_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && size > 0 ? (int64_t)pages * size : (int64_t)8 << 30;
}

int sg_slice(sg_model_files *files, const sg_token_batch *calib, const sg_slice_options *o,
             sg_slice_report *rep)
{
    memset(rep, 0, sizeof *rep);
    fused f = {.o = o, .files = files};
    sg_pipeline p = {.io = &fused_io, .ctx = &f, .capture = 1, .slice = 1,
                     .progress = o->progress, .phase = "slice"};
    p.be = o->backend ? o->backend : sg_backend_cpu();
    p.orig = sg_model_files_config(files);
    if (p.orig->sliced)
        return sg_fail(SG_EARG, "%s: model is already sliced", sg_model_files_path(files));
    int64_t D = p.orig->dim;
    rep->calib_tokens = calib->offsets[calib->n_seq];
    rep->d = sg_slice_plan(p.orig, &o->plan, &f.sliced);
    if (rep->d < 0)
        return (int)rep->d;
    rep->embeddings_kept = sg_embeddings_kept(&f.sliced);
    rep->params_dense = sg_model_param_count(p.orig);
    rep->params_stored = sg_model_param_count(&f.sliced);

    int err = sg_capture_init(&p.cap, p.be, calib,
                              o->chunk_tokens > 0 ? o->chunk_tokens : 8192, D);
    if (err)
        return err;
    p.cap.sink = fused_chunk;
    p.cap.sink_ctx = &p;
    rep->chunks = p.cap.n_chunks;
    /* what the store may keep resident: the host budget less what the
     * driver itself holds (see sg_slice_memory_estimate) */
    sg_slice_memory mem;
    sg_slice_memory_estimate(p.orig, 0, p.cap.max_tokens, p.cap.max_tokens, &mem);
    if (!p.be->ops->host_memory)
        mem.total += mem.block_f32; /* the next block, prepared while this one runs */
    int64_t host = o->host_mem_bytes > 0 ? o->host_mem_bytes : physical_memory() / 2;
    rep->store_budget = host > mem.total ? host - mem.total : 0;
    const char *spill = o->spill_dir ? o->spill_dir : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    err = sg_act_store_open(rep->store_budget, spill, &p.cap.store);
    err = err ? err : sg_slice_cov_init(&f.cov, p.be, D, o->cov_mixed);
    if (err)
        goto out;
    f.eig = malloc(D * sizeof(double));
    f.spectra = sg_spectra_new();
    if (!f.eig || !f.spectra) {
        err = sg_fail(-ENOMEM, "out of memory for rotations of width %lld", (long long)D);
        goto out;
    }
    err = sg_model_writer_open(o->out_dir, &f.sliced, o->out_dtype, &f.w);
    err = err ? err : sg_pipeline_run(&p);
    if (err)
        goto out;
    err = sg_model_writer_finish(f.w, sg_plan_sparsity(&o->plan, p.orig->dim, rep->d),
                                 o->tokenizer_src, o->tok);
    f.w = NULL;
    err = err ? err : sg_spectra_write(f.spectra, o->out_dir);
    sg_pipeline_tick(&p, SG_STAGE_WRITE);

    /* nominal size: what the paper counts (no shortcuts, head as before) */
    sg_model_config nominal = f.sliced;
    nominal.tied_embeddings = p.orig->tied_embeddings;
    nominal.lm_head_bias = p.orig->lm_head_bias;
    rep->params_sliced = sg_model_param_count(&nominal);
    for (int64_t l = 0; l < nominal.n_layers; l++)
        rep->params_sliced -= nominal.d_in[l] * nominal.d_mid[l] +
                              (nominal.parallel_block ? 0 : nominal.d_mid[l] * nominal.d_out[l]);
out:
    next_block_discard(&f.next); /* an error may have left the next block in flight */
    memcpy(rep->seconds, p.seconds, sizeof rep->seconds);
    if (p.cap.store) {
        sg_act_store_stats_t st;
        sg_act_store_stats(p.cap.store, &st);
        rep->store_peak = st.peak_resident_bytes;
        rep->spilled_raw = st.spilled_raw_bytes;
        rep->spilled_compressed = st.spilled_compressed_bytes;
    }
    if (f.w)
        sg_model_writer_abort(f.w);
    sg_act_store_close(p.cap.store);
    sg_capture_free(&p.cap);
    sg_slice_cov_free(&f.cov);
    sg_backend_mem bm;
    if (!p.be->ops->host_memory && !p.be->ops->memory(p.be, &bm))
        rep->backend_peak = (int64_t)bm.peak;
    free(f.eig);
    sg_spectra_free(f.spectra);
    return err;
}
