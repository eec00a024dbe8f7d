#include "model.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sg_error.h"

/* Reads canonical tensor fmt % l with shape (rows, cols) into a new buffer.
 * optional: a missing tensor leaves *dst NULL instead of failing. */
static int load_tensor(sg_model_files *f, float **dst, int optional, int64_t rows, int64_t cols,
                       const char *fmt, int64_t l)
{
    char name[128];
    snprintf(name, sizeof name, fmt, (long long)l);
    *dst = NULL;
    if (optional && !sg_model_files_has(f, name))
        return 0;
    int64_t n = rows * (cols ? cols : 1);
    float *buf = malloc(n * sizeof(float));
    if (!buf)
        return sg_fail(-ENOMEM, "%s: %s: out of memory (%lld floats)", sg_model_files_path(f),
                       name, (long long)n);
    int err = sg_model_files_read(f, name, buf, rows, cols);
    if (err) {
        free(buf);
        return err;
    }
    *dst = buf;
    return 0;
}

int sg_model_load(sg_model_files *files, sg_model *m)
{
    memset(m, 0, sizeof *m);
    m->cfg = *sg_model_files_config(files);
    const sg_model_config *c = &m->cfg;
    int norm_bias = c->norm == SG_NORM_LAYER;
    int err;
    if ((err = load_tensor(files, &m->tok_embd, 0, c->vocab_size, c->embed_dim,
                           "token_embd.weight", 0)))
        goto fail;
    if (c->rope == SG_ROPE_NONE &&
        (err = load_tensor(files, &m->pos_embd, 0, c->max_positions + c->pos_offset,
                           c->embed_dim, "position_embd.weight", 0)))
        goto fail;
    if ((err = load_tensor(files, &m->out_norm_w, c->sliced, c->head_in_dim, 0,
                           "output_norm.weight", 0)))
        goto fail;
    if (norm_bias && (err = load_tensor(files, &m->out_norm_b, c->sliced, c->head_in_dim, 0,
                                        "output_norm.bias", 0)))
        goto fail;
    if (c->tied_embeddings) {
        m->lm_head = m->tok_embd;
    } else if ((err = load_tensor(files, &m->lm_head, 0, c->vocab_size, c->head_in_dim,
                                  "output.weight", 0))) {
        goto fail;
    }
    if (c->lm_head_bias &&
        (err = load_tensor(files, &m->lm_head_b, 0, c->vocab_size, 0, "output.bias", 0)))
        goto fail;
    return 0;
fail:
    sg_model_free(m);
    return err;
}

void sg_model_free(sg_model *m)
{
    if (m->lm_head != m->tok_embd)
        free(m->lm_head);
    free(m->tok_embd);
    free(m->pos_embd);
    free(m->out_norm_w);
    free(m->out_norm_b);
    free(m->lm_head_b);
    memset(m, 0, sizeof *m);
}

/* One table drives loading, allocation and freeing of a block's tensors. */
typedef struct {
    const char *name;
    size_t field;  /* offsetof the float* in sg_block */
    char rows, cols; /* 'i' d_in, 'm' d_mid, 'o' d_out, 'q' nh*hd, 'k' nkv*hd, 'f' F,
                        'r' what the MLP reads (d_in for parallel blocks, else d_mid), 0 none */
    char when;       /* 'a' always, 'b' qkv bias, 'B' o bias, 'M' mlp bias, 'n' norm bias,
                        'g' gated, 'w' norm weight (unsliced), 's' sliced shortcut,
                        'S' sliced mlp shortcut (sequential blocks) */
} tensor_slot;

#define SLOT(name, field, r, c, w) {name, offsetof(sg_block, field), r, c, w}
static const tensor_slot block_slots[] = {
    SLOT("blk.%lld.attn_norm.weight", attn_norm_w, 'i', 0, 'w'),
    SLOT("blk.%lld.attn_norm.bias", attn_norm_b, 'i', 0, 'n'),
    SLOT("blk.%lld.attn_q.weight", wq, 'q', 'i', 'a'),
    SLOT("blk.%lld.attn_q.bias", bq, 'q', 0, 'b'),
    SLOT("blk.%lld.attn_k.weight", wk, 'k', 'i', 'a'),
    SLOT("blk.%lld.attn_k.bias", bk, 'k', 0, 'b'),
    SLOT("blk.%lld.attn_v.weight", wv, 'k', 'i', 'a'),
    SLOT("blk.%lld.attn_v.bias", bv, 'k', 0, 'b'),
    SLOT("blk.%lld.attn_output.weight", wo, 'm', 'q', 'a'),
    SLOT("blk.%lld.attn_output.bias", bo, 'm', 0, 'B'),
    SLOT("blk.%lld.attn_shortcut.weight", attn_shortcut, 'i', 'm', 's'),
    SLOT("blk.%lld.ffn_norm.weight", ffn_norm_w, 'm', 0, 'W'),
    SLOT("blk.%lld.ffn_norm.bias", ffn_norm_b, 'm', 0, 'N'),
    SLOT("blk.%lld.ffn_gate.weight", w_gate, 'f', 'r', 'g'),
    SLOT("blk.%lld.ffn_up.weight", w_up, 'f', 'r', 'a'),
    SLOT("blk.%lld.ffn_up.bias", b_up, 'f', 0, 'M'),
    SLOT("blk.%lld.ffn_down.weight", w_down, 'o', 'f', 'a'),
    SLOT("blk.%lld.ffn_down.bias", b_down, 'o', 0, 'M'),
    SLOT("blk.%lld.mlp_shortcut.weight", mlp_shortcut, 'm', 'o', 'S'),
};
#define N_SLOTS (sizeof block_slots / sizeof block_slots[0])

static int64_t slot_dim(const sg_model_config *c, const sg_block *b, char k)
{
    switch (k) {
    case 'i': return b->d_in;
    case 'm': return b->d_mid;
    case 'o': return b->d_out;
    case 'q': return c->n_heads * c->head_dim;
    case 'k': return c->n_kv_heads * c->head_dim;
    case 'f': return b->d_ffn;
    case 'r': return c->parallel_block ? b->d_in : b->d_mid;
    }
    return 0;
}

/* Whether a slot exists for this model: 1 required, 2 optional, 0 absent.
 * Sliced models keep norms scale-free (weights folded away), so norm
 * tensors are optional there; shortcuts are optional because a layer whose
 * widths did not change may store none (identity). */
static int slot_present(const sg_model_config *c, char when)
{
    int seq = !c->parallel_block, ln = c->norm == SG_NORM_LAYER;
    switch (when) {
    case 'a': return 1;
    case 'b': return c->qkv_bias;
    case 'B': return c->o_bias;
    case 'M': return c->mlp_bias;
    case 'g': return c->gated_mlp;
    case 'w': return c->sliced ? 2 : 1;
    case 'n': return ln ? (c->sliced ? 2 : 1) : 0;
    case 'W': return seq ? (c->sliced ? 2 : 1) : 0;
    case 'N': return seq && ln ? (c->sliced ? 2 : 1) : 0;
    case 's': return c->sliced && !c->residual_kept ? 2 : 0;
    case 'S': return c->sliced && seq && !c->residual_kept ? 2 : 0;
    }
    return 0;
}

void sg_block_widths(const sg_model_config *c, int64_t l, sg_block *b)
{
    b->d_in = c->d_in[l];
    b->d_mid = c->parallel_block ? c->d_out[l] : c->d_mid[l];
    b->d_out = c->d_out[l];
    b->d_ffn = sg_layer_ffn(c, l);
}

static void set_widths(const sg_model_config *c, int64_t l, sg_block *b)
{
    memset(b, 0, sizeof *b);
    sg_block_widths(c, l, b);
}

int sg_block_load(sg_model_files *files, const sg_model_config *c, int64_t l, sg_block *b)
{
    set_widths(c, l, b);
    for (size_t i = 0; i < N_SLOTS; i++) {
        const tensor_slot *s = &block_slots[i];
        int present = slot_present(c, s->when);
        if (!present)
            continue;
        float **dst = (float **)((char *)b + s->field);
        int err = load_tensor(files, dst, present == 2, slot_dim(c, b, s->rows),
                              slot_dim(c, b, s->cols), s->name, l);
        if (err) {
            sg_block_free(b);
            return err;
        }
    }
    return 0;
}

int sg_block_alloc(const sg_model_config *c, int64_t l, sg_block *b)
{
    set_widths(c, l, b);
    for (size_t i = 0; i < N_SLOTS; i++) {
        const tensor_slot *s = &block_slots[i];
        if (slot_present(c, s->when) != 1)
            continue;
        int64_t cols = slot_dim(c, b, s->cols);
        float **dst = (float **)((char *)b + s->field);
        *dst = calloc(slot_dim(c, b, s->rows) * (cols ? cols : 1), sizeof(float));
        if (!*dst) {
            sg_block_free(b);
            return sg_fail(-ENOMEM, "out of memory for block %lld", (long long)l);
        }
    }
    return 0;
}

void sg_block_free(sg_block *b)
{
    for (size_t i = 0; i < N_SLOTS; i++) {
        float **p = (float **)((char *)b + block_slots[i].field);
        free(*p);
        *p = NULL;
    }
}

int sg_block_visit(const sg_model_config *c, int64_t l, sg_block *b, sg_block_visitor fn,
                   void *ctx)
{
    for (size_t i = 0; i < N_SLOTS; i++) {
        const tensor_slot *s = &block_slots[i];
        float **p = (float **)((char *)b + s->field);
        int present = slot_present(c, s->when);
        if (!present || (present == 2 && !*p))
            continue;
        char name[128];
        snprintf(name, sizeof name, s->name, (long long)l);
        int err = fn(name, p, slot_dim(c, b, s->rows), slot_dim(c, b, s->cols), ctx);
        if (err)
            return err;
    }
    return 0;
}

int64_t sg_block_param_count(const sg_model_config *c, int64_t l)
{
    sg_block b;
    set_widths(c, l, &b);
    int64_t n = 0;
    for (size_t i = 0; i < N_SLOTS; i++) {
        const tensor_slot *s = &block_slots[i];
        int present = slot_present(c, s->when);
        /* optional norms of sliced models are folded away; shortcuts count
         * when the widths say a rotation is needed (sliced models store them) */
        if (!present || (present == 2 && (s->when != 's' && s->when != 'S')))
            continue;
        if (s->when == 'S' && c->shared_basis[l])
            continue; /* the identity, not stored */
        int64_t cols = slot_dim(c, &b, s->cols);
        n += slot_dim(c, &b, s->rows) * (cols ? cols : 1);
    }
    return n;
}
