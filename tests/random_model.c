#include "random_model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "forward.h"
#include "model_files.h"
#include "safetensors.h"
#include "synth_model.h"

static uint64_t next_u64(uint64_t *s)
{
    /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

double test_gauss(uint64_t *s)
{
    double u1 = ((next_u64(s) >> 11) + 1.0) / 9007199254740993.0;
    double u2 = (next_u64(s) >> 11) / 9007199254740992.0;
    return sqrt(-2 * log(u1)) * cos(2 * M_PI * u2);
}

static sg_model_config base(void)
{
    sg_model_config c;
    memset(&c, 0, sizeof c);
    c.dim = 48;
    c.n_layers = 3;
    c.n_heads = 6;
    c.n_kv_heads = 2;
    c.head_dim = 8;
    c.ffn_dim = 80;
    c.vocab_size = 61;
    c.max_positions = 64;
    c.norm_eps = 1e-5;
    c.rope_theta = 10000;
    c.rope_dim = 8;
    c.bos_id = 1;
    c.eos_id = 2;
    return c;
}

sg_model_config test_config_llama(void)
{
    sg_model_config c = base();
    c.arch = SG_ARCH_LLAMA;
    c.gated_mlp = 1;
    c.act = SG_ACT_SILU;
    c.norm = SG_NORM_RMS;
    c.rope = SG_ROPE_HALF;
    sg_config_set_unsliced(&c);
    return c;
}

sg_model_config test_config_opt(void)
{
    sg_model_config c = base();
    c.arch = SG_ARCH_OPT;
    c.n_kv_heads = c.n_heads;
    c.act = SG_ACT_RELU;
    c.norm = SG_NORM_LAYER;
    c.rope = SG_ROPE_NONE;
    c.rope_dim = 0;
    c.pos_offset = 2;
    c.tied_embeddings = 1;
    c.qkv_bias = c.o_bias = c.mlp_bias = 1;
    sg_config_set_unsliced(&c);
    return c;
}

sg_model_config test_config_phi(void)
{
    sg_model_config c = base();
    c.arch = SG_ARCH_PHI;
    c.n_kv_heads = c.n_heads;
    c.act = SG_ACT_GELU_TANH;
    c.norm = SG_NORM_LAYER;
    c.rope = SG_ROPE_HALF;
    c.rope_dim = 4; /* partial rotary */
    c.parallel_block = 1;
    c.qkv_bias = c.o_bias = c.mlp_bias = c.lm_head_bias = 1;
    sg_config_set_unsliced(&c);
    return c;
}

typedef struct {
    uint64_t *seed;
    int64_t fan_in_default;
} fill_ctx;

static void fill(float *p, int64_t n, double mean, double sd, uint64_t *s)
{
    for (int64_t i = 0; i < n; i++)
        p[i] = (float)(mean + sd * test_gauss(s));
}

/* Matrices ~ N(0, 1/fan_in); norm scales ~ 1 + 0.1 N; biases ~ 0.1 N;
 * shortcuts ~ identity-ish plus noise. */
static int fill_tensor(const char *name, float **t, int64_t rows, int64_t cols, void *ctx)
{
    uint64_t *s = ctx;
    if (!*t)
        return 0;
    int is_norm = strstr(name, "norm.weight") != NULL;
    if (cols == 0)
        fill(*t, rows, is_norm ? 1.0 : 0.0, 0.1, s);
    else if (strstr(name, "shortcut")) {
        fill(*t, rows * cols, 0.0, 0.2 / sqrt((double)rows), s);
        for (int64_t i = 0; i < rows && i < cols; i++)
            (*t)[i * cols + i] += 1.0f;
    } else
        fill(*t, rows * cols, 0.0, 1.0 / sqrt((double)cols), s);
    return 0;
}

int test_model_random(const sg_model_config *cfg, uint64_t seed, test_model *tm)
{
    memset(tm, 0, sizeof *tm);
    sg_model *m = &tm->model;
    m->cfg = *cfg;
    const sg_model_config *c = &m->cfg;
    int64_t d0 = c->embed_dim, dh = c->head_in_dim, V = c->vocab_size;
    m->tok_embd = malloc(V * d0 * sizeof(float));
    fill(m->tok_embd, V * d0, 0, 1.0, &seed);
    if (c->rope == SG_ROPE_NONE) {
        int64_t n = (c->max_positions + c->pos_offset) * d0;
        m->pos_embd = malloc(n * sizeof(float));
        fill(m->pos_embd, n, 0, 0.5, &seed);
    }
    if (!c->sliced) {
        m->out_norm_w = malloc(dh * sizeof(float));
        fill(m->out_norm_w, dh, 1.0, 0.1, &seed);
        if (c->norm == SG_NORM_LAYER) {
            m->out_norm_b = malloc(dh * sizeof(float));
            fill(m->out_norm_b, dh, 0.0, 0.1, &seed);
        }
    }
    if (c->tied_embeddings) {
        m->lm_head = m->tok_embd;
    } else {
        m->lm_head = malloc(V * dh * sizeof(float));
        fill(m->lm_head, V * dh, 0, 1.0 / sqrt((double)dh), &seed);
    }
    if (c->lm_head_bias) {
        m->lm_head_b = malloc(V * sizeof(float));
        fill(m->lm_head_b, V, 0, 0.1, &seed);
    }
    tm->blocks = calloc(c->n_layers, sizeof(sg_block));
    for (int64_t l = 0; l < c->n_layers; l++) {
        int err = sg_block_alloc(c, l, &tm->blocks[l]);
        if (err)
            return err;
        sg_block *b = &tm->blocks[l];
        if (c->sliced) {
            /* sliced blocks carry shortcuts wherever the width changes */
            if (b->d_in != b->d_mid || c->parallel_block)
                b->attn_shortcut = calloc(b->d_in * b->d_mid, sizeof(float));
            if (!c->parallel_block && b->d_mid != b->d_out)
                b->mlp_shortcut = calloc(b->d_mid * b->d_out, sizeof(float));
        }
        sg_block_visit(c, l, b, fill_tensor, &seed);
    }
    return 0;
}

void test_model_free(test_model *tm)
{
    for (int64_t l = 0; tm->blocks && l < tm->model.cfg.n_layers; l++)
        sg_block_free(&tm->blocks[l]);
    free(tm->blocks);
    sg_model_free(&tm->model);
}

int test_model_logits(const test_model *tm, const int32_t *ids, const int64_t *offsets,
                      int64_t n_seq, float *logits)
{
    const sg_model_config *c = &tm->model.cfg;
    sg_seqs seqs = {n_seq, offsets, NULL};
    int64_t T = offsets[n_seq];
    float *x = malloc(T * c->dim * sizeof(float)), *y = malloc(T * c->dim * sizeof(float));
    int err = sg_embed(&tm->model, ids, &seqs, x);
    for (int64_t l = 0; !err && l < c->n_layers; l++) {
        err = sg_block_forward(c, &tm->blocks[l], x, y, NULL, &seqs);
        float *t = x;
        x = y;
        y = t;
    }
    double nll = 0;
    int64_t count = 0;
    if (!err)
        err = sg_head_nll(&tm->model, x, NULL, T, &nll, &count, NULL, logits);
    free(x);
    free(y);
    return err;
}

void test_config_make_sliced(sg_model_config *c)
{
    c->sliced = 1;
    c->norm = SG_NORM_RMS; /* sliced models have scale-free RMSNorms */
    c->embed_dim = 40;
    for (int64_t l = 0; l < c->n_layers; l++) {
        c->d_in[l] = l == 0 ? 40 : c->d_out[l - 1];
        c->d_mid[l] = 32 + 4 * l;
        c->d_out[l] = c->parallel_block ? c->d_mid[l] : 36 - 4 * l;
    }
    c->head_in_dim = c->d_out[c->n_layers - 1];
    c->tied_embeddings = 0;
}

sg_token_batch test_random_batch(int64_t n_seq, int64_t len, int64_t vocab, uint64_t seed)
{
    sg_token_batch b = {malloc(n_seq * len * sizeof(int32_t)),
                        malloc((n_seq + 1) * sizeof(int64_t)), n_seq, NULL};
    for (int64_t s = 0; s <= n_seq; s++)
        b.offsets[s] = s * len;
    for (int64_t i = 0; i < n_seq * len; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        b.ids[i] = (int32_t)((seed >> 33) % (uint64_t)vocab);
    }
    return b;
}

int test_synth_dir(sg_arch arch, int64_t ffn, const char *dir, sg_model_config *cfg)
{
    int err = sg_synth_config(arch, 64, 3, 4, arch == SG_ARCH_LLAMA ? 2 : 4, 16, ffn, 97, cfg);
    return err ? err : sg_synth_save_hf(dir, cfg, 5, SG_DT_F32, 2);
}

int test_slice_dir(const char *model_dir, const sg_token_batch *calib, sg_slice_options *o,
                   sg_slice_report *rep)
{
    sg_model_files *f;
    int err = sg_model_files_open(model_dir, &f);
    if (err)
        return err;
    o->chunk_tokens = 100;
    sg_slice_report own;
    err = sg_slice(f, calib, o, rep ? rep : &own);
    sg_model_files_close(f);
    return err;
}

int64_t test_stored_elements(const char *dir, int *shortcuts)
{
    sg_safetensors *st;
    if (sg_safetensors_open(dir, &st))
        return -1;
    int64_t n = 0;
    int sc = 0;
    for (int i = 0; i < sg_safetensors_count(st); i++) {
        n += sg_safetensors_at(st, i)->numel;
        sc += strstr(sg_safetensors_at(st, i)->name, "shortcut") != NULL;
    }
    sg_safetensors_close(st);
    if (shortcuts)
        *shortcuts = sc;
    return n;
}
