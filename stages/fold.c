#include "fold.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "sg_error.h"

sg_model_config sg_fold_config(const sg_model_config *orig)
{
    sg_model_config c = *orig;
    int ln = orig->norm == SG_NORM_LAYER;
    c.sliced = 1;
    c.norm = SG_NORM_RMS;
    c.norm_dim = orig->dim;
    c.tied_embeddings = 0;
    if (ln) {
        /* the LayerNorm biases land in every reader's bias */
        c.qkv_bias = 1;
        c.mlp_bias = 1;
        c.lm_head_bias = 1;
    }
    return c;
}

/* Reader W (out, d) with bias *bias: W ← W·diag(w), bias ← bias + W·beta
 * (with the W before scaling). Allocates the bias when beta needs one. */
static int fold_into_reader(float *w_mat, float **bias, int64_t out, int64_t d, const float *w,
                            const float *beta)
{
    if (beta) {
        if (!*bias && !(*bias = calloc(out, sizeof(float))))
            return sg_fail(-ENOMEM, "out of memory folding a norm bias");
        for (int64_t o = 0; o < out; o++) {
            double acc = 0;
            for (int64_t i = 0; i < d; i++)
                acc += (double)w_mat[o * d + i] * beta[i];
            (*bias)[o] += (float)acc;
        }
    }
    if (w)
        for (int64_t o = 0; o < out; o++)
            for (int64_t i = 0; i < d; i++)
                w_mat[o * d + i] *= w[i];
    return 0;
}

/* Writer W (d, in), bias (d): centre each column over the d outputs. */
static void centre_writer(float *w_mat, float *bias, int64_t d, int64_t in)
{
    for (int64_t i = 0; i < in; i++) {
        double mean = 0;
        for (int64_t o = 0; o < d; o++)
            mean += w_mat[o * in + i];
        mean /= d;
        for (int64_t o = 0; o < d; o++)
            w_mat[o * in + i] -= (float)mean;
    }
    if (bias) {
        double mean = 0;
        for (int64_t o = 0; o < d; o++)
            mean += bias[o];
        mean /= d;
        for (int64_t o = 0; o < d; o++)
            bias[o] -= (float)mean;
    }
}

static void centre_rows(float *x, int64_t rows, int64_t d)
{
    for (int64_t r = 0; r < rows; r++) {
        double mean = 0;
        for (int64_t i = 0; i < d; i++)
            mean += x[r * d + i];
        mean /= d;
        for (int64_t i = 0; i < d; i++)
            x[r * d + i] -= (float)mean;
    }
}

int sg_fold_globals(sg_model *m)
{
    const sg_model_config orig = m->cfg;
    int64_t V = orig.vocab_size, D = orig.dim;
    if (orig.sliced)
        return sg_fail(SG_EARG, "model is already in SliceGPT form");
    if (orig.tied_embeddings) {
        float *head = malloc(V * D * sizeof(float));
        if (!head)
            return sg_fail(-ENOMEM, "out of memory untying the head");
        memcpy(head, m->tok_embd, V * D * sizeof(float));
        m->lm_head = head;
    }
    /* a caller that only needs the embeddings may have dropped the head */
    int err = m->lm_head ? fold_into_reader(m->lm_head, &m->lm_head_b, V, D, m->out_norm_w,
                                            m->out_norm_b)
                         : 0;
    if (err)
        return err;
    free(m->out_norm_w);
    free(m->out_norm_b);
    m->out_norm_w = m->out_norm_b = NULL;
    if (orig.norm == SG_NORM_LAYER) {
        centre_rows(m->tok_embd, V, D);
        if (m->pos_embd)
            centre_rows(m->pos_embd, orig.max_positions + orig.pos_offset, D);
    }
    m->cfg = sg_fold_config(&orig);
    return 0;
}

int sg_fold_block(const sg_model_config *orig, sg_block *b)
{
    int64_t D = orig->dim, qd = orig->n_heads * orig->head_dim;
    int64_t kvd = orig->n_kv_heads * orig->head_dim, F = orig->ffn_dim;
    if (orig->norm == SG_NORM_LAYER && orig->gated_mlp)
        return sg_fail(SG_EUNSUPPORTED, "LayerNorm with a gated MLP is not supported");
    int err = 0;
    const float *nw = b->attn_norm_w, *nb = b->attn_norm_b;
    err = err ? err : fold_into_reader(b->wq, &b->bq, qd, D, nw, nb);
    err = err ? err : fold_into_reader(b->wk, &b->bk, kvd, D, nw, nb);
    err = err ? err : fold_into_reader(b->wv, &b->bv, kvd, D, nw, nb);
    /* the MLP reads the attention norm in a parallel block, its own otherwise */
    if (!orig->parallel_block) {
        nw = b->ffn_norm_w;
        nb = b->ffn_norm_b;
    }
    if (orig->gated_mlp)
        err = err ? err : fold_into_reader(b->w_gate, &(float *){NULL}, F, D, nw, NULL);
    err = err ? err : fold_into_reader(b->w_up, &b->b_up, F, D, nw, nb);
    if (err)
        return err;
    if (orig->norm == SG_NORM_LAYER) {
        /* sg_fold_config promises MLP biases once a LayerNorm bias is folded */
        if (!b->b_down && !(b->b_down = calloc(D, sizeof(float))))
            return sg_fail(-ENOMEM, "out of memory for a folded bias");
        centre_writer(b->wo, b->bo, D, qd);
        centre_writer(b->w_down, b->b_down, D, F);
    }
    free(b->attn_norm_w);
    free(b->attn_norm_b);
    free(b->ffn_norm_w);
    free(b->ffn_norm_b);
    b->attn_norm_w = b->attn_norm_b = b->ffn_norm_w = b->ffn_norm_b = NULL;
    return 0;
}

int sg_slice_embeddings_fold(sg_model *m) { return sg_fold_globals(m); }

int sg_slice_head_fold(sg_model *m)
{
    /* sg_fold_globals unties the head, folds the final norm into it, and
     * for a LayerNorm model also centres the embeddings. The head needs
     * none of the latter (the embeddings were sliced long ago), so fold it
     * as if the norm were RMS: the head comes out the same, and no copy of
     * the embeddings is needed to be centred and thrown away. */
    sg_model_config orig = m->cfg;
    m->cfg.norm = SG_NORM_RMS;
    int err = sg_fold_globals(m);
    m->cfg = orig;
    if (m->tok_embd != m->lm_head)
        free(m->tok_embd);
    m->tok_embd = NULL;
    free(m->pos_embd);
    m->pos_embd = NULL;
    return err;
}
