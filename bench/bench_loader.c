/* Loader read speed against `cat`, side by side, on the same files.
 *
 *   bench/bench_loader [MODEL] [--gb N]
 *
 * Without MODEL, writes a synthetic llama model of about N GB (default 2)
 * in BF16, two safetensors shards, under a temporary directory in /tmp
 * that is removed at the end; MODEL (a Hugging Face directory or a GGUF
 * file) is used as it is and left alone.
 *
 * Before each run the page cache is dropped (/proc/sys/vm/drop_caches when
 * permitted, else posix_fadvise DONTNEED on every file) and mincore() says
 * how much of the files is still resident, so each line says whether its
 * number is cold or warm. Runs, each on every block of the model:
 *   cat          cat FILES > /dev/null (the whole files)
 *   loader io    prefetch block l + 1, wait for block l (reads one small
 *                tensor): the I/O alone
 *   loader       prefetch block l + 1, read every tensor of block l to
 *                float32 (sg_model_files_read): I/O plus conversion
 * and the same without O_DIRECT and without prefetch, for comparison.
 * MB/s count stored bytes (of the blocks for the loader, of the files for
 * cat). Not a test: numbers only. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "model_files.h"
#include "sg_error.h"
#include "synth_model.h"

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static char files[64][4400];
static int n_files;

/* The data files of the model: *.safetensors of a directory, or the file. */
static int list_files(const char *path)
{
    struct stat sb;
    if (stat(path, &sb))
        return -1;
    if (!S_ISDIR(sb.st_mode)) {
        snprintf(files[n_files++], sizeof files[0], "%s", path);
        return 0;
    }
    DIR *d = opendir(path);
    struct dirent *e;
    while (d && (e = readdir(d)) && n_files < 64) {
        size_t n = strlen(e->d_name);
        if (n > 12 && !strcmp(e->d_name + n - 12, ".safetensors"))
            snprintf(files[n_files++], sizeof files[0], "%s/%s", path, e->d_name);
    }
    if (d)
        closedir(d);
    return n_files ? 0 : -1;
}

static int64_t files_bytes(void)
{
    int64_t total = 0;
    for (int i = 0; i < n_files; i++) {
        struct stat sb;
        if (stat(files[i], &sb) == 0)
            total += sb.st_size;
    }
    return total;
}

/* Fraction of the files' pages in the page cache. */
static double resident(void)
{
    long page = sysconf(_SC_PAGESIZE);
    double in = 0, all = 0;
    for (int i = 0; i < n_files; i++) {
        int fd = open(files[i], O_RDONLY);
        struct stat sb;
        if (fd < 0 || fstat(fd, &sb) || sb.st_size == 0) {
            if (fd >= 0)
                close(fd);
            continue;
        }
        size_t pages = (sb.st_size + page - 1) / page;
        void *map = mmap(NULL, sb.st_size, PROT_READ, MAP_SHARED, fd, 0);
        unsigned char *vec = malloc(pages);
        if (map != MAP_FAILED && vec && mincore(map, sb.st_size, vec) == 0)
            for (size_t p = 0; p < pages; p++)
                in += vec[p] & 1;
        all += pages;
        free(vec);
        if (map != MAP_FAILED)
            munmap(map, sb.st_size);
        close(fd);
    }
    return all ? in / all : 0;
}

/* Drops the files from the page cache; returns how ("drop_caches",
 * "fadvise"), and sets *frac to what stays resident. */
static const char *evict(double *frac)
{
    const char *how = "fadvise";
    sync();
    FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
    if (f && fputs("1\n", f) >= 0 && fclose(f) == 0)
        how = "drop_caches";
    else if (f)
        fclose(f);
    for (int i = 0; i < n_files; i++) {
        int fd = open(files[i], O_RDONLY);
        if (fd >= 0) {
            posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
            close(fd);
        }
    }
    *frac = resident();
    return how;
}

static const char *state(double frac)
{
    return frac < 0.01 ? "cold" : frac > 0.9 ? "warm" : "part-warm";
}

/* cat FILES > /dev/null; returns seconds or -1. */
static double run_cat(void)
{
    size_t len = 16;
    for (int i = 0; i < n_files; i++)
        len += strlen(files[i]) + 3;
    char *cmd = malloc(len);
    strcpy(cmd, "cat");
    for (int i = 0; i < n_files; i++) {
        strcat(cmd, " '");
        strcat(cmd, files[i]);
        strcat(cmd, "'");
    }
    strcat(cmd, " >/dev/null");
    double t = now();
    int rc = system(cmd);
    t = now() - t;
    free(cmd);
    return rc == 0 ? t : -1;
}

/* The loader over every block. mode 0: no prefetch; 1: prefetch and read
 * every tensor to float32; 2: prefetch, wait by reading the small norm.
 * Returns seconds (and the blocks' stored bytes in *bytes) or -1. */
static double run_loader(const char *path, int mode, int64_t *bytes, char *backend,
                         size_t bsz)
{
    sg_model_files *m;
    if (sg_model_files_open(path, &m)) {
        fprintf(stderr, "bench_loader: %s\n", sg_last_error());
        return -1;
    }
    snprintf(backend, bsz, "%s, O_DIRECT on %d file(s)", sg_model_files_io_backend(m),
             sg_model_files_io_direct(m));
    sg_model_config cfg = *sg_model_files_config(m);
    sg_named_tensor *list;
    int n;
    if (sg_synth_tensor_list(&cfg, &list, &n)) {
        fprintf(stderr, "bench_loader: %s\n", sg_last_error());
        sg_model_files_close(m);
        return -1;
    }
    int64_t biggest = 0;
    for (int i = 0; i < n; i++) {
        int64_t k = list[i].ndim == 2 ? list[i].shape[0] * list[i].shape[1] : list[i].shape[0];
        biggest = k > biggest ? k : biggest;
    }
    float *x = malloc((size_t)biggest * sizeof *x);
    int rc = 0;
    *bytes = 0;
    char prefix[64];
    double t = now();
    if (mode)
        rc = sg_model_files_prefetch_block(m, 0);
    for (int64_t l = 0; rc == 0 && l < cfg.n_layers; l++) {
        if (mode)
            rc = sg_model_files_prefetch_block(m, l + 1);
        int len = snprintf(prefix, sizeof prefix, "blk.%lld.", (long long)l);
        for (int i = 0; rc == 0 && i < n; i++) {
            const sg_named_tensor *d = &list[i];
            if (strncmp(d->name, prefix, (size_t)len))
                continue;
            *bytes += sg_model_files_tensor_bytes(m, d->name);
            if (mode == 2 && d->ndim == 2)
                continue; /* the norm before it already waited for the block */
            rc = sg_model_files_read(m, d->name, x, d->shape[0], d->ndim == 2 ? d->shape[1] : 0);
        }
    }
    t = now() - t;
    if (rc)
        fprintf(stderr, "bench_loader: %s\n", sg_last_error());
    free(x);
    sg_synth_free(list, n);
    sg_model_files_close(m);
    return rc ? -1 : t;
}

static int rm_rf(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char p[4600];
    while (d && (e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    return rmdir(dir);
}

int main(int argc, char **argv)
{
    const char *path = NULL;
    double gb = 2.0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--gb") && i + 1 < argc)
            gb = atof(argv[++i]);
        else if (argv[i][0] != '-')
            path = argv[i];
        else {
            fprintf(stderr, "usage: bench_loader [MODEL] [--gb N]\n");
            return 2;
        }
    }
    char tmpdir[] = "/tmp/sgbench.XXXXXX", model[4200];
    int made = 0;
    if (!path) {
        if (!mkdtemp(tmpdir)) {
            perror("bench_loader: mkdtemp");
            return 1;
        }
        snprintf(model, sizeof model, "%s/model", tmpdir);
        /* llama-like, dim 2048, GQA 16/4, ffn 5632: ~90 MB a block in BF16 */
        const int64_t dim = 2048, ffn = 5632, vocab = 32000;
        double per_block = 2.0 * (2 * dim * dim + 2 * dim * 512 + 3 * dim * ffn + 2 * dim);
        double emb = 2.0 * 2 * vocab * dim;
        int64_t layers = (int64_t)((gb * 1e9 - emb) / per_block + 0.5);
        if (layers < 2)
            layers = 2;
        sg_model_config cfg;
        if (sg_synth_config(SG_ARCH_LLAMA, dim, layers, 16, 4, 0, ffn, vocab, &cfg)) {
            fprintf(stderr, "bench_loader: %s\n", sg_last_error());
            return 1;
        }
        printf("writing a synthetic model: %lld blocks, %.2f GB BF16, in %s\n",
               (long long)layers, (layers * per_block + emb) / 1e9, model);
        fflush(stdout);
        double t = now();
        if (sg_synth_save_hf(model, &cfg, 1, SG_DT_BF16, 2)) {
            fprintf(stderr, "bench_loader: %s\n", sg_last_error());
            rmdir(tmpdir);
            return 1;
        }
        printf("written in %.1f s\n", now() - t);
        path = model;
        made = 1;
    }
    if (list_files(path)) {
        fprintf(stderr, "bench_loader: %s: no model files found\n", path);
        return 1;
    }
    int64_t fbytes = files_bytes();
    printf("model %s: %d file(s), %.2f GB\n", path, n_files, fbytes / 1e9);

    struct {
        const char *name, *io, *direct;
        int mode;
    } runs[] = {
        {"cat FILES > /dev/null", NULL, NULL, -1},
        {"loader io (prefetch, wait)", NULL, NULL, 2},
        {"loader (prefetch, to f32)", NULL, NULL, 1},
        {"loader io, no O_DIRECT", NULL, "0", 2},
        {"loader io, SG_IO=pread", "pread", NULL, 2},
        {"loader, no prefetch", NULL, NULL, 0},
    };
    double cat_rate = 0, io_rate = 0, f32_rate = 0;
    int ok = 1;
    for (size_t r = 0; r < sizeof runs / sizeof runs[0]; r++) {
        double frac;
        const char *how = evict(&frac);
        if (runs[r].io)
            setenv("SG_IO", runs[r].io, 1);
        else
            unsetenv("SG_IO");
        if (runs[r].direct)
            setenv("SG_IO_DIRECT", runs[r].direct, 1);
        else
            unsetenv("SG_IO_DIRECT");
        int64_t bytes = fbytes;
        char backend[400] = "";
        double t = runs[r].mode < 0 ? run_cat()
                                    : run_loader(path, runs[r].mode, &bytes, backend,
                                                 sizeof backend);
        if (t < 0) {
            ok = 0;
            printf("%-28s failed\n", runs[r].name);
            continue;
        }
        double rate = bytes / t / 1e6;
        printf("%-28s %8.1f MB/s  %6.2f GB in %6.2f s  %s (%.0f%% resident after %s)%s%s\n",
               runs[r].name, rate, bytes / 1e9, t, state(frac), 100 * frac, how,
               backend[0] ? "  " : "", backend);
        fflush(stdout);
        if (r == 0)
            cat_rate = rate;
        else if (r == 1)
            io_rate = rate;
        else if (r == 2)
            f32_rate = rate;
    }
    unsetenv("SG_IO");
    unsetenv("SG_IO_DIRECT");
    if (cat_rate > 0 && io_rate > 0)
        printf("ratio loader io / cat: %.2f; loader to f32 / cat: %.2f\n", io_rate / cat_rate,
               f32_rate / cat_rate);
    if (made) {
        rm_rf(model);
        rmdir(tmpdir);
    }
    return ok ? 0 : 1;
}
