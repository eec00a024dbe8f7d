/* Dispatch over the model formats: a Hugging Face directory (config.json +
 * safetensors) or a GGUF file. Each canonical name is resolved once, at
 * open, to the format's own tensor. */
#include "model_files.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gguf.h"
#include "hf_config.h"
#include "safetensors.h"
#include "sg_error.h"
#include "tensor_names.h"

typedef struct {
    char *canonical;
    const sg_st_tensor *st; /* HF */
    const sg_gguf_tensor *gg; /* GGUF */
} name_entry;

struct sg_model_files {
    char *path;
    sg_model_config cfg;
    sg_safetensors *st;
    sg_gguf *gg;
    name_entry *names;
    int n_names;
};

static int is_directory(const char *path)
{
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISDIR(sb.st_mode);
}

static int add_name(sg_model_files *m, const char *canonical, const sg_st_tensor *st,
                    const sg_gguf_tensor *gg)
{
    for (int i = 0; i < m->n_names; i++)
        if (!strcmp(m->names[i].canonical, canonical))
            return sg_fail(SG_EFORMAT, "%s: two tensors map to %s", m->path, canonical);
    name_entry *grown = realloc(m->names, (m->n_names + 1) * sizeof *grown);
    if (!grown)
        return sg_fail(-ENOMEM, "%s: out of memory", m->path);
    m->names = grown;
    m->names[m->n_names] = (name_entry){strdup(canonical), st, gg};
    if (!m->names[m->n_names].canonical)
        return sg_fail(-ENOMEM, "%s: out of memory", m->path);
    m->n_names++;
    return 0;
}

/* The standard names first (model.safetensors or its sharded index); else
 * a directory holding exactly one .safetensors file, whatever its name. */
static int find_weights(const char *dir, char *out, size_t outsz)
{
    struct stat sb;
    const char *standard[] = {"model.safetensors", "model.safetensors.index.json"};
    for (int i = 0; i < 2; i++) {
        snprintf(out, outsz, "%s/%s", dir, standard[i]);
        if (stat(out, &sb) == 0) {
            snprintf(out, outsz, "%s", dir);
            return 0;
        }
    }
    DIR *d = opendir(dir);
    if (!d)
        return sg_fail(-errno, "%s: %s", dir, strerror(errno));
    int found = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        size_t n = strlen(e->d_name);
        if (n > 12 && !strcmp(e->d_name + n - 12, ".safetensors")) {
            if (found++)
                break;
            snprintf(out, outsz, "%s/%s", dir, e->d_name);
        }
    }
    closedir(d);
    if (found != 1)
        return sg_fail(SG_EMISSING, "%s: %s", dir,
                       found ? "several .safetensors files but no model.safetensors.index.json"
                             : "no .safetensors file");
    return 0;
}

static int open_hf(sg_model_files *m)
{
    char cfg_path[4096];
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", m->path);
    int err = sg_hf_config_load(cfg_path, &m->cfg);
    if (err)
        return err;
    char weights[4096];
    if ((err = find_weights(m->path, weights, sizeof weights)))
        return err;
    if ((err = sg_safetensors_open(weights, &m->st)))
        return err;
    for (int i = 0; i < sg_safetensors_count(m->st); i++) {
        const sg_st_tensor *t = sg_safetensors_at(m->st, i);
        char canonical[256];
        if (sg_name_from_hf(m->cfg.arch, t->name, canonical, sizeof canonical))
            continue; /* not a tensor we use (e.g. rotary caches) */
        if ((err = add_name(m, canonical, t, NULL)))
            return err;
    }
    return 0;
}

static int open_gguf(sg_model_files *m)
{
    int err = sg_gguf_open(m->path, &m->gg);
    if (err)
        return err;
    if ((err = sg_gguf_model_config(m->gg, &m->cfg)))
        return err;
    for (int i = 0; i < sg_gguf_tensor_count(m->gg); i++) {
        const sg_gguf_tensor *t = sg_gguf_tensor_at(m->gg, i);
        if ((err = add_name(m, t->name, NULL, t)))
            return err;
    }
    return 0;
}

int sg_model_files_open(const char *path, sg_model_files **out)
{
    *out = NULL;
    sg_model_files *m = calloc(1, sizeof *m);
    if (!m || !(m->path = strdup(path))) {
        free(m);
        return sg_fail(-ENOMEM, "%s: out of memory", path);
    }
    int err;
    struct stat sb;
    if (stat(path, &sb) != 0)
        err = sg_fail(-errno, "%s: %s", path, strerror(errno));
    else
        err = is_directory(path) ? open_hf(m) : open_gguf(m);
    if (err) {
        sg_model_files_close(m);
        return err;
    }
    *out = m;
    return 0;
}

void sg_model_files_close(sg_model_files *m)
{
    if (!m)
        return;
    if (m->st)
        sg_safetensors_close(m->st);
    if (m->gg)
        sg_gguf_close(m->gg);
    for (int i = 0; i < m->n_names; i++)
        free(m->names[i].canonical);
    free(m->names);
    free(m->path);
    free(m);
}

const sg_model_config *sg_model_files_config(const sg_model_files *m) { return &m->cfg; }
const char *sg_model_files_path(const sg_model_files *m) { return m->path; }

static const name_entry *lookup(const sg_model_files *m, const char *name)
{
    for (int i = 0; i < m->n_names; i++)
        if (!strcmp(m->names[i].canonical, name))
            return &m->names[i];
    return NULL;
}

int sg_model_files_has(const sg_model_files *m, const char *name)
{
    return lookup(m, name) != NULL;
}

int sg_model_files_read(sg_model_files *m, const char *name, float *dst, int64_t rows,
                        int64_t cols)
{
    const name_entry *e = lookup(m, name);
    if (!e)
        return sg_fail(SG_EMISSING, "%s: %s: tensor missing", m->path, name);
    /* Both formats reduce to (rows, cols) row-major: safetensors lists the
     * outer dim first, GGUF the inner one. */
    int ndim;
    int64_t r, c;
    if (e->st) {
        ndim = e->st->ndim;
        r = ndim >= 1 ? e->st->shape[0] : 1;
        c = ndim == 2 ? e->st->shape[1] : 0;
    } else {
        ndim = e->gg->ndim;
        r = ndim == 2 ? e->gg->ne[1] : e->gg->ne[0];
        c = ndim == 2 ? e->gg->ne[0] : 0;
    }
    if (ndim > 2 || r != rows || c != cols)
        return sg_fail(SG_ESHAPE, "%s: %s: shape is (%lld, %lld), expected (%lld, %lld)",
                       m->path, name, (long long)r, (long long)c, (long long)rows,
                       (long long)cols);
    return e->st ? sg_safetensors_read_f32(m->st, e->st, dst) : sg_gguf_read_f32(m->gg, e->gg, dst);
}

int sg_model_files_tokenizer(const sg_model_files *m, const char *override_path,
                             sg_tokenizer **out)
{
    char path[4096];
    struct stat sb;
    if (override_path) {
        size_t n = strlen(override_path);
        if (n > 5 && !strcmp(override_path + n - 5, ".json"))
            return sg_tokenizer_load_json(override_path, out);
        return sg_tokenizer_load_llama2c(override_path, m->cfg.vocab_size, out);
    }
    if (m->gg)
        return sg_gguf_tokenizer(m->gg, out);
    snprintf(path, sizeof path, "%s/tokenizer.json", m->path);
    if (stat(path, &sb) == 0)
        return sg_tokenizer_load_json(path, out);
    snprintf(path, sizeof path, "%s/tokenizer.bin", m->path);
    if (stat(path, &sb) == 0)
        return sg_tokenizer_load_llama2c(path, m->cfg.vocab_size, out);
    return sg_fail(SG_EMISSING, "%s: no tokenizer.json or tokenizer.bin (use --tokenizer)",
                   m->path);
}
