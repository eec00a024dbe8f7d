/* Payload codecs of the stage stream (layouts in stream_records.h). */
#include "stream_records.h"

#include <errno.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sg_error.h"

const char *sg_rec_label(const sg_record *rec)
{
    static _Thread_local char buf[SG_FRAME_NAME_MAX + 128];
    snprintf(buf, sizeof buf, "%s: stream record %llu (%s, %s)",
             rec->source ? rec->source : "stream", (unsigned long long)rec->seq,
             sg_rec_type_name(rec->type), rec->name[0] ? rec->name : "-");
    return buf;
}

static int bad_payload(const sg_record *rec, const char *what)
{
    return sg_fail(SG_EFORMAT, "%s: %s", sg_rec_label(rec), what);
}

static int want_type(const sg_record *rec, int type)
{
    if (rec->type == type)
        return 0;
    return sg_fail(SG_EARG, "%s: expected a %s record", sg_rec_label(rec), sg_rec_type_name(type));
}

/* ---- header and config ---- */

int sg_rec_write_header(sg_frame_writer *w, const cJSON *header)
{
    char *json = cJSON_PrintUnformatted(header);
    if (!json)
        return sg_fail(-ENOMEM, "out of memory printing the stream header");
    sg_frame_part p = {json, strlen(json)};
    int err = sg_frame_write(w, SG_REC_HEADER, "header", &p, 1);
    free(json);
    return err;
}

int sg_rec_read_header(const sg_record *rec, cJSON **header)
{
    *header = NULL;
    int err = want_type(rec, SG_REC_HEADER);
    if (err)
        return err;
    cJSON *h = cJSON_ParseWithLength((const char *)rec->payload, rec->len);
    if (!h || !cJSON_IsObject(h)) {
        cJSON_Delete(h);
        return bad_payload(rec, "header is not a JSON object");
    }
    *header = h;
    return 0;
}

typedef struct {
    const char *key;
    size_t off;
    char kind; /* 'l' int64_t, 'i' int, 'w' int32_t, 'd' double */
} config_field;

#define F(name, kind) {#name, offsetof(sg_model_config, name), kind}
static const config_field config_fields[] = {
    F(dim, 'l'), F(n_layers, 'l'), F(n_heads, 'l'), F(n_kv_heads, 'l'), F(head_dim, 'l'),
    F(ffn_dim, 'l'), F(vocab_size, 'l'), F(max_positions, 'l'), F(gated_mlp, 'i'),
    F(norm_eps, 'd'), F(rope_theta, 'd'), F(rope_dim, 'l'), F(rope_factor, 'd'),
    F(rope_low_freq_factor, 'd'), F(rope_high_freq_factor, 'd'),
    F(rope_original_max_positions, 'l'), F(pos_offset, 'l'), F(tied_embeddings, 'i'),
    F(qkv_bias, 'i'), F(o_bias, 'i'), F(mlp_bias, 'i'), F(lm_head_bias, 'i'),
    F(parallel_block, 'i'), F(bos_id, 'w'), F(eos_id, 'w'), F(sliced, 'i'), F(norm_dim, 'l'),
    F(embed_dim, 'l'), F(head_in_dim, 'l'), F(residual_kept, 'i'),
};
#undef F

/* Enumerations travel by name. */
typedef struct {
    const char *key;
    size_t off;
    const char *const *names;
    int n;
} config_enum;

static const char *const arch_names[] = {"llama", "opt", "phi"};
static const char *const norm_names[] = {"rms", "layer"};
static const char *const act_names[] = {"silu", "relu", "gelu_tanh", "gelu"};
static const char *const rope_names[] = {"none", "half", "pairs"};
static const char *const scaling_names[] = {"none", "linear", "llama3"};
#define E(name, table) {#name, offsetof(sg_model_config, name), table, sizeof table / sizeof *table}
static const config_enum config_enums[] = {
    E(arch, arch_names), E(norm, norm_names), E(act, act_names), E(rope, rope_names),
    E(rope_scaling, scaling_names),
};
#undef E

cJSON *sg_config_to_json(const sg_model_config *c)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    const char *base = (const char *)c;
    for (size_t i = 0; i < sizeof config_enums / sizeof *config_enums; i++) {
        int v;
        memcpy(&v, base + config_enums[i].off, sizeof v);
        cJSON_AddStringToObject(o, config_enums[i].key,
                                v >= 0 && v < config_enums[i].n ? config_enums[i].names[v] : "?");
    }
    for (size_t i = 0; i < sizeof config_fields / sizeof *config_fields; i++) {
        const config_field *f = &config_fields[i];
        double v = 0;
        switch (f->kind) {
        case 'l': v = (double)*(const int64_t *)(base + f->off); break;
        case 'i': v = *(const int *)(base + f->off); break;
        case 'w': v = *(const int32_t *)(base + f->off); break;
        case 'd': v = *(const double *)(base + f->off); break;
        }
        cJSON_AddNumberToObject(o, f->key, v);
    }
    cJSON *ff = cJSON_AddArrayToObject(o, "rope_freq_factors");
    for (int64_t i = 0; ff && i < c->n_rope_freq_factors; i++)
        cJSON_AddItemToArray(ff, cJSON_CreateNumber(c->rope_freq_factors[i]));
    int64_t L = c->n_layers > 0 && c->n_layers <= SG_MAX_LAYERS ? c->n_layers : 0;
    const char *keys[4] = {"d_in", "d_mid", "d_out", "d_ffn"};
    const int64_t *arrs[4] = {c->d_in, c->d_mid, c->d_out, c->d_ffn};
    for (int k = 0; k < 4; k++) {
        cJSON *a = cJSON_AddArrayToObject(o, keys[k]);
        for (int64_t l = 0; a && l < L; l++)
            cJSON_AddItemToArray(a, cJSON_CreateNumber((double)arrs[k][l]));
    }
    return o;
}

static int config_fail(const char *what, const char *key, const char *problem)
{
    return sg_fail(SG_EFORMAT, "%s: model config: \"%s\" %s", what, key, problem);
}

/* An integral number that fits int64_t (and, for limit, that range). */
static int get_int(const cJSON *o, const char *key, double lo, double hi, int64_t *v,
                   const char *what)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(x))
        return config_fail(what, key, "is missing or not a number");
    double d = x->valuedouble;
    if (d != floor(d) || d < lo || d > hi)
        return config_fail(what, key, "is out of range");
    *v = (int64_t)d;
    return 0;
}

static int get_int_array(const cJSON *o, const char *key, int64_t n, int64_t *dst,
                         const char *what)
{
    const cJSON *a = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsArray(a) || cJSON_GetArraySize(a) != n)
        return config_fail(what, key, "is missing or has the wrong length");
    int64_t i = 0;
    const cJSON *x;
    cJSON_ArrayForEach(x, a)
    {
        if (!cJSON_IsNumber(x) || x->valuedouble != floor(x->valuedouble) ||
            x->valuedouble < 0 || x->valuedouble > 1e15)
            return config_fail(what, key, "holds something other than a width");
        dst[i++] = (int64_t)x->valuedouble;
    }
    return 0;
}

int sg_config_from_json(const cJSON *o, sg_model_config *c, const char *what)
{
    memset(c, 0, sizeof *c);
    if (!cJSON_IsObject(o))
        return sg_fail(SG_EFORMAT, "%s: no model config", what);
    char *base = (char *)c;
    for (size_t i = 0; i < sizeof config_enums / sizeof *config_enums; i++) {
        const config_enum *e = &config_enums[i];
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, e->key);
        int v = -1;
        for (int k = 0; cJSON_IsString(x) && k < e->n; k++)
            if (!strcmp(x->valuestring, e->names[k]))
                v = k;
        if (v < 0)
            return config_fail(what, e->key, "is missing or unknown");
        memcpy(base + e->off, &v, sizeof v);
    }
    for (size_t i = 0; i < sizeof config_fields / sizeof *config_fields; i++) {
        const config_field *f = &config_fields[i];
        const cJSON *x = cJSON_GetObjectItemCaseSensitive(o, f->key);
        if (f->kind == 'd') {
            if (!cJSON_IsNumber(x))
                return config_fail(what, f->key, "is missing or not a number");
            *(double *)(base + f->off) = x->valuedouble;
            continue;
        }
        int64_t v;
        int err = f->kind == 'l' ? get_int(o, f->key, -9e15, 9e15, &v, what)
                                 : get_int(o, f->key, -2147483648.0, 2147483647.0, &v, what);
        if (err)
            return err;
        if (f->kind == 'l')
            *(int64_t *)(base + f->off) = v;
        else if (f->kind == 'i')
            *(int *)(base + f->off) = (int)v;
        else
            *(int32_t *)(base + f->off) = (int32_t)v;
    }
    const cJSON *ff = cJSON_GetObjectItemCaseSensitive(o, "rope_freq_factors");
    int n = cJSON_GetArraySize(ff);
    if (!cJSON_IsArray(ff) || n > (int)(sizeof c->rope_freq_factors / sizeof(float)))
        return config_fail(what, "rope_freq_factors", "is missing or too long");
    const cJSON *x;
    cJSON_ArrayForEach(x, ff)
    {
        if (!cJSON_IsNumber(x))
            return config_fail(what, "rope_freq_factors", "holds something other than numbers");
        c->rope_freq_factors[c->n_rope_freq_factors++] = (float)x->valuedouble;
    }
    if (c->n_layers < 1 || c->n_layers > SG_MAX_LAYERS)
        return config_fail(what, "n_layers", "is out of range");
    int err = get_int_array(o, "d_in", c->n_layers, c->d_in, what);
    err = err ? err : get_int_array(o, "d_mid", c->n_layers, c->d_mid, what);
    err = err ? err : get_int_array(o, "d_out", c->n_layers, c->d_out, what);
    err = err ? err : get_int_array(o, "d_ffn", c->n_layers, c->d_ffn, what);
    return err ? err : sg_config_validate(c, what);
}

/* ---- file ---- */

int sg_rec_write_file(sg_frame_writer *w, const char *name, const void *data, uint64_t len)
{
    sg_frame_part p = {data, len};
    return sg_frame_write(w, SG_REC_FILE, name, &p, 1);
}

/* ---- block ---- */

typedef struct {
    uint32_t end, kind;
    int64_t layer;
} block_payload;

void sg_section_name(const sg_rec_block *b, char *buf, size_t n)
{
    if (b->kind == SG_SECTION_BLOCK)
        snprintf(buf, n, "blk.%lld", (long long)b->layer);
    else
        snprintf(buf, n, "%s", b->kind == SG_SECTION_EMBEDDINGS ? "embeddings" : "head");
}

int sg_rec_write_block(sg_frame_writer *w, const sg_rec_block *b)
{
    block_payload p = {(uint32_t)(b->end != 0), (uint32_t)b->kind,
                       b->kind == SG_SECTION_BLOCK ? b->layer : -1};
    char name[64];
    sg_section_name(b, name, sizeof name);
    sg_frame_part part = {&p, sizeof p};
    return sg_frame_write(w, SG_REC_BLOCK, name, &part, 1);
}

int sg_rec_read_block(const sg_record *rec, sg_rec_block *b)
{
    int err = want_type(rec, SG_REC_BLOCK);
    if (err)
        return err;
    block_payload p;
    if (rec->len != sizeof p)
        return bad_payload(rec, "block boundary payload is not 16 bytes");
    memcpy(&p, rec->payload, sizeof p);
    if (p.end > 1 || p.kind > SG_SECTION_HEAD ||
        (p.kind == SG_SECTION_BLOCK ? p.layer < 0 || p.layer >= SG_MAX_LAYERS : p.layer != -1))
        return bad_payload(rec, "block boundary has a bad phase, kind or layer");
    b->end = (int)p.end;
    b->kind = (sg_section_kind)p.kind;
    b->layer = p.layer;
    char name[64];
    sg_section_name(b, name, sizeof name);
    if (strcmp(name, rec->name))
        return bad_payload(rec, "block boundary name does not match its payload");
    return 0;
}

/* ---- tensor ---- */

int sg_rec_write_tensor(sg_frame_writer *w, const char *name, const float *data, int ndim,
                        const int64_t *shape)
{
    uint32_t meta[2] = {0, (uint32_t)ndim};
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    sg_frame_part p[3] = {{meta, sizeof meta},
                          {shape, (uint64_t)ndim * sizeof(int64_t)},
                          {data, (uint64_t)n * sizeof(float)}};
    return sg_frame_write(w, SG_REC_TENSOR, name, p, 3);
}

int sg_rec_read_tensor(const sg_record *rec, int *ndim, int64_t shape[4], const float **data)
{
    int err = want_type(rec, SG_REC_TENSOR);
    if (err)
        return err;
    uint32_t meta[2];
    if (rec->len < sizeof meta)
        return bad_payload(rec, "tensor payload too short");
    memcpy(meta, rec->payload, sizeof meta);
    if (meta[0] != 0)
        return bad_payload(rec, "tensor dtype is not float32 (0)");
    if (meta[1] < 1 || meta[1] > 4 || rec->len < sizeof meta + meta[1] * sizeof(int64_t))
        return bad_payload(rec, "tensor has a bad number of dimensions");
    uint64_t n = 1;
    for (uint32_t i = 0; i < meta[1]; i++) {
        memcpy(&shape[i], rec->payload + sizeof meta + i * sizeof(int64_t), sizeof(int64_t));
        if (shape[i] < 1 || shape[i] > ((int64_t)1 << 40) || n > SG_FRAME_PAYLOAD_MAX / shape[i])
            return bad_payload(rec, "tensor has a bad shape");
        n *= (uint64_t)shape[i];
    }
    uint64_t off = sizeof meta + meta[1] * sizeof(int64_t);
    if (rec->len != off + n * sizeof(float))
        return bad_payload(rec, "tensor payload size does not match its shape");
    *ndim = (int)meta[1];
    *data = (const float *)(rec->payload + off);
    return 0;
}

/* ---- act-ref ---- */

int sg_rec_write_act_ref(sg_frame_writer *w, const char *signal, const sg_rec_act_ref *a)
{
    int64_t f[5] = {a->layer, a->index, a->count, a->rows, a->width};
    sg_frame_part p[2] = {{f, sizeof f}, {a->path, strlen(a->path)}};
    return sg_frame_write(w, SG_REC_ACT_REF, signal, p, 2);
}

int sg_rec_read_act_ref(const sg_record *rec, sg_rec_act_ref *a)
{
    int err = want_type(rec, SG_REC_ACT_REF);
    if (err)
        return err;
    int64_t f[5];
    if (rec->len < sizeof f || rec->len - sizeof f >= sizeof a->path)
        return bad_payload(rec, "act-ref payload has a bad size");
    memcpy(f, rec->payload, sizeof f);
    a->layer = f[0];
    a->index = f[1];
    a->count = f[2];
    a->rows = f[3];
    a->width = f[4];
    size_t plen = rec->len - sizeof f;
    memcpy(a->path, rec->payload + sizeof f, plen);
    a->path[plen] = '\0';
    if (a->index < 0 || a->count < 1 || a->index >= a->count || a->rows < 1 || a->width < 1 ||
        plen == 0 || memchr(a->path, '\0', plen) || a->path[0] == '/' || strstr(a->path, ".."))
        return bad_payload(rec, "act-ref has a bad index, shape or path");
    return 0;
}

/* ---- covariance, rotation, spectrum ---- */

static int write_matrix(sg_frame_writer *w, int type, const char *signal, const int64_t *f,
                        int nf, const double *v, uint64_t count)
{
    sg_frame_part p[2] = {{f, nf * sizeof(int64_t)}, {v, count * sizeof(double)}};
    return sg_frame_write(w, type, signal, p, 2);
}

int sg_rec_write_cov(sg_frame_writer *w, const char *signal, int64_t layer, int64_t d,
                     int64_t tokens, const double *h)
{
    int64_t f[3] = {layer, d, tokens};
    return write_matrix(w, SG_REC_COV, signal, f, 3, h, (uint64_t)(d * d));
}

int sg_rec_write_rotation(sg_frame_writer *w, const char *signal, int64_t layer, int64_t D,
                          const double *q)
{
    int64_t f[2] = {layer, D};
    return write_matrix(w, SG_REC_ROTATION, signal, f, 2, q, (uint64_t)(D * D));
}

int sg_rec_write_spectrum(sg_frame_writer *w, const char *signal, int64_t layer, int64_t n,
                          const double *eig)
{
    int64_t f[2] = {layer, n};
    return write_matrix(w, SG_REC_SPECTRUM, signal, f, 2, eig, (uint64_t)n);
}

int sg_rec_read_matrix(const sg_record *rec, sg_rec_matrix *m)
{
    int nf = rec->type == SG_REC_COV ? 3 : 2;
    if (rec->type != SG_REC_COV && rec->type != SG_REC_ROTATION && rec->type != SG_REC_SPECTRUM)
        return sg_fail(SG_EARG, "%s: expected a covariance, rotation or spectrum record",
                       sg_rec_label(rec));
    int64_t f[3] = {0, 0, 0};
    if (rec->len < nf * sizeof(int64_t))
        return bad_payload(rec, "payload too short");
    memcpy(f, rec->payload, nf * sizeof(int64_t));
    m->layer = f[0];
    m->n = f[1];
    m->tokens = nf == 3 ? f[2] : 0;
    if (m->layer < -1 || m->layer >= SG_MAX_LAYERS || m->n < 1 || m->n > (1 << 20) ||
        m->tokens < 0)
        return bad_payload(rec, "bad layer, size or token count");
    uint64_t count = rec->type == SG_REC_SPECTRUM ? (uint64_t)m->n : (uint64_t)(m->n * m->n);
    if (rec->len != nf * sizeof(int64_t) + count * sizeof(double))
        return bad_payload(rec, "payload size does not match its dimension");
    m->values = (const double *)(rec->payload + nf * sizeof(int64_t));
    return 0;
}

void sg_signal_name(const char *what, int64_t layer, char *buf, size_t n)
{
    if (layer < 0)
        snprintf(buf, n, "%s", what);
    else
        snprintf(buf, n, "blk.%lld.%s", (long long)layer, what);
}

const char *sg_signal_kind(const char *name)
{
    const char *dot = strrchr(name, '.');
    return dot ? dot + 1 : name;
}

/* ---- abort ---- */

int sg_rec_write_abort(sg_frame_writer *w, const char *stage, const char *message)
{
    sg_frame_part p = {message, strlen(message)};
    return sg_frame_write(w, SG_REC_ABORT, stage, &p, 1);
}
