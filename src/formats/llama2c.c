/* llama2.c legacy checkpoints -> canonical tensors, and -> a Hugging Face
 * directory. The checkpoint's stacked per-layer arrays are contiguous, so
 * each canonical tensor points into the one buffer the file is read into. */
#include "llama2c.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd_io.h"
#include "hf_save.h"
#include "sg_error.h"

/* Reads n bytes at offset off. */
static int read_at(int fd, void *buf, size_t n, off_t off, const char *path)
{
    ssize_t got = sg_pread_full(fd, buf, n, (uint64_t)off);
    if (got < 0)
        return sg_fail((int)got, "%s: read failed: %s", path, strerror((int)-got));
    if ((size_t)got < n)
        return sg_fail(SG_EFORMAT, "%s: unexpected end of file", path);
    return 0;
}

/* Checks the header's sizes and returns the number of floats after it. */
static int check_header(const char *path, const int32_t *h, int64_t *n_floats)
{
    int64_t dim = h[0], hidden = h[1], layers = h[2], heads = h[3], kv = h[4];
    int64_t vocab = h[5] < 0 ? -(int64_t)h[5] : h[5], seq = h[6];
    if (dim <= 0 || dim > 65536 || hidden <= 0 || hidden > (1 << 20) || layers <= 0 ||
        layers > SG_MAX_LAYERS || heads <= 0 || kv <= 0 || vocab <= 0 ||
        vocab > (1 << 24) || seq <= 0 || seq > (1 << 24))
        return sg_fail(SG_EFORMAT, "%s: header (%d %d %d %d %d %d %d) has a size out of range",
                       path, h[0], h[1], h[2], h[3], h[4], h[5], h[6]);
    if (dim % heads || heads % kv || (dim / heads) % 2)
        return sg_fail(SG_EFORMAT, "%s: header: %lld heads, %lld kv heads and dim %lld do not "
                       "give an even head size shared by whole kv groups",
                       path, (long long)heads, (long long)kv, (long long)dim);
    int64_t hs = dim / heads, kv_dim = dim * kv / heads;
    *n_floats = vocab * dim                   /* token_embedding */
                + layers * dim                /* rms_att */
                + layers * dim * dim * 2      /* wq, wo */
                + layers * kv_dim * dim * 2   /* wk, wv */
                + layers * dim                /* rms_ffn */
                + layers * hidden * dim * 3   /* w1, w2, w3 */
                + dim                         /* rms_final */
                + seq * hs                    /* freq_cis_real, freq_cis_imag */
                + (h[5] < 0 ? vocab * dim : 0); /* wcls */
    return 0;
}

/* Appends one canonical tensor pointing at *cursor and advances it. */
static void take(sg_llama2c_model *m, float **cursor, char *names, const char *name,
                 int64_t rows, int64_t cols)
{
    sg_named_tensor *t = &m->tensors[m->n_tensors];
    char *slot = names + 48 * (size_t)m->n_tensors++;
    snprintf(slot, 48, "%s", name);
    t->name = slot;
    t->ndim = cols ? 2 : 1;
    t->shape[0] = rows;
    t->shape[1] = cols;
    t->data = *cursor;
    *cursor += rows * (cols ? cols : 1);
}

/* Lays canonical tensors over the checkpoint's arrays. The file stacks each
 * kind over layers (all wq, then all wk, ...), so layer l's tensor of a kind
 * is the l-th slab; tensors are listed in the file's order. */
static void map_tensors(sg_llama2c_model *m, char *names)
{
    const sg_model_config *c = &m->cfg;
    int64_t D = c->dim, F = c->ffn_dim, V = c->vocab_size, L = c->n_layers;
    int64_t kv_dim = c->n_kv_heads * c->head_dim;
    static const struct {
        const char *name;
        int rows, cols; /* 0: D, 1: kv_dim, 2: F, -1: none (a vector) */
    } kinds[] = {
        {"attn_norm.weight", 0, -1}, {"attn_q.weight", 0, 0},   {"attn_k.weight", 1, 0},
        {"attn_v.weight", 1, 0},     {"attn_output.weight", 0, 0}, {"ffn_norm.weight", 0, -1},
        {"ffn_gate.weight", 2, 0},   {"ffn_down.weight", 0, 2}, {"ffn_up.weight", 2, 0},
    };
    const int64_t size_of[3] = {D, kv_dim, F};
    float *cur = m->data;
    take(m, &cur, names, "token_embd.weight", V, D);
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++)
        for (int64_t l = 0; l < L; l++) {
            char name[48];
            snprintf(name, sizeof name, "blk.%lld.%s", (long long)l, kinds[k].name);
            take(m, &cur, names, name, size_of[kinds[k].rows],
                 kinds[k].cols < 0 ? 0 : size_of[kinds[k].cols]);
        }
    take(m, &cur, names, "output_norm.weight", D, 0);
    cur += c->max_positions * c->head_dim; /* the RoPE tables: run.c recomputes them */
    if (!c->tied_embeddings)
        take(m, &cur, names, "output.weight", V, D);
}

void sg_llama2c_free(sg_llama2c_model *m)
{
    if (!m)
        return;
    free(m->data);
    if (m->tensors)
        free((char *)m->tensors[0].name); /* the names block */
    free(m->tensors);
    free(m);
}

int sg_llama2c_load(const char *path, sg_llama2c_model **out)
{
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return sg_fail(e == ENOENT ? SG_EMISSING : -e, "%s: cannot open: %s", path,
                       strerror(e));
    }
    struct stat sb;
    int32_t h[7];
    int64_t n_floats = 0;
    int rc = 0;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        rc = sg_fail(-e, "%s: cannot stat: %s", path, strerror(e));
    } else if (sb.st_size < 28) {
        rc = sg_fail(SG_EFORMAT, "%s: %lld bytes is shorter than the 28-byte header", path,
                     (long long)sb.st_size);
    }
    if (rc == 0)
        rc = read_at(fd, h, sizeof h, 0, path);
    if (rc == 0)
        rc = check_header(path, h, &n_floats);
    if (rc == 0 && (int64_t)sb.st_size != 28 + 4 * n_floats)
        rc = sg_fail(SG_EFORMAT, "%s: file is %lld bytes but its header describes %lld (%s)",
                     path, (long long)sb.st_size, (long long)(28 + 4 * n_floats),
                     (int64_t)sb.st_size < 28 + 4 * n_floats ? "truncated" : "trailing data");
    sg_llama2c_model *m = NULL;
    char *names = NULL;
    size_t max_tensors = 0;
    if (rc == 0) {
        max_tensors = 3 + 9 * (size_t)h[2]; /* embedding, final norm, head + 9 per layer */
        m = calloc(1, sizeof *m);
        names = malloc(48 * max_tensors);
        if (m) {
            m->data = malloc((size_t)n_floats * sizeof(float));
            m->tensors = calloc(max_tensors, sizeof *m->tensors);
        }
        if (!m || !names || !m->data || !m->tensors)
            rc = sg_fail(-ENOMEM, "%s: out of memory for %lld floats", path,
                         (long long)n_floats);
    }
    if (rc == 0)
        rc = read_at(fd, m->data, (size_t)n_floats * sizeof(float), 28, path);
    close(fd);
    if (rc) {
        if (m) {
            free(m->data);
            free(m->tensors);
            free(m);
        }
        free(names);
        return rc;
    }

    memcpy(m->header, h, sizeof h);
    sg_model_config *c = &m->cfg;
    c->arch = SG_ARCH_LLAMA;
    c->dim = h[0];
    c->ffn_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    c->vocab_size = h[5] < 0 ? -(int64_t)h[5] : h[5];
    c->max_positions = h[6];
    c->head_dim = c->dim / c->n_heads;
    c->gated_mlp = 1;
    c->act = SG_ACT_SILU;
    c->norm = SG_NORM_RMS;
    c->norm_eps = 1e-5;
    c->rope = SG_ROPE_PAIRS;
    c->rope_theta = 10000.0;
    c->rope_dim = c->head_dim;
    c->tied_embeddings = h[5] > 0;
    c->bos_id = 1; /* llama2.c's sentencepiece convention */
    c->eos_id = 2;
    sg_config_set_unsliced(c);
    rc = sg_config_validate(c, path);
    map_tensors(m, names);
    if (rc) {
        sg_llama2c_free(m);
        return rc;
    }
    *out = m;
    return 0;
}

const sg_named_tensor *sg_llama2c_find(const sg_llama2c_model *m, const char *name)
{
    for (int i = 0; i < m->n_tensors; i++)
        if (!strcmp(m->tensors[i].name, name))
            return &m->tensors[i];
    return NULL;
}

int sg_llama2c_permute_to_half(float *w, int64_t n_heads, int64_t head_dim, int64_t cols)
{
    if (n_heads <= 0 || head_dim <= 0 || head_dim % 2 || cols <= 0)
        return sg_fail(SG_EARG, "permute: %lld heads of size %lld (must be even), %lld columns",
                       (long long)n_heads, (long long)head_dim, (long long)cols);
    size_t head_bytes = (size_t)(head_dim * cols) * sizeof *w;
    float *tmp = malloc(head_bytes);
    if (!tmp)
        return sg_fail(-ENOMEM, "permute: out of memory");
    int64_t half = head_dim / 2;
    for (int64_t h = 0; h < n_heads; h++) {
        float *head = w + h * head_dim * cols; /* (head_dim, cols) */
        memcpy(tmp, head, head_bytes);
        for (int64_t i = 0; i < half; i++)
            for (int64_t j = 0; j < 2; j++)
                memcpy(head + (j * half + i) * cols, tmp + (2 * i + j) * cols,
                       (size_t)cols * sizeof *w);
    }
    free(tmp);
    return 0;
}

/* A llama2.c tokenizer must hold at least vocab entries: i32 max_len, then
 * per token f32 score, i32 length, bytes. */
static int check_tokenizer(const char *path, const unsigned char *buf, size_t n,
                           int64_t vocab)
{
    size_t pos = 4;
    for (int64_t i = 0; i < vocab; i++) {
        int32_t len;
        if (pos + 8 > n)
            return sg_fail(SG_EFORMAT, "%s: ends after %lld tokens, the model has %lld", path,
                           (long long)i, (long long)vocab);
        memcpy(&len, buf + pos + 4, 4);
        if (len < 0 || (size_t)len > n - pos - 8)
            return sg_fail(SG_EFORMAT, "%s: token %lld has a bad length %d", path,
                           (long long)i, len);
        pos += 8 + (size_t)len;
    }
    return 0;
}

static int copy_tokenizer(const char *src, const char *outdir, int64_t vocab)
{
    int fd = open(src, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return sg_fail(e == ENOENT ? SG_EMISSING : -e, "%s: cannot open: %s", src,
                       strerror(e));
    }
    struct stat sb;
    int rc = 0;
    unsigned char *buf = NULL;
    if (fstat(fd, &sb) != 0 || sb.st_size < 4 || sb.st_size > (1 << 30))
        rc = sg_fail(SG_EFORMAT, "%s: not a llama2.c tokenizer (size %lld)", src,
                     (long long)sb.st_size);
    else if (!(buf = malloc((size_t)sb.st_size)))
        rc = sg_fail(-ENOMEM, "%s: out of memory", src);
    else
        rc = read_at(fd, buf, (size_t)sb.st_size, 0, src);
    close(fd);
    if (rc == 0)
        rc = check_tokenizer(src, buf, (size_t)sb.st_size, vocab);
    char *dst = NULL;
    if (rc == 0 && asprintf(&dst, "%s/tokenizer.bin", outdir) < 0)
        rc = sg_fail(-ENOMEM, "%s: out of memory", outdir);
    if (rc == 0)
        rc = sg_hf_file_write_atomic(dst, buf, (size_t)sb.st_size);
    free(dst);
    free(buf);
    return rc;
}

int sg_llama2c_to_hf(const char *model_path, const char *outdir, const char *tokenizer_path)
{
    sg_llama2c_model *m;
    int rc = sg_llama2c_load(model_path, &m);
    if (rc)
        return rc;
    /* Hugging Face llama rotates (i, i + head_dim/2): reorder q and k rows */
    sg_model_config *c = &m->cfg;
    for (int64_t l = 0; l < c->n_layers && rc == 0; l++) {
        char name[48];
        snprintf(name, sizeof name, "blk.%lld.attn_q.weight", (long long)l);
        rc = sg_llama2c_permute_to_half((float *)sg_llama2c_find(m, name)->data, c->n_heads,
                                        c->head_dim, c->dim);
        snprintf(name, sizeof name, "blk.%lld.attn_k.weight", (long long)l);
        if (rc == 0)
            rc = sg_llama2c_permute_to_half((float *)sg_llama2c_find(m, name)->data,
                                            c->n_kv_heads, c->head_dim, c->dim);
    }
    c->rope = SG_ROPE_HALF;
    if (rc == 0 && mkdir(outdir, 0755) != 0 && errno != EEXIST) {
        int e = errno;
        rc = sg_fail(-e, "%s: cannot create directory: %s", outdir, strerror(e));
    }
    if (rc == 0 && tokenizer_path) {
        /* an old config.json must not vouch for a half-written directory */
        char *cfg_path;
        if (asprintf(&cfg_path, "%s/config.json", outdir) >= 0) {
            unlink(cfg_path);
            free(cfg_path);
        }
        rc = copy_tokenizer(tokenizer_path, outdir, c->vocab_size);
    }
    if (rc == 0)
        rc = sg_hf_save_model(outdir, c, 0.0, m->tensors, m->n_tensors, SG_DT_F32, 1);
    sg_llama2c_free(m);
    return rc;
}
