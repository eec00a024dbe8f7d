/* Stage "load" for the parts outside the blocks (sg_block_load reads a
 * block): the embeddings, and the final norm with the head. */
#include "load.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sg_error.h"

/* Reads canonical tensor name (rows, cols) into a new buffer. */
static int read_tensor(sg_model_files *f, const char *name, int64_t rows, int64_t cols,
                       float **dst)
{
    int64_t n = rows * (cols ? cols : 1);
    *dst = malloc(n * sizeof(float));
    if (!*dst)
        return sg_fail(-ENOMEM, "%s: %s: out of memory (%lld floats)", sg_model_files_path(f),
                       name, (long long)n);
    int err = sg_model_files_read(f, name, *dst, rows, cols);
    if (err) {
        free(*dst);
        *dst = NULL;
    }
    return err;
}

int sg_slice_embeddings_load(sg_model_files *files, sg_model *m)
{
    memset(m, 0, sizeof *m);
    m->cfg = *sg_model_files_config(files);
    const sg_model_config *c = &m->cfg;
    int err = read_tensor(files, "token_embd.weight", c->vocab_size, c->embed_dim, &m->tok_embd);
    if (!err && c->rope == SG_ROPE_NONE)
        err = read_tensor(files, "position_embd.weight", c->max_positions + c->pos_offset,
                          c->embed_dim, &m->pos_embd);
    /* the head is not needed until the end: it is read again then */
    m->cfg.tied_embeddings = 0;
    if (err)
        sg_model_free(m);
    return err;
}

int sg_slice_final_norm_load(sg_model_files *files, float **w)
{
    const sg_model_config *c = sg_model_files_config(files);
    return read_tensor(files, "output_norm.weight", c->dim, 0, w);
}

int sg_slice_head_load(sg_model_files *files, sg_model *m)
{
    memset(m, 0, sizeof *m);
    m->cfg = *sg_model_files_config(files);
    const sg_model_config *c = &m->cfg;
    int64_t V = c->vocab_size, D = c->dim;
    int err = read_tensor(files, "output_norm.weight", D, 0, &m->out_norm_w);
    if (!err && c->norm == SG_NORM_LAYER)
        err = read_tensor(files, "output_norm.bias", D, 0, &m->out_norm_b);
    if (!err && c->tied_embeddings) {
        err = read_tensor(files, "token_embd.weight", V, D, &m->tok_embd);
        m->lm_head = m->tok_embd;
    } else if (!err) {
        err = read_tensor(files, "output.weight", V, D, &m->lm_head);
    }
    if (!err && c->lm_head_bias)
        err = read_tensor(files, "output.bias", V, 0, &m->lm_head_b);
    if (err)
        sg_model_free(m);
    return err;
}
