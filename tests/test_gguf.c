/* GGUF: a small llama model written in each storage type and read back;
 * the q/k permutation from rotate_half to pair-wise RoPE; rope scaling and
 * sliced widths round trips; hand-made broken files, each refused with the
 * right code and a message naming the file; and, if present, the real
 * SmolLM2 file checked against values from the python gguf package. */
#include <errno.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "gguf.h"
#include "sg_error.h"
#include "tap.h"

static const char *dir;

static const char *path_in_dir(const char *name)
{
    static char buf[8][512];
    static int next;
    char *out = buf[next++ % 8];
    snprintf(out, 512, "%s/%s", dir, name);
    return out;
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

static int msg_has(const char *s) { return strstr(sg_last_error(), s) != NULL; }

/* ---- a deterministic generator (splitmix64) ---- */

static uint64_t rng = 0x5eed;

static float rnd(void)
{
    uint64_t z = (rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) / 9007199254740992.0 * 2.0 - 1.0);
}

/* ---- GGML storage decoded independently, from the format description ---- */

static float half(const unsigned char *p)
{
    unsigned h = p[0] | p[1] << 8, e = (h >> 10) & 31, m = h & 1023;
    float v = e == 0    ? ldexpf((float)m, -24)
              : e == 31 ? INFINITY
                        : ldexpf((float)(m | 1024), (int)e - 25);
    return h & 0x8000 ? -v : v;
}

static void decode(sg_dtype dt, const unsigned char *p, float *out, int64_t n)
{
    for (int64_t i = 0; i < n; i++) {
        int64_t b = i / 32, j = i % 32;
        switch (dt) {
        case SG_DT_F32: memcpy(&out[i], p + 4 * i, 4); break;
        case SG_DT_F16: out[i] = half(p + 2 * i); break;
        case SG_DT_BF16: {
            uint32_t u = (uint32_t)(p[2 * i] | p[2 * i + 1] << 8) << 16;
            memcpy(&out[i], &u, 4);
            break;
        }
        case SG_DT_Q8_0: out[i] = half(p + 34 * b) * (float)(int8_t)p[34 * b + 2 + j]; break;
        case SG_DT_Q4_0: {
            const unsigned char *q = p + 18 * b + 2;
            int v = j < 16 ? q[j] & 15 : q[j - 16] >> 4;
            out[i] = half(p + 18 * b) * (float)(v - 8);
            break;
        }
        case SG_DT_Q4_1: {
            const unsigned char *q = p + 20 * b + 4;
            int v = j < 16 ? q[j] & 15 : q[j - 16] >> 4;
            out[i] = half(p + 20 * b) * (float)v + half(p + 20 * b + 2);
            break;
        }
        default: out[i] = NAN;
        }
    }
}

/* ---- a toy llama model ---- */

#define MAX_T 40

typedef struct {
    sg_model_config cfg;
    sg_named_tensor t[MAX_T];
    char names[MAX_T][64];
    float *data[MAX_T];
    int n;
} toy;

static void toy_add(toy *m, const char *name, int64_t rows, int64_t cols)
{
    int i = m->n++;
    int64_t n = rows * (cols ? cols : 1);
    snprintf(m->names[i], 64, "%s", name);
    m->data[i] = malloc(n * sizeof(float));
    for (int64_t k = 0; k < n; k++)
        m->data[i][k] = rnd();
    m->t[i] = (sg_named_tensor){m->names[i], cols ? 2 : 1, {rows, cols}, m->data[i]};
}

/* D = 64, 2 layers, 4 heads of 16 (2 kv heads), FFN 96, vocab 40 */
static void toy_build(toy *m, sg_rope_layout rope, int64_t rope_dim, int tied)
{
    memset(m, 0, sizeof *m);
    sg_model_config *c = &m->cfg;
    c->arch = SG_ARCH_LLAMA;
    c->dim = 64, c->n_layers = 2, c->n_heads = 4, c->n_kv_heads = 2, c->head_dim = 16;
    c->ffn_dim = 96, c->vocab_size = 40, c->max_positions = 256;
    c->gated_mlp = 1, c->act = SG_ACT_SILU, c->norm = SG_NORM_RMS, c->norm_eps = 1e-5;
    c->rope = rope, c->rope_theta = 10000, c->rope_dim = rope_dim;
    c->tied_embeddings = tied, c->bos_id = 1, c->eos_id = 2;
    sg_config_set_unsliced(c);
    char name[64];
    toy_add(m, "token_embd.weight", 40, 64);
    for (int l = 0; l < 2; l++) {
#define BLK(suffix, rows, cols) \
    (snprintf(name, sizeof name, "blk.%d." suffix, l), toy_add(m, name, rows, cols))
        BLK("attn_norm.weight", 64, 0);
        BLK("attn_q.weight", 64, 64);  /* (heads*hd, D) */
        BLK("attn_k.weight", 32, 64);  /* (kv_heads*hd, D) */
        BLK("attn_v.weight", 32, 64);
        BLK("attn_output.weight", 64, 64);
        BLK("ffn_norm.weight", 64, 0);
        BLK("ffn_gate.weight", 96, 64); /* (F, D) */
        BLK("ffn_up.weight", 96, 64);
        BLK("ffn_down.weight", 64, 96); /* (D, F) */
#undef BLK
    }
    toy_add(m, "output_norm.weight", 64, 0);
    if (!tied)
        toy_add(m, "output.weight", 40, 64);
}

static void toy_free(toy *m)
{
    for (int i = 0; i < m->n; i++)
        free(m->data[i]);
}

/* ---- write, read back, compare ---- */

static void check_config(const sg_model_config *a, const sg_model_config *b, const char *what)
{
    tap_ok(a->dim == b->dim && a->n_layers == b->n_layers && a->n_heads == b->n_heads &&
               a->n_kv_heads == b->n_kv_heads && a->head_dim == b->head_dim &&
               a->ffn_dim == b->ffn_dim && a->vocab_size == b->vocab_size &&
               a->max_positions == b->max_positions && a->rope_dim == b->rope_dim,
           "%s: sizes read back", what);
    tap_ok(a->norm_eps == (double)(float)b->norm_eps && a->rope_theta == b->rope_theta,
           "%s: eps %g and rope base %g read back (as f32)", what, a->norm_eps, a->rope_theta);
    tap_ok(a->arch == SG_ARCH_LLAMA && a->rope == SG_ROPE_PAIRS && a->gated_mlp &&
               a->act == SG_ACT_SILU && a->norm == SG_NORM_RMS && !a->sliced &&
               a->tied_embeddings == b->tied_embeddings && a->bos_id == b->bos_id &&
               a->eos_id == b->eos_id && !a->qkv_bias,
           "%s: llama, pair-wise RoPE, tied=%d, bos/eos", what, a->tied_embeddings);
}

static void roundtrip(sg_dtype qt)
{
    const char *name = sg_dtype_name(qt);
    char file[64];
    snprintf(file, sizeof file, "toy-%s.gguf", name);
    const char *path = path_in_dir(file);
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    toy m;
    toy_build(&m, SG_ROPE_PAIRS, 16, 0);
    sg_clear_error();
    int rc = sg_gguf_save_model(path, &m.cfg, m.t, m.n, qt, NULL);
    tap_ok(rc == 0 && exists(path) && !exists(tmp), "%s: saved (%s)", name, sg_last_error());

    sg_gguf *g;
    rc = sg_gguf_open(path, &g);
    if (!tap_ok(rc == 0, "%s: opens (%s)", name, sg_last_error())) {
        toy_free(&m);
        return;
    }
    const char *arch = NULL;
    int64_t align = 0;
    sg_gguf_get_string(g, "general.architecture", &arch);
    sg_gguf_get_int(g, "general.alignment", &align);
    tap_ok(sg_gguf_version(g) == 3 && arch && !strcmp(arch, "llama") && align == 32 &&
               sg_gguf_alignment(g) == 32,
           "%s: GGUF v3, llama, alignment 32", name);
    sg_model_config cfg;
    rc = sg_gguf_model_config(g, &cfg);
    tap_ok(rc == 0, "%s: model config (%s)", name, sg_last_error());
    check_config(&cfg, &m.cfg, name);

    int layout_ok = sg_gguf_tensor_count(g) == m.n, bytes_ok = 1, decode_ok = 1;
    double worst = 0;
    for (int i = 0; i < m.n; i++) {
        const sg_named_tensor *src = &m.t[i];
        const sg_gguf_tensor *t = sg_gguf_find(g, src->name);
        if (!t) {
            layout_ok = 0;
            continue;
        }
        int64_t rows = src->shape[0], cols = src->ndim == 2 ? src->shape[1] : 1;
        int64_t n = rows * cols;
        /* GGUF lists the innermost dim first: (rows, cols) is ne = [cols, rows] */
        sg_dtype want = src->ndim == 2 ? qt : SG_DT_F32;
        if (t->dtype != want || t->ndim != src->ndim || t->numel != n ||
            (src->ndim == 2 ? t->ne[0] != cols || t->ne[1] != rows : t->ne[0] != rows) ||
            t->offset % 32 != 0 || t->nbytes != (uint64_t)sg_dtype_bytes(want, n))
            layout_ok = 0;
        /* stored bytes are GGML's quantization of the data ... */
        unsigned char *raw = malloc(t->nbytes), *expect = malloc(t->nbytes);
        float *got = malloc(n * sizeof *got), *ref = malloc(n * sizeof *ref);
        sg_from_f32(want, src->data, expect, n);
        if (sg_gguf_read_raw(g, t, raw) || memcmp(raw, expect, t->nbytes))
            bytes_ok = 0;
        /* ... and read_f32 decodes them as the format says */
        decode(want, raw, ref, n);
        if (sg_gguf_read_f32(g, t, got) || memcmp(got, ref, n * sizeof *got))
            decode_ok = 0;
        for (int64_t k = 0; k < n; k++)
            worst = fmax(worst, fabs(got[k] - src->data[k]));
        free(raw), free(expect), free(got), free(ref);
    }
    tap_ok(layout_ok, "%s: %d tensors, types, ne = [cols, rows], aligned offsets", name, m.n);
    tap_ok(bytes_ok, "%s: stored blocks equal the reference quantization", name);
    tap_ok(decode_ok, "%s: read_f32 equals an independent decode of the stored blocks", name);
    /* data in [-1, 1]: Q4_0 can be off by a whole step of 1/8, Q4_1 by half of 2/15 */
    double tol = qt == SG_DT_F32 ? 0 : qt == SG_DT_F16 ? 1e-3 : qt == SG_DT_BF16 ? 4e-3
               : qt == SG_DT_Q8_0 ? 1.0 / 127 : qt == SG_DT_Q4_0 ? 1.0 / 8 + 1e-3 : 1.0 / 15 + 1e-3;
    tap_ok(worst <= tol, "%s: max error vs the original %.3g <= %.3g", name, worst, tol);
    sg_gguf_close(g);
    toy_free(&m);
}

/* A rotate_half model saved, read back pair-wise: per head, row 2i is old
 * row i and row 2i+1 is old row i + rope_dim/2; rows past rope_dim stay. */
static void permutation(int64_t rope_dim)
{
    const char *path = path_in_dir(rope_dim == 16 ? "half.gguf" : "half-partial.gguf");
    toy m;
    toy_build(&m, SG_ROPE_HALF, rope_dim, 1);
    /* biases are rows too: they must move with their rows */
    toy_add(&m, "blk.0.attn_q.bias", 64, 0);
    sg_clear_error();
    int rc = sg_gguf_save_model(path, &m.cfg, m.t, m.n, SG_DT_F32, NULL);
    sg_gguf *g = NULL;
    sg_model_config cfg;
    if (!tap_ok(rc == 0 && sg_gguf_open(path, &g) == 0 && sg_gguf_model_config(g, &cfg) == 0,
                "rope_dim %lld: rotate_half model saved and read (%s)", (long long)rope_dim,
                sg_last_error())) {
        sg_gguf_close(g);
        toy_free(&m);
        return;
    }
    tap_ok(cfg.rope == SG_ROPE_PAIRS && cfg.tied_embeddings && cfg.qkv_bias &&
               cfg.rope_dim == rope_dim,
           "rope_dim %lld: read back as pair-wise, tied, with q/k/v biases", (long long)rope_dim);
    const int64_t hd = 16, half = rope_dim / 2;
    int ok = 1, others_ok = 1;
    for (int i = 0; i < m.n; i++) {
        const sg_named_tensor *src = &m.t[i];
        const sg_gguf_tensor *t = sg_gguf_find(g, src->name);
        int64_t rows = src->shape[0], cols = src->ndim == 2 ? src->shape[1] : 1;
        float *got = malloc(rows * cols * sizeof *got);
        sg_gguf_read_f32(g, t, got);
        int qk = strstr(src->name, "attn_q.") || strstr(src->name, "attn_k.");
        for (int64_t r = 0; r < rows; r++) {
            int64_t h = r / hd, j = r % hd, from = r;
            if (qk && j < rope_dim)
                from = h * hd + (j % 2 == 0 ? j / 2 : j / 2 + half);
            if (memcmp(got + r * cols, src->data + from * cols, cols * sizeof *got))
                *(qk ? &ok : &others_ok) = 0;
        }
        free(got);
    }
    tap_ok(ok, "rope_dim %lld: q/k rows (and q bias) permuted per head as llama.cpp does",
           (long long)rope_dim);
    tap_ok(others_ok, "rope_dim %lld: every other tensor unchanged", (long long)rope_dim);
    sg_gguf_close(g);
    toy_free(&m);
}

/* Rope scaling, sliced widths and a tokenizer vocabulary in the metadata. */
static void metadata_roundtrips(void)
{
    toy m;
    sg_gguf *g;
    sg_model_config cfg;
    const char *path = path_in_dir("meta.gguf");

    toy_build(&m, SG_ROPE_PAIRS, 16, 1);
    m.cfg.rope_scaling = SG_ROPE_SCALE_LINEAR, m.cfg.rope_factor = 2;
    m.cfg.rope_original_max_positions = 128;
    const char *tokens[40], *merges[] = {"a b", "ab c"};
    char tokbuf[40][8];
    int32_t types[40];
    for (int i = 0; i < 40; i++) {
        snprintf(tokbuf[i], 8, "t%d", i);
        tokens[i] = tokbuf[i];
        types[i] = i < 3 ? 3 : 1;
    }
    sg_gguf_vocab vocab = {"gpt2", "smollm", tokens, NULL, types, 40, merges, 2};
    int rc = sg_gguf_save_model(path, &m.cfg, m.t, m.n, SG_DT_Q8_0, &vocab);
    if (tap_ok(rc == 0 && sg_gguf_open(path, &g) == 0, "linear scaling + vocab: written (%s)",
               sg_last_error())) {
        rc = sg_gguf_model_config(g, &cfg);
        tap_ok(rc == 0 && cfg.rope_scaling == SG_ROPE_SCALE_LINEAR && cfg.rope_factor == 2 &&
                   cfg.rope_original_max_positions == 128 && cfg.n_rope_freq_factors == 0,
               "linear rope scaling read back");
        const char *model, *pre;
        const char *const *tk, *const *mg;
        size_t nt = 0, nm = 0, ny = 0;
        int32_t *ty = NULL;
        rc = sg_gguf_get_string(g, "tokenizer.ggml.model", &model) ||
             sg_gguf_get_string(g, "tokenizer.ggml.pre", &pre) ||
             sg_gguf_get_string_array(g, "tokenizer.ggml.tokens", &tk, &nt) ||
             sg_gguf_get_string_array(g, "tokenizer.ggml.merges", &mg, &nm) ||
             sg_gguf_get_int_array(g, "tokenizer.ggml.token_type", &ty, &ny);
        tap_ok(!rc && !strcmp(model, "gpt2") && !strcmp(pre, "smollm") && nt == 40 &&
                   !strcmp(tk[17], "t17") && nm == 2 && !strcmp(mg[1], "ab c") && ny == 40 &&
                   ty[0] == 3 && ty[39] == 1,
               "tokenizer.ggml.* written and read back");
        free(ty);
        float *f;
        size_t nf;
        tap_ok(sg_gguf_get_float_array(g, "tokenizer.ggml.tokens", &f, &nf) == SG_EFORMAT &&
                   msg_has(path) && msg_has("tokenizer.ggml.tokens"),
               "a string array is not a float array: %s", sg_last_error());
        tap_ok(sg_gguf_get_int(g, "general.architecture", &(int64_t){0}) == SG_EFORMAT,
               "a string is not an integer");
        tap_ok(sg_gguf_get_int(g, "no.such.key", &(int64_t){0}) == SG_EMISSING &&
                   msg_has("no.such.key") && msg_has(path),
               "a missing key: %s", sg_last_error());
        sg_gguf_close(g);
    }

    /* Llama-3 scaling travels as rope_freqs.weight divisors (rope_dim/2) */
    m.cfg.rope_scaling = SG_ROPE_SCALE_LLAMA3, m.cfg.rope_factor = 8;
    m.cfg.rope_low_freq_factor = 1, m.cfg.rope_high_freq_factor = 4;
    m.cfg.rope_original_max_positions = 8192;
    path = path_in_dir("llama3.gguf");
    sg_clear_error();
    rc = sg_gguf_save_model(path, &m.cfg, m.t, m.n, SG_DT_F16, NULL);
    if (tap_ok(rc == 0 && sg_gguf_open(path, &g) == 0 && sg_gguf_model_config(g, &cfg) == 0,
               "llama3 scaling: written and read (%s)", sg_last_error())) {
        /* wavelength 2*pi (i = 0) is short: 1; 2*pi*10000^(14/16) > 8192: factor */
        tap_ok(cfg.n_rope_freq_factors == 8 && cfg.rope_freq_factors[0] == 1 &&
                   cfg.rope_freq_factors[7] == 8 && cfg.rope_scaling == SG_ROPE_SCALE_NONE,
               "rope_freqs.weight -> 8 per-frequency factors, 1 ... 8");
        sg_gguf_close(g);
    }

    /* sliced widths (SliceGPT's own keys) */
    m.cfg.rope_scaling = SG_ROPE_SCALE_NONE;
    m.cfg.sliced = 1, m.cfg.embed_dim = 48, m.cfg.head_in_dim = 40;
    m.cfg.d_in[0] = 48, m.cfg.d_mid[0] = 56, m.cfg.d_out[0] = 40;
    m.cfg.d_in[1] = 40, m.cfg.d_mid[1] = 32, m.cfg.d_out[1] = 40;
    path = path_in_dir("sliced.gguf");
    sg_clear_error();
    rc = sg_gguf_save_model(path, &m.cfg, m.t, m.n, SG_DT_F32, NULL);
    if (tap_ok(rc == 0 && sg_gguf_open(path, &g) == 0 && sg_gguf_model_config(g, &cfg) == 0,
               "sliced: written and read (%s)", sg_last_error())) {
        tap_ok(cfg.sliced && cfg.norm_dim == 64 && cfg.embed_dim == 48 && cfg.head_in_dim == 40 &&
                   cfg.d_mid[0] == 56 && cfg.d_in[1] == 40 && cfg.d_mid[1] == 32 &&
                   cfg.d_out[1] == 40,
               "sliced widths read back");
        sg_gguf_close(g);
    }
    toy_free(&m);
}

/* The writer refuses what GGUF llama cannot hold and leaves no file behind. */
static void writer_errors(void)
{
    toy m;
    toy_build(&m, SG_ROPE_PAIRS, 16, 1);
    const char *path = path_in_dir("refused.gguf");
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);

    m.cfg.arch = SG_ARCH_OPT;
    tap_ok(sg_gguf_save_model(path, &m.cfg, m.t, m.n, SG_DT_F32, NULL) == SG_EUNSUPPORTED &&
               msg_has(path),
           "OPT refused: %s", sg_last_error());
    m.cfg.arch = SG_ARCH_LLAMA;
    m.t[1].name = m.t[0].name;
    tap_ok(sg_gguf_save_model(path, &m.cfg, m.t, m.n, SG_DT_F32, NULL) == SG_EARG &&
               msg_has("token_embd.weight"),
           "a tensor given twice refused: %s", sg_last_error());
    m.t[1].name = m.names[1];
    tap_ok(!exists(path) && !exists(tmp), "nothing left behind");

    const char *nodir = path_in_dir("no/such/dir/x.gguf");
    tap_ok(sg_gguf_save_model(nodir, &m.cfg, m.t, m.n, SG_DT_F32, NULL) == -ENOENT,
           "a missing directory: %s", sg_last_error());

    /* a write failing half way (file size limit): error, temporary removed */
    struct rlimit old, lim;
    getrlimit(RLIMIT_FSIZE, &old);
    lim = old;
    lim.rlim_cur = 8192;
    signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &lim);
    int rc = sg_gguf_save_model(path, &m.cfg, m.t, m.n, SG_DT_F32, NULL);
    setrlimit(RLIMIT_FSIZE, &old);
    tap_ok(rc == -EFBIG && msg_has(path) && !exists(path) && !exists(tmp),
           "a failed write returns its error and removes the temporary: %s", sg_last_error());
    toy_free(&m);
}

/* ---- hand-made files ---- */

typedef struct {
    unsigned char b[1 << 12];
    size_t n;
} bytes;

static void put(bytes *f, const void *p, size_t n) { memcpy(f->b + f->n, p, n), f->n += n; }
static void u32(bytes *f, uint32_t v) { put(f, &v, 4); }
static void u64(bytes *f, uint64_t v) { put(f, &v, 8); }
static void str(bytes *f, const char *s) { u64(f, strlen(s)), put(f, s, strlen(s)); }

static void header(bytes *f, uint32_t version, uint64_t n_tensors, uint64_t n_kv)
{
    f->n = 0;
    put(f, "GGUF", 4), u32(f, version), u64(f, n_tensors), u64(f, n_kv);
}

static void kv_u32(bytes *f, const char *key, uint32_t v) { str(f, key), u32(f, 4), u32(f, v); }

/* a tensor info: ne[0..ndim) innermost first */
static void tinfo(bytes *f, const char *name, uint32_t ndim, uint64_t ne0, uint64_t ne1,
                  uint32_t type, uint64_t offset)
{
    str(f, name), u32(f, ndim);
    for (uint32_t d = 0; d < ndim; d++)
        u64(f, d == 0 ? ne0 : d == 1 ? ne1 : 1);
    u32(f, type), u64(f, offset);
}

/* padding to 32, then n bytes of data */
static void data(bytes *f, size_t n)
{
    while (f->n % 32)
        f->b[f->n++] = 0;
    memset(f->b + f->n, 0x3f, n);
    f->n += n;
}

/* Two F32 tensors: a (32) at 0, b (32, 2) at 128; 384 bytes of data. */
static void good(bytes *f, uint32_t version)
{
    header(f, version, 2, 2);
    str(f, "general.architecture"), u32(f, 8), str(f, "llama");
    kv_u32(f, "general.alignment", 32);
    tinfo(f, "a", 1, 32, 0, 0, 0);
    tinfo(f, "b", 2, 32, 2, 0, 128);
    data(f, 384);
}

static const char *save(const bytes *f, const char *name)
{
    const char *path = path_in_dir(name);
    FILE *fp = fopen(path, "wb");
    fwrite(f->b, 1, f->n, fp);
    fclose(fp);
    return path;
}

/* Opens a crafted file expecting code; the message names the file and
 * contains want (a tensor or key name, or the problem). */
static void refused(const bytes *f, const char *name, int code, const char *want)
{
    const char *path = save(f, name);
    sg_gguf *g = (sg_gguf *)1;
    sg_clear_error();
    int rc = sg_gguf_open(path, &g);
    tap_ok(rc == code && g == NULL && msg_has(path) && msg_has(want), "%s: %s (%d)", name,
           sg_last_error(), rc);
}

static void crafted_files(void)
{
    bytes f;
    sg_gguf *g;

    good(&f, 3);
    const char *path = save(&f, "good-v3.gguf");
    sg_clear_error();
    int rc = sg_gguf_open(path, &g);
    if (tap_ok(rc == 0, "a hand-made v3 file opens (%s)", sg_last_error())) {
        const sg_gguf_tensor *b = sg_gguf_find(g, "b");
        tap_ok(sg_gguf_tensor_count(g) == 2 && b && b->ne[0] == 32 && b->ne[1] == 2 &&
                   b->offset == f.n - 256 && b->nbytes == 256 && !sg_gguf_find(g, "c"),
               "its tensor infos: b at absolute offset %llu", (unsigned long long)b->offset);
        sg_gguf_close(g);
    }
    good(&f, 2);
    path = save(&f, "good-v2.gguf");
    tap_ok(sg_gguf_open(path, &g) == 0, "a v2 file opens");
    sg_gguf_close(g);

    good(&f, 3);
    f.b[0] = 'X';
    refused(&f, "bad-magic.gguf", SG_EFORMAT, "magic");
    good(&f, 1);
    refused(&f, "version1.gguf", SG_EUNSUPPORTED, "version 1");
    good(&f, 3);
    f.n = 20;
    refused(&f, "short-header.gguf", SG_EFORMAT, "header: truncated");
    good(&f, 3);
    f.n = 60;
    refused(&f, "short-metadata.gguf", SG_EFORMAT, "truncated");
    good(&f, 3);
    f.n -= 10;
    refused(&f, "short-data.gguf", SG_EFORMAT, "b: data");

    header(&f, 3, 0, 1);
    u64(&f, 1ull << 62);
    data(&f, 256);
    refused(&f, "huge-key.gguf", SG_EFORMAT, "string length");
    header(&f, 3, 0, 1);
    str(&f, "k"), u32(&f, 8), u64(&f, 1ull << 62);
    data(&f, 256);
    refused(&f, "huge-string.gguf", SG_EFORMAT, "k: string length");
    header(&f, 3, 0, 1);
    str(&f, "k"), u32(&f, 9), u32(&f, 4), u64(&f, 1ull << 61);
    data(&f, 256);
    refused(&f, "huge-array.gguf", SG_EFORMAT, "k: array length");
    header(&f, 3, 1ull << 40, 0);
    data(&f, 256);
    refused(&f, "huge-tensor-count.gguf", SG_EFORMAT, "tensor count");
    header(&f, 3, 0, 1ull << 40);
    refused(&f, "huge-kv-count.gguf", SG_EFORMAT, "metadata count");

    header(&f, 3, 2, 0);
    tinfo(&f, "a", 1, 32, 0, 0, 0), tinfo(&f, "b", 1, 32, 0, 0, 132);
    data(&f, 384);
    refused(&f, "unaligned.gguf", SG_EFORMAT, "b: offset 132 is not a multiple");
    header(&f, 3, 2, 0);
    tinfo(&f, "a", 1, 32, 0, 0, 0), tinfo(&f, "b", 1, 32, 0, 0, 96);
    data(&f, 384);
    refused(&f, "overlap.gguf", SG_EFORMAT, "overlaps");
    header(&f, 3, 2, 0);
    tinfo(&f, "a", 1, 32, 0, 0, 0), tinfo(&f, "b", 2, 256, 1, 12, 128);
    data(&f, 384);
    refused(&f, "q4_k.gguf", SG_EUNSUPPORTED, "b: ggml type Q4_K (12)");
    header(&f, 3, 1, 0);
    tinfo(&f, "a", 1, 32, 0, 99, 0);
    data(&f, 128);
    refused(&f, "type99.gguf", SG_EUNSUPPORTED, "a: ggml type unknown (99)");
    header(&f, 3, 2, 0);
    tinfo(&f, "a", 1, 32, 0, 0, 0), tinfo(&f, "a", 1, 32, 0, 0, 128);
    data(&f, 384);
    refused(&f, "duplicate-tensor.gguf", SG_EFORMAT, "a: duplicate tensor name");
    header(&f, 3, 0, 2);
    kv_u32(&f, "x", 1), kv_u32(&f, "x", 2);
    refused(&f, "duplicate-key.gguf", SG_EFORMAT, "x: duplicate metadata key");

    header(&f, 3, 1, 0);
    tinfo(&f, "a", 0, 0, 0, 0, 0);
    data(&f, 128);
    refused(&f, "ndim0.gguf", SG_EFORMAT, "a: 0 dimensions");
    header(&f, 3, 1, 0);
    tinfo(&f, "a", 5, 32, 1, 0, 0);
    data(&f, 128);
    refused(&f, "ndim5.gguf", SG_EFORMAT, "a: 5 dimensions");
    header(&f, 3, 1, 0);
    tinfo(&f, "a", 2, 1ull << 40, 1ull << 40, 0, 0);
    data(&f, 128);
    refused(&f, "ne-overflow.gguf", SG_EFORMAT, "a: dimension 1");
    header(&f, 3, 1, 0);
    tinfo(&f, "a", 2, 48, 2, 2, 0); /* Q4_0 rows of 48: not whole blocks */
    data(&f, 128);
    refused(&f, "partial-block.gguf", SG_EFORMAT, "a: row length 48 is not a multiple of 32");
    header(&f, 3, 1, 1);
    kv_u32(&f, "general.alignment", 48);
    tinfo(&f, "a", 1, 32, 0, 0, 0);
    data(&f, 128);
    refused(&f, "alignment48.gguf", SG_EFORMAT, "general.alignment: 48 is not a power of two");

    /* arrays of arrays are skipped, bounds-checked */
    header(&f, 3, 0, 2);
    str(&f, "nested"), u32(&f, 9), u32(&f, 9), u64(&f, 2);
    u32(&f, 0), u64(&f, 3), put(&f, "abc", 3);
    u32(&f, 8), u64(&f, 1), str(&f, "xy");
    kv_u32(&f, "after", 7);
    path = save(&f, "nested.gguf");
    int64_t after = 0;
    int32_t *ia;
    size_t n;
    rc = sg_gguf_open(path, &g);
    int nested_ok = rc == 0 && sg_gguf_get_int(g, "after", &after) == 0 && after == 7 &&
                    sg_gguf_get_int_array(g, "nested", &ia, &n) == SG_EFORMAT;
    tap_ok(nested_ok, "an array of arrays is skipped (the key after it reads %lld)",
           (long long)after);
    if (rc == 0)
        sg_gguf_close(g);
    header(&f, 3, 0, 1);
    str(&f, "nested"), u32(&f, 9), u32(&f, 9), u64(&f, 1);
    u32(&f, 0), u64(&f, 1ull << 50);
    data(&f, 256);
    refused(&f, "nested-huge.gguf", SG_EFORMAT, "nested: array length");

    /* metadata-only qwen2: rotate_half RoPE and q/k/v biases */
    header(&f, 3, 0, 8);
    str(&f, "general.architecture"), u32(&f, 8), str(&f, "qwen2");
    kv_u32(&f, "qwen2.embedding_length", 64), kv_u32(&f, "qwen2.block_count", 1);
    kv_u32(&f, "qwen2.feed_forward_length", 96), kv_u32(&f, "qwen2.attention.head_count", 4);
    kv_u32(&f, "qwen2.context_length", 128), kv_u32(&f, "qwen2.vocab_size", 100);
    str(&f, "qwen2.attention.layer_norm_rms_epsilon"), u32(&f, 6), put(&f, &(float){1e-6f}, 4);
    path = save(&f, "qwen2.gguf");
    sg_model_config cfg;
    sg_clear_error();
    rc = sg_gguf_open(path, &g);
    tap_ok(rc == 0 && sg_gguf_model_config(g, &cfg) == 0 && cfg.rope == SG_ROPE_HALF &&
               cfg.qkv_bias && cfg.n_kv_heads == 4 && cfg.head_dim == 16 && cfg.rope_dim == 16 &&
               cfg.rope_theta == 10000 && cfg.tied_embeddings,
           "qwen2: rotate_half RoPE, biases, defaults (%s)", sg_last_error());
    if (rc == 0)
        sg_gguf_close(g);
}

/* ---- the real model, if present ---- */

static void real_model(void)
{
    char def[4096];
    const char *path = getenv("SG_DEFAULT_MODEL");
    if (!path || !*path) {
        snprintf(def, sizeof def, "%s/.cache/slicegpt-stream/SmolLM2-135M-Instruct.Q4_1.gguf",
                 getenv("HOME") ? getenv("HOME") : "");
        path = def;
    }
    if (!exists(path)) {
        char why[4200];
        snprintf(why, sizeof why, "%s not present", path);
        tap_skip("SmolLM2 GGUF", why);
        return;
    }
    sg_gguf *g;
    sg_model_config c;
    sg_clear_error();
    int rc = sg_gguf_open(path, &g);
    if (!tap_ok(rc == 0, "SmolLM2: opens (%s)", sg_last_error()))
        return;
    rc = sg_gguf_model_config(g, &c);
    tap_ok(rc == 0 && c.n_layers == 30 && c.dim == 576 && c.n_heads == 9 && c.n_kv_heads == 3 &&
               c.head_dim == 64 && c.ffn_dim == 1536 && c.vocab_size == 49152 &&
               c.rope_theta == 100000 && c.rope_dim == 64 && c.max_positions == 8192 &&
               fabs(c.norm_eps - 1e-5) < 1e-10,
           "SmolLM2: 30 layers, D 576, 9/3 heads of 64, FFN 1536, vocab 49152, base 1e5 (%s)",
           sg_last_error());
    tap_ok(c.rope == SG_ROPE_PAIRS && c.tied_embeddings && c.bos_id == 1 && c.eos_id == 2 &&
               !c.qkv_bias && c.rope_scaling == SG_ROPE_SCALE_NONE && !c.n_rope_freq_factors,
           "SmolLM2: pair-wise RoPE, tied embeddings, bos 1, eos 2");
    const sg_gguf_tensor *e = sg_gguf_find(g, "token_embd.weight"),
                         *q = sg_gguf_find(g, "blk.0.attn_q.weight"),
                         *nrm = sg_gguf_find(g, "blk.0.attn_norm.weight");
    tap_ok(sg_gguf_tensor_count(g) == 272 && e && e->dtype == SG_DT_Q8_0 && e->ne[0] == 576 &&
               e->ne[1] == 49152 && q && q->dtype == SG_DT_Q4_1 && nrm && nrm->dtype == SG_DT_F32,
           "SmolLM2: 272 tensors, token_embd Q8_0 [576, 49152], attn_q Q4_1, norms F32");
    if (!e || !q || !nrm) {
        sg_gguf_close(g);
        return;
    }
    /* expected values: gguf.quants.dequantize (python gguf package) */
    static const float q_row0[8] = {-0.0963134765625f, 0.1573486328125f, -0.0963134765625f,
                                    -0.73046875f,      1.1719970703125f, -0.0963134765625f,
                                    0.030517578125f,   0.6646728515625f};
    static const float q_row5[8] = {0.255126953125f,  -0.427978515625f, -0.76953125f,
                                    -0.00103759765625f, 0.51129150390625f, -0.08642578125f,
                                    -0.00103759765625f, 0.16973876953125f};
    static const float e_row100[4] = {0.019052505493164062f, -0.08437538146972656f,
                                      -0.1660289764404297f, -0.10070610046386719f};
    static const float norm0[4] = {0.01397705078125f, 0.0238037109375f, -0.019775390625f,
                                   -0.0302734375f};
    float *w = malloc(e->numel * sizeof *w);
    float err = 0;
    rc = sg_gguf_read_f32(g, q, w);
    for (int j = 0; j < 8; j++)
        err = fmaxf(err, fmaxf(fabsf(w[j] - q_row0[j]), fabsf(w[5 * 576 + 32 + j] - q_row5[j])));
    tap_ok(rc == 0 && err < 1e-6f, "SmolLM2: blk.0.attn_q.weight Q4_1 blocks as python gguf (%g)",
           err);
    rc = sg_gguf_read_f32(g, e, w);
    err = 0;
    for (int j = 0; j < 4; j++)
        err = fmaxf(err, fabsf(w[100 * 576 + j] - e_row100[j]));
    tap_ok(rc == 0 && err < 1e-6f, "SmolLM2: token_embd.weight Q8_0 row 100 as python gguf (%g)",
           err);
    rc = sg_gguf_read_f32(g, nrm, w);
    tap_ok(rc == 0 && !memcmp(w, norm0, sizeof norm0), "SmolLM2: blk.0.attn_norm.weight F32");
    free(w);
    sg_gguf_close(g);
}

static int remove_entry(const char *p, const struct stat *sb, int flag, struct FTW *ftw)
{
    return remove(p);
}

int main(void)
{
    dir = tap_tmpdir();
    const sg_dtype types[] = {SG_DT_F32, SG_DT_F16, SG_DT_BF16, SG_DT_Q8_0, SG_DT_Q4_0,
                              SG_DT_Q4_1};
    for (int i = 0; i < 6; i++)
        roundtrip(types[i]);
    permutation(16);
    permutation(8);
    metadata_roundtrips();
    writer_errors();
    crafted_files();
    real_model();
    nftw(dir, remove_entry, 8, FTW_DEPTH | FTW_PHYS);
    return tap_done();
}
