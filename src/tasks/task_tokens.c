/* Requests to token ids, as lm-evaluation-harness makes them (task_set.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sg_error.h"
#include "task_set.h"

int64_t sg_utf8_chars(const char *s)
{
    int64_t n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xC0) != 0x80; /* every byte but a continuation byte */
    return n;
}

/* Python's str.rstrip() on ASCII whitespace: the context's trailing
 * whitespace, which lm-evaluation-harness moves onto the continuation. */
static size_t trailing_space(const char *s, size_t n)
{
    size_t k = 0;
    while (k < n && strchr(" \t\n\r\v\f", s[n - 1 - k]))
        k++;
    return k;
}

static int tokenize_one(sg_task_request *q, const sg_tokenizer *tok, int64_t max_positions)
{
    if (!q->continuation[0]) {
        q->skip = SG_REQ_EMPTY;
        return 0;
    }
    size_t nc = strlen(q->context), nk = strlen(q->continuation);
    nc -= trailing_space(q->context, nc); /* context[0..nc), then the rest is continuation */
    char *whole = malloc(strlen(q->context) + nk + 1);
    if (!whole)
        return sg_fail(-ENOMEM, "out of memory for a request");
    strcpy(whole, q->context);
    strcat(whole, q->continuation);
    int32_t *ctx = NULL, *all = NULL;
    size_t n_ctx = 0, n_all = 0;
    int err = sg_tokenizer_encode(tok, whole, nc, 1, &ctx, &n_ctx);
    err = err ? err : sg_tokenizer_encode(tok, whole, strlen(whole), 1, &all, &n_all);
    free(whole);
    if (!err && n_ctx == 0) {
        /* no context and no BOS: lm-evaluation-harness starts from EOS */
        int32_t eos = sg_tokenizer_eos(tok);
        if (eos < 0) {
            q->skip = SG_REQ_NO_CONTEXT;
        } else {
            int32_t *b = realloc(all, (n_all + 1) * sizeof(int32_t));
            if (!b) {
                err = sg_fail(-ENOMEM, "out of memory for a request");
            } else {
                all = b;
                memmove(all + 1, all, n_all * sizeof(int32_t));
                all[0] = eos;
                n_all++;
                n_ctx = 1;
            }
        }
    }
    free(ctx);
    if (err || q->skip) {
        free(all);
        return err;
    }
    q->ids = all;
    q->n_ids = (int64_t)n_all;
    q->n_cont = (int64_t)n_all - (int64_t)n_ctx;
    if (q->n_cont <= 0)
        q->skip = SG_REQ_EMPTY;
    /* the last token is only a target: n - 1 positions run */
    else if (max_positions > 0 && q->n_ids - 1 > max_positions)
        q->skip = SG_REQ_TOO_LONG;
    return 0;
}

int sg_task_tokenize(sg_task *t, const sg_tokenizer *tok, int64_t max_positions)
{
    memset(t->skipped, 0, sizeof t->skipped);
    memset(t->first_skipped_line, 0, sizeof t->first_skipped_line);
    t->docs_dropped = 0;
    for (int64_t i = 0; i < t->n_req; i++) {
        sg_task_request *q = &t->req[i];
        free(q->ids);
        q->ids = NULL;
        q->n_ids = q->n_cont = 0;
        q->skip = SG_REQ_OK;
        int err = tokenize_one(q, tok, max_positions);
        if (err)
            return err;
        if (q->skip && !t->skipped[q->skip]++)
            t->first_skipped_line[q->skip] = q->line;
    }
    for (int64_t d = 0; d < t->n_docs; d++) {
        sg_task_doc *doc = &t->docs[d];
        doc->dropped = 0;
        for (int c = 0; c < doc->n_choices; c++)
            doc->dropped |= t->req[doc->first + c].skip != SG_REQ_OK;
        t->docs_dropped += doc->dropped;
    }
    return 0;
}
