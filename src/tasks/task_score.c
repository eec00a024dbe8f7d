#include "task_score.h"

#include <math.h>

int sg_task_pick(const sg_task *t, int64_t doc, int norm)
{
    const sg_task_doc *d = &t->docs[doc];
    int best = 0;
    double best_v = 0;
    for (int c = 0; c < d->n_choices; c++) {
        const sg_task_request *q = &t->req[d->first + c];
        double v = q->ll;
        if (norm) {
            int64_t chars = sg_utf8_chars(q->continuation);
            v /= chars > 0 ? (double)chars : 1.0;
        }
        if (c == 0 || v > best_v) {
            best = c;
            best_v = v;
        }
    }
    return best;
}

/* mean and sample standard error of the mean of n values that are 0 or 1 */
static void mean_stderr(int64_t hits, int64_t n, double *mean, double *se)
{
    *mean = n ? (double)hits / n : 0;
    /* sum of (x - mean)^2 over n values of which `hits` are 1 */
    double ss = hits * (1 - *mean) * (1 - *mean) + (n - hits) * *mean * *mean;
    *se = n > 1 ? sqrt(ss / (n - 1) / n) : 0;
}

void sg_task_score_compute(const sg_task *t, sg_task_score *s)
{
    int64_t n = 0, hit = 0, hit_norm = 0;
    for (int64_t d = 0; d < t->n_docs; d++) {
        if (t->docs[d].dropped)
            continue;
        n++;
        hit += sg_task_pick(t, d, 0) == t->docs[d].gold;
        hit_norm += sg_task_pick(t, d, 1) == t->docs[d].gold;
    }
    s->docs = n;
    mean_stderr(hit, n, &s->acc, &s->acc_stderr);
    mean_stderr(hit_norm, n, &s->acc_norm, &s->acc_norm_stderr);
}
