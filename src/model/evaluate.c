#include "evaluate.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "forward.h"
#include "forward_ops.h"
#include "sg_error.h"

/* On a backend whose memory is not the host's, activations cross in
 * chunks of whole sequences of about this many tokens, and the head's
 * logits in rows of this many tokens. */
#define EVAL_CHUNK_TOKENS 8192
#define HEAD_ROWS 512

double sg_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The blocks on the backend, chunk by chunk: x (width d_in) -> y (width
 * d_out) per block, one block's weights and one chunk resident there. */
static void show_block(sg_progress *pr, const sg_model_config *c, int64_t l)
{
    sg_progress_update(pr, l, "block %lld/%lld", (long long)l + 1, (long long)c->n_layers);
}

static int blocks_on_backend(sg_backend *be, sg_model_files *files, const sg_model_config *c,
                             const sg_seqs *seqs, sg_progress *pr, float **x, float **y)
{
    int64_t n_seq = seqs->n_seq, cap = sg_seqs_group_cap(seqs, EVAL_CHUNK_TOKENS);
    int64_t *local = malloc((n_seq + 1) * sizeof(int64_t));
    float *dx = NULL, *dy = NULL;
    int err = local ? 0 : sg_fail(-ENOMEM, "out of memory for the sequence layout");
    err = err ? err : be->ops->alloc(be, cap * c->dim * sizeof(float), (void **)&dx);
    err = err ? err : be->ops->alloc(be, cap * c->dim * sizeof(float), (void **)&dy);
    for (int64_t l = 0; l < c->n_layers && !err; l++) {
        sg_block b, dev;
        show_block(pr, c, l);
        if ((err = sg_block_load(files, c, l, &b)))
            break;
        if (l + 1 < c->n_layers)
            sg_model_files_prefetch_block(files, l + 1);
        if (!(err = sg_block_to_backend(be, c, &b, &dev))) {
            for (int64_t s0 = 0; s0 < n_seq && !err;) {
                int64_t s1 = sg_seqs_group_end(seqs, s0, cap), t0 = seqs->offsets[s0];
                sg_seqs chunk = sg_seqs_sub(seqs, s0, s1, local);
                int64_t g = seqs->offsets[s1] - t0;
                err = be->ops->upload(be, dx, *x + t0 * b.d_in, g * b.d_in * sizeof(float));
                err = err ? err : be->ops->block_forward(be, c, &dev, dx, dy, NULL, &chunk);
                err = err ? err
                          : be->ops->download(be, *y + t0 * b.d_out, dy,
                                              g * b.d_out * sizeof(float));
                s0 = s1;
            }
            sg_block_backend_release(be, &dev);
        }
        sg_block_free(&b);
        float *t = *x;
        *x = *y;
        *y = t;
    }
    if (dx)
        be->ops->release(be, dx);
    if (dy)
        be->ops->release(be, dy);
    free(local);
    return err;
}

/* sg_head_nll on the backend: final norm and head there, HEAD_ROWS rows
 * at a time, log-softmax on the host. */
static int head_on_backend(sg_backend *be, const sg_model *m, const float *x,
                           const int32_t *targets, int64_t T, double *nll, int64_t *count,
                           double *row_nll, float *logits_out)
{
    const sg_model_config *c = &m->cfg;
    int64_t d = c->head_in_dim, V = c->vocab_size, rows = T < HEAD_ROWS ? T : HEAD_ROWS;
    struct { const float *host; int64_t n; float *dev; } t[] = {
        {m->lm_head, V * d, NULL}, {m->lm_head_b, V, NULL},
        {m->out_norm_w, d, NULL},  {m->out_norm_b, d, NULL},
    };
    enum { N = sizeof t / sizeof *t };
    float *dh = NULL, *dlog = NULL, *logits = NULL;
    int err = 0;
    for (int i = 0; i < N && !err; i++)
        if (t[i].host) {
            err = be->ops->alloc(be, t[i].n * sizeof(float), (void **)&t[i].dev);
            err = err ? err : be->ops->upload(be, t[i].dev, t[i].host, t[i].n * sizeof(float));
        }
    err = err ? err : be->ops->alloc(be, rows * d * sizeof(float), (void **)&dh);
    err = err ? err : be->ops->alloc(be, rows * V * sizeof(float), (void **)&dlog);
    err = err ? err : be->ops->host_alloc(be, rows * V * sizeof(float), (void **)&logits);
    for (int64_t t0 = 0; t0 < T && !err; t0 += rows) {
        int64_t n = T - t0 < rows ? T - t0 : rows;
        err = be->ops->upload(be, dh, x + t0 * d, n * d * sizeof(float));
        err = err ? err
                  : be->ops->norm_rows(be, dh, n, d, c->norm, c->norm_dim, c->norm_eps, t[2].dev,
                                       t[3].dev);
        err = err ? err
                  : be->ops->sgemm(be, 0, 1, n, V, d, 1.0f, dh, d, t[0].dev, d, 0.0f, dlog, V);
        if (!err && t[1].dev)
            err = be->ops->add(be, dlog, t[1].dev, n, V, 0);
        err = err ? err : be->ops->download(be, logits, dlog, n * V * sizeof(float));
        if (!err && logits_out)
            memcpy(logits_out + t0 * V, logits, n * V * sizeof(float));
        if (!err)
            sg_logits_nll(logits, n, V, targets ? targets + t0 : NULL, nll, count,
                          row_nll ? row_nll + t0 : NULL);
    }
    for (int i = 0; i < N; i++)
        if (t[i].dev)
            be->ops->release(be, t[i].dev);
    if (dh)
        be->ops->release(be, dh);
    if (dlog)
        be->ops->release(be, dlog);
    if (logits)
        be->ops->host_free(be, logits);
    return err;
}

/* The blocks on the CPU, the whole batch through each in turn. */
static int host_blocks(sg_model_files *files, const sg_model_config *c, const sg_seqs *seqs,
                       sg_progress *pr, float **x, float **y)
{
    for (int64_t l = 0; l < c->n_layers; l++) {
        sg_block b;
        show_block(pr, c, l);
        int err = sg_block_load(files, c, l, &b);
        if (err)
            return err;
        if (l + 1 < c->n_layers)
            sg_model_files_prefetch_block(files, l + 1);
        err = sg_block_forward(c, &b, *x, *y, NULL, seqs);
        sg_block_free(&b);
        if (err)
            return err;
        float *t = *x;
        *x = *y;
        *y = t;
    }
    return 0;
}

/* The forward pass over a batch. For scoring, each sequence's last token
 * is only a target, so it is not run: a sequence of n tokens needs n - 1
 * positions (a 257-token line fits a 256-position model). For logits,
 * every token runs. With want (batch tokens), only the tokens marked are
 * targets, and the head runs only on the rows that predict them: their
 * activations are gathered to the front after the last block; lp receives
 * log p of each marked token at its batch index. */
static int run(sg_backend *be, sg_model_files *files, const sg_token_batch *batch,
               sg_progress *pr, const char *phase, sg_eval_result *res, float *logits,
               const uint8_t *want, double *lp)
{
    if (!be)
        be = sg_backend_cpu();
    double t0 = sg_now();
    sg_model m;
    int err = sg_model_load(files, &m);
    if (err)
        return err;
    const sg_model_config *c = &m.cfg;
    int64_t n_seq = batch->n_seq, T = batch->offsets[n_seq];
    int64_t *offsets = malloc((n_seq + 1) * sizeof(int64_t));
    int32_t *ids = malloc(T * sizeof(int32_t)), *targets = malloc(T * sizeof(int32_t));
    float *x = malloc(T * c->dim * sizeof(float)), *y = malloc(T * c->dim * sizeof(float));
    int64_t *where = want ? malloc(T * sizeof(int64_t)) : NULL; /* row -> batch index */
    double *row_nll = want ? malloc(T * sizeof(double)) : NULL;
    if (!offsets || !ids || !targets || !x || !y || (want && (!where || !row_nll))) {
        err = sg_fail(-ENOMEM, "out of memory for activations of %lld tokens", (long long)T);
        goto out;
    }
    if (batch->parent && !be->ops->host_memory) {
        err = sg_fail(SG_EARG, "sequences with a shared prefix run on the CPU only");
        goto out;
    }
    /* inputs and, aligned with them, the token each one predicts; a
     * parent's last token is context for its children, so it runs */
    offsets[0] = 0;
    for (int64_t s = 0; s < n_seq; s++) {
        int64_t a = batch->offsets[s], b = batch->offsets[s + 1], k = offsets[s];
        int is_parent = batch->parent && s + 1 < n_seq && batch->parent[s + 1] == s;
        for (int64_t t = a; t < b; t++) {
            if (!logits && t == b - 1 && !is_parent)
                break;
            ids[k] = batch->ids[t];
            if (where)
                where[k] = t + 1;
            targets[k++] = t + 1 < b && (!want || want[t + 1]) ? batch->ids[t + 1] : -1;
        }
        offsets[s + 1] = k;
    }
    sg_seqs seqs = {n_seq, offsets, batch->parent};
    int64_t n = offsets[n_seq];
    sg_progress_begin(pr, phase, c->n_layers + 1, n);
    if ((err = sg_embed(&m, ids, &seqs, x)))
        goto out;
    sg_model_files_prefetch_block(files, 0);
    err = be->ops->host_memory ? host_blocks(files, c, &seqs, pr, &x, &y)
                               : blocks_on_backend(be, files, c, &seqs, pr, &x, &y);
    if (err)
        goto out;
    sg_progress_update(pr, c->n_layers, "head");
    int64_t rows = n, d = c->head_in_dim;
    if (want) {
        /* x (n, d) -> the rows with a target, in order, in place */
        rows = 0;
        for (int64_t k = 0; k < n; k++)
            if (targets[k] >= 0) {
                if (rows != k)
                    memcpy(x + rows * d, x + k * d, d * sizeof(float));
                targets[rows] = targets[k];
                where[rows++] = where[k];
            }
    }
    sg_eval_result r = {0};
    err = be->ops->host_memory
              ? sg_head_nll(&m, x, targets, rows, &r.nll, &r.count, row_nll, logits)
              : head_on_backend(be, &m, x, targets, rows, &r.nll, &r.count, row_nll, logits);
    for (int64_t k = 0; want && !err && k < rows; k++)
        lp[where[k]] = -row_nll[k];
    r.seconds = sg_now() - t0;
    r.tokens = n;
    if (res)
        *res = r;
out:
    if (err)
        sg_progress_break(pr); /* the error message gets its own line */
    else
        sg_progress_end(pr);
    free(offsets);
    free(ids);
    free(targets);
    free(x);
    free(y);
    free(where);
    free(row_nll);
    sg_model_free(&m);
    return err;
}

int sg_evaluate(sg_model_files *files, const sg_token_batch *batch, sg_eval_result *res)
{
    return run(NULL, files, batch, NULL, NULL, res, NULL, NULL, NULL);
}

int sg_evaluate_on(sg_backend *be, sg_model_files *files, const sg_token_batch *batch,
                   sg_eval_result *res)
{
    return run(be, files, batch, NULL, NULL, res, NULL, NULL, NULL);
}

int sg_evaluate_logits(sg_model_files *files, const sg_token_batch *batch, float *logits)
{
    return run(NULL, files, batch, NULL, NULL, NULL, logits, NULL, NULL);
}

int sg_evaluate_logits_on(sg_backend *be, sg_model_files *files, const sg_token_batch *batch,
                          float *logits)
{
    return run(be, files, batch, NULL, NULL, NULL, logits, NULL, NULL);
}

int sg_evaluate_progress(sg_backend *be, sg_model_files *files, const sg_token_batch *batch,
                         sg_progress *pr, const char *phase, sg_eval_result *res)
{
    return run(be, files, batch, pr, phase, res, NULL, NULL, NULL);
}

int sg_evaluate_loglik(sg_backend *be, sg_model_files *files, const sg_token_batch *batch,
                       const uint8_t *want, sg_progress *pr, const char *phase,
                       sg_eval_result *res, double *lp)
{
    return run(be, files, batch, pr, phase, res, NULL, want, lp);
}
