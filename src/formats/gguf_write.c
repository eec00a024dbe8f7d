/* GGUF v3 writer for llama-family models, in the layout llama.cpp loads:
 * llama.* hyperparameters, general.alignment 32, matrices stored with
 * ne = [cols, rows] in the requested type, vectors as F32.
 *
 * The header (metadata and tensor infos) is assembled in memory; tensor
 * data is then converted and written a few MiB of rows at a time, so a
 * model is never held twice. The file appears atomically: PATH.tmp is
 * written, fsynced and renamed over PATH; any failure removes it. */
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fd_io.h"
#include "gguf.h"
#include "sg_error.h"

#define ALIGNMENT 32
#define GGML_MAX_NAME 64
#define CHUNK_BYTES (4u << 20)

/* ---- header assembly ---- */

typedef struct {
    unsigned char *p;
    size_t len, cap;
    int oom;
    uint64_t n_kv;
} membuf;

static void put(membuf *b, const void *d, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, d, n);
    b->len += n;
}

static void put_u32(membuf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(membuf *b, uint64_t v) { put(b, &v, 8); }

static void put_str(membuf *b, const char *s)
{
    uint64_t n = strlen(s);
    put_u64(b, n);
    put(b, s, n);
}

static void put_key(membuf *b, const char *key, sg_gguf_type type)
{
    put_str(b, key);
    put_u32(b, type);
    b->n_kv++;
}

static void kv_u32(membuf *b, const char *key, int64_t v)
{
    put_key(b, key, SG_GGUF_U32);
    put_u32(b, (uint32_t)v);
}

static void kv_f32(membuf *b, const char *key, double v)
{
    float f = (float)v;
    put_key(b, key, SG_GGUF_F32);
    put(b, &f, 4);
}

static void kv_bool(membuf *b, const char *key, int v)
{
    unsigned char c = v != 0;
    put_key(b, key, SG_GGUF_BOOL);
    put(b, &c, 1);
}

static void kv_str(membuf *b, const char *key, const char *s)
{
    put_key(b, key, SG_GGUF_STRING);
    put_str(b, s);
}

static void kv_array(membuf *b, const char *key, sg_gguf_type elem, uint64_t n)
{
    put_key(b, key, SG_GGUF_ARRAY);
    put_u32(b, elem);
    put_u64(b, n);
}

/* ---- the tensors to write ---- */

typedef struct {
    const char *name;
    const float *data;      /* row-major (rows, cols); vectors are (n, 1) */
    int ndim;
    int64_t rows, cols;
    sg_dtype dt;
    uint64_t offset, nbytes; /* offset relative to the data section */
    int64_t head_dim;       /* > 0: rows are heads to permute to pair-wise RoPE */
} plan;

static uint32_t ggml_type(sg_dtype dt)
{
    switch (dt) {
    case SG_DT_F32: return 0;
    case SG_DT_F16: return 1;
    case SG_DT_Q4_0: return 2;
    case SG_DT_Q4_1: return 3;
    case SG_DT_Q8_0: return 8;
    case SG_DT_F64: return 28;
    case SG_DT_BF16: return 30;
    default: return 0;
    }
}

/* llama.cpp's llama_ftype for general.file_type */
static uint32_t file_type(sg_dtype dt)
{
    switch (dt) {
    case SG_DT_F16: return 1;
    case SG_DT_Q4_0: return 2;
    case SG_DT_Q4_1: return 3;
    case SG_DT_Q8_0: return 7;
    case SG_DT_BF16: return 32;
    default: return 0;
    }
}

/* "blk.N.<what>" for the given suffix */
static int is_block_tensor(const char *name, const char *what)
{
    if (strncmp(name, "blk.", 4))
        return 0;
    const char *p = name + 4;
    if (*p < '0' || *p > '9')
        return 0;
    while (*p >= '0' && *p <= '9')
        p++;
    return *p == '.' && !strcmp(p + 1, what);
}

/* Source row of destination row r when converting Hugging Face rotate_half
 * rows (pairs i, i + rope_dim/2 within each head) to pair-wise rows (2i,
 * 2i + 1), as llama.cpp's convert_hf_to_gguf permute does: per head,
 * new 2i <- old i, new 2i+1 <- old i + rope_dim/2; rows past rope_dim stay. */
static int64_t source_row(const plan *p, int64_t rope_dim, int64_t r)
{
    if (p->head_dim <= 0)
        return r;
    int64_t h = r / p->head_dim, j = r % p->head_dim;
    if (j >= rope_dim)
        return r;
    return h * p->head_dim + (j % 2 ? j / 2 + rope_dim / 2 : j / 2);
}

/* Llama-3 rope scaling as per-frequency divisors, computed the way
 * llama.cpp's converter writes rope_freqs.weight: (rope_dim/2). */
static void llama3_factors(const sg_model_config *c, float *out)
{
    double old_ctx = c->rope_original_max_positions > 0 ? (double)c->rope_original_max_positions
                                                        : 8192.0;
    double lo = c->rope_low_freq_factor > 0 ? c->rope_low_freq_factor : 1.0;
    double hi = c->rope_high_freq_factor > 0 ? c->rope_high_freq_factor : 4.0;
    double factor = c->rope_factor > 0 ? c->rope_factor : 8.0;
    double lo_wavelen = old_ctx / lo, hi_wavelen = old_ctx / hi;
    for (int64_t i = 0; i < c->rope_dim / 2; i++) {
        double freq = 1.0 / pow(c->rope_theta, (double)(2 * i) / (double)c->rope_dim);
        double wavelen = 2 * M_PI / freq;
        if (wavelen < hi_wavelen) {
            out[i] = 1.0f;
        } else if (wavelen > lo_wavelen) {
            out[i] = (float)factor;
        } else {
            double smooth = (old_ctx / wavelen - lo) / (hi - lo);
            out[i] = (float)(1.0 / ((1 - smooth) / factor + smooth));
        }
    }
}

/* ---- checks ---- */

static int check_config(const char *path, const sg_model_config *c, sg_dtype qtype)
{
    int err = sg_config_validate(c, path);
    if (err)
        return err;
    if (c->arch != SG_ARCH_LLAMA)
        return sg_fail(SG_EUNSUPPORTED, "%s: %s models cannot be written as GGUF (llama only)",
                       path, sg_arch_name(c->arch));
    if (c->norm != SG_NORM_RMS || c->act != SG_ACT_SILU || !c->gated_mlp ||
        c->parallel_block || c->rope == SG_ROPE_NONE)
        return sg_fail(SG_EUNSUPPORTED,
                       "%s: only RMSNorm, SwiGLU, RoPE llama models can be written as GGUF",
                       path);
    if (c->max_positions <= 0 || c->max_positions > UINT32_MAX)
        return sg_fail(SG_EARG, "%s: llama.context_length: context length %lld out of range",
                       path, (long long)c->max_positions);
    if (c->n_rope_freq_factors && c->n_rope_freq_factors != c->rope_dim / 2)
        return sg_fail(SG_EARG, "%s: rope_freqs.weight: %lld factors, expected rope_dim/2 = %lld",
                       path, (long long)c->n_rope_freq_factors, (long long)(c->rope_dim / 2));
    switch (qtype) {
    case SG_DT_F32: case SG_DT_F16: case SG_DT_BF16:
    case SG_DT_Q8_0: case SG_DT_Q4_0: case SG_DT_Q4_1:
        return 0;
    default:
        return sg_fail(SG_EARG, "%s: %s cannot be chosen as the GGUF storage type", path,
                       sg_dtype_name(qtype));
    }
}

static int check_vocab(const char *path, const sg_model_config *c, const sg_gguf_vocab *v)
{
    if (!v || !v->model)
        return 0;
    int llama = !strcmp(v->model, "llama");
    if (!llama && strcmp(v->model, "gpt2"))
        return sg_fail(SG_EARG, "%s: tokenizer.ggml.model: \"%s\" (llama or gpt2 expected)",
                       path, v->model);
    if (!v->tokens || (int64_t)v->n_tokens != c->vocab_size)
        return sg_fail(SG_EARG, "%s: tokenizer.ggml.tokens: %zu tokens for a vocabulary of %lld",
                       path, v->n_tokens, (long long)c->vocab_size);
    for (size_t i = 0; i < v->n_tokens; i++)
        if (!v->tokens[i])
            return sg_fail(SG_EARG, "%s: tokenizer.ggml.tokens: token %zu is NULL", path, i);
    if (llama && !v->scores)
        return sg_fail(SG_EARG, "%s: tokenizer.ggml.scores: a llama vocabulary needs scores",
                       path);
    if (!llama && (!v->merges || !v->n_merges))
        return sg_fail(SG_EARG, "%s: tokenizer.ggml.merges: a gpt2 vocabulary needs merges",
                       path);
    for (size_t i = 0; i < v->n_merges; i++)
        if (!v->merges[i])
            return sg_fail(SG_EARG, "%s: tokenizer.ggml.merges: merge %zu is NULL", path, i);
    return 0;
}

static int plan_tensor(const char *path, const sg_model_config *c, const sg_named_tensor *t,
                       sg_dtype qtype, plan *p)
{
    if (!t->name || !*t->name || strlen(t->name) >= GGML_MAX_NAME)
        return sg_fail(SG_EARG, "%s: %s: tensor name empty or longer than %d bytes", path,
                       t->name ? t->name : "(null)", GGML_MAX_NAME - 1);
    if (!t->data || (t->ndim != 1 && t->ndim != 2) || t->shape[0] <= 0 ||
        (t->ndim == 2 && t->shape[1] <= 0))
        return sg_fail(SG_EARG, "%s: %s: needs data and a 1-D or 2-D positive shape", path,
                       t->name);
    p->name = t->name;
    p->data = t->data;
    p->ndim = t->ndim;
    p->rows = t->shape[0];
    p->cols = t->ndim == 2 ? t->shape[1] : 1;
    p->dt = SG_DT_F32;
    if (t->ndim == 2) {
        p->dt = qtype;
        /* rows that are not whole blocks: F16, as llama.cpp's quantizer
         * falls back to a type that fits */
        if (sg_dtype_bytes(qtype, p->cols) < 0)
            p->dt = SG_DT_F16;
    }
    p->nbytes = (uint64_t)sg_dtype_bytes(p->dt, p->rows * p->cols);
    p->head_dim = 0;
    if (c->rope == SG_ROPE_HALF) {
        int q = is_block_tensor(t->name, "attn_q.weight") ||
                is_block_tensor(t->name, "attn_q.bias");
        int k = is_block_tensor(t->name, "attn_k.weight") ||
                is_block_tensor(t->name, "attn_k.bias");
        if (q || k) {
            int64_t heads = q ? c->n_heads : c->n_kv_heads;
            if (p->rows != heads * c->head_dim)
                return sg_fail(SG_ESHAPE, "%s: %s: %lld rows, expected %lld heads x %lld",
                               path, t->name, (long long)p->rows, (long long)heads,
                               (long long)c->head_dim);
            p->head_dim = c->head_dim;
        }
    }
    return 0;
}

/* ---- output ---- */

static int write_all(int fd, const void *buf, size_t n, const char *path, const char *what)
{
    int err = sg_write_all(fd, buf, n);
    return err ? sg_fail(err, "%s: %s: write: %s", path, what, strerror(-err)) : 0;
}

static int write_padding(int fd, uint64_t pos, const char *path, const char *what)
{
    static const unsigned char zeros[ALIGNMENT];
    size_t pad = (size_t)((ALIGNMENT - pos % ALIGNMENT) % ALIGNMENT);
    return write_all(fd, zeros, pad, path, what);
}

/* Converts and writes one tensor a chunk of rows at a time:
 * rows (permuted if needed) gathered into f (chunk_rows, cols) float32,
 * converted into q (chunk bytes) of p->dt. */
static int write_tensor(int fd, const char *path, const plan *p, int64_t rope_dim)
{
    int64_t chunk_rows = CHUNK_BYTES / (p->cols * 4);
    if (chunk_rows < 1)
        chunk_rows = 1;
    if (chunk_rows > p->rows)
        chunk_rows = p->rows;
    size_t fbytes = (size_t)(chunk_rows * p->cols) * sizeof(float);
    float *f = malloc(fbytes);
    void *q = p->dt == SG_DT_F32
                  ? NULL
                  : malloc((size_t)sg_dtype_bytes(p->dt, chunk_rows * p->cols));
    int err = 0;
    if (!f || (p->dt != SG_DT_F32 && !q))
        err = sg_fail(-ENOMEM, "%s: %s: out of memory", path, p->name);
    for (int64_t r0 = 0; r0 < p->rows && !err; r0 += chunk_rows) {
        int64_t n = p->rows - r0 < chunk_rows ? p->rows - r0 : chunk_rows;
        for (int64_t r = 0; r < n; r++)
            memcpy(f + r * p->cols, p->data + source_row(p, rope_dim, r0 + r) * p->cols,
                   (size_t)p->cols * sizeof(float));
        const void *out = f;
        if (q) {
            if ((err = sg_from_f32(p->dt, f, q, n * p->cols)))
                break;
            out = q;
        }
        err = write_all(fd, out, (size_t)sg_dtype_bytes(p->dt, n * p->cols), path, p->name);
    }
    free(f);
    free(q);
    return err;
}

static void put_metadata(membuf *b, const sg_model_config *c, sg_dtype qtype,
                         const sg_gguf_vocab *v)
{
    kv_str(b, "general.architecture", "llama");
    kv_u32(b, "general.alignment", ALIGNMENT);
    kv_u32(b, "general.file_type", file_type(qtype));
    kv_u32(b, "general.quantization_version", 2);
    kv_u32(b, "llama.context_length", c->max_positions);
    kv_u32(b, "llama.embedding_length", c->dim);
    kv_u32(b, "llama.block_count", c->n_layers);
    kv_u32(b, "llama.feed_forward_length", c->ffn_dim);
    kv_u32(b, "llama.attention.head_count", c->n_heads);
    kv_u32(b, "llama.attention.head_count_kv", c->n_kv_heads);
    kv_u32(b, "llama.attention.key_length", c->head_dim);
    kv_u32(b, "llama.attention.value_length", c->head_dim);
    kv_f32(b, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
    kv_f32(b, "llama.rope.freq_base", c->rope_theta);
    kv_u32(b, "llama.rope.dimension_count", c->rope_dim);
    kv_u32(b, "llama.vocab_size", c->vocab_size);
    if (c->rope_scaling == SG_ROPE_SCALE_LINEAR && !c->n_rope_freq_factors) {
        kv_str(b, "llama.rope.scaling.type", "linear");
        kv_f32(b, "llama.rope.scaling.factor", c->rope_factor);
        if (c->rope_original_max_positions > 0)
            kv_u32(b, "llama.rope.scaling.original_context_length",
                   c->rope_original_max_positions);
    }
    if (c->bos_id >= 0)
        kv_u32(b, "tokenizer.ggml.bos_token_id", c->bos_id);
    if (c->eos_id >= 0)
        kv_u32(b, "tokenizer.ggml.eos_token_id", c->eos_id);
    if (v && v->model) {
        kv_str(b, "tokenizer.ggml.model", v->model);
        if (v->pre)
            kv_str(b, "tokenizer.ggml.pre", v->pre);
        kv_array(b, "tokenizer.ggml.tokens", SG_GGUF_STRING, v->n_tokens);
        for (size_t i = 0; i < v->n_tokens; i++)
            put_str(b, v->tokens[i]);
        if (v->scores) {
            kv_array(b, "tokenizer.ggml.scores", SG_GGUF_F32, v->n_tokens);
            put(b, v->scores, v->n_tokens * sizeof(float));
        }
        if (v->types) {
            kv_array(b, "tokenizer.ggml.token_type", SG_GGUF_I32, v->n_tokens);
            put(b, v->types, v->n_tokens * sizeof(int32_t));
        }
        if (v->merges && v->n_merges) {
            kv_array(b, "tokenizer.ggml.merges", SG_GGUF_STRING, v->n_merges);
            for (size_t i = 0; i < v->n_merges; i++)
                put_str(b, v->merges[i]);
        }
    }
    /* SliceGPT widths: not llama.cpp's, read back by sg_gguf_model_config */
    if (c->sliced) {
        kv_bool(b, "slicegpt.sliced", 1);
        kv_u32(b, "slicegpt.embed_dim", c->embed_dim);
        kv_u32(b, "slicegpt.head_in_dim", c->head_in_dim);
        const char *keys[3] = {"slicegpt.d_in", "slicegpt.d_mid", "slicegpt.d_out"};
        const int64_t *w[3] = {c->d_in, c->d_mid, c->d_out};
        for (int k = 0; k < 3; k++) {
            kv_array(b, keys[k], SG_GGUF_I32, (uint64_t)c->n_layers);
            for (int64_t l = 0; l < c->n_layers; l++) {
                int32_t x = (int32_t)w[k][l];
                put(b, &x, 4);
            }
        }
    }
}

/* Writes header and data to fd; returns 0 or an error (recorded). */
static int write_file(int fd, const char *path, const sg_model_config *c, plan *plans,
                      int n, sg_dtype qtype, const sg_gguf_vocab *v)
{
    membuf kv = {0}, head = {0};
    int err = 0;
    put_metadata(&kv, c, qtype, v);

    uint64_t off = 0;
    membuf infos = {0};
    for (int i = 0; i < n; i++) {
        plan *p = &plans[i];
        p->offset = off;
        off += (p->nbytes + ALIGNMENT - 1) / ALIGNMENT * ALIGNMENT;
        put_str(&infos, p->name);
        put_u32(&infos, (uint32_t)p->ndim);
        put_u64(&infos, (uint64_t)(p->ndim == 2 ? p->cols : p->rows)); /* ne[0]: innermost */
        if (p->ndim == 2)
            put_u64(&infos, (uint64_t)p->rows);
        put_u32(&infos, ggml_type(p->dt));
        put_u64(&infos, p->offset);
    }
    put(&head, "GGUF", 4);
    put_u32(&head, 3);
    put_u64(&head, (uint64_t)n);
    put_u64(&head, kv.n_kv);
    if (head.oom || kv.oom || infos.oom) {
        err = sg_fail(-ENOMEM, "%s: out of memory for the header", path);
        goto done;
    }
    if ((err = write_all(fd, head.p, head.len, path, "header")) ||
        (err = write_all(fd, kv.p, kv.len, path, "metadata")) ||
        (err = write_all(fd, infos.p, infos.len, path, "tensor infos")) ||
        (err = write_padding(fd, head.len + kv.len + infos.len, path, "header")))
        goto done;
    for (int i = 0; i < n && !err; i++)
        if (!(err = write_tensor(fd, path, &plans[i], c->rope_dim)))
            err = write_padding(fd, plans[i].nbytes, path, plans[i].name);
done:
    free(head.p);
    free(kv.p);
    free(infos.p);
    return err;
}

static void fsync_parent(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return;
    int dfd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd); /* makes the rename durable; some filesystems refuse, harmlessly */
        close(dfd);
    }
    free(copy);
}

int sg_gguf_save_model(const char *path, const sg_model_config *cfg,
                       const sg_named_tensor *tensors, int n_tensors, sg_dtype qtype,
                       const sg_gguf_vocab *vocab)
{
    if (!path || !cfg || n_tensors < 0 || (n_tensors && !tensors))
        return sg_fail(SG_EARG, "%s: sg_gguf_save_model: bad arguments", path ? path : "(null)");
    int err;
    if ((err = check_config(path, cfg, qtype)) || (err = check_vocab(path, cfg, vocab)))
        return err;

    /* Llama-3 scaling travels as rope_freqs.weight unless the caller gave one */
    int add_freqs = (cfg->n_rope_freq_factors > 0 || cfg->rope_scaling == SG_ROPE_SCALE_LLAMA3);
    for (int i = 0; i < n_tensors; i++)
        if (tensors[i].name && !strcmp(tensors[i].name, "rope_freqs.weight"))
            add_freqs = 0;
    float freqs[512];
    plan *plans = calloc((size_t)n_tensors + 1, sizeof *plans);
    if (!plans)
        return sg_fail(-ENOMEM, "%s: out of memory", path);
    for (int i = 0; i < n_tensors && !err; i++) {
        err = plan_tensor(path, cfg, &tensors[i], qtype, &plans[i]);
        for (int j = 0; j < i && !err; j++)
            if (!strcmp(plans[j].name, plans[i].name))
                err = sg_fail(SG_EARG, "%s: %s: tensor given twice", path, plans[i].name);
    }
    int n = n_tensors;
    if (!err && add_freqs) {
        if (cfg->n_rope_freq_factors > 0)
            memcpy(freqs, cfg->rope_freq_factors, (size_t)cfg->n_rope_freq_factors * sizeof *freqs);
        else
            llama3_factors(cfg, freqs);
        sg_named_tensor t = {"rope_freqs.weight", 1, {cfg->rope_dim / 2, 0}, freqs};
        err = plan_tensor(path, cfg, &t, qtype, &plans[n++]);
    }
    if (err) {
        free(plans);
        return err;
    }

    char *tmp = malloc(strlen(path) + 5);
    if (!tmp) {
        free(plans);
        return sg_fail(-ENOMEM, "%s: out of memory", path);
    }
    strcpy(tmp, path);
    strcat(tmp, ".tmp");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        err = sg_fail(-errno, "%s: %s", tmp, strerror(errno));
    } else {
        err = write_file(fd, path, cfg, plans, n, qtype, vocab);
        if (!err && fsync(fd) != 0)
            err = sg_fail(-errno, "%s: fsync: %s", tmp, strerror(errno));
        if (close(fd) != 0 && !err)
            err = sg_fail(-errno, "%s: close: %s", tmp, strerror(errno));
        if (!err && rename(tmp, path) != 0)
            err = sg_fail(-errno, "%s: rename from %s: %s", path, tmp, strerror(errno));
        if (err)
            unlink(tmp);
        else
            fsync_parent(path);
    }
    free(tmp);
    free(plans);
    return err;
}
