#include "slicer.h"

#include <errno.h>
#include <math.h>
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
#include "parallel.h"
#include "resume.h"
#include "rotate_slice.h"
#include "schedule.h"
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
/* The uniform rotation's state (slicer.h). */
typedef struct {
    int collect;        /* first pass: sum the covariances, answer the identity */
    double *sum;        /* (D, D) host: Σ_s H_s / tr H_s */
    double *h_host;     /* (D, D) a covariance brought back from the device */
    int64_t signals;    /* how many went into sum */
    sg_rotation q;      /* the one basis (second pass) */
    int sliced_format;  /* write our sliced format, not the plain model */
    float norm_scale;   /* sqrt(D/d) */
    int tied;           /* the head stays the table: the final norm's scale is */
    float head_norm;    /* ... this constant */
} uniform_state;

typedef struct {
    const sg_slice_options *o;
    uniform_state *u;               /* NULL: a rotation per signal */
    sg_model_files *files;
    sg_model_writer *w;
    sg_model_config sliced;
    sg_slice_cov cov;
    double *eig;                    /* (D) */
    sg_spectra *spectra;            /* eigenvalues per signal, written beside the model */
    sg_schedule_spectra *probe;     /* --method spectrum's first pass: record, cut nothing */
    sg_schedule_probe *energy;      /* ... each component's per-token energy (schedule.h) */
    next_block next;                /* the block after the current one (GPU runs) */
    int resumable;                  /* record each step in OUT.tmp (resume.h) */
    int plain;                      /* nystrom: the norms folded away come back as 1s */
    uint64_t fingerprint;
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
    if (!f->cov.h) /* nothing rotated: every capture runs without a sink */
        return sg_fail(SG_EARG, "signal %s: no covariance is kept where nothing is rotated",
                       signal);
    int err = chunk == 0 ? sg_slice_cov_begin(&f->cov) : 0;
    err = err ? err : sg_slice_cov_add(&f->cov, x_dev, rows);
    if (f->energy) {
        if (chunk == 0)
            sg_schedule_probe_begin(f->energy);
        sg_schedule_probe_add(f->energy, x, rows);
    }
    double spent = sg_now() - t;
    p->seconds[SG_STAGE_COV] += spent;
    p->clock += spent; /* not capture time */
    return err;
}

/* Uniform rotation: the first pass adds the signal's covariance,
 * normalised by its trace, to the sum and leaves the signal as it is; the
 * second answers the one basis for every signal. */
static int uniform_axes(sg_pipeline *p, uniform_state *u, const double *h, sg_rotation *q)
{
    sg_backend *be = p->be;
    int64_t D = p->orig->dim;
    size_t bytes = D * D * sizeof(double);
    if (!u->collect) {
        memcpy(q->host, u->q.host, bytes);
        return q->dev == q->host ? 0 : be->ops->upload(be, q->dev, q->host, bytes);
    }
    if (!be->ops->host_memory) {
        int err = be->ops->download(be, u->h_host, h, bytes);
        if (err)
            return err;
        h = u->h_host;
    }
    double tr = 0;
    for (int64_t i = 0; i < D; i++)
        tr += h[i * D + i];
    if (tr > 0) {
        for (int64_t k = 0; k < D * D; k++)
            u->sum[k] += h[k] / tr;
        u->signals++;
    }
    return sg_rotation_identity(be, D, q);
}

static int fused_axes(sg_pipeline *p, const char *signal, int64_t layer, sg_rotation *q)
{
    fused *f = p->ctx;
    const sg_slice_options *o = f->o;
    if (f->u)
        return uniform_axes(p, f->u, f->cov.h, q);
    int err = sg_slice_axes(p->be, f->cov.h, p->orig->dim, layer, o->rotation, o->seed,
                            o->damp_frac, o->eigh, q, f->eig);
    if (f->probe) {
        /* what each axis of the dense model's signal is worth; the signal
         * goes on as it is */
        if (!err) {
            sg_schedule_probe_energy(f->energy, q->host, f->eig);
            sg_schedule_spectra_put(f->probe, signal, layer, f->eig);
        }
        return err ? err : sg_rotation_identity(p->be, p->orig->dim, q);
    }
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

/* *v = n copies of x (replacing what it held). */
static int constant_vector(float **v, int64_t n, float x)
{
    free(*v);
    if (!(*v = malloc(n * sizeof(float))))
        return sg_fail(-ENOMEM, "out of memory");
    for (int64_t i = 0; i < n; i++)
        (*v)[i] = x;
    return 0;
}

/* Uniform rotation: the shortcuts are Q_dᵀQ_d = I (up to rounding) and
 * go; the plain model's norms get their weights sqrt(D/d). */
static int uniform_block(uniform_state *u, sg_block *b)
{
    free(b->attn_shortcut);
    free(b->mlp_shortcut);
    b->attn_shortcut = b->mlp_shortcut = NULL;
    if (u->sliced_format)
        return 0;
    int err = constant_vector(&b->attn_norm_w, b->d_in, u->norm_scale);
    return err ? err : constant_vector(&b->ffn_norm_w, b->d_mid, u->norm_scale);
}

/* The head came folded (final norm scale times the table, rotated); with
 * a tied head the scale goes back to the norm, the table being the head. */
static int uniform_head(uniform_state *u, int64_t d, sg_model *m)
{
    float scale = (u->sliced_format ? 1.0f : u->norm_scale) * (u->tied ? u->head_norm : 1.0f);
    if (u->sliced_format && !u->tied) {
        free(m->out_norm_w); /* scale-free, folded into the head */
        m->out_norm_w = NULL;
        return 0;
    }
    return constant_vector(&m->out_norm_w, d, scale);
}

/* A pruned model written as a plain one (--method nystrom, RMSNorm):
 * nothing was rotated, so the folded norms need only their weights back,
 * as 1s (their scales live in the readers now). */
static int plain_block(sg_block *b, int parallel)
{
    int err = constant_vector(&b->attn_norm_w, b->d_in, 1.0f);
    return err || parallel ? err : constant_vector(&b->ffn_norm_w, b->d_mid, 1.0f);
}

static int fused_put_block(sg_pipeline *p, int64_t l, sg_block *b)
{
    fused *f = p->ctx;
    int err = f->u ? uniform_block(f->u, b) : f->plain ? plain_block(b, p->orig->parallel_block) : 0;
    return err ? err : sg_model_writer_block(f->w, l, b);
}

static int fused_put_head(sg_pipeline *p, sg_model *m)
{
    fused *f = p->ctx;
    int err = f->u ? uniform_head(f->u, f->sliced.head_in_dim, m) : 0;
    /* an untied head came folded with the final norm's scale */
    if (!err && f->plain && !sg_embeddings_kept(&f->sliced))
        err = constant_vector(&m->out_norm_w, f->sliced.head_in_dim, 1.0f);
    return err ? err : sg_model_writer_head(f->w, m);
}

/* The next block's input chunks as fsynced files, compressed and synced
 * side by side on the worker pool (each chunk by one worker, into its own
 * buffer: worker 0 uses cap.in), so the checkpoint keeps both cores busy
 * instead of one compressing while the other waits. */
typedef struct {
    sg_pipeline *p;
    const char *dir;
    int64_t l;
    float **buf;  /* per worker (max_tokens, D), NULL until first used */
    int *err;     /* per chunk */
    char (*msg)[256];
} chunk_saver;

static void save_chunk(void *arg, int64_t c, int worker)
{
    chunk_saver *cs = arg;
    sg_act_store *store = cs->p->cap.store;
    int64_t rows, width;
    char path[4096];
    int err = 0;
    if (!cs->buf[worker] &&
        !(cs->buf[worker] = malloc(cs->p->cap.max_tokens * cs->p->cap.D * sizeof(float))))
        err = sg_fail(-ENOMEM, "out of memory for a checkpoint chunk");
    err = err ? err : sg_act_store_shape(store, "input", c, &rows, &width);
    err = err ? err : sg_act_store_get(store, "input", c, cs->buf[worker]);
    sg_resume_chunk_path(cs->dir, cs->l, c, path, sizeof path);
    err = err ? err : sg_act_store_write_file(store, path, cs->buf[worker], rows, width);
    cs->err[c] = err;
    if (err) /* sg_error is per thread: carried back to the caller's */
        snprintf(cs->msg[c], sizeof cs->msg[c], "%s", sg_last_error());
}

static int save_chunks(sg_pipeline *p, const char *dir, int64_t l, int64_t n)
{
    int workers = sg_parallel_workers();
    float **buf = calloc(workers, sizeof *buf);
    int *errs = calloc(n + 1, sizeof *errs);
    char (*msg)[256] = calloc(n + 1, sizeof *msg);
    int err = buf && errs && msg ? 0 : sg_fail(-ENOMEM, "out of memory");
    if (!err) {
        buf[0] = p->cap.in;
        chunk_saver cs = {p, dir, l, buf, errs, msg};
        sg_parallel_for(n, save_chunk, &cs);
        for (int64_t c = 0; c < n && !err; c++)
            if (errs[c])
                err = sg_fail(errs[c], "%s", msg[c]);
    }
    for (int w = 1; buf && w < workers; w++)
        free(buf[w]);
    free(buf);
    free(errs);
    free(msg);
    return err;
}

/* After the embeddings (l = -1) or block l: the next block's inputs as
 * files in OUT.tmp, then the state naming them (resume.h). */
static int fused_checkpoint(sg_pipeline *p, int64_t l, const sg_rotation *q)
{
    fused *f = p->ctx;
    if (!f->resumable)
        return 0;
    const char *dir = sg_model_writer_dir(f->w);
    sg_act_store *store = p->cap.store;
    /* nothing rotated: the identity is not written (D² doubles a block, 0.5
     * GiB at D = 8192) */
    sg_resume_state st = {.fingerprint = f->fingerprint, .last = l, .D = p->orig->dim,
                          .q = p->sliced.residual_kept ? NULL : q->host};
    st.n_chunks = l + 1 < p->orig->n_layers ? sg_act_store_chunks(store, "input") : 0;
    int err = p->be->ops->synchronize(p->be); /* cap.in is free: nothing queued from it */
    if (!err && !(st.rows = malloc((st.n_chunks + 1) * sizeof(int64_t))))
        err = sg_fail(-ENOMEM, "out of memory");
    for (int64_t c = 0; !err && c < st.n_chunks; c++)
        err = sg_act_store_shape(store, "input", c, &st.rows[c], &st.width);
    if (!err)
        err = save_chunks(p, dir, l, st.n_chunks);
    err = err ? err : sg_model_writer_progress(f->w, &st.weight_map, &st.next_shard);
    if (!err && !(st.spectra = sg_spectra_json(f->spectra)))
        err = sg_fail(-ENOMEM, "out of memory");
    err = err ? err : sg_resume_save(dir, &st);
    free(st.rows);
    free(st.weight_map);
    free(st.spectra);
    sg_pipeline_tick(p, SG_STAGE_WRITE);
    return err;
}

static const sg_pipeline_io fused_io = {
    .checkpoint = fused_checkpoint,
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

/* Allocates the uniform rotation's state for width d and decides whether
 * a tied head can stay tied: exactly when the final norm's scale is one
 * constant c (it then moves into the plain model's final norm; any other
 * scale does not commute with the rotation and is folded into an untied
 * head). */
static int uniform_begin(uniform_state *u, sg_backend *be, sg_model_files *files, int64_t d,
                         int sliced_format)
{
    const sg_model_config *c = sg_model_files_config(files);
    int64_t D = c->dim;
    u->sliced_format = sliced_format;
    u->norm_scale = (float)sqrt((double)D / (double)d);
    u->sum = calloc(D * D, sizeof(double));
    u->h_host = be->ops->host_memory ? NULL : malloc(D * D * sizeof(double));
    if (!u->sum || (!be->ops->host_memory && !u->h_host))
        return sg_fail(-ENOMEM, "out of memory for the uniform rotation's covariance sum");
    int err = sg_rotation_alloc(be, D, &u->q);
    if (err || !c->tied_embeddings)
        return err;
    float *gamma = NULL;
    if ((err = sg_slice_final_norm_load(files, &gamma)))
        return err;
    u->tied = 1;
    u->head_norm = gamma[0];
    for (int64_t i = 1; i < D; i++)
        u->tied &= gamma[i] == gamma[0];
    free(gamma);
    return 0;
}

static void uniform_end(uniform_state *u, sg_backend *be)
{
    free(u->sum);
    free(u->h_host);
    if (u->q.host)
        sg_rotation_free(be, &u->q);
    memset(u, 0, sizeof *u);
}

/* plan with nothing cut: the plan of a first pass over the dense model */
static sg_plan_options plan_uncut(sg_plan_options plan)
{
    plan.sparsity = 0;
    plan.target_size = 0;
    plan.round_interval = 1;
    return plan;
}

/* The two passes of a uniform rotation (slicer.h). */
static int uniform_run(sg_pipeline *p, fused *f)
{
    uniform_state *u = f->u;
    const sg_slice_options *o = f->o;
    int64_t D = p->orig->dim;
    size_t bytes = D * D * sizeof(double);
    sg_model_config sliced = f->sliced;
    /* first pass: the dense folded model, nothing cut, every signal summed */
    sg_plan_options dense = plan_uncut(o->plan);
    dense.uniform = 1;
    int64_t d = sg_slice_plan(p->orig, &dense, &f->sliced);
    if (d < 0)
        return (int)d;
    u->collect = 1;
    p->slice = 0;
    p->phase = "uniform basis";
    int err = sg_pipeline_run(p);
    if (err)
        return err;
    /* the sum's eigenvectors: the one basis */
    sg_act_store_drop(p->cap.store, "input");  /* the last activations: not needed again */
    sg_act_store_drop(p->cap.store, "output");
    if (p->be->ops->host_memory)
        memcpy(f->cov.h, u->sum, bytes);
    else if ((err = p->be->ops->upload(p->be, f->cov.h, u->sum, bytes)))
        return err;
    err = sg_slice_axes(p->be, f->cov.h, D, -1, SG_ROTATION_PCA, o->seed, o->damp_frac, o->eigh,
                        &u->q, f->eig);
    sg_pipeline_tick(p, SG_STAGE_EIG);
    if (err)
        return err;
    /* second pass: every block rotated by it and cut, no calibration */
    u->collect = 0;
    f->sliced = sliced;
    p->capture = 0;
    p->slice = 1;
    p->phase = "slice";
    return sg_pipeline_run(p);
}

/* --method spectrum (schedule.h): a first pass over the dense folded
 * model, nothing cut and nothing written, records every signal's spectrum;
 * the schedule then chooses a width per signal at the reference plan's
 * stored size, and f->sliced becomes that plan for the slicing pass. */
static int spectrum_probe(sg_pipeline *p, fused *f, const sg_plan_options *plan)
{
    const sg_slice_options *o = f->o;
    sg_model_config reference = f->sliced;
    sg_plan_options dense = plan_uncut(*plan);
    dense.method = SG_METHOD_REFERENCE;
    int64_t d = sg_slice_plan(p->orig, &dense, &f->sliced);
    if (d < 0)
        return (int)d;
    sg_schedule_spectra spectra;
    sg_schedule_probe energy;
    int err = sg_schedule_spectra_init(&spectra, p->orig->dim, p->orig->n_layers);
    if (err)
        return err;
    if ((err = sg_schedule_probe_init(&energy, p->orig->dim))) {
        sg_schedule_spectra_free(&spectra);
        return err;
    }
    f->probe = &spectra;
    f->energy = &energy;
    p->slice = 0;
    p->phase = "spectra";
    err = sg_pipeline_run(p);
    f->probe = NULL;
    f->energy = NULL;
    sg_schedule_probe_free(&energy);
    p->slice = 1;
    p->phase = "slice";
    /* the last activations: the slicing pass starts again from the tokens */
    static const char *const left[] = {"input", "output", "residual"};
    for (int i = 0; i < 3 && !err; i++)
        if (sg_act_store_chunks(p->cap.store, left[i]) > 0)
            err = sg_act_store_drop(p->cap.store, left[i]);
    if (!err)
        err = sg_schedule_widths(p->orig, &reference, &o->plan, &spectra, &f->sliced);
    sg_schedule_spectra_free(&spectra);
    return err;
}

#define HASH(h, v) ((h) = sg_resume_hash((h), &(v), sizeof(v)))

/* What makes the bytes written: the model files, the calibration tokens
 * and their chunks, the backend, every option that changes a number. */
static int fingerprint(const sg_pipeline *p, const fused *f, sg_model_files *files,
                       const sg_model_config *out_cfg, uint64_t *fp)
{
    const sg_slice_options *o = f->o;
    const sg_token_batch *b = p->cap.calib;
    uint64_t h = sg_resume_hash(0, "slicegpt-stream resume 1", 24);
    h = sg_resume_hash(h, p->be->ops->name, strlen(p->be->ops->name) + 1);
    int err = sg_resume_hash_files(sg_model_files_path(files), &h);
    if (err)
        return err;
    HASH(h, b->n_seq);
    h = sg_resume_hash(h, b->offsets, (b->n_seq + 1) * sizeof *b->offsets);
    h = sg_resume_hash(h, b->ids, b->offsets[b->n_seq] * sizeof *b->ids);
    HASH(h, p->cap.n_chunks);
    h = sg_resume_hash(h, p->cap.first, (p->cap.n_chunks + 1) * sizeof *p->cap.first);
    HASH(h, o->plan.sparsity);
    HASH(h, o->plan.round_interval);
    HASH(h, o->plan.slice_head);
    HASH(h, o->plan.embeddings);
    HASH(h, o->plan.target_size);
    HASH(h, o->plan.method);
    HASH(h, o->rotation);
    HASH(h, o->seed);
    HASH(h, o->damp_frac);
    HASH(h, o->out_dtype);
    HASH(h, o->eigh);
    HASH(h, o->cov_mixed);
    const char *tok = o->tokenizer_src ? o->tokenizer_src : o->tok ? "(tokenizer)" : "";
    h = sg_resume_hash(h, tok, strlen(tok) + 1);
    if (o->tokenizer_src && (err = sg_resume_hash_files(o->tokenizer_src, &h)))
        return err;
    for (int64_t l = 0; l < f->sliced.n_layers; l++) {
        HASH(h, f->sliced.d_in[l]);
        HASH(h, f->sliced.d_mid[l]);
        HASH(h, f->sliced.d_out[l]);
        if (f->sliced.shared_basis[l]) /* (absent before --shared-basis: same hash as then) */
            HASH(h, f->sliced.shared_basis[l]);
    }
    HASH(h, f->sliced.embed_dim);
    HASH(h, f->sliced.head_in_dim);
    HASH(h, out_cfg->tied_embeddings);
    *fp = h;
    return 0;
}

/* OUT.tmp as a killed run left it: continued if its state is this job's
 * (writer, spectra, the next block's inputs into the store, its input
 * rotation into *q), else cleared, or with o->resume refused. */
static int restore(sg_pipeline *p, fused *f, double **q, sg_slice_report *rep)
{
    const sg_slice_options *o = f->o;
    const char *dir = sg_model_writer_dir(f->w);
    sg_resume_state st;
    int err = sg_resume_load(dir, &st);
    if (err == SG_EMISSING) {
        sg_model_writer_clear(f->w); /* a run killed before its first step, or none */
        return 0;
    }
    /* a state without a rotation (the identity) is a kept stream's only */
    if (!err && (st.fingerprint != f->fingerprint || st.D != p->orig->dim ||
                 st.last >= p->orig->n_layers || st.last < -1 ||
                 (!st.q && !f->sliced.residual_kept)))
        err = sg_fail(SG_EARG, "%s: left by a run of another job (the model files or an option "
                               "that changes the result differ); rerun with the same ones, or "
                               "remove it to start again",
                      dir);
    if (err) {
        sg_resume_state_free(&st);
        if (o->resume)
            return err;
        sg_model_writer_clear(f->w); /* a plain rerun starts again */
        return 0;
    }
    err = sg_model_writer_continue(f->w, st.weight_map, st.next_shard);
    err = err ? err : sg_spectra_from_json(f->spectra, st.spectra);
    for (int64_t c = 0; !err && c < st.n_chunks; c++) {
        char path[4096];
        sg_resume_chunk_path(dir, st.last, c, path, sizeof path);
        if (st.rows[c] <= 0 || st.rows[c] > p->cap.max_tokens || st.width <= 0)
            err = sg_fail(SG_EFORMAT, "%s: bad chunk shape", path);
        err = err ? err
                  : sg_act_store_read_file(p->cap.store, path, st.rows[c], st.width, p->cap.in);
        err = err ? err
                  : sg_act_store_put(p->cap.store, "input", c, p->cap.in, st.rows[c], st.width);
    }
    if (!err) {
        *q = st.q;
        st.q = NULL;
        p->resume = 1;
        p->resume_at = st.last + 1;
        p->resume_q = *q;
        rep->resumed = 1;
        rep->resumed_at = p->resume_at;
    }
    sg_resume_state_free(&st);
    return err;
}

int sg_slice(sg_model_files *files, const sg_token_batch *calib, const sg_slice_options *o,
             sg_slice_report *rep)
{
    double *resume_q = NULL;
    memset(rep, 0, sizeof *rep);
    uniform_state u = {0};
    sg_ffn_stats ffn = {0};
    fused f = {.o = o, .files = files};
    sg_plan_options plan = o->plan;
    plan.uniform = o->rotation == SG_ROTATION_UNIFORM;
    sg_pipeline p = {.io = &fused_io, .ctx = &f, .capture = 1, .slice = 1,
                     .progress = o->progress, .phase = "slice"};
    p.be = o->backend ? o->backend : sg_backend_cpu();
    p.orig = sg_model_files_config(files);
    if (p.orig->sliced)
        return sg_fail(SG_EARG, "%s: model is already sliced", sg_model_files_path(files));
    int per_signal = plan.method == SG_METHOD_SPECTRUM || plan.method == SG_METHOD_FILL;
    if (per_signal && o->rotation != SG_ROTATION_PCA)
        return sg_fail(SG_EARG, "--method spectrum|fill chooses a width per signal from its PCA "
                                "spectrum: it needs --rotation pca (a %s rotation has %s)",
                       plan.uniform ? "uniform" : "random",
                       plan.uniform ? "one width for the whole network" : "no spectrum");
    if (plan.method == SG_METHOD_NYSTROM && o->rotation != SG_ROTATION_PCA)
        return sg_fail(SG_EARG, "--method nystrom rotates nothing: it cannot go with "
                                "--rotation %s", plan.uniform ? "uniform" : "random");
    int64_t D = p.orig->dim;
    rep->calib_tokens = calib->offsets[calib->n_seq];
    rep->d = sg_slice_plan(p.orig, &plan, &f.sliced);
    if (rep->d < 0)
        return (int)rep->d;
    rep->sliced = f.sliced;
    rep->embeddings_kept = sg_embeddings_kept(&f.sliced);
    rep->params_dense = sg_model_param_count(p.orig);
    rep->params_stored = sg_model_param_count(&f.sliced);
    sg_model_config out_cfg = f.sliced; /* what the writer writes */
    if (sg_nystrom_plain_config(p.orig, &f.sliced, &out_cfg)) {
        f.plain = rep->plain = 1;
        rep->params_stored = sg_model_param_count(&out_cfg);
    }
    if (plan.uniform) {
        int err = uniform_begin(&u, p.be, files, rep->d, o->uniform_sliced_format);
        if (err) {
            uniform_end(&u, p.be);
            return err;
        }
        f.u = &u;
        sg_model_config plain;
        sg_uniform_config(p.orig, rep->d, u.tied, &plain);
        if (u.sliced_format)
            out_cfg.tied_embeddings = u.tied;
        else
            out_cfg = plain;
        rep->uniform = 1;
        rep->uniform_tied = u.tied;
        rep->params_stored = sg_model_param_count(&plain);
    }

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
    int rotates = !f.sliced.residual_kept; /* --method nystrom rotates nothing */
    if (!rotates) /* and holds the MLP statistics instead */
        sg_slice_memory_nystrom(p.orig, p.cap.max_tokens, p.be->ops->host_memory, &mem);
    if (per_signal) /* the first pass's spectra */
        mem.total += sg_schedule_spectra_bytes(D, p.orig->n_layers) +
                     sg_schedule_probe_bytes(D);
    int64_t host = o->host_mem_bytes > 0 ? o->host_mem_bytes : physical_memory() / 2;
    rep->store_budget = host > mem.total ? host - mem.total : 0;
    const char *spill = o->spill_dir ? o->spill_dir : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    err = sg_act_store_open(rep->store_budget, spill, &p.cap.store);
    if (!err && rotates)
        err = sg_slice_cov_init(&f.cov, p.be, D, o->cov_mixed);
    if (err)
        goto out;
    f.eig = malloc(D * sizeof(double));
    f.spectra = sg_spectra_new();
    if (!f.eig || !f.spectra) {
        err = sg_fail(-ENOMEM, "out of memory for rotations of width %lld", (long long)D);
        goto out;
    }
    if (plan.method == SG_METHOD_NYSTROM) {
        /* float32 slices summed in float64: C ranks units and feeds a damped
         * solve, which the last bits of a float64 accumulation do not move
         * (SmolLM2-135M at 80%: 27.1771 either way, 16% less capture time) */
        err = sg_ffn_stats_init(&ffn, p.be, p.orig->ffn_dim, p.cap.max_tokens, 1);
        if (err)
            goto out;
        p.ffn = &ffn;
    }
    if (per_signal) {
        if ((err = spectrum_probe(&p, &f, &plan)))
            goto out;
        rep->sliced = f.sliced;
        rep->params_stored = sg_model_param_count(&f.sliced);
        out_cfg = f.sliced;
    }
    f.resumable = o->resumable && !f.u;
    if (f.resumable) {
        err = fingerprint(&p, &f, files, &out_cfg, &f.fingerprint);
        err = err ? err : sg_model_writer_open_keep(o->out_dir, &out_cfg, o->out_dtype, &f.w);
        if (!err && (err = restore(&p, &f, &resume_q, rep))) {
            sg_model_writer_release(f.w); /* refused: the other job's files stay */
            f.w = NULL;
        }
    } else {
        err = sg_model_writer_open(o->out_dir, &out_cfg, o->out_dtype, &f.w);
    }
    err = err ? err : f.u ? uniform_run(&p, &f) : sg_pipeline_run(&p);
    if (err)
        goto out;
    err = sg_model_writer_finish(f.w, sg_plan_sparsity(&plan, p.orig->dim, rep->d),
                                 o->tokenizer_src, o->tok);
    f.w = NULL;
    /* the spectra are per signal; a uniform rotation has one, --method
     * nystrom none, and a plain model directory no place for them */
    err = err || f.u || plan.method == SG_METHOD_NYSTROM ? err
                                                         : sg_spectra_write(f.spectra, o->out_dir);
    sg_pipeline_tick(&p, SG_STAGE_WRITE);

    /* nominal size: what the paper counts (no shortcuts, head as before) */
    sg_model_config nominal = f.sliced;
    nominal.tied_embeddings = p.orig->tied_embeddings;
    nominal.lm_head_bias = p.orig->lm_head_bias;
    rep->params_sliced = sg_model_param_count(&nominal);
    for (int64_t l = 0; l < nominal.n_layers && !nominal.residual_kept; l++)
        rep->params_sliced -= nominal.d_in[l] * nominal.d_mid[l] +
                              (nominal.parallel_block ? 0 : nominal.d_mid[l] * nominal.d_out[l]);
    if (f.u) {
        sg_uniform_config(p.orig, rep->d, p.orig->tied_embeddings, &nominal);
        rep->params_sliced = sg_model_param_count(&nominal);
    }
    if (f.plain)
        rep->params_sliced = rep->params_stored; /* no shortcut, the head as it was */
out:
    next_block_discard(&f.next); /* an error may have left the next block in flight */
    sg_ffn_stats_free(&ffn);
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
    uniform_end(&u, p.be);
    free(resume_q);
    return err;
}
