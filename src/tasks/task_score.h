/* Accuracy from the requests' log-likelihoods, as lm-evaluation-harness
 * defines it: acc picks the choice with the highest summed log-likelihood
 * of its continuation; acc_norm the highest log-likelihood divided by the
 * continuation's length in characters (the request's continuation string,
 * Unicode code points). Ties go to the first choice (numpy's argmax). Each
 * comes with the sample standard error of the mean, sqrt(s² / n) with s²
 * over n - 1. Only documents not dropped count. */
#ifndef SG_TASK_SCORE_H
#define SG_TASK_SCORE_H

#include <stdint.h>

#include "task_set.h"

typedef struct {
    int64_t docs;
    double acc, acc_stderr;           /* fractions (0..1) */
    double acc_norm, acc_norm_stderr;
} sg_task_score;

/* The choice a document's requests pick (0-based): by ll, or by ll per
 * character when norm is set. */
int sg_task_pick(const sg_task *t, int64_t doc, int norm);

void sg_task_score_compute(const sg_task *t, sg_task_score *s);

#endif
