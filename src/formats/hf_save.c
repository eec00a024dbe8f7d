/* Hugging Face directory writer (see hf_save.h for the layout and the
 * atomicity rules). Tensors are split into shards in file order by bytes,
 * every shard non-empty; each shard is one safetensors writer that declares
 * its tensors and then asks the producer for them one by one. */
#include "hf_save.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd_io.h"
#include "hf_config.h"
#include "safetensors.h"
#include "sg_error.h"
#include "tensor_names.h"

static int sync_parent_dir(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return sg_fail(-ENOMEM, "%s: out of memory", path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = 0;
    if (fd < 0 || fsync(fd) != 0) {
        int e = errno;
        if (e != EINVAL && e != EBADF) /* filesystems without directory fsync */
            rc = sg_fail(-e, "%s: cannot sync its directory: %s", path, strerror(e));
    }
    if (fd >= 0)
        close(fd);
    free(copy);
    return rc;
}

int sg_hf_file_write_atomic(const char *path, const void *data, size_t n)
{
    char *tmp;
    if (asprintf(&tmp, "%s.tmp", path) < 0)
        return sg_fail(-ENOMEM, "%s: out of memory", path);
    int rc = 0, fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        int e = errno;
        rc = sg_fail(-e, "%s: cannot create: %s", tmp, strerror(e));
        free(tmp);
        return rc;
    }
    int werr = sg_write_all(fd, data, n);
    if (werr)
        rc = sg_fail(werr, "%s: write failed: %s", tmp, strerror(-werr));
    if (rc == 0 && fsync(fd) != 0) {
        int e = errno;
        rc = sg_fail(-e, "%s: fsync failed: %s", tmp, strerror(e));
    }
    if (close(fd) != 0 && rc == 0) {
        int e = errno;
        rc = sg_fail(-e, "%s: close failed: %s", tmp, strerror(e));
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        int e = errno;
        rc = sg_fail(-e, "%s: cannot rename to %s: %s", tmp, path, strerror(e));
    }
    if (rc)
        unlink(tmp);
    else
        rc = sync_parent_dir(path);
    free(tmp);
    return rc;
}

static int64_t numel_of(const sg_named_tensor *t)
{
    int64_t n = 1;
    for (int k = 0; k < t->ndim; k++)
        n *= t->shape[k];
    return n;
}

/* Shard of each tensor: by cumulative bytes, but never skipping a shard and
 * always leaving enough tensors for the shards after it. */
static void assign_shards(const sg_named_tensor *t, int n, int n_shards, int *shard)
{
    double total = 0, start = 0;
    for (int i = 0; i < n; i++)
        total += (double)numel_of(&t[i]);
    int prev = 0;
    for (int i = 0; i < n; i++) {
        int s = total > 0 ? (int)(start * n_shards / total) : 0;
        if (s < prev)
            s = prev;
        if (i > 0 && s > prev + 1)
            s = prev + 1;
        if (s < n_shards - (n - i))
            s = n_shards - (n - i);
        if (s > n_shards - 1)
            s = n_shards - 1;
        if (i == 0)
            s = 0;
        shard[i] = prev = s;
        start += (double)numel_of(&t[i]);
    }
}

static int write_shard(const char *path, const sg_model_config *cfg,
                       const sg_named_tensor *descs, int n, const int *shard, int which,
                       sg_dtype dtype, sg_hf_tensor_fn fn, void *ctx)
{
    sg_st_writer *w;
    int rc = sg_st_writer_open(path, &w);
    if (rc)
        return rc;
    int64_t biggest = 1;
    char hf[256];
    for (int i = 0; i < n && rc == 0; i++) {
        if (shard[i] != which)
            continue;
        if (descs[i].ndim < 1 || descs[i].ndim > 2)
            rc = sg_fail(SG_EARG, "%s: %s: %d dimensions", path, descs[i].name, descs[i].ndim);
        if (rc == 0)
            rc = sg_name_to_hf(cfg->arch, descs[i].name, hf, sizeof hf);
        if (rc == 0)
            rc = sg_st_writer_declare(w, hf, dtype, descs[i].ndim, descs[i].shape);
        if (numel_of(&descs[i]) > biggest)
            biggest = numel_of(&descs[i]);
    }
    float *buf = rc ? NULL : malloc((size_t)biggest * sizeof *buf);
    if (rc == 0 && !buf)
        rc = sg_fail(-ENOMEM, "%s: out of memory for %lld floats", path, (long long)biggest);
    for (int i = 0; i < n && rc == 0; i++) {
        if (shard[i] != which)
            continue;
        sg_name_to_hf(cfg->arch, descs[i].name, hf, sizeof hf);
        rc = fn(ctx, &descs[i], buf);
        if (rc == 0)
            rc = sg_st_writer_write(w, hf, buf);
    }
    free(buf);
    if (rc) {
        sg_st_writer_abort(w);
        return rc;
    }
    return sg_st_writer_finish(w);
}

static int write_index(const char *path, const sg_model_config *cfg,
                       const sg_named_tensor *descs, int n, const int *shard, int n_shards,
                       sg_dtype dtype)
{
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "metadata");
    cJSON *map = cJSON_AddObjectToObject(root, "weight_map");
    double total = 0;
    char hf[256], file[64];
    for (int i = 0; i < n && map; i++) {
        total += (double)sg_dtype_bytes(dtype, numel_of(&descs[i]));
        sg_name_to_hf(cfg->arch, descs[i].name, hf, sizeof hf);
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", shard[i] + 1, n_shards);
        cJSON_AddStringToObject(map, hf, file);
    }
    if (meta)
        cJSON_AddNumberToObject(meta, "total_size", total);
    char *text = map && meta ? cJSON_Print(root) : NULL;
    cJSON_Delete(root);
    if (!text)
        return sg_fail(-ENOMEM, "%s: out of memory", path);
    int rc = sg_hf_file_write_atomic(path, text, strlen(text));
    free(text);
    return rc;
}

int sg_hf_save_stream(const char *outdir, const sg_model_config *cfg, double sparsity,
                      const sg_named_tensor *descs, int n, sg_dtype dtype, int n_shards,
                      sg_hf_tensor_fn fn, void *ctx)
{
    if (n < 1 || n_shards < 1 || n_shards > n || n_shards > 99999)
        return sg_fail(SG_EARG, "%s: cannot split %d tensors into %d shards", outdir, n,
                       n_shards);
    if (dtype != SG_DT_F32 && dtype != SG_DT_F16 && dtype != SG_DT_BF16 && dtype != SG_DT_F64)
        return sg_fail(SG_EUNSUPPORTED, "%s: safetensors cannot store %s", outdir,
                       sg_dtype_name(dtype));
    /* every name must map before anything is written */
    char hf[256];
    for (int i = 0; i < n; i++) {
        int rc = sg_name_to_hf(cfg->arch, descs[i].name, hf, sizeof hf);
        if (rc)
            return sg_fail(rc, "%s: %s: no Hugging Face %s name for this tensor", outdir,
                           descs[i].name, sg_arch_name(cfg->arch));
    }
    int rc = sg_hf_config_check(cfg, outdir);
    if (rc)
        return rc;
    if (mkdir(outdir, 0755) != 0 && errno != EEXIST) {
        int e = errno;
        return sg_fail(-e, "%s: cannot create directory: %s", outdir, strerror(e));
    }
    int *shard = malloc((size_t)n * sizeof *shard);
    char *path = malloc(strlen(outdir) + 64);
    if (!shard || !path) {
        free(shard);
        free(path);
        return sg_fail(-ENOMEM, "%s: out of memory", outdir);
    }
    assign_shards(descs, n, n_shards, shard);
    /* config.json marks a complete directory: gone until the end. The other
     * layout's entry file would shadow or contradict this one. */
    sprintf(path, "%s/config.json", outdir);
    unlink(path);
    sprintf(path, "%s/%s", outdir,
            n_shards == 1 ? "model.safetensors.index.json" : "model.safetensors");
    unlink(path);
    for (int s = 0; s < n_shards && rc == 0; s++) {
        if (n_shards == 1)
            sprintf(path, "%s/model.safetensors", outdir);
        else
            sprintf(path, "%s/model-%05d-of-%05d.safetensors", outdir, s + 1, n_shards);
        rc = write_shard(path, cfg, descs, n, shard, s, dtype, fn, ctx);
    }
    if (rc == 0 && n_shards > 1) {
        sprintf(path, "%s/model.safetensors.index.json", outdir);
        rc = write_index(path, cfg, descs, n, shard, n_shards, dtype);
    }
    if (rc == 0) {
        sprintf(path, "%s/config.json", outdir);
        rc = sg_hf_config_save(path, cfg, sparsity);
    }
    free(shard);
    free(path);
    return rc;
}

static int copy_from_memory(void *ctx, const sg_named_tensor *desc, float *dst)
{
    (void)ctx;
    if (!desc->data)
        return sg_fail(SG_EARG, "%s: no data given", desc->name);
    memcpy(dst, desc->data, (size_t)numel_of(desc) * sizeof *dst);
    return 0;
}

int sg_hf_save_model(const char *outdir, const sg_model_config *cfg, double sparsity,
                     const sg_named_tensor *tensors, int n, sg_dtype dtype, int n_shards)
{
    return sg_hf_save_stream(outdir, cfg, sparsity, tensors, n, dtype, n_shards,
                             copy_from_memory, NULL);
}
