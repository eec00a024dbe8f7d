#include "slicer.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "act_store.h"
#include "covariance.h"
#include "evaluate.h"
#include "fold.h"
#include "forward.h"
#include "forward_ops.h"
#include "sg_error.h"
#include "slice_steps.h"
#include "write_model.h"

const char *const sg_stage_names[SG_N_STAGES] = {"load", "fold", "capture", "covariance",
                                                 "eigensolve", "rotate/slice", "write"};

void sg_slice_options_default(sg_slice_options *o)
{
    memset(o, 0, sizeof *o);
    o->sparsity = 0.25;
    o->round_interval = 8;
    o->seed = 42;
    o->damp_frac = 0.01;
    o->out_dtype = SG_DT_F32;
}

int64_t sg_model_param_count(const sg_model_config *c)
{
    int64_t n = c->vocab_size * c->embed_dim;
    if (c->rope == SG_ROPE_NONE)
        n += (c->max_positions + c->pos_offset) * c->embed_dim;
    for (int64_t l = 0; l < c->n_layers; l++)
        n += sg_block_param_count(c, l);
    if (!c->sliced)
        n += c->head_in_dim * (c->norm == SG_NORM_LAYER ? 2 : 1);
    if (!c->tied_embeddings)
        n += c->vocab_size * c->head_in_dim;
    if (c->lm_head_bias)
        n += c->vocab_size;
    return n;
}

void sg_slice_memory_estimate(const sg_model_config *c, int64_t block_raw_bytes,
                              int64_t chunk_tokens, int64_t max_seq, sg_slice_memory *m)
{
    int64_t D = c->dim, f32 = sizeof(float), f64 = sizeof(double);
    memset(m, 0, sizeof *m);
    /* the block being sliced (float32) and, while it is, the next one's
     * raw bytes in flight plus the current one's being served */
    m->block_f32 = sg_block_param_count(c, 0) * f32 + D * (D + D) * f32; /* + shortcuts */
    m->block_raw = 2 * block_raw_bytes;
    m->chunk_buffers = 3 * chunk_tokens * D * f32;
    m->forward_scratch = sg_forward_scratch_bytes(c, max_seq, chunk_tokens);
    m->covariance = D * D * f64 + SG_COV_CHUNK * D * f64 + 3 * D * D * f64; /* H, chunk, dsyevd work */
    m->rotations = 3 * D * D * f64;
    int64_t pos = c->rope == SG_ROPE_NONE ? (c->max_positions + c->pos_offset) * D : 0;
    m->globals = (2 * c->vocab_size * D + pos) * f32; /* embeddings + untied head copy */
    m->total = m->block_raw + m->block_f32 + m->chunk_buffers + m->forward_scratch +
               m->covariance + m->rotations + m->globals;
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

/* Everything one run holds between steps (the steps are slice_steps.h's;
 * this file only orders them, keeps time and reports). */
typedef struct {
    const sg_slice_options *o;
    sg_slice_report *rep;
    sg_model_config orig, cfg; /* cfg: the sliced model being built */
    int64_t D;
    sg_backend *be;                 /* where the arithmetic runs */
    sg_capture cap;
    sg_rotation q_prev, q_mid, q_out; /* (D, D) */
    double *eig;                    /* (D) */
    sg_slice_cov cov;
    sg_spectra *spectra;            /* eigenvalues per signal, written beside the model */
    next_block next;                /* the block after the current one (GPU runs) */
    double clock;
} run_state;

static void tick(run_state *s, int stage)
{
    double now = sg_now();
    s->rep->seconds[stage] += now - s->clock;
    s->clock = now;
}

/* Each captured chunk goes into the covariance (the store has it already). */
static int accumulate(void *ctx, const char *signal, int64_t layer, const char *stored_as,
                      int64_t chunk, int64_t n_chunks, const float *x, const float *x_dev,
                      int64_t rows)
{
    run_state *s = ctx;
    double t = sg_now();
    int err = sg_slice_cov_add(&s->cov, x_dev, rows);
    s->rep->seconds[SG_STAGE_COV] += sg_now() - t;
    s->clock += sg_now() - t; /* not capture time */
    return err;
}

/* PCA of the signal accumulated since sg_slice_cov_begin: q (D, D), spectrum recorded. */
static int principal_axes(run_state *s, sg_rotation *q, const char *signal, int64_t layer)
{
    tick(s, SG_STAGE_CAPTURE);
    int err = sg_slice_axes(s->be, s->cov.h, s->D, layer, s->o->rotation, s->o->seed,
                            s->o->damp_frac, s->o->eigh, q, s->eig);
    err = err ? err : sg_spectra_add(s->spectra, signal, layer, s->eig, s->D);
    tick(s, SG_STAGE_EIG);
    return err;
}

/* Block l, loaded and folded on the host, is sliced where the backend
 * keeps it: on a GPU it is uploaded once, rotated, cut and run there, and
 * brought back once, sliced, for the writer; on the CPU it never moves. */
static int slice_block(run_state *s, sg_model_files *files, sg_model_writer *w, int64_t l)
{
    const sg_model_config *o = &s->orig;
    int64_t D = s->D, d_in = s->cfg.d_in[l], d_mid = s->cfg.d_mid[l], d_out = s->cfg.d_out[l];
    sg_backend *be = s->be;
    int on_host = be->ops->host_memory;
    sg_block host, dev = {0};
    sg_block *b = on_host ? &host : &dev; /* the block being sliced */
    sg_model_config work;
    int err;
    memset(&host, 0, sizeof host);
    if (!on_host && s->next.l == l && (s->next.running || s->next.uploaded)) {
        /* prepared and queued while the previous block ran: "load" is
         * what is left of that wait */
        err = next_block_take(&s->next, &dev);
        tick(s, SG_STAGE_LOAD);
        if (err)
            return err;
    } else {
        err = sg_block_load(files, o, l, &host);
        tick(s, SG_STAGE_LOAD);
        if (err)
            return err;
        if (l + 1 < o->n_layers)
            sg_model_files_prefetch_block(files, l + 1); /* overlaps with this block's work */
        if ((err = sg_fold_block(o, &host)))
            goto out;
        tick(s, SG_STAGE_FOLD);
        if (!on_host) {
            err = sg_block_to_backend(be, o, &host, &dev);
            sg_block_free(&host); /* the host holds no block while the device works */
            if (err)
                goto out;
        }
    }
    if (!on_host && l + 1 < o->n_layers && (err = next_block_start(&s->next, be, files, o, l + 1)))
        goto out;
    if ((err = sg_slice_block_input(be, o, b, &s->q_prev, d_in)))
        goto out;
    sg_slice_work_config(&s->cfg, l, D, &work);
    tick(s, SG_STAGE_ROTATE);

    /* first capture: the residual after attention (sequential blocks) or
     * the whole block's output (parallel blocks), in the original basis */
    err = sg_slice_cov_begin(&s->cov);
    err = err ? err : sg_capture_attention(&s->cap, &work, b, l);
    /* halfway: the next block's upload overlaps the rest of this one */
    if (!err && !on_host && s->next.l == l + 1)
        err = next_block_upload(&s->next);
    if (err)
        goto out;
    if (!o->parallel_block) {
        if ((err = principal_axes(s, &s->q_mid, "attention_output", l)))
            goto out;
        if ((err = sg_slice_block_mid(be, o, b, &s->q_mid, d_in, d_mid)))
            goto out;
        work.d_mid[l] = d_mid;
        tick(s, SG_STAGE_ROTATE);
        /* second capture: the block output */
        err = sg_slice_cov_begin(&s->cov);
        err = err ? err : sg_capture_mlp(&s->cap, &work, b, &s->q_mid, d_mid, l);
        if (err)
            goto out;
    }
    err = principal_axes(s, &s->q_out, "block_output", l);
    err = err ? err : sg_slice_block_output(be, o, b, &s->q_out, d_in, d_mid, d_out);
    tick(s, SG_STAGE_ROTATE);
    /* the next block's inputs: this block's output in the new basis, cut */
    err = err ? err : sg_capture_advance(&s->cap, &s->q_out, d_out);
    if (!err && !on_host)
        err = sg_block_from_backend(be, o, &dev, &host);
    tick(s, SG_STAGE_ROTATE);
    err = err ? err : sg_model_writer_block(w, l, &host);
    tick(s, SG_STAGE_WRITE);
    sg_rotation swap = s->q_prev;
    s->q_prev = s->q_out;
    s->q_out = swap;
out:
    if (!on_host)
        sg_block_backend_release(be, &dev);
    sg_block_free(&host);
    return err;
}

/* Embeddings: capture the embedded calibration tokens, PCA → Q₀, write the
 * rotated, cut embeddings; the projected tokens are block 0's inputs. */
static int slice_embeddings(run_state *s, sg_model_files *files, sg_model_writer *w)
{
    sg_model m;
    int err = sg_slice_embeddings_load(files, &m);
    tick(s, SG_STAGE_LOAD);
    if (err)
        return err;
    err = sg_slice_embeddings_fold(&m);
    tick(s, SG_STAGE_FOLD);
    err = err ? err : sg_slice_cov_begin(&s->cov);
    err = err ? err : sg_capture_embeddings(&s->cap, &m);
    err = err ? err : principal_axes(s, &s->q_prev, "embeddings", -1);
    err = err ? err : sg_capture_advance(&s->cap, &s->q_prev, s->cfg.embed_dim);
    err = err ? err : sg_slice_embeddings_rotate(s->be, &m, &s->orig, &s->cfg, &s->q_prev);
    tick(s, SG_STAGE_ROTATE);
    err = err ? err : sg_model_writer_embeddings(w, &m);
    tick(s, SG_STAGE_WRITE);
    sg_model_free(&m);
    return err;
}

/* Head: reads the last block's output, rotated by the last Q. */
static int slice_head(run_state *s, sg_model_files *files, sg_model_writer *w)
{
    sg_model m;
    int err = sg_slice_head_load(files, &m);
    tick(s, SG_STAGE_LOAD);
    if (err)
        return err;
    err = sg_slice_head_fold(&m);
    tick(s, SG_STAGE_FOLD);
    err = err ? err : sg_slice_head_rotate(s->be, &m, &s->orig, &s->cfg, &s->q_prev);
    tick(s, SG_STAGE_ROTATE);
    err = err ? err : sg_model_writer_head(w, &m);
    tick(s, SG_STAGE_WRITE);
    sg_model_free(&m);
    return err;
}

static int64_t physical_memory(void)
{
    long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
    return pages > 0 && size > 0 ? (int64_t)pages * size : (int64_t)8 << 30;
}

int sg_slice(sg_model_files *files, const sg_token_batch *calib, const sg_slice_options *o,
             sg_slice_report *rep)
{
    memset(rep, 0, sizeof *rep);
    run_state s = {.o = o, .rep = rep, .clock = sg_now()};
    s.be = o->backend ? o->backend : sg_backend_cpu();
    s.orig = *sg_model_files_config(files);
    if (s.orig.sliced)
        return sg_fail(SG_EARG, "%s: model is already sliced", sg_model_files_path(files));
    int64_t D = s.D = s.orig.dim;
    rep->calib_tokens = calib->offsets[calib->n_seq];
    rep->d = sg_slice_plan(&s.orig, o->sparsity, o->round_interval, o->slice_head, &s.cfg);
    rep->params_dense = sg_model_param_count(&s.orig);
    rep->params_stored = sg_model_param_count(&s.cfg);

    sg_model_writer *w = NULL;
    int err = sg_capture_init(&s.cap, s.be, calib,
                              o->chunk_tokens > 0 ? o->chunk_tokens : 8192, D);
    if (err)
        return err;
    s.cap.sink = accumulate;
    s.cap.sink_ctx = &s;
    rep->chunks = s.cap.n_chunks;
    /* what the store may keep resident: the host budget less what the
     * driver itself holds (see sg_slice_memory_estimate) */
    sg_slice_memory mem;
    sg_slice_memory_estimate(&s.orig, 0, s.cap.max_tokens, s.cap.max_tokens, &mem);
    if (!s.be->ops->host_memory)
        mem.total += mem.block_f32; /* the next block, prepared while this one runs */
    int64_t host = o->host_mem_bytes > 0 ? o->host_mem_bytes : physical_memory() / 2;
    rep->store_budget = host > mem.total ? host - mem.total : 0;
    const char *spill = o->spill_dir ? o->spill_dir : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    err = sg_act_store_open(rep->store_budget, spill, &s.cap.store);
    err = err ? err : sg_slice_cov_init(&s.cov, s.be, D, o->cov_mixed);
    err = err ? err : sg_rotation_alloc(s.be, D, &s.q_prev);
    err = err ? err : sg_rotation_alloc(s.be, D, &s.q_mid);
    err = err ? err : sg_rotation_alloc(s.be, D, &s.q_out);
    if (err)
        goto out;
    s.eig = malloc(D * sizeof(double));
    s.spectra = sg_spectra_new();
    if (!s.eig || !s.spectra) {
        err = sg_fail(-ENOMEM, "out of memory for rotations of width %lld", (long long)D);
        goto out;
    }
    if ((err = sg_model_writer_open(o->out_dir, &s.cfg, o->out_dtype, &w)))
        goto out;
    sg_model_files_prefetch_block(files, 0);
    if ((err = slice_embeddings(&s, files, w)))
        goto out;
    for (int64_t l = 0; l < s.orig.n_layers; l++) {
        if (o->verbose)
            fprintf(stderr, "slicegpt-stream: block %lld/%lld\n", (long long)l + 1,
                    (long long)s.orig.n_layers);
        if ((err = slice_block(&s, files, w, l)))
            goto out;
    }
    if ((err = slice_head(&s, files, w)))
        goto out;
    err = sg_model_writer_finish(w, o->sparsity, o->tokenizer_src, o->tok);
    w = NULL;
    err = err ? err : sg_spectra_write(s.spectra, o->out_dir);
    tick(&s, SG_STAGE_WRITE);

    /* nominal size: what the paper counts (no shortcuts, head as before) */
    sg_model_config nominal = s.cfg;
    nominal.tied_embeddings = s.orig.tied_embeddings;
    nominal.lm_head_bias = s.orig.lm_head_bias;
    rep->params_sliced = sg_model_param_count(&nominal);
    for (int64_t l = 0; l < nominal.n_layers; l++)
        rep->params_sliced -= nominal.d_in[l] * nominal.d_mid[l] +
                              (nominal.parallel_block ? 0 : nominal.d_mid[l] * nominal.d_out[l]);
out:
    next_block_discard(&s.next); /* an error may have left the next block in flight */
    if (s.cap.store) {
        sg_act_store_stats_t st;
        sg_act_store_stats(s.cap.store, &st);
        rep->store_peak = st.peak_resident_bytes;
        rep->spilled_raw = st.spilled_raw_bytes;
        rep->spilled_compressed = st.spilled_compressed_bytes;
    }
    if (w)
        sg_model_writer_abort(w);
    sg_act_store_close(s.cap.store);
    sg_capture_free(&s.cap);
    sg_slice_cov_free(&s.cov);
    sg_rotation_free(s.be, &s.q_prev);
    sg_rotation_free(s.be, &s.q_mid);
    sg_rotation_free(s.be, &s.q_out);
    sg_backend_mem bm;
    if (!s.be->ops->host_memory && !s.be->ops->memory(s.be, &bm))
        rep->backend_peak = (int64_t)bm.peak;
    free(s.eig);
    sg_spectra_free(s.spectra);
    return err;
}
