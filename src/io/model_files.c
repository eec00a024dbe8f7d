/* Dispatch over the model formats: a Hugging Face directory (config.json +
 * safetensors) or a GGUF file. Each canonical name is resolved once, at
 * open, to the format's own tensor.
 *
 * All tensor bytes are read through one sg_io (io_uring or pread threads).
 * Block prefetch reads a whole block's stored bytes into one aligned
 * buffer, a few large requests per file; sg_model_files_read converts from
 * there with sg_to_f32, the same conversion the format readers use, so
 * the floats are the same bit for bit. */
#include "model_files.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gguf.h"
#include "hf_config.h"
#include "safetensors.h"
#include "sg_error.h"
#include "tensor_names.h"
#include "uring_io.h"

/* Prefetch requests for tensors closer than this in one file are merged;
 * the bytes between them are read too (GGUF alignment padding, ...). */
#define PF_MERGE_GAP ((uint64_t)64 << 10)
#define IO_QUEUE_DEPTH 64

typedef struct {
    char *canonical;
    const sg_st_tensor *st; /* HF */
    const sg_gguf_tensor *gg; /* GGUF */
    int64_t layer;          /* l of "blk.<l>.", or -1 */
    int slot;               /* prefetch slot holding its bytes, or -1 */
    uint64_t slot_off;      /* its bytes' offset in that slot's buffer */
} name_entry;

/* One prefetched block: its raw bytes, maybe still arriving. */
typedef struct {
    int64_t layer;          /* -1: free */
    unsigned char *buf;     /* SG_IO_ALIGN-aligned, cap bytes, size in use */
    size_t size, cap;
    uint64_t ticket;
    int pending;            /* ticket not yet waited for */
} pf_slot;

/* A file tensors are stored in, as prefetch reads it. */
typedef struct {
    const char *path;
    int fd;
    int owned;              /* fd is ours (O_DIRECT); else the format's */
} data_file;

struct sg_model_files {
    char *path;
    sg_model_config cfg;
    sg_safetensors *st;
    sg_gguf *gg;
    name_entry *names;
    int n_names;
    sg_io *io;
    char io_backend[320];
    data_file *files;       /* [n_files]: safetensors shards, or the GGUF file */
    int n_files;
    pf_slot slot[2];
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
    int64_t layer = -1;
    if (!strncmp(canonical, "blk.", 4)) {
        char *end;
        long long l = strtoll(canonical + 4, &end, 10);
        if (end != canonical + 4 && *end == '.' && l >= 0)
            layer = l;
    }
    m->names[m->n_names] = (name_entry){strdup(canonical), st, gg, layer, -1, 0};
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

/* The sg_io every read goes through, and the files prefetch reads: opened
 * again with O_DIRECT where allowed, else the format's own descriptors. */
static int open_io(sg_model_files *m)
{
    int err = sg_io_init(IO_QUEUE_DEPTH, &m->io);
    if (err)
        return err;
    const char *why = sg_io_fallback_reason(m->io);
    snprintf(m->io_backend, sizeof m->io_backend, "%s%s%s", sg_io_backend(m->io),
             why ? ": " : "", why ? why : "");
    if (m->st)
        sg_safetensors_set_io(m->st, m->io);
    else
        sg_gguf_set_io(m->gg, m->io);
    m->n_files = m->st ? sg_safetensors_file_count(m->st) : 1;
    m->files = calloc((size_t)m->n_files, sizeof *m->files);
    if (!m->files)
        return sg_fail(-ENOMEM, "%s: out of memory", m->path);
    const char *env = getenv("SG_IO_DIRECT");
    int want_direct = !(env && !strcmp(env, "0"));
    for (int f = 0; f < m->n_files; f++) {
        data_file *d = &m->files[f];
        d->path = m->st ? sg_safetensors_file_path(m->st, f) : sg_gguf_path(m->gg);
        d->fd = m->st ? sg_safetensors_file_fd(m->st, f) : sg_gguf_fd(m->gg);
        int fd, direct;
        if (want_direct && sg_io_open_direct(d->path, &fd, &direct) == 0) {
            if (direct) {
                d->fd = fd;
                d->owned = 1;
            } else {
                close(fd);
            }
        }
    }
    sg_clear_error(); /* a refused O_DIRECT open is not an error */
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
    for (int s = 0; s < 2; s++)
        m->slot[s].layer = -1;
    int err;
    struct stat sb;
    if (stat(path, &sb) != 0)
        err = sg_fail(-errno, "%s: %s", path, strerror(errno));
    else
        err = is_directory(path) ? open_hf(m) : open_gguf(m);
    if (!err)
        err = open_io(m);
    if (err) {
        sg_model_files_close(m);
        return err;
    }
    *out = m;
    return 0;
}

static void release_slot(sg_model_files *m, int s, int keep_buffer);

void sg_model_files_close(sg_model_files *m)
{
    if (!m)
        return;
    for (int s = 0; s < 2; s++)
        release_slot(m, s, 0);
    sg_io_free(m->io); /* before the files: it may still be reading them */
    for (int f = 0; f < m->n_files; f++)
        if (m->files[f].owned)
            close(m->files[f].fd);
    free(m->files);
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

static uint64_t entry_nbytes(const name_entry *e);

int64_t sg_model_files_tensor_bytes(const sg_model_files *m, const char *name)
{
    const name_entry *e = lookup(m, name);
    return e ? (int64_t)entry_nbytes(e) : -1;
}

/* ------------------------------------------------------------ prefetch */

static int entry_file(const name_entry *e) { return e->st ? e->st->file : 0; }
static uint64_t entry_offset(const name_entry *e) { return e->st ? e->st->offset : e->gg->offset; }
static uint64_t entry_nbytes(const name_entry *e) { return e->st ? e->st->nbytes : e->gg->nbytes; }

/* Empties slot s, first waiting for its reads: the buffer is theirs until
 * then. A read error there is dropped with the block; reading one of its
 * tensors again reports it. keep_buffer: the next block goes into the
 * same buffer (no new mapping to fault in for every block). */
static void release_slot(sg_model_files *m, int s, int keep_buffer)
{
    pf_slot *p = &m->slot[s];
    if (p->pending)
        sg_io_wait(m->io, p->ticket);
    for (int i = 0; p->layer >= 0 && i < m->n_names; i++)
        if (m->names[i].slot == s)
            m->names[i].slot = -1;
    unsigned char *buf = p->buf;
    size_t cap = p->cap;
    if (!keep_buffer) {
        free(buf);
        buf = NULL;
        cap = 0;
    }
    *p = (pf_slot){.layer = -1, .buf = buf, .cap = cap};
}

static int cmp_entry_pos(const void *a, const void *b)
{
    const name_entry *x = *(name_entry *const *)a, *y = *(name_entry *const *)b;
    if (entry_file(x) != entry_file(y))
        return entry_file(x) < entry_file(y) ? -1 : 1;
    return entry_offset(x) < entry_offset(y) ? -1 : entry_offset(x) > entry_offset(y);
}

int sg_model_files_prefetch_block(sg_model_files *m, int64_t l)
{
    for (int s = 0; s < 2; s++)
        if (m->slot[s].layer == l)
            return 0;
    /* the slot to fill: the free one, or the one not holding block l - 1 */
    int s = m->slot[0].layer < 0 || (m->slot[1].layer >= 0 && m->slot[1].layer == l - 1) ? 0 : 1;
    if (m->slot[1 - s].layer < 0 || m->slot[1 - s].layer != l - 1)
        release_slot(m, 1 - s, 0);
    release_slot(m, s, 1);

    /* the block's tensors in file order */
    int n = 0;
    for (int i = 0; i < m->n_names; i++)
        n += m->names[i].layer == l && entry_nbytes(&m->names[i]) > 0;
    if (n == 0) {
        release_slot(m, s, 0);
        return 0;
    }
    name_entry **ents = malloc((size_t)n * sizeof *ents);
    sg_io_req *reqs = malloc((size_t)n * sizeof *reqs);
    if (!ents || !reqs) {
        free(ents);
        free(reqs);
        release_slot(m, s, 0);
        return sg_fail(-ENOMEM, "%s: blk.%lld: out of memory", m->path, (long long)l);
    }
    n = 0;
    for (int i = 0; i < m->n_names; i++)
        if (m->names[i].layer == l && entry_nbytes(&m->names[i]) > 0)
            ents[n++] = &m->names[i];
    qsort(ents, (size_t)n, sizeof *ents, cmp_entry_pos);

    /* Runs of neighbouring tensors become one request each, widened to
     * SG_IO_ALIGN at both ends (O_DIRECT needs it) and placed at aligned
     * positions of the buffer; only the bytes up to the last tensor's end
     * must exist (min_len), the rounded-up tail may lie past the file. */
    const uint64_t A = SG_IO_ALIGN;
    int n_reqs = 0;
    uint64_t pos = 0; /* bytes of buffer laid out so far */
    for (int i = 0; i < n;) {
        /* a run: ents[i..j), one file, each within PF_MERGE_GAP of the last */
        const data_file *f = &m->files[entry_file(ents[i])];
        uint64_t start = entry_offset(ents[i]), end = start + entry_nbytes(ents[i]);
        int j = i + 1;
        while (j < n && entry_file(ents[j]) == entry_file(ents[i]) &&
               entry_offset(ents[j]) <= end + PF_MERGE_GAP) {
            uint64_t e_end = entry_offset(ents[j]) + entry_nbytes(ents[j]);
            end = e_end > end ? e_end : end;
            j++;
        }
        uint64_t astart = start / A * A, aend = (end + A - 1) / A * A;
        for (int k = i; k < j; k++)
            ents[k]->slot_off = pos + (entry_offset(ents[k]) - astart);
        /* buf holds the position until the buffer exists */
        reqs[n_reqs++] = (sg_io_req){f->fd, (void *)(uintptr_t)pos, (size_t)(aend - astart),
                                     astart, (size_t)(end - astart), f->path};
        pos += aend - astart;
        i = j;
    }
    pf_slot *p = &m->slot[s];
    if (p->cap < pos) {
        free(p->buf);
        p->buf = NULL;
        p->cap = 0;
        void *buf = NULL;
        if (posix_memalign(&buf, A, (size_t)pos)) {
            free(ents);
            free(reqs);
            return sg_fail(-ENOMEM, "%s: blk.%lld: out of memory for %llu bytes", m->path,
                           (long long)l, (unsigned long long)pos);
        }
        p->buf = buf;
        p->cap = (size_t)pos;
    }
    unsigned char *buf = p->buf;
    for (int r = 0; r < n_reqs; r++)
        reqs[r].buf = (unsigned char *)buf + (uintptr_t)reqs[r].buf;
    int err = sg_io_submit(m->io, reqs, n_reqs, &p->ticket);
    free(reqs);
    if (err) {
        free(ents);
        release_slot(m, s, 0);
        return err;
    }
    p->layer = l;
    p->size = (size_t)pos;
    p->pending = 1;
    for (int i = 0; i < n; i++)
        ents[i]->slot = s;
    free(ents);
    return 0;
}

int64_t sg_model_files_prefetch_bytes(const sg_model_files *m)
{
    return (int64_t)(m->slot[0].cap + m->slot[1].cap);
}

const char *sg_model_files_io_backend(const sg_model_files *m) { return m->io_backend; }

int sg_model_files_io_direct(const sg_model_files *m)
{
    int n = 0;
    for (int f = 0; f < m->n_files; f++) {
        int fl = fcntl(m->files[f].fd, F_GETFL);
        n += fl >= 0 && (fl & O_DIRECT);
    }
    return n;
}

/* Serves e from its prefetched block. */
static int read_prefetched(sg_model_files *m, const name_entry *e, float *dst)
{
    int s = e->slot;
    pf_slot *p = &m->slot[s];
    if (p->pending) {
        p->pending = 0;
        int err = sg_io_wait(m->io, p->ticket);
        if (err) {
            char why[1024];
            snprintf(why, sizeof why, "%s", sg_last_error());
            sg_fail(err, "%s (prefetching blk.%lld, read for %s)", why, (long long)p->layer,
                    e->canonical);
            release_slot(m, s, 0);
            return err;
        }
    }
    sg_dtype dt = e->st ? e->st->dtype : e->gg->dtype;
    int64_t numel = e->st ? e->st->numel : e->gg->numel;
    if (sg_to_f32(dt, p->buf + e->slot_off, dst, numel))
        return sg_fail(SG_EFORMAT, "%s: %s: cannot convert %s to float32", m->path,
                       e->canonical, sg_dtype_name(dt));
    return 0;
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
    if (e->slot >= 0)
        return read_prefetched(m, e, dst);
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
