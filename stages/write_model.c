#include "write_model.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd_io.h"
#include "hf_config.h"
#include "read_file.h"
#include "safetensors.h"
#include "llama2c.h"
#include "resume.h"
#include "sg_error.h"
#include "tensor_names.h"

struct sg_model_writer {
    char *out, *tmp;
    int tmp_fd; /* OUT.tmp, locked while we write it */
    sg_model_config cfg;
    sg_dtype dtype;
    int n_shards, next_shard;
    cJSON *weight_map; /* HF name -> shard file */
    int qk_to_half;    /* q/k rows from GGUF's pair-wise RoPE layout to HF's */
};

/* OUT.tmp carries this file while we own it: a directory without it is
 * not ours, and nothing in it is ever removed. */
#define MARKER ".slicegpt-stream-partial"

/* 1 if name is one the writer creates in OUT.tmp (a shard, the index, the
 * config, the tokenizer, each also under its temporary ".tmp" name). */
static int is_ours(const char *name)
{
    static const char *const fixed[] = {"model.safetensors.index.json", "config.json",
                                        "tokenizer.json", "tokenizer.bin", MARKER};
    char base[256];
    size_t n = strlen(name);
    if (n >= sizeof base)
        return 0;
    memcpy(base, name, n + 1);
    if (n > 4 && !strcmp(base + n - 4, ".tmp"))
        base[n - 4] = '\0';
    for (size_t i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (!strcmp(base, fixed[i]))
            return 1;
    unsigned a, b;
    char again[256];
    if (!strcmp(base, SG_RESUME_STATE))
        return 1;
    if (sscanf(base, SG_RESUME_CHUNK_PREFIX "%u-%u.sgac", &a, &b) == 2) {
        snprintf(again, sizeof again, SG_RESUME_CHUNK_FMT, a, b);
        return !strcmp(again, base);
    }
    if (sscanf(base, "model-%5u-of-%5u.safetensors", &a, &b) != 2)
        return 0;
    snprintf(again, sizeof again, "model-%05u-of-%05u.safetensors", a, b);
    return !strcmp(again, base);
}

/* Removes what a killed run left in the directory open as fd (OUT.tmp),
 * keeping the marker and never following a link (unlinkat removes the
 * link itself); files the writer did not make stay. -1 if it could not be
 * listed. */
static int remove_leftovers(int fd)
{
    DIR *d = sg_opendir_fd(fd);
    if (!d)
        return -1;
    struct dirent *e;
    while ((e = readdir(d)))
        if (is_ours(e->d_name) && strcmp(e->d_name, MARKER))
            unlinkat(fd, e->d_name, 0);
    closedir(d);
    return 0;
}

/* Removes what the writer made in the directory open as dfd, the marker
 * last, then the directory if that left it empty. */
static void remove_ours(int dfd, const char *dir)
{
    if (remove_leftovers(dfd))
        return;
    unlinkat(dfd, MARKER, 0);
    rmdir(dir); /* fails, harmlessly, if anything else is there */
}

/* Makes OUT.tmp ours: created here (mkdir fails if the name exists, and
 * never follows a link), or left by a killed run of ours (it carries the
 * marker). Either way it is locked (flock on the directory), so a second
 * run to the same OUT fails here instead of mixing files into ours. */
static int take_tmp(const char *out, const char *tmp, int keep, int *dfd)
{
    int created = mkdir(tmp, 0755) == 0;
    if (!created && errno != EEXIST)
        return sg_fail(-errno, "%s: cannot create: %s", tmp, strerror(errno));
    int fd = open(tmp, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0)
        return sg_fail(SG_EARG, "%s: exists and is not a directory this program made; remove it "
                                "or choose another --out",
                       tmp);
    /* the creator may wait: whoever holds the lock for a moment is a
     * second run about to find no marker and leave */
    if (flock(fd, created ? LOCK_EX : LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return sg_fail(SG_EARG, "%s: another slicegpt-stream run is writing %s", tmp, out);
    }
    if (created) {
        int m = openat(fd, MARKER, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
        if (m < 0) {
            int e = errno;
            close(fd);
            rmdir(tmp);
            return sg_fail(-e, "%s/%s: cannot create: %s", tmp, MARKER, strerror(e));
        }
        close(m);
    } else {
        struct stat sb;
        if (fstatat(fd, MARKER, &sb, AT_SYMLINK_NOFOLLOW) != 0 || !S_ISREG(sb.st_mode)) {
            close(fd);
            return sg_fail(SG_EARG, "%s: exists and was not made by slicegpt-stream; remove it "
                                    "or choose another --out",
                           tmp);
        }
        /* a killed run's: remove what it wrote, then start again in it
         * (or, keep: the caller may continue it, resume.h) */
        if (!keep)
            remove_leftovers(fd);
    }
    *dfd = fd;
    return 0;
}

int sg_model_writer_check_out(const char *name)
{
    struct stat sb;
    char out[4096];
    size_t n = strlen(name);
    if (!n || n >= sizeof out)
        return sg_fail(SG_EARG, "--out: %s name", n ? "too long a" : "an empty");
    memcpy(out, name, n + 1);
    while (n > 1 && out[n - 1] == '/')
        out[--n] = '\0'; /* "dir/" is dir, and lstat must not follow a link for it */
    if (lstat(out, &sb) == 0)
        return sg_fail(-EEXIST, "%s: already exists%s; remove it or choose another --out", out,
                       S_ISLNK(sb.st_mode) ? " (a symbolic link)" : "");
    if (errno != ENOENT)
        return sg_fail(-errno, "%s: %s", out, strerror(errno));
    return 0;
}

static char *shard_name(const sg_model_writer *w, int i)
{
    char *s = malloc(64);
    if (s)
        snprintf(s, 64, "model-%05d-of-%05d.safetensors", i, w->n_shards);
    return s;
}

static int writer_open(const char *out, const sg_model_config *cfg, sg_dtype dtype, int keep,
                       sg_model_writer **wp)
{
    *wp = NULL;
    sg_model_writer *w = calloc(1, sizeof *w);
    if (!w)
        return sg_fail(-ENOMEM, "%s: out of memory", out);
    w->tmp_fd = -1;
    w->out = strdup(out);
    w->tmp = malloc(strlen(out) + 5);
    w->weight_map = cJSON_CreateObject();
    if (!w->out || !w->tmp || !w->weight_map) {
        sg_model_writer_abort(w);
        return sg_fail(-ENOMEM, "%s: out of memory", out);
    }
    /* "dir/" names dir: OUT.tmp must be its sibling, not "dir/.tmp" */
    size_t n = strlen(w->out);
    while (n > 1 && w->out[n - 1] == '/')
        w->out[--n] = '\0';
    sprintf(w->tmp, "%s.tmp", w->out);
    w->cfg = *cfg;
    w->dtype = dtype;
    /* Hugging Face's layout whatever the input's: a GGUF model pairs RoPE
     * coordinates (2i, 2i+1); its q/k rows go back to rotate-half order */
    if (cfg->rope == SG_ROPE_PAIRS && cfg->rope_dim == cfg->head_dim) {
        w->cfg.rope = SG_ROPE_HALF;
        w->qk_to_half = 1;
    }
    w->n_shards = (int)cfg->n_layers + 2;
    int err = sg_model_writer_check_out(w->out);
    err = err ? err : take_tmp(w->out, w->tmp, keep, &w->tmp_fd);
    if (err) {
        free(w->tmp); /* not ours: abort must not touch it */
        w->tmp = NULL;
        sg_model_writer_abort(w);
        return err;
    }
    *wp = w;
    return 0;
}

int sg_model_writer_open(const char *out, const sg_model_config *cfg, sg_dtype dtype,
                         sg_model_writer **wp)
{
    return writer_open(out, cfg, dtype, 0, wp);
}

int sg_model_writer_open_keep(const char *out, const sg_model_config *cfg, sg_dtype dtype,
                              sg_model_writer **wp)
{
    return writer_open(out, cfg, dtype, 1, wp);
}

const char *sg_model_writer_dir(const sg_model_writer *w) { return w->tmp; }

void sg_model_writer_clear(sg_model_writer *w) { remove_leftovers(w->tmp_fd); }

int sg_model_writer_progress(const sg_model_writer *w, char **weight_map, int *next_shard)
{
    *next_shard = w->next_shard;
    if (!(*weight_map = cJSON_PrintUnformatted(w->weight_map)))
        return sg_fail(-ENOMEM, "out of memory");
    return 0;
}

int sg_model_writer_continue(sg_model_writer *w, const char *weight_map, int next_shard)
{
    cJSON *map = cJSON_Parse(weight_map);
    if (!map || !cJSON_IsObject(map) || next_shard < 0 || next_shard > w->n_shards) {
        cJSON_Delete(map);
        return sg_fail(SG_EFORMAT, "%s/%s: bad shard record", w->tmp, SG_RESUME_STATE);
    }
    cJSON_Delete(w->weight_map);
    w->weight_map = map;
    w->next_shard = next_shard;
    return 0;
}

void sg_model_writer_release(sg_model_writer *w)
{
    if (!w)
        return;
    if (w->tmp_fd >= 0)
        close(w->tmp_fd);
    cJSON_Delete(w->weight_map);
    free(w->out);
    free(w->tmp);
    free(w);
}

typedef struct {
    const char *name; /* canonical */
    const float *data;
    int ndim;
    int64_t shape[2];
} out_tensor;

/* Writes one shard holding tensors[0..n) and records them in the index. */
static int write_shard(sg_model_writer *w, const out_tensor *t, int n)
{
    char *file = shard_name(w, w->next_shard++), path[4096], hf[256];
    if (!file)
        return sg_fail(-ENOMEM, "out of memory");
    snprintf(path, sizeof path, "%s/%s", w->tmp, file);
    sg_st_writer *st;
    int err = sg_st_writer_open(path, &st);
    for (int i = 0; !err && i < n; i++) {
        if ((err = sg_name_to_hf(w->cfg.arch, t[i].name, hf, sizeof hf)))
            break;
        err = sg_st_writer_declare(st, hf, t[i].ndim == 1 ? SG_DT_F32 : w->dtype, t[i].ndim,
                                   t[i].shape);
        if (!err && !cJSON_AddStringToObject(w->weight_map, hf, file))
            err = sg_fail(-ENOMEM, "out of memory");
    }
    for (int i = 0; !err && i < n; i++) {
        sg_name_to_hf(w->cfg.arch, t[i].name, hf, sizeof hf);
        err = sg_st_writer_write(st, hf, t[i].data);
    }
    if (!err)
        err = sg_st_writer_finish(st);
    else if (st)
        sg_st_writer_abort(st);
    free(file);
    return err;
}

#define MAT(n, p, r, c) {n, p, 2, {r, c}}
#define VEC(n, p, r) {n, p, 1, {r, 0}}

int sg_model_writer_embeddings(sg_model_writer *w, const sg_model *m)
{
    const sg_model_config *c = &w->cfg;
    out_tensor t[2] = {MAT("token_embd.weight", m->tok_embd, c->vocab_size, c->embed_dim)};
    int n = 1;
    if (m->pos_embd)
        t[n++] = (out_tensor)MAT("position_embd.weight", m->pos_embd,
                                 c->max_positions + c->pos_offset, c->embed_dim);
    return write_shard(w, t, n);
}

typedef struct {
    out_tensor t[32];
    int n;
} tensor_list;

static int collect(const char *name, float **tensor, int64_t rows, int64_t cols, void *ctx)
{
    tensor_list *list = ctx;
    if (!*tensor)
        return sg_fail(SG_EMISSING, "%s: tensor missing from the sliced block", name);
    out_tensor *o = &list->t[list->n++];
    o->name = strdup(name);
    o->data = *tensor;
    o->ndim = cols ? 2 : 1;
    o->shape[0] = rows;
    o->shape[1] = cols;
    return o->name ? 0 : sg_fail(-ENOMEM, "out of memory");
}

/* The rows of q and k (and their biases) per head, pair-wise to
 * rotate-half (b's tensors, in place). */
static int qk_to_half(const sg_model_config *c, sg_block *b)
{
    int64_t hd = c->head_dim;
    int err = sg_llama2c_permute_to_half(b->wq, c->n_heads, hd, b->d_in);
    err = err ? err : sg_llama2c_permute_to_half(b->wk, c->n_kv_heads, hd, b->d_in);
    if (!err && b->bq)
        err = sg_llama2c_permute_to_half(b->bq, c->n_heads, hd, 1);
    if (!err && b->bk)
        err = sg_llama2c_permute_to_half(b->bk, c->n_kv_heads, hd, 1);
    return err;
}

int sg_model_writer_block(sg_model_writer *w, int64_t l, sg_block *b)
{
    tensor_list list = {.n = 0};
    int err = w->qk_to_half ? qk_to_half(&w->cfg, b) : 0;
    err = err ? err : sg_block_visit(&w->cfg, l, b, collect, &list);
    if (!err)
        err = write_shard(w, list.t, list.n);
    for (int i = 0; i < list.n; i++)
        free((char *)list.t[i].name);
    return err;
}

int sg_model_writer_head(sg_model_writer *w, const sg_model *m)
{
    const sg_model_config *c = &w->cfg;
    out_tensor t[4];
    int n = 0;
    if (m->out_norm_w)
        t[n++] = (out_tensor)VEC("output_norm.weight", m->out_norm_w, c->head_in_dim);
    if (m->out_norm_b)
        t[n++] = (out_tensor)VEC("output_norm.bias", m->out_norm_b, c->head_in_dim);
    if (!c->tied_embeddings) /* else the head is the embedding table */
        t[n++] = (out_tensor)MAT("output.weight", m->lm_head, c->vocab_size, c->head_in_dim);
    if (m->lm_head_b)
        t[n++] = (out_tensor)VEC("output.bias", m->lm_head_b, c->vocab_size);
    return write_shard(w, t, n);
}

/* Writes text to dir/name durably (temp name, fsync, rename). */
static int write_file(const char *dir, const char *name, const char *data, size_t len)
{
    char path[4096], tmp[4200];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0)
        return sg_fail(-errno, "%s: %s", tmp, strerror(errno));
    size_t done = 0;
    while (done < len) {
        ssize_t k = write(fd, data + done, len - done);
        if (k < 0) {
            int e = errno;
            close(fd);
            unlink(tmp);
            return sg_fail(-e, "%s: %s", tmp, strerror(e));
        }
        done += k;
    }
    if (fsync(fd) != 0 || close(fd) != 0) {
        int e = errno;
        unlink(tmp);
        return sg_fail(-e, "%s: %s", tmp, strerror(e));
    }
    if (rename(tmp, path) != 0)
        return sg_fail(-errno, "%s: %s", path, strerror(errno));
    return 0;
}

static int copy_file(const char *src, const char *dir, const char *name)
{
    char *buf;
    size_t n;
    int err = sg_read_file(src, 0, &buf, &n);
    if (err)
        return err;
    err = write_file(dir, name, buf, n);
    free(buf);
    return err;
}

int sg_model_writer_finish(sg_model_writer *w, double sparsity, const char *tokenizer_src,
                           const sg_tokenizer *tok)
{
    int err = 0;
    cJSON *index = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(index, "metadata");
    cJSON_AddStringToObject(meta, "format", "slicegpt-stream");
    cJSON_AddItemToObject(index, "weight_map", w->weight_map);
    w->weight_map = NULL;
    char *json = cJSON_Print(index);
    cJSON_Delete(index);
    if (!json)
        err = sg_fail(-ENOMEM, "out of memory");
    if (!err)
        err = write_file(w->tmp, "model.safetensors.index.json", json, strlen(json));
    free(json);
    sg_test_kill_at("write");
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", w->tmp);
    if (!err)
        err = sg_hf_config_save(path, &w->cfg, sparsity);
    if (!err && tokenizer_src) {
        size_t n = strlen(tokenizer_src);
        int is_json = n > 5 && !strcmp(tokenizer_src + n - 5, ".json");
        err = copy_file(tokenizer_src, w->tmp, is_json ? "tokenizer.json" : "tokenizer.bin");
    } else if (!err && tok) {
        snprintf(path, sizeof path, "%s/tokenizer.json", w->tmp);
        err = sg_tokenizer_save_json(tok, path);
    }
    if (!err) {
        /* the directory entries must be durable before the rename publishes them */
        int dfd = open(w->tmp, O_RDONLY | O_DIRECTORY);
        if (dfd >= 0) {
            fsync(dfd);
            close(dfd);
        }
        sg_resume_remove(w->tmp_fd); /* the model is whole: nothing to resume */
        unlinkat(w->tmp_fd, MARKER, 0);
        /* never over something that appeared at OUT meanwhile */
        int r = renameat2(AT_FDCWD, w->tmp, AT_FDCWD, w->out, RENAME_NOREPLACE);
        if (r != 0 && errno == EINVAL)
            r = rename(w->tmp, w->out); /* a file system without RENAME_NOREPLACE */
        if (r != 0)
            err = sg_fail(-errno, "%s: cannot rename from %s: %s", w->out, w->tmp,
                          strerror(errno));
    }
    if (err) {
        sg_model_writer_abort(w);
        return err;
    }
    close(w->tmp_fd); /* the lock goes with it */
    free(w->out);
    free(w->tmp);
    free(w);
    return 0;
}

void sg_model_writer_abort(sg_model_writer *w)
{
    if (!w)
        return;
    if (w->tmp && w->tmp_fd >= 0)
        remove_ours(w->tmp_fd, w->tmp);
    if (w->tmp_fd >= 0)
        close(w->tmp_fd);
    cJSON_Delete(w->weight_map);
    free(w->out);
    free(w->tmp);
    free(w);
}
