/* Scoring a set of tasks on a model on disk: every request's continuation
 * log-likelihood, by the same streamed forward as perplexity
 * (sg_evaluate_loglik: one block resident, any backend). */
#ifndef SG_TASK_EVAL_H
#define SG_TASK_EVAL_H

#include <stdint.h>

#include "backend.h"
#include "evaluate.h"
#include "model_files.h"
#include "progress.h"
#include "task_set.h"

/* Fills ll of every request of tasks[0..n) whose document is not dropped.
 * Requests are packed, no padding, into batches of at most batch_tokens
 * tokens (a longer document alone); each batch goes through the model
 * block by block. With share_prefix, on the CPU, the tokens a document's
 * choices share run once (task_eval.c). res sums the batches: seconds,
 * the positions run (tokens) and the continuation tokens scored (count);
 * *n_requests counts the requests scored. */
int sg_tasks_loglik(sg_backend *be, sg_model_files *files, sg_task *tasks, int n,
                    int64_t batch_tokens, int share_prefix, sg_progress *pr, const char *phase,
                    sg_eval_result *res, int64_t *n_requests);

/* The positions the scored requests run as separate sequences, and with
 * each document's shared prefix run once. */
void sg_tasks_prefix_sharing(const sg_task *tasks, int n, int64_t *unshared_positions,
                             int64_t *shared_positions);

#endif
