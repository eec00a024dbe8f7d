#include "slicer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "act_store.h"
#include "covariance.h"
#include "eigensolve.h"
#include "evaluate.h"
#include "fold.h"
#include "forward.h"
#include "rotate_slice.h"
#include "sg_error.h"
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

/* The calibration batch cut into chunks of whole sequences; chunk c holds
 * sequences [first[c], first[c+1]). */
typedef struct {
    int64_t n;
    int64_t *first;
    int64_t max_tokens;
    int64_t *local;  /* scratch: a chunk's offsets rebased to 0 */
} chunk_plan;

static int plan_chunks(const sg_token_batch *b, int64_t chunk_tokens, chunk_plan *p)
{
    memset(p, 0, sizeof *p);
    p->first = malloc((b->n_seq + 1) * sizeof(int64_t));
    p->local = malloc((b->n_seq + 1) * sizeof(int64_t));
    if (!p->first || !p->local)
        return sg_fail(-ENOMEM, "out of memory planning chunks");
    for (int64_t s = 0; s < b->n_seq;) {
        int64_t e = s + 1;
        while (e < b->n_seq && b->offsets[e + 1] - b->offsets[s] <= chunk_tokens)
            e++;
        p->first[p->n++] = s;
        if (b->offsets[e] - b->offsets[s] > p->max_tokens)
            p->max_tokens = b->offsets[e] - b->offsets[s];
        s = e;
    }
    p->first[p->n] = b->n_seq;
    return 0;
}

/* Sequence layout of chunk c, positions from 0. */
static sg_seqs chunk_seqs(chunk_plan *p, const sg_token_batch *b, int64_t c, int64_t *rows)
{
    int64_t s0 = p->first[c], s1 = p->first[c + 1];
    for (int64_t s = s0; s <= s1; s++)
        p->local[s - s0] = b->offsets[s] - b->offsets[s0];
    *rows = b->offsets[s1] - b->offsets[s0];
    return (sg_seqs){s1 - s0, p->local};
}

/* Everything one run holds between stages. */
typedef struct {
    const sg_slice_options *o;
    sg_slice_report *rep;
    sg_model_config orig, cfg; /* cfg: the sliced model being built */
    int64_t D;
    const sg_token_batch *calib;
    chunk_plan chunks;
    sg_act_store *store;
    double *q_prev, *q_mid, *q_out; /* (D, D) */
    double *eig;                    /* (D) */
    sg_cov cov;
    cJSON *spectra;                 /* eigenvalues per signal, written beside the model */
    float *in, *mid, *out;          /* chunk buffers, (max chunk tokens, D) each */
    double clock;
} run_state;

static void tick(run_state *s, int stage)
{
    double now = sg_now();
    s->rep->seconds[stage] += now - s->clock;
    s->clock = now;
}

static int record_spectrum(run_state *s, const char *signal, int64_t layer)
{
    cJSON *item = cJSON_CreateObject();
    if (!item)
        return sg_fail(-ENOMEM, "out of memory");
    cJSON_AddStringToObject(item, "signal", signal);
    cJSON_AddNumberToObject(item, "layer", (double)layer);
    cJSON_AddItemToObject(item, "eigenvalues", cJSON_CreateDoubleArray(s->eig, (int)s->D));
    cJSON_AddItemToArray(s->spectra, item);
    return 0;
}

/* Starts a covariance; chunks are added as they are captured. */
static void cov_begin(run_state *s)
{
    memset(s->cov.h, 0, s->D * s->D * sizeof(double));
    s->cov.tokens = 0;
}

/* Captured signal chunk (rows, D): into the covariance and the store. */
static int cov_and_keep(run_state *s, const char *name, int64_t c, const float *x, int64_t rows)
{
    double t = sg_now();
    sg_cov_accumulate(&s->cov, x, rows);
    s->rep->seconds[SG_STAGE_COV] += sg_now() - t;
    s->clock += sg_now() - t; /* not capture time */
    return sg_act_store_put(s->store, name, c, x, rows, s->D);
}

/* PCA of the signal accumulated since cov_begin: q (D, D), spectrum recorded. */
static int principal_axes(run_state *s, double *q, const char *name, int64_t layer)
{
    tick(s, SG_STAGE_CAPTURE);
    sg_cov_finish(&s->cov);
    int err;
    if (s->o->rotation == SG_ROTATION_RANDOM) {
        err = sg_random_orthogonal(s->D, s->o->seed + 7919 * (uint64_t)(layer + 2), q);
        memset(s->eig, 0, s->D * sizeof(double));
    } else {
        err = sg_eigh_descending(s->cov.h, s->D, s->o->damp_frac, q, s->eig);
    }
    if (!err)
        err = record_spectrum(s, name, layer);
    tick(s, SG_STAGE_EIG);
    return err;
}

/* Every chunk of signal `from` (rows, D), projected on q's first d
 * columns, becomes chunk of `to` (rows, d); `from` is dropped. */
static int project_signal(run_state *s, const char *from, const char *to, const double *q,
                          int64_t d)
{
    int err = 0;
    for (int64_t c = 0; c < s->chunks.n && !err; c++) {
        int64_t rows, width;
        err = sg_act_store_shape(s->store, from, c, &rows, &width);
        err = err ? err : sg_act_store_get(s->store, from, c, s->mid);
        err = err ? err : sg_project_rows(s->mid, rows, s->D, q, d, s->in);
        err = err ? err : sg_act_store_put(s->store, to, c, s->in, rows, d);
    }
    if (!err)
        err = sg_act_store_drop(s->store, from);
    tick(s, SG_STAGE_ROTATE);
    return err;
}

static int slice_block(run_state *s, sg_model_files *files, sg_model_writer *w, int64_t l)
{
    const sg_model_config *o = &s->orig;
    int64_t D = s->D, qd = o->n_heads * o->head_dim, F = o->ffn_dim;
    int64_t kvd = o->n_kv_heads * o->head_dim;
    int64_t d_in = s->cfg.d_in[l], d_mid = s->cfg.d_mid[l], d_out = s->cfg.d_out[l];
    sg_block b;
    int err = sg_block_load(files, o, l, &b);
    tick(s, SG_STAGE_LOAD);
    if (err)
        return err;
    if (l + 1 < o->n_layers)
        sg_model_files_prefetch_block(files, l + 1); /* overlaps with this block's work */
    if ((err = sg_fold_block(o, &b)))
        goto out;
    tick(s, SG_STAGE_FOLD);

    /* input side: everything that reads the block input */
    err = sg_rotate_reader(&b.wq, qd, D, s->q_prev, d_in);
    err = err ? err : sg_rotate_reader(&b.wk, kvd, D, s->q_prev, d_in);
    err = err ? err : sg_rotate_reader(&b.wv, kvd, D, s->q_prev, d_in);
    if (o->parallel_block) {
        err = err ? err : sg_rotate_reader(&b.w_up, F, D, s->q_prev, d_in);
        if (o->gated_mlp)
            err = err ? err : sg_rotate_reader(&b.w_gate, F, D, s->q_prev, d_in);
    }
    /* the residual path back to the original basis, for capturing */
    err = err ? err : sg_shortcut_matrix(s->q_prev, d_in, NULL, 0, D, &b.attn_shortcut);
    if (err)
        goto out;
    b.d_in = d_in;
    b.d_mid = D;
    b.d_out = D;
    sg_model_config work = s->cfg; /* widths as they are at each step */
    work.d_in[l] = d_in;
    work.d_mid[l] = work.d_out[l] = D;
    tick(s, SG_STAGE_ROTATE);

    /* first capture: the residual after attention (sequential blocks) or
     * the whole block's output (parallel blocks), in the original basis */
    cov_begin(s);
    for (int64_t c = 0; c < s->chunks.n && !err; c++) {
        int64_t rows;
        sg_seqs seqs = chunk_seqs(&s->chunks, s->calib, c, &rows);
        err = sg_act_store_get(s->store, "input", c, s->in);
        if (!err && o->parallel_block)
            err = sg_block_forward(&work, &b, s->in, s->out, NULL, &seqs);
        else if (!err)
            err = sg_block_forward(&work, &b, s->in, NULL, s->out, &seqs);
        err = err ? err : cov_and_keep(s, o->parallel_block ? "output" : "residual", c, s->out,
                                       rows);
    }
    if (err)
        goto out;

    if (o->parallel_block) {
        if ((err = principal_axes(s, s->q_out, "block_output", l)))
            goto out;
        err = sg_rotate_writer(&b.wo, &b.bo, D, qd, s->q_out, d_out);
        err = err ? err : sg_rotate_writer(&b.w_down, &b.b_down, D, F, s->q_out, d_out);
        err = err ? err : sg_shortcut_extend(&b.attn_shortcut, d_in, D, s->q_out, d_out);
    } else {
        if ((err = principal_axes(s, s->q_mid, "attention_output", l)))
            goto out;
        err = sg_rotate_writer(&b.wo, &b.bo, D, qd, s->q_mid, d_mid);
        err = err ? err : sg_shortcut_extend(&b.attn_shortcut, d_in, D, s->q_mid, d_mid);
        err = err ? err : sg_rotate_reader(&b.w_up, F, D, s->q_mid, d_mid);
        if (o->gated_mlp)
            err = err ? err : sg_rotate_reader(&b.w_gate, F, D, s->q_mid, d_mid);
        err = err ? err : sg_shortcut_matrix(s->q_mid, d_mid, NULL, 0, D, &b.mlp_shortcut);
        if (err)
            goto out;
        b.d_mid = d_mid;
        work.d_mid[l] = d_mid;
        tick(s, SG_STAGE_ROTATE);
        /* second capture: the block output. The captured residual, rotated
         * and cut, is what the sliced attention half would produce, so
         * only the MLP half runs. */
        cov_begin(s);
        for (int64_t c = 0; c < s->chunks.n && !err; c++) {
            int64_t rows, width;
            err = sg_act_store_shape(s->store, "residual", c, &rows, &width);
            err = err ? err : sg_act_store_get(s->store, "residual", c, s->mid);
            err = err ? err : sg_project_rows(s->mid, rows, D, s->q_mid, d_mid, s->in);
            err = err ? err : sg_block_forward_mlp(&work, &b, s->in, s->out, rows);
            err = err ? err : cov_and_keep(s, "output", c, s->out, rows);
        }
        err = err ? err : sg_act_store_drop(s->store, "residual");
        err = err ? err : principal_axes(s, s->q_out, "block_output", l);
        err = err ? err : sg_rotate_writer(&b.w_down, &b.b_down, D, F, s->q_out, d_out);
        err = err ? err : sg_shortcut_extend(&b.mlp_shortcut, d_mid, D, s->q_out, d_out);
    }
    if (err)
        goto out;
    b.d_out = d_out;
    if (o->parallel_block)
        b.d_mid = d_out; /* a parallel block's attention writes the output directly */
    tick(s, SG_STAGE_ROTATE);
    /* the next block's inputs: this block's output in the new basis, cut */
    err = sg_act_store_drop(s->store, "input");
    err = err ? err : project_signal(s, "output", "input", s->q_out, d_out);
    if (err)
        goto out;
    err = sg_model_writer_block(w, l, &b);
    tick(s, SG_STAGE_WRITE);
    double *swap = s->q_prev;
    s->q_prev = s->q_out;
    s->q_out = swap;
out:
    sg_block_free(&b);
    return err;
}

/* Widths of the sliced model: d everywhere, except the last block's output
 * and the head, which stay D unless slice_head (as the reference). */
static void plan_widths(run_state *s, int64_t d)
{
    sg_model_config *c = &s->cfg;
    c->embed_dim = d;
    for (int64_t l = 0; l < c->n_layers; l++) {
        c->d_in[l] = d;
        c->d_mid[l] = d;
        c->d_out[l] = d;
    }
    if (!s->o->slice_head)
        c->d_out[c->n_layers - 1] = s->D;
    if (c->parallel_block)
        for (int64_t l = 0; l < c->n_layers; l++)
            c->d_mid[l] = c->d_out[l];
    c->head_in_dim = c->d_out[c->n_layers - 1];
}

static int write_spectra(run_state *s)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/eigenvalues.json", s->o->out_dir);
    char *json = cJSON_PrintUnformatted(s->spectra);
    if (!json)
        return sg_fail(-ENOMEM, "out of memory");
    FILE *f = fopen(path, "w");
    int err = 0;
    if (!f || fputs(json, f) < 0 || fclose(f) != 0)
        err = sg_fail(-EIO, "%s: cannot write eigenvalue spectra", path);
    free(json);
    return err;
}

/* Embeddings: capture the embedded calibration tokens, PCA → Q₀, write the
 * rotated, cut embeddings; the projected tokens are block 0's inputs. */
static int slice_embeddings(run_state *s, sg_model_files *files, sg_model_writer *w)
{
    sg_model m;
    int64_t D = s->D, d = s->cfg.embed_dim;
    int err = sg_model_load(files, &m);
    tick(s, SG_STAGE_LOAD);
    if (err)
        return err;
    /* the head is not needed until the end: do not hold it meanwhile */
    if (m.lm_head != m.tok_embd)
        free(m.lm_head);
    m.lm_head = NULL;
    m.cfg.tied_embeddings = 0;
    err = sg_fold_globals(&m);
    tick(s, SG_STAGE_FOLD);
    cov_begin(s);
    for (int64_t c = 0; c < s->chunks.n && !err; c++) {
        int64_t rows;
        sg_seqs seqs = chunk_seqs(&s->chunks, s->calib, c, &rows);
        err = sg_embed(&m, s->calib->ids + s->calib->offsets[s->chunks.first[c]], &seqs, s->out);
        err = err ? err : cov_and_keep(s, "output", c, s->out, rows);
    }
    err = err ? err : principal_axes(s, s->q_prev, "embeddings", -1);
    err = err ? err : project_signal(s, "output", "input", s->q_prev, d);
    err = err ? err : sg_rotate_reader(&m.tok_embd, s->orig.vocab_size, D, s->q_prev, d);
    if (!err && m.pos_embd)
        err = sg_rotate_reader(&m.pos_embd, s->orig.max_positions + s->orig.pos_offset, D,
                               s->q_prev, d);
    tick(s, SG_STAGE_ROTATE);
    m.cfg = s->cfg;
    err = err ? err : sg_model_writer_embeddings(w, &m);
    tick(s, SG_STAGE_WRITE);
    sg_model_free(&m);
    return err;
}

/* Head: reads the last block's output, rotated by the last Q. */
static int slice_head(run_state *s, sg_model_files *files, sg_model_writer *w)
{
    sg_model m;
    int err = sg_model_load(files, &m);
    tick(s, SG_STAGE_LOAD);
    if (err)
        return err;
    err = sg_fold_globals(&m); /* unties and folds the final norm into the head */
    free(m.tok_embd);
    free(m.pos_embd);
    m.tok_embd = m.pos_embd = NULL;
    tick(s, SG_STAGE_FOLD);
    err = err ? err : sg_rotate_reader(&m.lm_head, s->orig.vocab_size, s->D, s->q_prev,
                                       s->cfg.head_in_dim);
    tick(s, SG_STAGE_ROTATE);
    m.cfg = s->cfg;
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
    run_state s = {.o = o, .rep = rep, .calib = calib, .clock = sg_now()};
    s.orig = *sg_model_files_config(files);
    if (s.orig.sliced)
        return sg_fail(SG_EARG, "%s: model is already sliced", sg_model_files_path(files));
    int64_t D = s.D = s.orig.dim, d = sg_sliced_dim(D, o->sparsity, o->round_interval);
    rep->calib_tokens = calib->offsets[calib->n_seq];
    rep->d = d;
    s.cfg = sg_fold_config(&s.orig);
    plan_widths(&s, d);
    rep->params_dense = sg_model_param_count(&s.orig);
    rep->params_stored = sg_model_param_count(&s.cfg);

    sg_model_writer *w = NULL;
    int err = plan_chunks(calib, o->chunk_tokens > 0 ? o->chunk_tokens : 8192, &s.chunks);
    rep->chunks = s.chunks.n;
    /* what the store may keep resident: the host budget less what the
     * driver itself holds (see sg_slice_memory_estimate) */
    sg_slice_memory mem;
    sg_slice_memory_estimate(&s.orig, 0, s.chunks.max_tokens, s.chunks.max_tokens, &mem);
    int64_t host = o->host_mem_bytes > 0 ? o->host_mem_bytes : physical_memory() / 2;
    rep->store_budget = host > mem.total ? host - mem.total : 0;
    const char *spill = o->spill_dir ? o->spill_dir : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    err = err ? err : sg_act_store_open(rep->store_budget, spill, &s.store);
    err = err ? err : sg_cov_init(&s.cov, D);
    if (err)
        goto out;
    s.q_prev = malloc(D * D * sizeof(double));
    s.q_mid = malloc(D * D * sizeof(double));
    s.q_out = malloc(D * D * sizeof(double));
    s.eig = malloc(D * sizeof(double));
    s.in = malloc(s.chunks.max_tokens * D * sizeof(float));
    s.mid = malloc(s.chunks.max_tokens * D * sizeof(float));
    s.out = malloc(s.chunks.max_tokens * D * sizeof(float));
    s.spectra = cJSON_CreateArray();
    if (!s.q_prev || !s.q_mid || !s.q_out || !s.eig || !s.in || !s.mid || !s.out || !s.spectra) {
        err = sg_fail(-ENOMEM, "out of memory for chunks of %lld tokens of width %lld",
                      (long long)s.chunks.max_tokens, (long long)D);
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
    err = err ? err : write_spectra(&s);
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
    if (s.store) {
        sg_act_store_stats_t st;
        sg_act_store_stats(s.store, &st);
        rep->store_peak = st.peak_resident_bytes;
        rep->spilled_raw = st.spilled_raw_bytes;
        rep->spilled_compressed = st.spilled_compressed_bytes;
    }
    if (w)
        sg_model_writer_abort(w);
    sg_act_store_close(s.store);
    sg_cov_free(&s.cov);
    free(s.chunks.first);
    free(s.chunks.local);
    free(s.q_prev);
    free(s.q_mid);
    free(s.q_out);
    free(s.eig);
    free(s.in);
    free(s.mid);
    free(s.out);
    cJSON_Delete(s.spectra);
    return err;
}
