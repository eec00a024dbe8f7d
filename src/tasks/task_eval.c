/* Packing requests into batches and summing their continuations'
 * log-likelihoods (task_eval.h).
 *
 * Why one sequence per choice: the choices of a document share their
 * context, but under causal attention a choice may only see the context
 * and itself, so running the context once needs a tree-shaped mask or the
 * context's keys and values kept per block, neither of which the backends'
 * attention has. Separate sequences packed back to back are exactly the
 * forward ppl runs, on every backend. What is saved instead: the head,
 * the largest single matrix of a small model, runs only on the positions
 * that predict a continuation token. sg_tasks_prefix_sharing says what a
 * shared prefix would save on top. */
#include "task_eval.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sg_error.h"

typedef struct {
    int task;
    int64_t req;
} req_ref;

static int scored(const sg_task *t, int64_t i)
{
    return t->req[i].skip == SG_REQ_OK && !t->docs[t->req[i].doc].dropped;
}

/* One batch: refs[0..n) through the model, their ll filled. */
static int run_batch(sg_backend *be, sg_model_files *files, sg_task *tasks, const req_ref *refs,
                     int64_t n, sg_progress *pr, const char *phase, sg_eval_result *sum)
{
    int64_t T = 0;
    for (int64_t i = 0; i < n; i++)
        T += tasks[refs[i].task].req[refs[i].req].n_ids;
    sg_token_batch b = {malloc(T * sizeof(int32_t)), malloc((n + 1) * sizeof(int64_t)), n};
    uint8_t *want = calloc(T, 1);
    double *lp = malloc(T * sizeof(double));
    int err = 0;
    if (!b.ids || !b.offsets || !want || !lp) {
        err = sg_fail(-ENOMEM, "out of memory for a batch of %lld tokens", (long long)T);
        goto out;
    }
    b.offsets[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        const sg_task_request *q = &tasks[refs[i].task].req[refs[i].req];
        int64_t o = b.offsets[i];
        memcpy(b.ids + o, q->ids, q->n_ids * sizeof(int32_t));
        memset(want + o + q->n_ids - q->n_cont, 1, q->n_cont);
        b.offsets[i + 1] = o + q->n_ids;
    }
    sg_eval_result r;
    err = sg_evaluate_loglik(be, files, &b, want, pr, phase, &r, lp);
    if (err)
        goto out;
    for (int64_t i = 0; i < n; i++) {
        sg_task_request *q = &tasks[refs[i].task].req[refs[i].req];
        double ll = 0;
        for (int64_t t = b.offsets[i + 1] - q->n_cont; t < b.offsets[i + 1]; t++)
            ll += lp[t];
        q->ll = ll;
    }
    sum->nll += r.nll;
    sum->count += r.count;
    sum->seconds += r.seconds;
    sum->tokens += r.tokens;
out:
    free(b.ids);
    free(b.offsets);
    free(want);
    free(lp);
    return err;
}

int sg_tasks_loglik(sg_backend *be, sg_model_files *files, sg_task *tasks, int n,
                    int64_t batch_tokens, sg_progress *pr, const char *phase,
                    sg_eval_result *res, int64_t *n_requests)
{
    int64_t total = 0, total_tokens = 0;
    for (int k = 0; k < n; k++)
        for (int64_t i = 0; i < tasks[k].n_req; i++)
            if (scored(&tasks[k], i)) {
                total++;
                total_tokens += tasks[k].req[i].n_ids;
            }
    memset(res, 0, sizeof *res);
    *n_requests = total;
    req_ref *refs = malloc((total ? total : 1) * sizeof *refs);
    if (!refs)
        return sg_fail(-ENOMEM, "out of memory for %lld requests", (long long)total);
    int64_t m = 0;
    for (int k = 0; k < n; k++)
        for (int64_t i = 0; i < tasks[k].n_req; i++)
            if (scored(&tasks[k], i))
                refs[m++] = (req_ref){k, i};
    int64_t n_batches = batch_tokens > 0 ? (total_tokens + batch_tokens - 1) / batch_tokens : 1;
    int err = 0;
    for (int64_t i0 = 0, nb = 0; i0 < m && !err; nb++) {
        int64_t i1 = i0, tok = 0;
        while (i1 < m) {
            int64_t len = tasks[refs[i1].task].req[refs[i1].req].n_ids;
            if (i1 > i0 && batch_tokens > 0 && tok + len > batch_tokens)
                break;
            tok += len;
            i1++;
        }
        char ph[256];
        if (nb + 1 > n_batches)
            n_batches = nb + 1; /* whole requests make a few more than the division */
        snprintf(ph, sizeof ph, "%s, batch %lld/%lld", phase ? phase : "tasks",
                 (long long)nb + 1, (long long)n_batches);
        err = run_batch(be, files, tasks, refs + i0, i1 - i0, pr, ph, res);
        i0 = i1;
    }
    free(refs);
    return err;
}

static int64_t common_prefix(const int32_t *a, int64_t na, const int32_t *b, int64_t nb)
{
    int64_t k = 0;
    while (k < na && k < nb && a[k] == b[k])
        k++;
    return k;
}

void sg_tasks_prefix_sharing(const sg_task *tasks, int n, int64_t *run_positions,
                             int64_t *tree_positions)
{
    int64_t run = 0, tree = 0;
    for (int k = 0; k < n; k++) {
        const sg_task *t = &tasks[k];
        for (int64_t d = 0; d < t->n_docs; d++) {
            const sg_task_doc *doc = &t->docs[d];
            if (doc->dropped)
                continue;
            for (int c = 0; c < doc->n_choices; c++) {
                const sg_task_request *q = &t->req[doc->first + c];
                int64_t p = q->n_ids - 1, shared = 0; /* positions run, the last id only a target */
                for (int e = 0; e < c; e++) {
                    const sg_task_request *o = &t->req[doc->first + e];
                    int64_t s = common_prefix(q->ids, p, o->ids, o->n_ids - 1);
                    shared = s > shared ? s : shared;
                }
                run += p;
                tree += p - shared;
            }
        }
    }
    *run_positions = run;
    *tree_positions = tree;
}
