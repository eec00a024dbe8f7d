#include "slicer.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* Everything one run holds between stages. */
typedef struct {
    const sg_slice_options *o;
    sg_slice_report *rep;
    sg_model_config orig, cfg; /* cfg: the sliced model being built */
    int64_t D, T;
    sg_seqs seqs;
    double *q_prev, *q_mid, *q_out; /* (D, D) */
    double *eig;                    /* (D) */
    cJSON *spectra;                 /* eigenvalues per signal, written beside the model */
    float *x;                       /* (T, d_in) the block inputs, sliced */
    float *full;                    /* (T, D) a captured signal in the original basis */
    float *sliced_mid;              /* (T, d_mid) */
} run_state;

static void tick(run_state *s, int stage, double *t)
{
    double now = sg_now();
    s->rep->seconds[stage] += now - *t;
    *t = now;
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

/* PCA of a captured (T, D) signal: q (D, D), eigenvalues in s->eig. */
static int principal_axes(run_state *s, const float *signal, double *q, const char *name,
                          int64_t layer, double *t)
{
    sg_cov cov;
    int err = sg_cov_init(&cov, s->D);
    if (err)
        return err;
    sg_cov_accumulate(&cov, signal, s->T);
    sg_cov_finish(&cov);
    tick(s, SG_STAGE_COV, t);
    if (s->o->rotation == SG_ROTATION_RANDOM) {
        err = sg_random_orthogonal(s->D, s->o->seed + 7919 * (uint64_t)(layer + 2), q);
        memset(s->eig, 0, s->D * sizeof(double));
    } else {
        err = sg_eigh_descending(cov.h, s->D, s->o->damp_frac, q, s->eig);
    }
    sg_cov_free(&cov);
    if (!err)
        err = record_spectrum(s, name, layer);
    tick(s, SG_STAGE_EIG, t);
    return err;
}

static int slice_block(run_state *s, sg_model_files *files, sg_model_writer *w, int64_t l,
                       double *clock)
{
    const sg_model_config *o = &s->orig;
    int64_t D = s->D, T = s->T, qd = o->n_heads * o->head_dim, F = o->ffn_dim;
    int64_t kvd = o->n_kv_heads * o->head_dim;
    int64_t d_in = s->cfg.d_in[l], d_mid = s->cfg.d_mid[l], d_out = s->cfg.d_out[l];
    double t = *clock;
    sg_block b;
    int err = sg_block_load(files, o, l, &b);
    tick(s, SG_STAGE_LOAD, &t);
    if (err)
        return err;
    if ((err = sg_fold_block(o, &b)))
        goto out;
    tick(s, SG_STAGE_FOLD, &t);

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
    tick(s, SG_STAGE_ROTATE, &t);

    if (o->parallel_block) {
        /* one signal per block: the output of attention + MLP together */
        if ((err = sg_block_forward(&work, &b, s->x, s->full, NULL, &s->seqs)))
            goto out;
        tick(s, SG_STAGE_CAPTURE, &t);
        if ((err = principal_axes(s, s->full, s->q_out, "block_output", l, &t)))
            goto out;
        err = sg_rotate_writer(&b.wo, &b.bo, D, qd, s->q_out, d_out);
        err = err ? err : sg_rotate_writer(&b.w_down, &b.b_down, D, F, s->q_out, d_out);
        err = err ? err : sg_shortcut_extend(&b.attn_shortcut, d_in, D, s->q_out, d_out);
    } else {
        if ((err = sg_block_forward(&work, &b, s->x, NULL, s->full, &s->seqs)))
            goto out;
        tick(s, SG_STAGE_CAPTURE, &t);
        if ((err = principal_axes(s, s->full, s->q_mid, "attention_output", l, &t)))
            goto out;
        err = sg_rotate_writer(&b.wo, &b.bo, D, qd, s->q_mid, d_mid);
        err = err ? err : sg_shortcut_extend(&b.attn_shortcut, d_in, D, s->q_mid, d_mid);
        err = err ? err : sg_rotate_reader(&b.w_up, F, D, s->q_mid, d_mid);
        if (o->gated_mlp)
            err = err ? err : sg_rotate_reader(&b.w_gate, F, D, s->q_mid, d_mid);
        err = err ? err : sg_shortcut_matrix(s->q_mid, d_mid, NULL, 0, D, &b.mlp_shortcut);
        /* the captured residual, rotated and cut, is what the sliced
         * attention half would produce: no need to run it again */
        err = err ? err : sg_project_rows(s->full, T, D, s->q_mid, d_mid, s->sliced_mid);
        if (err)
            goto out;
        b.d_mid = d_mid;
        work.d_mid[l] = d_mid;
        tick(s, SG_STAGE_ROTATE, &t);
        if ((err = sg_block_forward_mlp(&work, &b, s->sliced_mid, s->full, T)))
            goto out;
        tick(s, SG_STAGE_CAPTURE, &t);
        if ((err = principal_axes(s, s->full, s->q_out, "block_output", l, &t)))
            goto out;
        err = sg_rotate_writer(&b.w_down, &b.b_down, D, F, s->q_out, d_out);
        err = err ? err : sg_shortcut_extend(&b.mlp_shortcut, d_mid, D, s->q_out, d_out);
    }
    /* the next block's inputs: this block's output in the new basis, cut */
    err = err ? err : sg_project_rows(s->full, T, D, s->q_out, d_out, s->x);
    if (err)
        goto out;
    b.d_out = d_out;
    if (o->parallel_block)
        b.d_mid = d_out; /* a parallel block's attention writes the output directly */
    tick(s, SG_STAGE_ROTATE, &t);
    err = sg_model_writer_block(w, l, &b);
    tick(s, SG_STAGE_WRITE, &t);
    double *swap = s->q_prev;
    s->q_prev = s->q_out;
    s->q_out = swap;
out:
    sg_block_free(&b);
    *clock = t;
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

int sg_slice(sg_model_files *files, const sg_token_batch *calib, const sg_slice_options *o,
             sg_slice_report *rep)
{
    memset(rep, 0, sizeof *rep);
    run_state s = {.o = o, .rep = rep};
    s.orig = *sg_model_files_config(files);
    if (s.orig.sliced)
        return sg_fail(SG_EARG, "%s: model is already sliced", sg_model_files_path(files));
    s.D = s.orig.dim;
    s.seqs = (sg_seqs){calib->n_seq, calib->offsets};
    s.T = sg_seqs_tokens(&s.seqs);
    rep->calib_tokens = s.T;
    int64_t D = s.D, T = s.T, d = sg_sliced_dim(D, o->sparsity, o->round_interval);
    rep->d = d;
    s.cfg = sg_fold_config(&s.orig);
    plan_widths(&s, d);
    rep->params_dense = sg_model_param_count(&s.orig);
    rep->params_stored = sg_model_param_count(&s.cfg);

    double t = sg_now();
    sg_model m;
    sg_model_writer *w = NULL;
    int err = sg_model_load(files, &m);
    tick(&s, SG_STAGE_LOAD, &t);
    if (err)
        return err;
    s.q_prev = malloc(D * D * sizeof(double));
    s.q_mid = malloc(D * D * sizeof(double));
    s.q_out = malloc(D * D * sizeof(double));
    s.eig = malloc(D * sizeof(double));
    s.x = malloc(T * D * sizeof(float));
    s.full = malloc(T * D * sizeof(float));
    s.sliced_mid = malloc(T * D * sizeof(float));
    s.spectra = cJSON_CreateArray();
    if (!s.q_prev || !s.q_mid || !s.q_out || !s.eig || !s.x || !s.full || !s.sliced_mid ||
        !s.spectra) {
        err = sg_fail(-ENOMEM, "out of memory for %lld calibration tokens of width %lld",
                      (long long)T, (long long)D);
        goto out;
    }
    if ((err = sg_fold_globals(&m)))
        goto out;
    tick(&s, SG_STAGE_FOLD, &t);
    if ((err = sg_model_writer_open(o->out_dir, &s.cfg, o->out_dtype, &w)))
        goto out;

    /* embeddings: PCA of the embedded calibration tokens gives Q₀ */
    if ((err = sg_embed(&m, calib->ids, &s.seqs, s.full)))
        goto out;
    tick(&s, SG_STAGE_CAPTURE, &t);
    if ((err = principal_axes(&s, s.full, s.q_prev, "embeddings", -1, &t)))
        goto out;
    err = sg_project_rows(s.full, T, D, s.q_prev, d, s.x);
    err = err ? err : sg_rotate_reader(&m.tok_embd, s.orig.vocab_size, D, s.q_prev, d);
    if (!err && m.pos_embd)
        err = sg_rotate_reader(&m.pos_embd, s.orig.max_positions + s.orig.pos_offset, D,
                               s.q_prev, d);
    tick(&s, SG_STAGE_ROTATE, &t);
    err = err ? err : sg_model_writer_embeddings(w, &(sg_model){.cfg = s.cfg,
                                                               .tok_embd = m.tok_embd,
                                                               .pos_embd = m.pos_embd});
    tick(&s, SG_STAGE_WRITE, &t);
    /* the embeddings are written; only the head is still needed */
    free(m.tok_embd);
    free(m.pos_embd);
    m.tok_embd = m.pos_embd = NULL;
    if (err)
        goto out;

    for (int64_t l = 0; l < s.orig.n_layers; l++) {
        if (o->verbose)
            fprintf(stderr, "slicegpt-stream: block %lld/%lld\n", (long long)l + 1,
                    (long long)s.orig.n_layers);
        if ((err = slice_block(&s, files, w, l, &t)))
            goto out;
    }
    /* head: reads the last block's output, rotated by the last Q */
    err = sg_rotate_reader(&m.lm_head, s.orig.vocab_size, D, s.q_prev, s.cfg.head_in_dim);
    tick(&s, SG_STAGE_ROTATE, &t);
    err = err ? err : sg_model_writer_head(w, &m);
    if (!err) {
        err = sg_model_writer_finish(w, o->sparsity, o->tokenizer_src, o->tok);
        w = NULL;
    }
    err = err ? err : write_spectra(&s);
    tick(&s, SG_STAGE_WRITE, &t);

    /* nominal size: what the paper counts (no shortcuts, head as before) */
    sg_model_config nominal = s.cfg;
    nominal.tied_embeddings = s.orig.tied_embeddings;
    nominal.lm_head_bias = s.orig.lm_head_bias;
    rep->params_sliced = sg_model_param_count(&nominal);
    for (int64_t l = 0; l < nominal.n_layers; l++)
        rep->params_sliced -= nominal.d_in[l] * nominal.d_mid[l] +
                              (nominal.parallel_block ? 0 : nominal.d_mid[l] * nominal.d_out[l]);
out:
    if (w)
        sg_model_writer_abort(w);
    free(s.q_prev);
    free(s.q_mid);
    free(s.q_out);
    free(s.eig);
    free(s.x);
    free(s.full);
    free(s.sliced_mid);
    cJSON_Delete(s.spectra);
    if (m.lm_head == m.tok_embd)
        m.lm_head = NULL;
    sg_model_free(&m);
    return err;
}
