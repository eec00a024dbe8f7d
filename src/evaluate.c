#include "evaluate.h"

#include <errno.h>
#include <stdlib.h>
#include <time.h>

#include "forward.h"
#include "sg_error.h"

double sg_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* The forward pass over a batch. For scoring, each sequence's last token
 * is only a target, so it is not run: a sequence of n tokens needs n - 1
 * positions (a 257-token line fits a 256-position model). For logits,
 * every token runs. */
static int run(sg_model_files *files, const sg_token_batch *batch, sg_eval_result *res,
               float *logits)
{
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
    if (!offsets || !ids || !targets || !x || !y) {
        err = sg_fail(-ENOMEM, "out of memory for activations of %lld tokens", (long long)T);
        goto out;
    }
    /* inputs and, aligned with them, the token each one predicts */
    offsets[0] = 0;
    for (int64_t s = 0; s < n_seq; s++) {
        int64_t a = batch->offsets[s], b = batch->offsets[s + 1], k = offsets[s];
        for (int64_t t = a; t < b; t++) {
            if (!logits && t == b - 1)
                break;
            ids[k] = batch->ids[t];
            targets[k++] = t + 1 < b ? batch->ids[t + 1] : -1;
        }
        offsets[s + 1] = k;
    }
    sg_seqs seqs = {n_seq, offsets};
    int64_t n = offsets[n_seq];
    if ((err = sg_embed(&m, ids, &seqs, x)))
        goto out;
    sg_model_files_prefetch_block(files, 0);
    for (int64_t l = 0; l < c->n_layers; l++) {
        sg_block b;
        if ((err = sg_block_load(files, c, l, &b)))
            goto out;
        if (l + 1 < c->n_layers)
            sg_model_files_prefetch_block(files, l + 1);
        err = sg_block_forward(c, &b, x, y, NULL, &seqs);
        sg_block_free(&b);
        if (err)
            goto out;
        float *t = x;
        x = y;
        y = t;
    }
    sg_eval_result r = {0};
    err = sg_head_nll(&m, x, targets, n, &r.nll, &r.count, logits);
    r.seconds = sg_now() - t0;
    r.tokens = n;
    if (res)
        *res = r;
out:
    free(offsets);
    free(ids);
    free(targets);
    free(x);
    free(y);
    sg_model_free(&m);
    return err;
}

int sg_evaluate(sg_model_files *files, const sg_token_batch *batch, sg_eval_result *res)
{
    return run(files, batch, res, NULL);
}

int sg_evaluate_logits(sg_model_files *files, const sg_token_batch *batch, float *logits)
{
    return run(files, batch, NULL, logits);
}
