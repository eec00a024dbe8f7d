/* Stream sections <-> sg_block and sg_model (see stream_model.h). */
#include "stream_model.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sg_error.h"

/* Where each tensor of a block lands. Which of them a block must have,
 * and their shapes, come from sg_block_visit, so this list only maps
 * names to fields. */
static const struct {
    const char *suffix;
    size_t field;
} block_fields[] = {
    {"attn_norm.weight", offsetof(sg_block, attn_norm_w)},
    {"attn_norm.bias", offsetof(sg_block, attn_norm_b)},
    {"attn_q.weight", offsetof(sg_block, wq)},
    {"attn_q.bias", offsetof(sg_block, bq)},
    {"attn_k.weight", offsetof(sg_block, wk)},
    {"attn_k.bias", offsetof(sg_block, bk)},
    {"attn_v.weight", offsetof(sg_block, wv)},
    {"attn_v.bias", offsetof(sg_block, bv)},
    {"attn_output.weight", offsetof(sg_block, wo)},
    {"attn_output.bias", offsetof(sg_block, bo)},
    {"attn_shortcut.weight", offsetof(sg_block, attn_shortcut)},
    {"ffn_norm.weight", offsetof(sg_block, ffn_norm_w)},
    {"ffn_norm.bias", offsetof(sg_block, ffn_norm_b)},
    {"ffn_gate.weight", offsetof(sg_block, w_gate)},
    {"ffn_up.weight", offsetof(sg_block, w_up)},
    {"ffn_up.bias", offsetof(sg_block, b_up)},
    {"ffn_down.weight", offsetof(sg_block, w_down)},
    {"ffn_down.bias", offsetof(sg_block, b_down)},
    {"mlp_shortcut.weight", offsetof(sg_block, mlp_shortcut)},
};
#define N_BLOCK_FIELDS (sizeof block_fields / sizeof block_fields[0])

static const struct {
    const char *name;
    size_t field;
} global_fields[] = {
    {"token_embd.weight", offsetof(sg_model, tok_embd)},
    {"position_embd.weight", offsetof(sg_model, pos_embd)},
    {"output_norm.weight", offsetof(sg_model, out_norm_w)},
    {"output_norm.bias", offsetof(sg_model, out_norm_b)},
    {"output.weight", offsetof(sg_model, lm_head)},
    {"output.bias", offsetof(sg_model, lm_head_b)},
};
#define N_GLOBAL_FIELDS (sizeof global_fields / sizeof global_fields[0])

void sg_section_begin(sg_section *s, const sg_rec_block *sec)
{
    memset(s, 0, sizeof *s);
    s->sec = *sec;
}

static float **find_field(sg_section *s, const char *name)
{
    if (s->sec.kind == SG_SECTION_BLOCK) {
        char prefix[32];
        int n = snprintf(prefix, sizeof prefix, "blk.%lld.", (long long)s->sec.layer);
        if (strncmp(name, prefix, n))
            return NULL;
        for (size_t i = 0; i < N_BLOCK_FIELDS; i++)
            if (!strcmp(name + n, block_fields[i].suffix))
                return (float **)((char *)&s->b + block_fields[i].field);
        return NULL;
    }
    for (size_t i = 0; i < N_GLOBAL_FIELDS; i++)
        if (!strcmp(name, global_fields[i].name))
            return (float **)((char *)&s->m + global_fields[i].field);
    return NULL;
}

int sg_section_add(sg_section *s, const sg_record *rec, sg_frame_reader *r)
{
    int ndim;
    int64_t shape[4];
    const float *data;
    int err = sg_rec_read_tensor(rec, &ndim, shape, &data);
    if (err)
        return err;
    char sec[64];
    sg_section_name(&s->sec, sec, sizeof sec);
    float **field = find_field(s, rec->name);
    if (!field || ndim > 2 || s->n == (int)(sizeof s->got / sizeof s->got[0]))
        return sg_fail(SG_EFORMAT, "%s: no such tensor in section %s", sg_rec_label(rec), sec);
    if (*field)
        return sg_fail(SG_EFORMAT, "%s: tensor comes twice in section %s", sg_rec_label(rec),
                       sec);
    size_t bytes = (size_t)shape[0] * (ndim == 2 ? (size_t)shape[1] : 1) * sizeof(float);
    if (r) {
        /* the payload buffer itself, elements moved to its start: no
         * second copy of a tensor that may be gigabytes */
        unsigned char *buf = sg_frame_reader_take_payload(r);
        memmove(buf, data, bytes);
        *field = (float *)buf;
    } else if ((*field = malloc(bytes ? bytes : 1))) {
        memcpy(*field, data, bytes);
    } else {
        return sg_fail(-ENOMEM, "%s: out of memory", sg_rec_label(rec));
    }
    s->got[s->n].field = field;
    s->got[s->n].ndim = ndim;
    s->got[s->n].shape[0] = shape[0];
    s->got[s->n].shape[1] = ndim == 2 ? shape[1] : 0;
    snprintf(s->got[s->n].name, sizeof s->got[s->n].name, "%.120s", rec->name);
    s->n++;
    return 0;
}

typedef struct {
    sg_section *s;
    const char *sec;
} check_ctx;

/* One tensor the config expects: present, with the expected shape. */
static int check_one(const char *name, float **p, int64_t rows, int64_t cols, void *ctx)
{
    check_ctx *c = ctx;
    for (int i = 0; i < c->s->n; i++) {
        if (c->s->got[i].field != p)
            continue;
        c->s->got[i].seen = 1;
        if (c->s->got[i].shape[0] != rows || c->s->got[i].shape[1] != cols)
            return sg_fail(SG_ESHAPE,
                           "section %s: tensor %s is (%lld, %lld), the model config says "
                           "(%lld, %lld)",
                           c->sec, name, (long long)c->s->got[i].shape[0],
                           (long long)c->s->got[i].shape[1], (long long)rows, (long long)cols);
        return 0;
    }
    return sg_fail(SG_EMISSING, "section %s: tensor %s is missing", c->sec, name);
}

int sg_section_check(sg_section *s, const sg_model_config *cfg)
{
    char sec[64];
    sg_section_name(&s->sec, sec, sizeof sec);
    check_ctx c = {s, sec};
    int err = 0;
    if (s->sec.kind == SG_SECTION_BLOCK) {
        int64_t l = s->sec.layer;
        if (l >= cfg->n_layers)
            return sg_fail(SG_EFORMAT, "section %s: the model has %lld blocks", sec,
                           (long long)cfg->n_layers);
        sg_block_widths(cfg, l, &s->b);
        err = sg_block_visit(cfg, l, &s->b, check_one, &c);
    } else if (s->sec.kind == SG_SECTION_EMBEDDINGS) {
        sg_model *m = &s->m;
        int64_t E = cfg->embed_dim;
        err = check_one("token_embd.weight", &m->tok_embd, cfg->vocab_size, E, &c);
        if (!err && cfg->rope == SG_ROPE_NONE)
            err = check_one("position_embd.weight", &m->pos_embd,
                            cfg->max_positions + cfg->pos_offset, E, &c);
    } else {
        sg_model *m = &s->m;
        int64_t V = cfg->vocab_size, H = cfg->head_in_dim;
        if (m->out_norm_w)
            err = check_one("output_norm.weight", &m->out_norm_w, H, 0, &c);
        if (!err && m->out_norm_b)
            err = check_one("output_norm.bias", &m->out_norm_b, H, 0, &c);
        if (!err && cfg->sliced && cfg->tied_embeddings && !m->tok_embd && !m->lm_head) {
            /* embeddings kept: the head is the table, only the norm comes */
        } else if (!err && m->tok_embd && !m->lm_head) {
            m->lm_head = m->tok_embd; /* a head not yet untied */
            err = check_one("token_embd.weight", &m->tok_embd, V, H, &c);
        } else if (!err) {
            err = check_one("output.weight", &m->lm_head, V, H, &c);
        }
        if (!err && m->lm_head_b)
            err = check_one("output.bias", &m->lm_head_b, V, 0, &c);
    }
    for (int i = 0; !err && i < s->n; i++)
        if (!s->got[i].seen)
            err = sg_fail(SG_EFORMAT, "section %s: tensor %s is not part of this model", sec,
                          s->got[i].name);
    return err;
}

void sg_section_free(sg_section *s)
{
    sg_block_free(&s->b);
    sg_model_free(&s->m);
    s->n = 0;
}

static int emit(const char *name, float **p, int64_t rows, int64_t cols, void *ctx)
{
    if (!*p)
        return sg_fail(SG_EMISSING, "%s: tensor missing from the block", name);
    int64_t shape[2] = {rows, cols};
    return sg_rec_write_tensor(ctx, name, *p, cols ? 2 : 1, shape);
}

int sg_section_write_block(sg_frame_writer *w, const sg_model_config *cfg, int64_t l,
                           sg_block *b)
{
    sg_rec_block sec = {0, SG_SECTION_BLOCK, l};
    int err = sg_rec_write_block(w, &sec);
    err = err ? err : sg_block_visit(cfg, l, b, emit, w);
    sec.end = 1;
    return err ? err : sg_rec_write_block(w, &sec);
}

int sg_section_write_globals(sg_frame_writer *w, sg_section_kind kind, const sg_model *m,
                             const sg_model_config *c)
{
    int64_t V = c->vocab_size, E = c->embed_dim, H = c->head_in_dim;
    sg_rec_block sec = {0, kind, -1};
    int err = sg_rec_write_block(w, &sec);
    float *tok = m->tok_embd, *pos = m->pos_embd, *nw = m->out_norm_w, *nb = m->out_norm_b;
    float *head = m->lm_head, *hb = m->lm_head_b;
    if (kind == SG_SECTION_HEAD && head && head == tok) {
        tok = NULL; /* still tied: the head goes as token_embd.weight, once */
        err = err ? err : emit("token_embd.weight", &head, V, H, w);
        head = NULL;
    }
    if (tok)
        err = err ? err : emit("token_embd.weight", &tok, V, E, w);
    if (pos)
        err = err ? err
                  : emit("position_embd.weight", &pos, c->max_positions + c->pos_offset, E, w);
    if (nw)
        err = err ? err : emit("output_norm.weight", &nw, H, 0, w);
    if (nb)
        err = err ? err : emit("output_norm.bias", &nb, H, 0, w);
    if (head)
        err = err ? err : emit("output.weight", &head, V, H, w);
    if (hb)
        err = err ? err : emit("output.bias", &hb, V, 0, w);
    sec.end = 1;
    return err ? err : sg_rec_write_block(w, &sec);
}
