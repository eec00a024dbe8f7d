/* Safetensors reader and streaming writer.
 *
 * Every header is checked on open so that a read can never go outside its
 * file or hand back bytes of another tensor: the header length must fit the
 * file (and 100 MB), each tensor's byte span must be exactly numel * dtype
 * size and lie inside the data region, spans of one file must not overlap,
 * names must be unique across shards, and a sharded model's index must name
 * exactly the tensors its shards hold.
 *
 * A directory holding both model.safetensors and an index is read through
 * model.safetensors, as transformers does.
 *
 * The host is assumed little-endian (as the format is), so F32 data is read
 * straight into the caller's buffer. All reads go through st_read_at(),
 * except tensor data when an sg_io is set (sg_safetensors_set_io). */
#include "safetensors.h"

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
#include "read_file.h"
#include "sg_error.h"

#define ST_MAX_HEADER ((uint64_t)100 << 20)
/* JSON numbers are parsed as doubles, exact for integers up to 2^53. */
#define ST_MAX_INT ((uint64_t)1 << 53)
#define ST_INDEX_NAME "model.safetensors.index.json"
#define ST_SINGLE_NAME "model.safetensors"

struct sg_safetensors {
    int n_files;
    char **paths; /* [n_files] */
    int *fds;     /* [n_files] */
    int n, cap;
    sg_st_tensor *t; /* [n], grouped by file */
    int *by_name;    /* [n] indices into t, sorted by name */
    sg_io *io;       /* tensor data reads go through it when set */
};

/* ---------------------------------------------------------------- reading */

/* Reads n bytes at absolute offset off. A file that ends early (changed
 * after open) is SG_EFORMAT. */
static int st_read_at(int fd, void *buf, size_t n, uint64_t off, const char *path,
                      const char *what)
{
    ssize_t got = sg_pread_full(fd, buf, n, off);
    if (got < 0)
        return sg_fail((int)got, "%s: %s: read failed: %s", path, what, strerror((int)-got));
    if ((size_t)got < n)
        return sg_fail(SG_EFORMAT, "%s: %s: unexpected end of file", path, what);
    return 0;
}

static char *st_join(const char *dir, const char *name)
{
    char *out;
    return asprintf(&out, "%s/%s", dir, name) < 0 ? NULL : out;
}

/* Safetensors dtype string -> ours. Spec dtypes we do not compute with are
 * SG_EUNSUPPORTED; anything else is not a safetensors file. */
static int st_parse_dtype(const char *s, sg_dtype *dt)
{
    static const struct { const char *name; sg_dtype dt; } ok[] = {
        {"F32", SG_DT_F32}, {"F16", SG_DT_F16}, {"BF16", SG_DT_BF16}, {"F64", SG_DT_F64}};
    static const char *const known[] = {"BOOL", "U8",  "I8",  "I16", "U16",     "I32",
                                        "U32",  "I64", "U64", "F8_E5M2", "F8_E4M3"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        if (!strcmp(s, ok[i].name)) {
            *dt = ok[i].dt;
            return 0;
        }
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (!strcmp(s, known[i]))
            return SG_EUNSUPPORTED;
    return SG_EFORMAT;
}

/* A JSON integer in [0, 2^53]. */
static int st_json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return -1;
    double d = v->valuedouble;
    if (!(d >= 0) || d > (double)ST_MAX_INT || d != (double)(uint64_t)d)
        return -1;
    *out = (uint64_t)d;
    return 0;
}

static int st_grow(sg_safetensors *st)
{
    if (st->n < st->cap)
        return 0;
    int cap = st->cap ? 2 * st->cap : 64;
    sg_st_tensor *t = realloc(st->t, (size_t)cap * sizeof *t);
    if (!t)
        return sg_fail(-ENOMEM, "safetensors: out of memory for %d tensors", cap);
    st->t = t;
    st->cap = cap;
    return 0;
}

/* One entry of a header: validates it against the data region
 * [data_start, data_start + data_size) and appends it to st. */
static int st_parse_entry(sg_safetensors *st, int file, const cJSON *e, uint64_t data_start,
                          uint64_t data_size)
{
    const char *path = st->paths[file], *name = e->string;
    if (!cJSON_IsObject(e))
        return sg_fail(SG_EFORMAT, "%s: %s: header entry is not an object", path, name);
    const cJSON *jdt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
    const cJSON *jshape = cJSON_GetObjectItemCaseSensitive(e, "shape");
    const cJSON *joff = cJSON_GetObjectItemCaseSensitive(e, "data_offsets");
    if (!cJSON_IsString(jdt))
        return sg_fail(SG_EFORMAT, "%s: %s: missing or non-string dtype", path, name);
    sg_dtype dt = SG_DT_F32;
    int rc = st_parse_dtype(jdt->valuestring, &dt);
    if (rc == SG_EUNSUPPORTED)
        return sg_fail(rc, "%s: %s: dtype %s is not supported (only F32, F16, BF16, F64)",
                       path, name, jdt->valuestring);
    if (rc)
        return sg_fail(rc, "%s: %s: unknown dtype \"%s\"", path, name, jdt->valuestring);
    if (!cJSON_IsArray(jshape))
        return sg_fail(SG_EFORMAT, "%s: %s: missing or non-array shape", path, name);
    int ndim = cJSON_GetArraySize(jshape);
    if (ndim > SG_MAX_DIMS)
        return sg_fail(SG_EUNSUPPORTED, "%s: %s: %d dimensions (at most %d supported)", path,
                       name, ndim, SG_MAX_DIMS);
    if (!cJSON_IsArray(joff) || cJSON_GetArraySize(joff) != 2)
        return sg_fail(SG_EFORMAT, "%s: %s: data_offsets must be [begin, end]", path, name);

    int rcg = st_grow(st);
    if (rcg)
        return rcg;
    sg_st_tensor *t = &st->t[st->n];
    memset(t, 0, sizeof *t);
    t->dtype = dt;
    t->ndim = ndim;
    t->file = file;
    uint64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        uint64_t d;
        if (st_json_uint(cJSON_GetArrayItem(jshape, i), &d))
            return sg_fail(SG_EFORMAT, "%s: %s: shape[%d] is not a non-negative integer", path,
                           name, i);
        if (d && numel > ST_MAX_INT / d)
            return sg_fail(SG_EFORMAT, "%s: %s: shape is too large", path, name);
        t->shape[i] = (int64_t)d;
        numel *= d;
    }
    uint64_t begin, end;
    if (st_json_uint(cJSON_GetArrayItem(joff, 0), &begin) ||
        st_json_uint(cJSON_GetArrayItem(joff, 1), &end))
        return sg_fail(SG_EFORMAT, "%s: %s: data_offsets are not non-negative integers", path,
                       name);
    if (end < begin)
        return sg_fail(SG_EFORMAT, "%s: %s: data_offsets end %llu before begin %llu", path,
                       name, (unsigned long long)end, (unsigned long long)begin);
    if (end > data_size)
        return sg_fail(SG_EFORMAT,
                       "%s: %s: data_offsets [%llu, %llu] go past the end of the data "
                       "(%llu bytes)",
                       path, name, (unsigned long long)begin, (unsigned long long)end,
                       (unsigned long long)data_size);
    int64_t want = sg_dtype_bytes(dt, (int64_t)numel);
    if (want < 0 || (uint64_t)want != end - begin)
        return sg_fail(SG_EFORMAT,
                       "%s: %s: %llu bytes stored but shape x %s needs %lld", path, name,
                       (unsigned long long)(end - begin), sg_dtype_name(dt), (long long)want);
    t->name = strdup(name);
    if (!t->name)
        return sg_fail(-ENOMEM, "%s: %s: out of memory", path, name);
    t->numel = (int64_t)numel;
    t->offset = data_start + begin;
    t->nbytes = end - begin;
    st->n++;
    return 0;
}

static int st_cmp_offset(const void *a, const void *b)
{
    const sg_st_tensor *x = a, *y = b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Parses and validates the header of file `file`, appending its tensors. */
static int st_parse_file(sg_safetensors *st, int file)
{
    const char *path = st->paths[file];
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        return sg_fail(e == ENOENT ? SG_EMISSING : -e, "%s: cannot open: %s", path,
                       strerror(e));
    }
    st->fds[file] = fd;
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        return sg_fail(-e, "%s: cannot stat: %s", path, strerror(e));
    }
    uint64_t size = (uint64_t)sb.st_size;
    if (size < 8)
        return sg_fail(SG_EFORMAT, "%s: file is %llu bytes, shorter than the 8-byte header "
                       "length", path, (unsigned long long)size);
    unsigned char lenbuf[8];
    int rc = st_read_at(fd, lenbuf, 8, 0, path, "header length");
    if (rc)
        return rc;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--)
        hlen = hlen << 8 | lenbuf[i];
    if (hlen > size - 8)
        return sg_fail(SG_EFORMAT, "%s: header length %llu exceeds the file size %llu", path,
                       (unsigned long long)hlen, (unsigned long long)size);
    if (hlen > ST_MAX_HEADER)
        return sg_fail(SG_EFORMAT, "%s: header length %llu exceeds the 100 MB limit", path,
                       (unsigned long long)hlen);
    char *text = malloc(hlen + 1);
    if (!text)
        return sg_fail(-ENOMEM, "%s: out of memory for the header", path);
    rc = st_read_at(fd, text, hlen, 8, path, "header");
    if (rc) {
        free(text);
        return rc;
    }
    text[hlen] = '\0';
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, hlen, &end, 0);
    /* only whitespace (the spec's padding) may follow the JSON value */
    int trailing = 0;
    if (root)
        for (const char *p = end; p < text + hlen; p++)
            if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
                trailing = 1;
    free(text);
    if (!root || trailing || !cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return sg_fail(SG_EFORMAT, "%s: header is not a JSON object", path);
    }
    int first = st->n;
    const cJSON *e;
    cJSON_ArrayForEach(e, root)
    {
        if (!strcmp(e->string, "__metadata__")) {
            if (!cJSON_IsObject(e)) {
                cJSON_Delete(root);
                return sg_fail(SG_EFORMAT, "%s: __metadata__ is not an object", path);
            }
            continue;
        }
        rc = st_parse_entry(st, file, e, 8 + hlen, size - 8 - hlen);
        if (rc) {
            cJSON_Delete(root);
            return rc;
        }
    }
    cJSON_Delete(root);

    /* Overlap check: sorted by offset, each span must end before the next
     * starts. The file's tensors stay sorted by offset, which is also the
     * order a sequential reader wants. */
    sg_st_tensor *t = st->t + first;
    int n = st->n - first;
    qsort(t, (size_t)n, sizeof *t, st_cmp_offset);
    uint64_t end_max = 0; /* end of the spans seen so far; empty tensors hold no bytes */
    const char *end_name = NULL;
    for (int i = 0; i < n; i++) {
        if (t[i].nbytes == 0)
            continue;
        if (end_name && t[i].offset < end_max)
            return sg_fail(SG_EFORMAT, "%s: tensors %s and %s overlap", path, end_name,
                           t[i].name);
        end_max = t[i].offset + t[i].nbytes;
        end_name = t[i].name;
    }
    return 0;
}

static int st_cmp_name(const void *a, const void *b, void *base)
{
    const sg_st_tensor *t = base;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

/* Builds the by-name index; a name held twice is an error naming both files. */
static int st_index_names(sg_safetensors *st)
{
    st->by_name = malloc((size_t)(st->n ? st->n : 1) * sizeof *st->by_name);
    if (!st->by_name)
        return sg_fail(-ENOMEM, "safetensors: out of memory");
    for (int i = 0; i < st->n; i++)
        st->by_name[i] = i;
    qsort_r(st->by_name, (size_t)st->n, sizeof *st->by_name, st_cmp_name, st->t);
    for (int i = 1; i < st->n; i++) {
        const sg_st_tensor *a = &st->t[st->by_name[i - 1]], *b = &st->t[st->by_name[i]];
        if (!strcmp(a->name, b->name))
            return sg_fail(SG_EFORMAT, "%s: %s: tensor name also used in %s",
                           st->paths[b->file], b->name, st->paths[a->file]);
    }
    return 0;
}

static int st_add_path(sg_safetensors *st, char *path)
{
    char **p = realloc(st->paths, (size_t)(st->n_files + 1) * sizeof *p);
    if (p)
        st->paths = p;
    int *f = realloc(st->fds, (size_t)(st->n_files + 1) * sizeof *f);
    if (f)
        st->fds = f;
    if (!p || !f || !path) {
        free(path);
        return sg_fail(-ENOMEM, "safetensors: out of memory");
    }
    st->paths[st->n_files] = path;
    st->fds[st->n_files] = -1;
    return st->n_files++;
}


/* Sharded model: opens every shard the index names, then checks that the
 * weight_map and the shards agree tensor by tensor. */
static int st_open_index(sg_safetensors *st, const char *dir, const char *index_path)
{
    char *text = NULL;
    size_t len = 0;
    int rc = sg_read_file(index_path, ST_MAX_HEADER, &text, &len);
    if (rc)
        return rc;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!cJSON_IsObject(root) || !cJSON_IsObject(map)) {
        cJSON_Delete(root);
        return sg_fail(SG_EFORMAT, "%s: not a JSON object with a weight_map object",
                       index_path);
    }
    const cJSON *e;
    cJSON_ArrayForEach(e, map)
    {
        if (!cJSON_IsString(e)) {
            rc = sg_fail(SG_EFORMAT, "%s: %s: weight_map value is not a file name",
                         index_path, e->string);
            goto out;
        }
        const char *shard = e->valuestring;
        /* shards live beside the index; refuse paths that leave it */
        if (!shard[0] || strchr(shard, '/') || !strcmp(shard, ".") || !strcmp(shard, "..")) {
            rc = sg_fail(SG_EFORMAT, "%s: %s: bad shard file name \"%s\"", index_path,
                         e->string, shard);
            goto out;
        }
        int known = 0;
        for (int f = 0; f < st->n_files && !known; f++)
            known = !strcmp(basename(st->paths[f]), shard);
        if (known)
            continue;
        rc = st_add_path(st, st_join(dir, shard));
        if (rc < 0)
            goto out;
        rc = st_parse_file(st, rc);
        if (rc)
            goto out;
    }
    rc = st_index_names(st);
    if (rc)
        goto out;
    int listed = 0;
    cJSON_ArrayForEach(e, map)
    {
        listed++;
        const sg_st_tensor *t = sg_safetensors_find(st, e->string);
        if (!t || strcmp(basename(st->paths[t->file]), e->valuestring)) {
            rc = sg_fail(t ? SG_EFORMAT : SG_EMISSING,
                         "%s: %s: listed in the index under %s but %s", index_path, e->string,
                         e->valuestring,
                         t ? "stored in another shard" : "missing from that shard");
            goto out;
        }
    }
    if (listed != st->n) {
        /* some shard holds a tensor the index does not list: find it */
        for (int i = 0; i < st->n; i++)
            if (!cJSON_GetObjectItemCaseSensitive(map, st->t[i].name)) {
                rc = sg_fail(SG_EFORMAT, "%s: %s: present in the shard but not in the index %s",
                             st->paths[st->t[i].file], st->t[i].name, index_path);
                goto out;
            }
        rc = sg_fail(SG_EFORMAT, "%s: weight_map lists a tensor twice", index_path);
    }
out:
    cJSON_Delete(root);
    return rc;
}

int sg_safetensors_open(const char *path, sg_safetensors **out)
{
    *out = NULL;
    struct stat sb;
    if (stat(path, &sb) != 0) {
        int e = errno;
        return sg_fail(e == ENOENT ? SG_EMISSING : -e, "%s: cannot open: %s", path,
                       strerror(e));
    }
    sg_safetensors *st = calloc(1, sizeof *st);
    if (!st)
        return sg_fail(-ENOMEM, "%s: out of memory", path);
    int rc;
    if (S_ISDIR(sb.st_mode)) {
        char *single = st_join(path, ST_SINGLE_NAME), *index = st_join(path, ST_INDEX_NAME);
        if (!single || !index) {
            rc = sg_fail(-ENOMEM, "%s: out of memory", path);
        } else if (access(single, F_OK) == 0) {
            rc = st_add_path(st, single);
            single = NULL;
            if (rc >= 0)
                rc = st_parse_file(st, rc);
            if (rc == 0)
                rc = st_index_names(st);
        } else if (access(index, F_OK) == 0) {
            rc = st_open_index(st, path, index);
        } else {
            rc = sg_fail(SG_EMISSING, "%s: no %s or %s in this directory", path,
                         ST_SINGLE_NAME, ST_INDEX_NAME);
        }
        free(single);
        free(index);
    } else {
        rc = st_add_path(st, strdup(path));
        if (rc >= 0)
            rc = st_parse_file(st, rc);
        if (rc == 0)
            rc = st_index_names(st);
    }
    if (rc) {
        sg_safetensors_close(st);
        return rc;
    }
    *out = st;
    return 0;
}

void sg_safetensors_close(sg_safetensors *st)
{
    if (!st)
        return;
    for (int f = 0; f < st->n_files; f++) {
        if (st->fds[f] >= 0)
            close(st->fds[f]);
        free(st->paths[f]);
    }
    for (int i = 0; i < st->n; i++)
        free(st->t[i].name);
    free(st->paths);
    free(st->fds);
    free(st->t);
    free(st->by_name);
    free(st);
}

int sg_safetensors_count(const sg_safetensors *st) { return st->n; }

const sg_st_tensor *sg_safetensors_at(const sg_safetensors *st, int i)
{
    return i >= 0 && i < st->n ? &st->t[i] : NULL;
}

const sg_st_tensor *sg_safetensors_find(const sg_safetensors *st, const char *name)
{
    int lo = 0, hi = st->n - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const sg_st_tensor *t = &st->t[st->by_name[mid]];
        int c = strcmp(name, t->name);
        if (c == 0)
            return t;
        if (c < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return NULL;
}

const char *sg_safetensors_file_path(const sg_safetensors *st, int file)
{
    return file >= 0 && file < st->n_files ? st->paths[file] : NULL;
}

int sg_safetensors_file_count(const sg_safetensors *st) { return st->n_files; }

int sg_safetensors_file_fd(const sg_safetensors *st, int file)
{
    return file >= 0 && file < st->n_files ? st->fds[file] : -1;
}

void sg_safetensors_set_io(sg_safetensors *st, sg_io *io) { st->io = io; }

int sg_safetensors_read_raw(sg_safetensors *st, const sg_st_tensor *t, void *dst)
{
    if (st->io) {
        char what[4096 + 256]; /* messages name file and tensor */
        snprintf(what, sizeof what, "%s: %s", st->paths[t->file], t->name);
        return sg_io_read(st->io, st->fds[t->file], dst, t->nbytes, t->offset, what);
    }
    return st_read_at(st->fds[t->file], dst, t->nbytes, t->offset, st->paths[t->file],
                      t->name);
}

int sg_safetensors_read_f32(sg_safetensors *st, const sg_st_tensor *t, float *dst)
{
    if (t->dtype == SG_DT_F32)
        return sg_safetensors_read_raw(st, t, dst);
    if (t->dtype == SG_DT_F16 || t->dtype == SG_DT_BF16) {
        /* Half-width data is read into the back half of dst and widened
         * front to back: output i (bytes 4i..4i+3) only overwrites inputs
         * with index <= i, which have already been consumed. No buffer. */
        const int64_t n = t->numel;
        unsigned char *raw = (unsigned char *)dst + 2 * (size_t)n;
        int rc = sg_safetensors_read_raw(st, t, raw);
        if (rc)
            return rc;
        for (int64_t i = 0; i < n; i++) {
            uint16_t h = (uint16_t)(raw[2 * i] | raw[2 * i + 1] << 8);
            dst[i] = t->dtype == SG_DT_F16 ? sg_f16_to_f32(h) : sg_bf16_to_f32(h);
        }
        return 0;
    }
    /* F64 is wider than the result and needs its own buffer */
    void *raw = malloc(t->nbytes ? t->nbytes : 1);
    if (!raw)
        return sg_fail(-ENOMEM, "%s: %s: out of memory for %llu bytes", st->paths[t->file],
                       t->name, (unsigned long long)t->nbytes);
    int rc = sg_safetensors_read_raw(st, t, raw);
    if (rc == 0 && sg_to_f32(t->dtype, raw, dst, t->numel) != 0)
        rc = sg_fail(SG_EFORMAT, "%s: %s: cannot convert %s to float32", st->paths[t->file],
                     t->name, sg_dtype_name(t->dtype));
    free(raw);
    return rc;
}

/* ---------------------------------------------------------------- writing */

typedef struct {
    char *name;
    sg_dtype dtype;
    int ndim;
    int64_t shape[SG_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end; /* relative to the data region */
} st_decl;

struct sg_st_writer {
    char *path, *tmp;
    int fd;
    st_decl *d;
    int n, cap;
    int next;   /* index of the next tensor to write */
    int header_written;
    int err;    /* first I/O failure; the temp file is already gone */
};

static int st_write_all(sg_st_writer *w, const void *buf, size_t n, const char *what)
{
    int err = sg_write_all(w->fd, buf, n);
    if (err)
        return sg_fail(err, "%s: %s: write failed: %s", w->tmp, what, strerror(-err));
    return 0;
}

/* After a failure nothing may remain under either name. */
static int st_writer_fail(sg_st_writer *w, int rc)
{
    if (w->fd >= 0)
        close(w->fd);
    w->fd = -1;
    unlink(w->tmp);
    w->err = rc;
    return rc;
}

int sg_st_writer_open(const char *path, sg_st_writer **out)
{
    *out = NULL;
    sg_st_writer *w = calloc(1, sizeof *w);
    if (!w || !(w->path = strdup(path)) || asprintf(&w->tmp, "%s.tmp", path) < 0) {
        if (w)
            free(w->path);
        free(w);
        return sg_fail(-ENOMEM, "%s: out of memory", path);
    }
    w->fd = open(w->tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (w->fd < 0) {
        int e = errno;
        free(w->path);
        free(w->tmp);
        free(w);
        return sg_fail(-e, "%s.tmp: cannot create: %s", path, strerror(e));
    }
    *out = w;
    return 0;
}

int sg_st_writer_declare(sg_st_writer *w, const char *name, sg_dtype dtype, int ndim,
                         const int64_t *shape)
{
    if (w->err)
        return w->err;
    if (w->header_written)
        return sg_fail(SG_EARG, "%s: %s: declared after data writing began", w->path, name);
    if (dtype != SG_DT_F32 && dtype != SG_DT_F16 && dtype != SG_DT_BF16 && dtype != SG_DT_F64)
        return sg_fail(SG_EUNSUPPORTED, "%s: %s: safetensors cannot store %s", w->path, name,
                       sg_dtype_name(dtype));
    if (ndim < 0 || ndim > SG_MAX_DIMS)
        return sg_fail(SG_EARG, "%s: %s: %d dimensions", w->path, name, ndim);
    if (!strcmp(name, "__metadata__") || !name[0])
        return sg_fail(SG_EARG, "%s: \"%s\" is not a usable tensor name", w->path, name);
    for (int i = 0; i < w->n; i++)
        if (!strcmp(w->d[i].name, name))
            return sg_fail(SG_EARG, "%s: %s: declared twice", w->path, name);
    int64_t numel = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] && numel > (int64_t)ST_MAX_INT / shape[i]))
            return sg_fail(SG_EARG, "%s: %s: bad shape", w->path, name);
        numel *= shape[i];
    }
    if (w->n == w->cap) {
        int cap = w->cap ? 2 * w->cap : 64;
        st_decl *d = realloc(w->d, (size_t)cap * sizeof *d);
        if (!d)
            return sg_fail(-ENOMEM, "%s: out of memory", w->path);
        w->d = d;
        w->cap = cap;
    }
    st_decl *d = &w->d[w->n];
    memset(d, 0, sizeof *d);
    if (!(d->name = strdup(name)))
        return sg_fail(-ENOMEM, "%s: out of memory", w->path);
    d->dtype = dtype;
    d->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        d->shape[i] = shape[i];
    d->numel = numel;
    /* tensors are packed back to back: the format forbids holes */
    d->begin = w->n ? w->d[w->n - 1].end : 0;
    d->end = d->begin + (uint64_t)sg_dtype_bytes(dtype, numel);
    w->n++;
    return 0;
}

/* cJSON prints numbers as doubles; offsets and shapes are written as raw
 * integer text so they stay exact at any size. */
static cJSON *st_uint_array(const uint64_t *v, int n)
{
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)v[i]);
        cJSON *x = cJSON_CreateRaw(buf);
        if (!x || !cJSON_AddItemToArray(a, x)) {
            cJSON_Delete(x);
            cJSON_Delete(a);
            return NULL;
        }
    }
    return a;
}

static int st_write_header(sg_st_writer *w)
{
    cJSON *root = cJSON_CreateObject(), *meta = cJSON_AddObjectToObject(root, "__metadata__");
    int ok = root && meta && cJSON_AddStringToObject(meta, "format", "pt");
    for (int i = 0; ok && i < w->n; i++) {
        const st_decl *d = &w->d[i];
        uint64_t shape[SG_MAX_DIMS], off[2] = {d->begin, d->end};
        for (int k = 0; k < d->ndim; k++)
            shape[k] = (uint64_t)d->shape[k];
        cJSON *e = cJSON_AddObjectToObject(root, d->name);
        cJSON *js = st_uint_array(shape, d->ndim), *jo = st_uint_array(off, 2);
        ok = e && js && jo && cJSON_AddStringToObject(e, "dtype", sg_dtype_name(d->dtype)) &&
             cJSON_AddItemToObject(e, "shape", js) &&
             cJSON_AddItemToObject(e, "data_offsets", jo);
        if (!ok) {
            cJSON_Delete(js);
            cJSON_Delete(jo);
        }
    }
    char *text = ok ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text)
        return sg_fail(-ENOMEM, "%s: out of memory building the header", w->path);
    /* pad with spaces so the data starts 8-byte aligned */
    size_t len = strlen(text), padded = (len + 7) & ~(size_t)7;
    unsigned char *buf = malloc(8 + padded);
    if (!buf) {
        free(text);
        return sg_fail(-ENOMEM, "%s: out of memory building the header", w->path);
    }
    for (int i = 0; i < 8; i++)
        buf[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    memcpy(buf + 8, text, len);
    memset(buf + 8 + len, ' ', padded - len);
    free(text);
    int rc = st_write_all(w, buf, 8 + padded, "header");
    free(buf);
    w->header_written = 1;
    return rc;
}

int sg_st_writer_write(sg_st_writer *w, const char *name, const float *data)
{
    if (w->err)
        return w->err;
    if (w->next >= w->n || strcmp(w->d[w->next].name, name))
        return sg_fail(SG_EARG, "%s: %s: written out of declaration order (expected %s)",
                       w->path, name, w->next < w->n ? w->d[w->next].name : "no more tensors");
    int rc = 0;
    if (!w->header_written && (rc = st_write_header(w)))
        return st_writer_fail(w, rc);
    const st_decl *d = &w->d[w->next];
    if (d->dtype == SG_DT_F32) {
        rc = st_write_all(w, data, (size_t)d->numel * 4, name);
    } else {
        /* convert in chunks so memory stays one tensor plus a small buffer */
        enum { CHUNK = 1 << 16 };
        unsigned char *buf = malloc((size_t)sg_dtype_bytes(d->dtype, CHUNK));
        if (!buf)
            return st_writer_fail(w, sg_fail(-ENOMEM, "%s: %s: out of memory", w->path, name));
        for (int64_t i = 0; rc == 0 && i < d->numel; i += CHUNK) {
            int64_t k = d->numel - i < CHUNK ? d->numel - i : CHUNK;
            sg_from_f32(d->dtype, data + i, buf, k);
            rc = st_write_all(w, buf, (size_t)sg_dtype_bytes(d->dtype, k), name);
        }
        free(buf);
    }
    if (rc)
        return st_writer_fail(w, rc);
    w->next++;
    return 0;
}

static void st_writer_free(sg_st_writer *w)
{
    for (int i = 0; i < w->n; i++)
        free(w->d[i].name);
    free(w->d);
    free(w->path);
    free(w->tmp);
    free(w);
}

/* fsync of the directory makes the rename itself durable. */
static int st_sync_dir(const char *path)
{
    char *copy = strdup(path);
    if (!copy)
        return sg_fail(-ENOMEM, "%s: out of memory", path);
    int fd = open(dirname(copy), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = 0;
    if (fd < 0 || fsync(fd) != 0) {
        int e = errno;
        /* some filesystems refuse fsync on directories; the data is safe */
        if (e != EINVAL && e != EBADF)
            rc = sg_fail(-e, "%s: cannot sync its directory: %s", path, strerror(e));
    }
    if (fd >= 0)
        close(fd);
    free(copy);
    return rc;
}

int sg_st_writer_finish(sg_st_writer *w)
{
    int rc = w->err;
    if (rc == 0 && w->next < w->n)
        rc = st_writer_fail(w, sg_fail(SG_EARG, "%s: %s: declared but never written",
                                       w->path, w->d[w->next].name));
    if (rc == 0 && !w->header_written && (rc = st_write_header(w)))
        st_writer_fail(w, rc);
    if (rc == 0 && fsync(w->fd) != 0) {
        int e = errno;
        rc = st_writer_fail(w, sg_fail(-e, "%s: fsync failed: %s", w->tmp, strerror(e)));
    }
    if (rc == 0) {
        int fd = w->fd;
        w->fd = -1;
        if (close(fd) != 0) {
            int e = errno;
            rc = st_writer_fail(w, sg_fail(-e, "%s: close failed: %s", w->tmp, strerror(e)));
        }
    }
    if (rc == 0 && rename(w->tmp, w->path) != 0) {
        int e = errno;
        rc = st_writer_fail(w, sg_fail(-e, "%s: cannot rename to %s: %s", w->tmp, w->path,
                                       strerror(e)));
    }
    if (rc == 0)
        rc = st_sync_dir(w->path);
    st_writer_free(w);
    return rc;
}

void sg_st_writer_abort(sg_st_writer *w)
{
    if (!w)
        return;
    if (!w->err)
        st_writer_fail(w, 0);
    st_writer_free(w);
}
