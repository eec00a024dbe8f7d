#include "export_gguf.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "model.h"
#include "model_files.h"
#include "sg_error.h"

typedef struct {
    sg_named_tensor *t;
    int n, cap;
} tensor_list;

static int add(tensor_list *l, const char *name, int64_t rows, int64_t cols, const float *data)
{
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        sg_named_tensor *t = realloc(l->t, cap * sizeof *t);
        if (!t)
            return sg_fail(-ENOMEM, "out of memory");
        l->t = t;
        l->cap = cap;
    }
    char *copy = strdup(name);
    if (!copy)
        return sg_fail(-ENOMEM, "out of memory");
    l->t[l->n++] = (sg_named_tensor){copy, cols ? 2 : 1, {rows, cols}, data};
    return 0;
}

static int visit(const char *name, float **tensor, int64_t rows, int64_t cols, void *ctx)
{
    return *tensor ? add(ctx, name, rows, cols, *tensor) : 0;
}

int sg_export_gguf(const char *hf_dir, const char *path, sg_dtype qtype, const sg_tokenizer *tok)
{
    sg_model_files *files;
    int err = sg_model_files_open(hf_dir, &files);
    if (err)
        return err;
    const sg_model_config *c = sg_model_files_config(files);
    sg_model m = {0};
    sg_block *b = NULL;
    tensor_list l = {0};
    sg_gguf_vocab vocab = {0};
    sg_gguf_vocab_store *store = NULL;
    if (c->sliced) {
        err = sg_fail(SG_EUNSUPPORTED, "%s: a per-layer sliced model has no GGUF form (only a "
                                       "uniform rotation's plain model has)", hf_dir);
        goto out;
    }
    if (!(b = calloc(c->n_layers, sizeof *b))) {
        err = sg_fail(-ENOMEM, "out of memory");
        goto out;
    }
    err = sg_model_load(files, &m);
    err = err ? err : add(&l, "token_embd.weight", c->vocab_size, c->dim, m.tok_embd);
    for (int64_t i = 0; i < c->n_layers && !err; i++) {
        err = sg_block_load(files, c, i, &b[i]);
        err = err ? err : sg_block_visit(c, i, &b[i], visit, &l);
    }
    if (!err && m.out_norm_w)
        err = add(&l, "output_norm.weight", c->dim, 0, m.out_norm_w);
    if (!err && !c->tied_embeddings)
        err = add(&l, "output.weight", c->vocab_size, c->dim, m.lm_head);
    if (!err && tok && sg_tokenizer_gguf_vocab(tok, &vocab, &store)) {
        fprintf(stderr, "slicegpt-stream: notice: %s: written without a vocabulary (%s)\n", path,
                sg_last_error());
        memset(&vocab, 0, sizeof vocab);
    }
    err = err ? err : sg_gguf_save_model(path, c, l.t, l.n, qtype, store ? &vocab : NULL);
out:
    for (int i = 0; i < l.n; i++)
        free((char *)l.t[i].name);
    free(l.t);
    for (int64_t i = 0; b && i < c->n_layers; i++)
        sg_block_free(&b[i]);
    free(b);
    sg_model_free(&m);
    sg_tokenizer_gguf_vocab_free(store);
    sg_model_files_close(files);
    return err;
}
