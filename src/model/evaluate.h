/* Evaluation of a model on disk over a token batch, one block at a time:
 * all sequences go through block 1, then block 2, ..., so only one block's
 * weights are resident. Returns the summed NLL and the number of predicted
 * tokens. */
#ifndef SG_EVALUATE_H
#define SG_EVALUATE_H

#include <stdint.h>

#include "backend.h"
#include "model_files.h"
#include "progress.h"
#include "text.h"

typedef struct {
    double nll;          /* summed negative log-likelihood, nats */
    int64_t count;       /* predicted tokens */
    double seconds;      /* wall time of the forward pass */
    int64_t tokens;      /* tokens pushed through the model */
} sg_eval_result;

int sg_evaluate(sg_model_files *files, const sg_token_batch *batch, sg_eval_result *res);

/* Logits (tokens, vocab) of every position (tests and small checks). */
int sg_evaluate_logits(sg_model_files *files, const sg_token_batch *batch, float *logits);

/* The same on backend be (NULL: the CPU). On a GPU the blocks run chunk
 * by chunk of sequences and the head a few hundred rows at a time, the
 * activations staying on the host; log-softmax is on the host. */
int sg_evaluate_on(sg_backend *be, sg_model_files *files, const sg_token_batch *batch,
                   sg_eval_result *res);
/* sg_evaluate_on with progress on pr (NULL: none) as phase `phase`: one
 * step per block and one for the head; the rate counts the batch's tokens. */
int sg_evaluate_progress(sg_backend *be, sg_model_files *files, const sg_token_batch *batch,
                         sg_progress *pr, const char *phase, sg_eval_result *res);
/* Log-likelihoods of chosen tokens (zero-shot tasks): for each token t of
 * the batch with want[t] set (never a sequence's first token), lp[t] =
 * log p(ids[t] | the tokens before it in its sequence); other entries of
 * lp are untouched. The head runs only on the positions that predict a
 * wanted token; res->count counts them, res->tokens the positions run. */
int sg_evaluate_loglik(sg_backend *be, sg_model_files *files, const sg_token_batch *batch,
                       const uint8_t *want, sg_progress *pr, const char *phase,
                       sg_eval_result *res, double *lp);
int sg_evaluate_logits_on(sg_backend *be, sg_model_files *files, const sg_token_batch *batch,
                          float *logits);

double sg_now(void); /* monotonic seconds */

#endif
