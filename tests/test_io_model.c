/* Block prefetch through model_files: synthetic models (a sharded BF16
 * Hugging Face directory, Q8_0 and F16 GGUF files) read tensor by tensor,
 * with and without prefetch, over io_uring and with SG_IO=pread, with and
 * without O_DIRECT, must give the same floats bit for bit as the format
 * readers' plain pread path. Also: at most two blocks are held, prefetched
 * tensors really come from the buffer, and a file cut short fails the read
 * with a message naming it. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "model_files.h"
#include "safetensors.h"
#include "sg_error.h"
#include "synth_model.h"
#include "tap.h"
#include "tensor_names.h"

typedef struct {
    sg_named_tensor *list; /* canonical names and shapes, in file order */
    int n;
    float **ref;           /* [n] the plain reader's floats */
} model_ref;

static int64_t numel(const sg_named_tensor *t)
{
    return t->ndim == 2 ? t->shape[0] * t->shape[1] : t->shape[0];
}

static int64_t layer_of(const char *name)
{
    long long l;
    return sscanf(name, "blk.%lld.", &l) == 1 ? l : -1;
}

/* Reference floats straight from the format readers (no sg_io: pread). */
static int load_ref(const char *path, int is_hf, const sg_model_config *cfg, model_ref *r)
{
    int rc = sg_synth_tensor_list(cfg, &r->list, &r->n);
    if (rc)
        return rc;
    r->ref = calloc((size_t)r->n, sizeof *r->ref);
    sg_safetensors *st = NULL;
    sg_gguf *gg = NULL;
    rc = is_hf ? sg_safetensors_open(path, &st) : sg_gguf_open(path, &gg);
    for (int i = 0; rc == 0 && i < r->n; i++) {
        r->ref[i] = malloc((size_t)numel(&r->list[i]) * sizeof(float));
        if (is_hf) {
            char hf[256];
            sg_name_to_hf(cfg->arch, r->list[i].name, hf, sizeof hf);
            const sg_st_tensor *t = sg_safetensors_find(st, hf);
            rc = t ? sg_safetensors_read_f32(st, t, r->ref[i]) : SG_EMISSING;
        } else {
            const sg_gguf_tensor *t = sg_gguf_find(gg, r->list[i].name);
            rc = t ? sg_gguf_read_f32(gg, t, r->ref[i]) : SG_EMISSING;
        }
    }
    sg_safetensors_close(st);
    sg_gguf_close(gg);
    return rc;
}

static void free_ref(model_ref *r)
{
    for (int i = 0; i < r->n; i++)
        free(r->ref[i]);
    free(r->ref);
    sg_synth_free(r->list, r->n);
}

/* Reads every tensor through model_files, block by block (prefetching
 * block l + 1 before reading block l when asked), then the rest; counts
 * tensors that differ from the reference in any bit. */
static void read_all(const char *path, const model_ref *r, int64_t n_layers, int prefetch,
                     const char *label)
{
    sg_model_files *m = NULL;
    int rc = sg_model_files_open(path, &m);
    if (!tap_ok(rc == 0, "%s: open (%s)", label, rc ? sg_last_error() : "ok"))
        return;
    int differ = 0, failed = 0;
    int64_t one_block = 0, most = 0;
    if (prefetch) {
        rc = sg_model_files_prefetch_block(m, 0);
        one_block = sg_model_files_prefetch_bytes(m);
        failed += rc != 0;
    }
    for (int64_t l = 0; l <= n_layers; l++) {
        if (prefetch && l < n_layers) {
            failed += sg_model_files_prefetch_block(m, l + 1) != 0;
            int64_t held = sg_model_files_prefetch_bytes(m);
            most = held > most ? held : most;
        }
        for (int i = 0; i < r->n; i++) {
            const sg_named_tensor *t = &r->list[i];
            if (layer_of(t->name) != (l < n_layers ? l : -1))
                continue;
            float *x = malloc((size_t)numel(t) * sizeof *x);
            if (sg_model_files_read(m, t->name, x, t->shape[0], t->ndim == 2 ? t->shape[1] : 0)) {
                if (!failed++)
                    tap_diag("%s: %s: %s", label, t->name, sg_last_error());
            } else if (memcmp(x, r->ref[i], (size_t)numel(t) * sizeof *x)) {
                differ++;
            }
            free(x);
        }
    }
    tap_ok(!failed && !differ, "%s: all %d tensors bit-identical to the plain reader (%d failed, "
           "%d differ)", label, r->n, failed, differ);
    if (prefetch)
        /* each block's buffer is its bytes plus alignment, up to 2 pages a file */
        tap_ok(one_block > 0 && most <= 2 * one_block + 4 * 2 * SG_IO_ALIGN,
               "%s: at most two blocks held (%lld bytes, one block %lld)", label,
               (long long)most, (long long)one_block);
    sg_model_files_close(m);
}

/* Runs read_all in every mode. */
static void check_model(const char *path, int is_hf, const sg_model_config *cfg,
                        const char *what)
{
    model_ref r = {0};
    int rc = load_ref(path, is_hf, cfg, &r);
    if (!tap_ok(rc == 0, "%s: reference read with the format reader", what))
        return;
    char label[256];
    unsetenv("SG_IO");
    unsetenv("SG_IO_DIRECT");
    snprintf(label, sizeof label, "%s, default backend, no prefetch", what);
    read_all(path, &r, cfg->n_layers, 0, label);
    snprintf(label, sizeof label, "%s, default backend, prefetch", what);
    read_all(path, &r, cfg->n_layers, 1, label);
    setenv("SG_IO_DIRECT", "0", 1);
    snprintf(label, sizeof label, "%s, default backend, prefetch without O_DIRECT", what);
    read_all(path, &r, cfg->n_layers, 1, label);
    unsetenv("SG_IO_DIRECT");
    setenv("SG_IO", "pread", 1);
    snprintf(label, sizeof label, "%s, SG_IO=pread, no prefetch", what);
    read_all(path, &r, cfg->n_layers, 0, label);
    snprintf(label, sizeof label, "%s, SG_IO=pread, prefetch", what);
    read_all(path, &r, cfg->n_layers, 1, label);
    unsetenv("SG_IO");
    free_ref(&r);
}

static int copy_file(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb"), *out = fopen(to, "wb");
    char buf[1 << 16];
    size_t n;
    int rc = in && out ? 0 : -1;
    while (rc == 0 && (n = fread(buf, 1, sizeof buf, in)) > 0)
        rc = fwrite(buf, 1, n, out) == n ? 0 : -1;
    if (in)
        fclose(in);
    if (out && fclose(out))
        rc = -1;
    return rc;
}

/* Prefetched tensors come from the buffer: once block 1 has arrived, the
 * file can be emptied and its other tensors still read. And a file cut
 * short before a prefetch fails the read, naming the file. */
static void check_buffer_and_truncation(const char *gguf, const char *dir, int64_t n_layers)
{
    char copy[600];
    snprintf(copy, sizeof copy, "%s/cut.gguf", dir);
    if (copy_file(gguf, copy)) {
        tap_ok(0, "copy the GGUF file");
        return;
    }
    sg_model_files *m = NULL;
    if (!tap_ok(sg_model_files_open(copy, &m) == 0, "open the copy"))
        return;
    const sg_model_config cfgv = *sg_model_files_config(m), *cfg = &cfgv; /* outlives m */
    float *x = malloc((size_t)(cfg->dim * cfg->ffn_dim) * sizeof *x);
    int rc = sg_model_files_prefetch_block(m, 1);
    rc = rc ? rc : sg_model_files_read(m, "blk.1.attn_norm.weight", x, cfg->dim, 0);
    if (rc == 0)
        rc = truncate(copy, 0);
    rc = rc ? rc : sg_model_files_read(m, "blk.1.ffn_down.weight", x, cfg->dim, cfg->ffn_dim);
    tap_ok(rc == 0, "prefetched tensors are served from the buffer after the file is emptied");
    rc = sg_model_files_read(m, "blk.0.ffn_down.weight", x, cfg->dim, cfg->ffn_dim);
    tap_ok(rc == SG_EFORMAT && strstr(sg_last_error(), copy),
           "a tensor not prefetched reads the emptied file: \"%s\"", sg_last_error());
    sg_model_files_close(m);

    for (int pread_only = 0; pread_only < 2; pread_only++) {
        if (pread_only)
            setenv("SG_IO", "pread", 1);
        copy_file(gguf, copy);
        rc = sg_model_files_open(copy, &m);
        if (rc) {
            tap_ok(0, "open the copy again");
            break;
        }
        /* cut in the middle of the last block's ffn_down */
        int64_t last = n_layers - 1;
        char name[64];
        snprintf(name, sizeof name, "blk.%lld.ffn_down.weight", (long long)last);
        sg_gguf *g = NULL;
        const sg_gguf_tensor *gt = NULL;
        if (sg_gguf_open(copy, &g) == 0 && (gt = sg_gguf_find(g, name)))
            truncate(copy, (off_t)(gt->offset + gt->nbytes / 2));
        sg_gguf_close(g);
        rc = sg_model_files_prefetch_block(m, last);
        tap_ok(rc == 0, "%s: prefetch returns at once; errors come with the read",
               pread_only ? "pread" : "default");
        sg_clear_error();
        rc = sg_model_files_read(m, name, x, cfg->dim, cfg->ffn_dim);
        tap_ok(rc == SG_EFORMAT && strstr(sg_last_error(), copy) &&
                   strstr(sg_last_error(), "truncated"),
               "%s: reading a prefetched block of a cut file fails: \"%s\"",
               pread_only ? "pread" : "default", sg_last_error());
        rc = sg_model_files_read(m, name, x, cfg->dim, cfg->ffn_dim);
        tap_ok(rc == SG_EFORMAT, "%s: and so does reading it again",
               pread_only ? "pread" : "default");
        sg_model_files_close(m);
    }
    unsetenv("SG_IO");
    free(x);
    unlink(copy);
}

/* Removes dir and the files in it (and in its subdirectories). */
static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[1024];
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (unlink(p) != 0)
            remove_tree(p);
    }
    if (d)
        closedir(d);
    rmdir(dir);
}

int main(void)
{
    const char *dir = tap_tmpdir();
    sg_model_config cfg;
    /* blocks of ~1.7 MB in BF16: several requests' worth of pieces */
    int rc = sg_synth_config(SG_ARCH_LLAMA, 256, 4, 8, 2, 0, 704, 320, &cfg);
    if (rc)
        tap_skip_all("synthetic config refused");

    unsetenv("SG_IO");
    sg_model_files *probe = NULL;
    char hf[512], gq8[512], gf16[512];
    snprintf(hf, sizeof hf, "%s/hf", dir);
    snprintf(gq8, sizeof gq8, "%s/q8.gguf", dir);
    snprintf(gf16, sizeof gf16, "%s/f16.gguf", dir);

    rc = sg_synth_save_hf(hf, &cfg, 11, SG_DT_BF16, 2);
    tap_ok(rc == 0, "synthetic model written as 2 BF16 safetensors shards");
    sg_named_tensor *t = NULL;
    int n = 0;
    rc = rc ? rc : sg_synth_model(&cfg, 11, &t, &n);
    int rq = rc ? rc : sg_gguf_save_model(gq8, &cfg, t, n, SG_DT_Q8_0, NULL);
    int rf = rc ? rc : sg_gguf_save_model(gf16, &cfg, t, n, SG_DT_F16, NULL);
    sg_synth_free(t, n);
    tap_ok(rq == 0 && rf == 0, "the same model written as Q8_0 and F16 GGUF");
    if (rc || rq || rf) {
        remove_tree(dir);
        return tap_done();
    }

    if (sg_model_files_open(gq8, &probe) == 0) {
        const char *b = sg_model_files_io_backend(probe);
        if (strcmp(b, "io_uring"))
            tap_diag("io_uring refused in this environment (%s): the default runs use pread", b);
        else
            tap_diag("reading with io_uring; O_DIRECT on %d of 1 files",
                     sg_model_files_io_direct(probe));
        sg_model_files_close(probe);
    }

    check_model(hf, 1, &cfg, "HF BF16 2 shards");
    check_model(gq8, 0, &cfg, "GGUF Q8_0");
    check_model(gf16, 0, &cfg, "GGUF F16");
    check_buffer_and_truncation(gq8, dir, cfg.n_layers);

    /* out-of-order use: prefetch far ahead, read an earlier block plainly */
    sg_model_files *m = NULL;
    if (sg_model_files_open(gf16, &m) == 0) {
        int64_t before, after;
        sg_model_files_prefetch_block(m, 0);
        sg_model_files_prefetch_block(m, 1);
        before = sg_model_files_prefetch_bytes(m);
        sg_model_files_prefetch_block(m, 3); /* releases 0 and 1 */
        after = sg_model_files_prefetch_bytes(m);
        float *x = malloc((size_t)(cfg.dim * cfg.ffn_dim) * sizeof *x);
        rc = sg_model_files_read(m, "blk.1.ffn_up.weight", x, cfg.ffn_dim, cfg.dim);
        int shape = sg_model_files_read(m, "blk.3.ffn_up.weight", x, cfg.dim, cfg.ffn_dim);
        tap_ok(after > 0 && after < before * 0.6 && rc == 0 && shape == SG_ESHAPE,
               "prefetch(3) after (0, 1) keeps one block; block 1 still reads; shapes "
               "still checked");
        tap_ok(sg_model_files_prefetch_block(m, cfg.n_layers) == 0 &&
                   sg_model_files_prefetch_bytes(m) == after,
               "prefetching the block after the last keeps the last one, adds nothing");
        free(x);
        sg_model_files_close(m);
    }
    remove_tree(dir);
    return tap_done();
}
