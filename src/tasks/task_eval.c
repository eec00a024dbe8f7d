/* Packing requests into batches and summing their continuations'
 * log-likelihoods (task_eval.h).
 *
 * The choices of a document usually share their first tokens (the whole
 * context, or in WinoGrande the sentence up to the blank). On the CPU that
 * prefix runs once, as a parent sequence the choices continue
 * (sg_token_batch.parent: their positions follow it and their attention
 * sees it), so a four-choice document runs its context once instead of
 * four times. The prefix stops one token before the earliest continuation,
 * so each choice's first row predicts its own first continuation token.
 * Backends that keep blocks in device memory have no prefix attention;
 * there each choice is its own sequence. Either way sequences are packed
 * back to back without padding, and the head runs only on the rows that
 * predict a continuation token. */
#include "task_eval.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sg_error.h"

/* One sequence of a batch: request req of task `task` from its id `from`
 * on, or (req < 0) the shared prefix ids [0, n) of document `doc`. */
typedef struct {
    int task;
    int64_t req, doc, from, n;
    int64_t back; /* its parent is the sequence this many places before it; 0: none */
} seq_ref;

static int scored(const sg_task *t, int64_t i)
{
    return t->req[i].skip == SG_REQ_OK && !t->docs[t->req[i].doc].dropped;
}

static int64_t common_prefix(const int32_t *a, int64_t na, const int32_t *b, int64_t nb)
{
    int64_t k = 0;
    while (k < na && k < nb && a[k] == b[k])
        k++;
    return k;
}

/* The ids a document's choices can share: common to all of them and
 * ending before the first row that predicts a continuation token; 0 when
 * the document has one choice or nothing to share. */
static int64_t shared_prefix(const sg_task *t, const sg_task_doc *doc)
{
    if (doc->n_choices < 2)
        return 0;
    const sg_task_request *q0 = &t->req[doc->first];
    int64_t p = q0->n_ids - q0->n_cont - 1;
    for (int c = 1; c < doc->n_choices; c++) {
        const sg_task_request *q = &t->req[doc->first + c];
        int64_t common = common_prefix(q0->ids, p, q->ids, q->n_ids - q->n_cont - 1);
        p = common < p ? common : p;
    }
    return p > 0 ? p : 0;
}

/* Every sequence to run (into out unless NULL), documents whole and in
 * order; a family (a prefix and its choices) is marked so a batch never
 * splits it. Returns how many; *positions (unless NULL) receives the
 * positions they run: a prefix all of its tokens, a choice all but its
 * last (only a target). */
static int64_t list_sequences(const sg_task *tasks, int n, int share, seq_ref *out,
                              int64_t *positions)
{
    int64_t m = 0, pos = 0;
    for (int k = 0; k < n; k++) {
        const sg_task *t = &tasks[k];
        for (int64_t d = 0; d < t->n_docs; d++) {
            const sg_task_doc *doc = &t->docs[d];
            if (doc->dropped)
                continue;
            int64_t p = share ? shared_prefix(t, doc) : 0, parent = -1;
            if (p > 0) {
                if (out)
                    out[m] = (seq_ref){k, -1, d, 0, p, 0};
                pos += p;
                parent = m++;
            }
            for (int c = 0; c < doc->n_choices; c++) {
                int64_t i = doc->first + c;
                if (!scored(t, i))
                    continue;
                if (out)
                    out[m] = (seq_ref){k, i, d, p, t->req[i].n_ids - p, parent >= 0 ? m - parent : 0};
                pos += t->req[i].n_ids - p - 1;
                m++;
            }
        }
    }
    if (positions)
        *positions = pos;
    return m;
}

/* One batch: seqs[0..n) through the model, the requests' ll filled. */
static int run_batch(sg_backend *be, sg_model_files *files, sg_task *tasks, const seq_ref *seqs,
                     int64_t n, sg_progress *pr, const char *phase, sg_eval_result *sum)
{
    int64_t T = 0;
    int any_parent = 0;
    for (int64_t i = 0; i < n; i++) {
        T += seqs[i].n;
        any_parent |= seqs[i].back > 0;
    }
    sg_token_batch b = {malloc(T * sizeof(int32_t)), malloc((n + 1) * sizeof(int64_t)), n, NULL};
    int64_t *parent = any_parent ? malloc(n * sizeof(int64_t)) : NULL;
    uint8_t *want = calloc(T, 1);
    double *lp = malloc(T * sizeof(double));
    int err = 0;
    if (!b.ids || !b.offsets || !want || !lp || (any_parent && !parent)) {
        err = sg_fail(-ENOMEM, "out of memory for a batch of %lld tokens", (long long)T);
        goto out;
    }
    b.offsets[0] = 0;
    for (int64_t i = 0; i < n; i++) {
        const seq_ref *r = &seqs[i];
        const sg_task *t = &tasks[r->task];
        const int32_t *ids = r->req >= 0 ? t->req[r->req].ids : t->req[t->docs[r->doc].first].ids;
        int64_t o = b.offsets[i];
        memcpy(b.ids + o, ids + r->from, r->n * sizeof(int32_t));
        if (r->req >= 0)
            memset(want + o + r->n - t->req[r->req].n_cont, 1, t->req[r->req].n_cont);
        b.offsets[i + 1] = o + r->n;
        if (parent)
            parent[i] = r->back ? i - r->back : -1;
    }
    b.parent = parent;
    sg_eval_result r;
    err = sg_evaluate_loglik(be, files, &b, want, pr, phase, &r, lp);
    if (err)
        goto out;
    for (int64_t i = 0; i < n; i++) {
        if (seqs[i].req < 0)
            continue;
        sg_task_request *q = &tasks[seqs[i].task].req[seqs[i].req];
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
    free(parent);
    free(want);
    free(lp);
    return err;
}
int sg_tasks_loglik(sg_backend *be, sg_model_files *files, sg_task *tasks, int n,
                    int64_t batch_tokens, int share_prefix, sg_progress *pr, const char *phase,
                    sg_eval_result *res, int64_t *n_requests)
{
    int share = share_prefix && (!be || be->ops->host_memory);
    int64_t m = list_sequences(tasks, n, share, NULL, NULL), total_tokens = 0;
    memset(res, 0, sizeof *res);
    *n_requests = 0;
    seq_ref *seqs = malloc((m ? m : 1) * sizeof *seqs);
    if (!seqs)
        return sg_fail(-ENOMEM, "out of memory for %lld sequences", (long long)m);
    list_sequences(tasks, n, share, seqs, NULL);
    for (int64_t i = 0; i < m; i++) {
        total_tokens += seqs[i].n;
        *n_requests += seqs[i].req >= 0;
    }
    int64_t n_batches = batch_tokens > 0 ? (total_tokens + batch_tokens - 1) / batch_tokens : 1;
    int err = 0;
    for (int64_t i0 = 0, nb = 0; i0 < m && !err; nb++) {
        /* whole families: a batch ends only before a sequence without a parent */
        int64_t i1 = i0, tok = 0;
        while (i1 < m) {
            int64_t fam = i1 + 1, len = seqs[i1].n;
            while (fam < m && seqs[fam].back)
                len += seqs[fam++].n;
            if (i1 > i0 && batch_tokens > 0 && tok + len > batch_tokens)
                break;
            tok += len;
            i1 = fam;
        }
        char ph[256];
        if (nb + 1 > n_batches)
            n_batches = nb + 1; /* whole families make a few more than the division */
        snprintf(ph, sizeof ph, "%s, batch %lld/%lld", phase ? phase : "tasks",
                 (long long)nb + 1, (long long)n_batches);
        err = run_batch(be, files, tasks, seqs + i0, i1 - i0, pr, ph, res);
        i0 = i1;
    }
    free(seqs);
    return err;
}

void sg_tasks_prefix_sharing(const sg_task *tasks, int n, int64_t *unshared_positions,
                             int64_t *shared_positions)
{
    list_sequences(tasks, n, 0, NULL, unshared_positions);
    list_sequences(tasks, n, 1, NULL, shared_positions);
}
