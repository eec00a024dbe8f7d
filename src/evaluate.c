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

static int run(sg_model_files *files, const sg_token_batch *batch, sg_eval_result *res,
               float *logits)
{
    double t0 = sg_now();
    sg_model m;
    int err = sg_model_load(files, &m);
    if (err)
        return err;
    const sg_model_config *c = &m.cfg;
    sg_seqs seqs = {batch->n_seq, batch->offsets};
    int64_t T = sg_seqs_tokens(&seqs);
    /* two buffers of the widest stream, swapped after each block */
    float *x = malloc(T * c->dim * sizeof(float)), *y = malloc(T * c->dim * sizeof(float));
    if (!x || !y) {
        err = sg_fail(-ENOMEM, "out of memory for activations of %lld tokens", (long long)T);
        goto out;
    }
    if ((err = sg_embed(&m, batch->ids, &seqs, x)))
        goto out;
    for (int64_t l = 0; l < c->n_layers; l++) {
        sg_block b;
        if ((err = sg_block_load(files, c, l, &b)))
            goto out;
        err = sg_block_forward(c, &b, x, y, NULL, &seqs);
        sg_block_free(&b);
        if (err)
            goto out;
        float *t = x;
        x = y;
        y = t;
    }
    sg_eval_result r = {0};
    err = sg_head_nll(&m, x, batch->ids, &seqs, &r.nll, &r.count, logits);
    r.seconds = sg_now() - t0;
    r.tokens = T;
    if (res)
        *res = r;
out:
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
