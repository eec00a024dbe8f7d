/* GGUF reader: header, metadata and tensor infos parsed and validated on
 * open; tensor data read on demand with pread, one tensor at a time.
 *
 * The header is parsed from a read-only mapping of the file, every read
 * checked against the file size, and everything kept is copied out, so the
 * mapping is dropped before open returns: a 100 GB model costs only its
 * metadata (vocabulary included) in memory. Counts and lengths are checked
 * against the bytes left in the file before anything is allocated, so a
 * crafted header cannot make us allocate more than the file could describe.
 * GGUF is little-endian; so are the hosts we build for. */
#include "gguf.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd_io.h"
#include "sg_error.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the GGUF reader assumes a little-endian host"
#endif

#define GGUF_DEFAULT_ALIGNMENT 32
#define GGUF_MAX_NESTING 8

typedef struct {
    char *key;
    sg_gguf_type type;
    sg_gguf_type elem;    /* arrays: element type */
    uint64_t n;           /* arrays: element count */
    union {
        uint64_t u;       /* U8, U16, U32, U64, BOOL */
        int64_t i;        /* I8, I16, I32, I64 */
        double f;         /* F32, F64 */
    } num;
    char *str;            /* STRING */
    /* Arrays: numbers as n raw little-endian values of elem; strings as n
     * pointers followed by their characters, one allocation; arrays of
     * arrays are validated and skipped (NULL). */
    void *data;
} gguf_kv;

/* Open-addressing name -> index table (names are unique once built). */
typedef struct {
    size_t *slots;        /* index + 1; 0 = empty */
    size_t mask;
} name_index;

struct sg_gguf {
    char *path;
    int fd;
    uint64_t file_size;
    uint32_t version;
    uint64_t alignment;
    uint64_t data_start;  /* absolute offset of the tensor data section */
    gguf_kv *kvs;
    size_t n_kv;
    sg_gguf_tensor *tensors;
    int n_tensors;
    name_index kv_index, tensor_index;
    sg_io *io;            /* tensor reads go through it when set */
};

/* ---- the name index ---- */

static uint64_t hash_name(const char *s)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int index_init(name_index *ix, size_t n)
{
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    ix->slots = calloc(cap, sizeof *ix->slots);
    ix->mask = cap - 1;
    return ix->slots ? 0 : -ENOMEM;
}

typedef const char *(*name_of_fn)(const void *ctx, size_t i);

/* The slot holding name, or the empty slot where it would go. */
static size_t *index_slot(const name_index *ix, const char *name, name_of_fn name_of,
                          const void *ctx)
{
    for (size_t s = hash_name(name) & ix->mask;; s = (s + 1) & ix->mask)
        if (!ix->slots[s] || !strcmp(name_of(ctx, ix->slots[s] - 1), name))
            return &ix->slots[s];
}

/* Index of name, or -1. */
static long index_find(const name_index *ix, const char *name, name_of_fn name_of,
                       const void *ctx)
{
    if (!ix->slots)
        return -1;
    size_t v = *index_slot(ix, name, name_of, ctx);
    return v ? (long)(v - 1) : -1;
}

/* Adds entry i under name; returns -1, or the index already holding name. */
static long index_add(name_index *ix, const char *name, size_t i, name_of_fn name_of,
                      const void *ctx)
{
    size_t *slot = index_slot(ix, name, name_of, ctx);
    if (*slot)
        return (long)(*slot - 1);
    *slot = i + 1;
    return -1;
}

static const char *kv_name(const void *ctx, size_t i)
{
    return ((const sg_gguf *)ctx)->kvs[i].key;
}

static const char *tensor_name(const void *ctx, size_t i)
{
    return ((const sg_gguf *)ctx)->tensors[i].name;
}

static const gguf_kv *find_kv(const sg_gguf *g, const char *key)
{
    long i = index_find(&g->kv_index, key, kv_name, g);
    return i < 0 ? NULL : &g->kvs[i];
}

/* ---- bounds-checked cursor over the mapped header ---- */

typedef struct {
    const unsigned char *p;
    uint64_t size, pos;
    const char *path;
} cursor;

static uint64_t left(const cursor *c) { return c->size - c->pos; }

static int need(cursor *c, uint64_t n, const char *what)
{
    if (n > left(c))
        return sg_fail(SG_EFORMAT, "%s: %s: truncated at byte %llu (file is %llu bytes)",
                       c->path, what, (unsigned long long)c->pos,
                       (unsigned long long)c->size);
    return 0;
}

static int rd(cursor *c, void *dst, uint64_t n, const char *what)
{
    int err = need(c, n, what);
    if (err)
        return err;
    memcpy(dst, c->p + c->pos, n);
    c->pos += n;
    return 0;
}

static int rd_u32(cursor *c, uint32_t *v, const char *what) { return rd(c, v, 4, what); }
static int rd_u64(cursor *c, uint64_t *v, const char *what) { return rd(c, v, 8, what); }

/* A GGUF string: u64 length, bytes (no terminator). Returns a view. */
static int rd_str(cursor *c, const char **s, uint64_t *len, const char *what)
{
    int err = rd_u64(c, len, what);
    if (err)
        return err;
    if (*len > left(c))
        return sg_fail(SG_EFORMAT, "%s: %s: string length %llu exceeds the file size",
                       c->path, what, (unsigned long long)*len);
    *s = (const char *)c->p + c->pos;
    c->pos += *len;
    return 0;
}

static char *dup_str(const char *s, uint64_t len)
{
    char *d = malloc(len + 1);
    if (d) {
        memcpy(d, s, len);
        d[len] = '\0';
    }
    return d;
}

/* Size of one value of a scalar type; 0 for STRING/ARRAY/unknown. */
static uint64_t scalar_size(uint32_t t)
{
    switch (t) {
    case SG_GGUF_U8: case SG_GGUF_I8: case SG_GGUF_BOOL: return 1;
    case SG_GGUF_U16: case SG_GGUF_I16: return 2;
    case SG_GGUF_U32: case SG_GGUF_I32: case SG_GGUF_F32: return 4;
    case SG_GGUF_U64: case SG_GGUF_I64: case SG_GGUF_F64: return 8;
    default: return 0;
    }
}

/* Fewest bytes one element of type t can take: bounds array lengths. */
static uint64_t min_size(uint32_t t)
{
    if (t == SG_GGUF_STRING)
        return 8;
    if (t == SG_GGUF_ARRAY)
        return 12;
    return scalar_size(t);
}

static const char *type_name(uint32_t t)
{
    static const char *names[] = {"u8",  "i8",  "u16",    "i16",   "u32", "i32", "f32",
                                  "bool", "string", "array", "u64", "i64", "f64"};
    return t <= SG_GGUF_F64 ? names[t] : "unknown";
}

/* Skips an array (of any nesting, bounded) after its type and count. */
static int skip_array(cursor *c, uint32_t elem, uint64_t n, int depth, const char *key)
{
    if (depth > GGUF_MAX_NESTING)
        return sg_fail(SG_EFORMAT, "%s: %s: arrays nested more than %d deep", c->path, key,
                       GGUF_MAX_NESTING);
    if (elem > SG_GGUF_F64)
        return sg_fail(SG_EFORMAT, "%s: %s: unknown array element type %u", c->path, key,
                       elem);
    if (n > left(c) / min_size(elem))
        return sg_fail(SG_EFORMAT, "%s: %s: array length %llu exceeds the file size",
                       c->path, key, (unsigned long long)n);
    if (elem != SG_GGUF_STRING && elem != SG_GGUF_ARRAY) {
        c->pos += n * scalar_size(elem);
        return 0;
    }
    for (uint64_t i = 0; i < n; i++) {
        int err;
        if (elem == SG_GGUF_STRING) {
            const char *s;
            uint64_t len;
            err = rd_str(c, &s, &len, key);
        } else {
            uint32_t sub;
            uint64_t m;
            if (!(err = rd_u32(c, &sub, key)) && !(err = rd_u64(c, &m, key)))
                err = skip_array(c, sub, m, depth + 1, key);
        }
        if (err)
            return err;
    }
    return 0;
}

/* Reads an array of strings into one allocation: n pointers, then the
 * characters. Two passes over the mapping: sizes (checked), then copies. */
static int read_string_array(cursor *c, uint64_t n, gguf_kv *kv)
{
    uint64_t start = c->pos, chars = 0;
    if (n > left(c) / 8)
        return sg_fail(SG_EFORMAT, "%s: %s: array length %llu exceeds the file size",
                       c->path, kv->key, (unsigned long long)n);
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        uint64_t len;
        int err = rd_str(c, &s, &len, kv->key);
        if (err)
            return err;
        chars += len + 1; /* <= file size + n: cannot overflow */
    }
    char **ptrs = malloc(n * sizeof *ptrs + chars + 1);
    if (!ptrs)
        return sg_fail(-ENOMEM, "%s: %s: out of memory for %llu strings", c->path, kv->key,
                       (unsigned long long)n);
    char *out = (char *)(ptrs + n);
    c->pos = start;
    for (uint64_t i = 0; i < n; i++) {
        const char *s;
        uint64_t len;
        rd_str(c, &s, &len, kv->key); /* checked in the first pass */
        memcpy(out, s, len);
        out[len] = '\0';
        ptrs[i] = out;
        out += len + 1;
    }
    kv->data = ptrs;
    return 0;
}

static int read_value(cursor *c, gguf_kv *kv)
{
    int err;
    const char *key = kv->key;
    if (kv->type == SG_GGUF_STRING) {
        const char *s;
        uint64_t len;
        if ((err = rd_str(c, &s, &len, key)))
            return err;
        if (!(kv->str = dup_str(s, len)))
            return sg_fail(-ENOMEM, "%s: %s: out of memory", c->path, key);
        return 0;
    }
    if (kv->type == SG_GGUF_ARRAY) {
        uint32_t elem;
        if ((err = rd_u32(c, &elem, key)) || (err = rd_u64(c, &kv->n, key)))
            return err;
        kv->elem = elem;
        if (elem > SG_GGUF_F64)
            return sg_fail(SG_EFORMAT, "%s: %s: unknown array element type %u", c->path, key,
                           elem);
        if (elem == SG_GGUF_ARRAY)
            return skip_array(c, elem, kv->n, 1, key);
        if (elem == SG_GGUF_STRING)
            return read_string_array(c, kv->n, kv);
        uint64_t esz = scalar_size(elem);
        if (kv->n > left(c) / esz)
            return sg_fail(SG_EFORMAT, "%s: %s: array length %llu exceeds the file size",
                           c->path, key, (unsigned long long)kv->n);
        if (!(kv->data = malloc(kv->n * esz + 1)))
            return sg_fail(-ENOMEM, "%s: %s: out of memory", c->path, key);
        return rd(c, kv->data, kv->n * esz, key);
    }
    unsigned char b[8] = {0};
    uint64_t sz = scalar_size(kv->type);
    if (!sz)
        return sg_fail(SG_EFORMAT, "%s: %s: unknown metadata value type %u", c->path, key,
                       (unsigned)kv->type);
    if ((err = rd(c, b, sz, key)))
        return err;
    switch (kv->type) {
    case SG_GGUF_U8: case SG_GGUF_BOOL: kv->num.u = b[0]; break;
    case SG_GGUF_I8: kv->num.i = (int8_t)b[0]; break;
    case SG_GGUF_U16: { uint16_t v; memcpy(&v, b, 2); kv->num.u = v; break; }
    case SG_GGUF_I16: { int16_t v; memcpy(&v, b, 2); kv->num.i = v; break; }
    case SG_GGUF_U32: { uint32_t v; memcpy(&v, b, 4); kv->num.u = v; break; }
    case SG_GGUF_I32: { int32_t v; memcpy(&v, b, 4); kv->num.i = v; break; }
    case SG_GGUF_U64: memcpy(&kv->num.u, b, 8); break;
    case SG_GGUF_I64: memcpy(&kv->num.i, b, 8); break;
    case SG_GGUF_F32: { float v; memcpy(&v, b, 4); kv->num.f = v; break; }
    case SG_GGUF_F64: memcpy(&kv->num.f, b, 8); break;
    default: break;
    }
    return 0;
}

/* ---- GGML tensor types ---- */

static int ggml_to_dtype(uint32_t t, sg_dtype *dt)
{
    switch (t) {
    case 0: *dt = SG_DT_F32; return 0;
    case 1: *dt = SG_DT_F16; return 0;
    case 2: *dt = SG_DT_Q4_0; return 0;
    case 3: *dt = SG_DT_Q4_1; return 0;
    case 8: *dt = SG_DT_Q8_0; return 0;
    case 28: *dt = SG_DT_F64; return 0;
    case 30: *dt = SG_DT_BF16; return 0;
    default: return -1;
    }
}

/* Names of the GGML types we do not read, for the message. */
static const char *ggml_type_name(uint32_t t)
{
    static const char *names[] = {
        [6] = "Q5_0",     [7] = "Q5_1",     [9] = "Q8_1",     [10] = "Q2_K",
        [11] = "Q3_K",    [12] = "Q4_K",    [13] = "Q5_K",    [14] = "Q6_K",
        [15] = "Q8_K",    [16] = "IQ2_XXS", [17] = "IQ2_XS",  [18] = "IQ3_XXS",
        [19] = "IQ1_S",   [20] = "IQ4_NL",  [21] = "IQ3_S",   [22] = "IQ2_S",
        [23] = "IQ4_XS",  [24] = "I8",      [25] = "I16",     [26] = "I32",
        [27] = "I64",     [29] = "IQ1_M",   [34] = "TQ1_0",   [35] = "TQ2_0",
        [39] = "MXFP4",
    };
    return t < sizeof names / sizeof *names && names[t] ? names[t] : "unknown";
}

/* ---- open ---- */

static int parse_tensor_info(cursor *c, sg_gguf *g, sg_gguf_tensor *t, int idx)
{
    char what[64];
    snprintf(what, sizeof what, "tensor info #%d", idx);
    const char *s;
    uint64_t len;
    int err = rd_str(c, &s, &len, what);
    if (err)
        return err;
    if (len == 0 || memchr(s, '\0', len))
        return sg_fail(SG_EFORMAT, "%s: %s: empty name or a name with a NUL byte", g->path,
                       what);
    if (!(t->name = dup_str(s, len)))
        return sg_fail(-ENOMEM, "%s: out of memory", g->path);
    uint32_t ndim, type;
    if ((err = rd_u32(c, &ndim, t->name)))
        return err;
    if (ndim < 1 || ndim > 4)
        return sg_fail(SG_EFORMAT, "%s: %s: %u dimensions (1 to 4 allowed)", g->path, t->name,
                       ndim);
    t->ndim = (int)ndim;
    t->numel = 1;
    for (int d = 0; d < 4; d++)
        t->ne[d] = 1;
    for (uint32_t d = 0; d < ndim; d++) {
        uint64_t ne;
        if ((err = rd_u64(c, &ne, t->name)))
            return err;
        /* numel stays below 2^62 so byte counts of every type fit int64 */
        if (ne == 0 || ne > ((uint64_t)1 << 62) / (uint64_t)t->numel)
            return sg_fail(SG_EFORMAT, "%s: %s: dimension %u is %llu (zero or overflowing)",
                           g->path, t->name, d, (unsigned long long)ne);
        t->ne[d] = (int64_t)ne;
        t->numel *= (int64_t)ne;
    }
    if ((err = rd_u32(c, &type, t->name)) || (err = rd_u64(c, &t->offset, t->name)))
        return err;
    if (ggml_to_dtype(type, &t->dtype))
        return sg_fail(SG_EUNSUPPORTED,
                       "%s: %s: ggml type %s (%u) is not supported "
                       "(F32, F16, BF16, F64, Q8_0, Q4_0, Q4_1 are)",
                       g->path, t->name, ggml_type_name(type), type);
    int64_t nbytes = sg_dtype_bytes(t->dtype, t->ne[0]);
    if (nbytes < 0)
        return sg_fail(SG_EFORMAT, "%s: %s: row length %lld is not a multiple of %d (%s blocks)",
                       g->path, t->name, (long long)t->ne[0], SG_QBLOCK,
                       sg_dtype_name(t->dtype));
    t->nbytes = (uint64_t)sg_dtype_bytes(t->dtype, t->numel);
    return 0;
}

static int cmp_offset(const void *a, const void *b)
{
    const sg_gguf_tensor *x = *(sg_gguf_tensor *const *)a, *y = *(sg_gguf_tensor *const *)b;
    return x->offset < y->offset ? -1 : x->offset > y->offset;
}

/* Data placement: aligned, inside the file, no two tensors sharing bytes. */
static int check_placement(sg_gguf *g)
{
    for (int i = 0; i < g->n_tensors; i++) {
        sg_gguf_tensor *t = &g->tensors[i];
        uint64_t rel = t->offset;
        if (rel % g->alignment)
            return sg_fail(SG_EFORMAT,
                           "%s: %s: offset %llu is not a multiple of the alignment %llu",
                           g->path, t->name, (unsigned long long)rel,
                           (unsigned long long)g->alignment);
        if (rel > g->file_size || g->data_start > g->file_size - rel ||
            t->nbytes > g->file_size - rel - g->data_start)
            return sg_fail(SG_EFORMAT,
                           "%s: %s: data (%llu bytes at offset %llu) extends beyond the end "
                           "of the file (%llu bytes)",
                           g->path, t->name, (unsigned long long)t->nbytes,
                           (unsigned long long)rel, (unsigned long long)g->file_size);
        t->offset = g->data_start + rel;
    }
    if (g->n_tensors < 2)
        return 0;
    sg_gguf_tensor **by_off = malloc(g->n_tensors * sizeof *by_off);
    if (!by_off)
        return sg_fail(-ENOMEM, "%s: out of memory", g->path);
    for (int i = 0; i < g->n_tensors; i++)
        by_off[i] = &g->tensors[i];
    qsort(by_off, g->n_tensors, sizeof *by_off, cmp_offset);
    int err = 0;
    for (int i = 1; i < g->n_tensors && !err; i++)
        if (by_off[i]->offset < by_off[i - 1]->offset + by_off[i - 1]->nbytes)
            err = sg_fail(SG_EFORMAT, "%s: %s: data overlaps tensor %s", g->path,
                          by_off[i]->name, by_off[i - 1]->name);
    free(by_off);
    return err;
}

static int parse(sg_gguf *g, const unsigned char *map)
{
    cursor c = {map, g->file_size, 0, g->path};
    char magic[4];
    uint32_t version;
    uint64_t n_tensors, n_kv;
    int err;
    if (g->file_size < 4 || memcmp(map, "GGUF", 4))
        return sg_fail(SG_EFORMAT, "%s: not a GGUF file (bad magic)", g->path);
    if ((err = rd(&c, magic, 4, "header")) || (err = rd_u32(&c, &version, "header")))
        return err;
    if (version == 1)
        return sg_fail(SG_EUNSUPPORTED,
                       "%s: GGUF version 1 is not supported (convert it again with a current "
                       "llama.cpp)",
                       g->path);
    if (version == 0x02000000 || version == 0x03000000)
        return sg_fail(SG_EUNSUPPORTED, "%s: big-endian GGUF is not supported", g->path);
    if (version != 2 && version != 3)
        return sg_fail(SG_EUNSUPPORTED, "%s: GGUF version %u is not supported (2 and 3 are)",
                       g->path, version);
    g->version = version;
    if ((err = rd_u64(&c, &n_tensors, "header")) || (err = rd_u64(&c, &n_kv, "header")))
        return err;
    /* a key/value takes at least 13 bytes, a tensor info at least 32 */
    if (n_kv > left(&c) / 13)
        return sg_fail(SG_EFORMAT,
                       "%s: metadata count %llu is more than the remaining %llu bytes can hold "
                       "(truncated or corrupt)",
                       g->path, (unsigned long long)n_kv, (unsigned long long)left(&c));
    if (n_tensors > left(&c) / 32 || n_tensors > (1u << 30))
        return sg_fail(SG_EFORMAT,
                       "%s: tensor count %llu is more than the remaining %llu bytes can hold "
                       "(truncated or corrupt)",
                       g->path, (unsigned long long)n_tensors, (unsigned long long)left(&c));

    g->kvs = calloc(n_kv + 1, sizeof *g->kvs);
    if (!g->kvs || index_init(&g->kv_index, n_kv))
        return sg_fail(-ENOMEM, "%s: out of memory", g->path);
    for (uint64_t i = 0; i < n_kv; i++) {
        gguf_kv *kv = &g->kvs[i];
        char what[64];
        snprintf(what, sizeof what, "metadata key #%llu", (unsigned long long)i);
        const char *s;
        uint64_t len;
        uint32_t type;
        if ((err = rd_str(&c, &s, &len, what)))
            return err;
        if (len == 0 || memchr(s, '\0', len))
            return sg_fail(SG_EFORMAT, "%s: %s: empty key or a key with a NUL byte", g->path,
                           what);
        if (!(kv->key = dup_str(s, len)))
            return sg_fail(-ENOMEM, "%s: out of memory", g->path);
        g->n_kv = i + 1;
        if ((err = rd_u32(&c, &type, kv->key)))
            return err;
        if (type > SG_GGUF_F64)
            return sg_fail(SG_EFORMAT, "%s: %s: unknown metadata value type %u", g->path,
                           kv->key, type);
        kv->type = type;
        if ((err = read_value(&c, kv)))
            return err;
        if (index_add(&g->kv_index, kv->key, i, kv_name, g) >= 0)
            return sg_fail(SG_EFORMAT, "%s: %s: duplicate metadata key", g->path, kv->key);
    }

    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const gguf_kv *al = find_kv(g, "general.alignment");
    if (al) {
        if (al->type != SG_GGUF_U32 && al->type != SG_GGUF_U64 && al->type != SG_GGUF_U16 &&
            al->type != SG_GGUF_U8)
            return sg_fail(SG_EFORMAT,
                           "%s: general.alignment: expected an unsigned integer, found %s",
                           g->path, type_name(al->type));
        uint64_t a = al->num.u;
        if (a == 0 || (a & (a - 1)) || a > (1u << 30))
            return sg_fail(SG_EFORMAT,
                           "%s: general.alignment: %llu is not a power of two (up to 2^30)",
                           g->path, (unsigned long long)a);
        g->alignment = a;
    }

    g->tensors = calloc(n_tensors + 1, sizeof *g->tensors);
    if (!g->tensors || index_init(&g->tensor_index, n_tensors))
        return sg_fail(-ENOMEM, "%s: out of memory", g->path);
    for (uint64_t i = 0; i < n_tensors; i++) {
        sg_gguf_tensor *t = &g->tensors[i];
        g->n_tensors = (int)i + 1;
        if ((err = parse_tensor_info(&c, g, t, (int)i)))
            return err;
        if (index_add(&g->tensor_index, t->name, i, tensor_name, g) >= 0)
            return sg_fail(SG_EFORMAT, "%s: %s: duplicate tensor name", g->path, t->name);
    }
    g->data_start = (c.pos + g->alignment - 1) / g->alignment * g->alignment;
    return check_placement(g);
}

int sg_gguf_open(const char *path, sg_gguf **out)
{
    *out = NULL;
    sg_gguf *g = calloc(1, sizeof *g);
    if (!g || !(g->path = strdup(path))) {
        free(g);
        return sg_fail(-ENOMEM, "%s: out of memory", path);
    }
    g->fd = open(path, O_RDONLY | O_CLOEXEC);
    if (g->fd < 0) {
        int e = errno;
        sg_gguf_close(g);
        return sg_fail(-e, "%s: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(g->fd, &st) != 0) {
        int e = errno;
        sg_gguf_close(g);
        return sg_fail(-e, "%s: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        sg_gguf_close(g);
        return sg_fail(SG_EFORMAT, "%s: not a regular file", path);
    }
    g->file_size = (uint64_t)st.st_size;
    int err;
    if (g->file_size == 0) {
        err = sg_fail(SG_EFORMAT, "%s: not a GGUF file (empty)", path);
    } else {
        void *map = mmap(NULL, g->file_size, PROT_READ, MAP_PRIVATE, g->fd, 0);
        if (map == MAP_FAILED) {
            err = sg_fail(-errno, "%s: mmap: %s", path, strerror(errno));
        } else {
            err = parse(g, map);
            munmap(map, g->file_size);
        }
    }
    if (err) {
        sg_gguf_close(g);
        return err;
    }
    *out = g;
    return 0;
}

void sg_gguf_close(sg_gguf *g)
{
    if (!g)
        return;
    for (size_t i = 0; i < g->n_kv; i++) {
        free(g->kvs[i].key);
        free(g->kvs[i].str);
        free(g->kvs[i].data);
    }
    free(g->kvs);
    for (int i = 0; i < g->n_tensors; i++)
        free(g->tensors[i].name);
    free(g->tensors);
    free(g->kv_index.slots);
    free(g->tensor_index.slots);
    if (g->fd >= 0)
        close(g->fd);
    free(g->path);
    free(g);
}

const char *sg_gguf_path(const sg_gguf *g) { return g->path; }
uint32_t sg_gguf_version(const sg_gguf *g) { return g->version; }
uint64_t sg_gguf_alignment(const sg_gguf *g) { return g->alignment; }

/* ---- metadata ---- */

int sg_gguf_has_key(const sg_gguf *g, const char *key) { return find_kv(g, key) != NULL; }

static int lookup(const sg_gguf *g, const char *key, const gguf_kv **kv)
{
    if (!(*kv = find_kv(g, key)))
        return sg_fail(SG_EMISSING, "%s: %s: metadata key missing", g->path, key);
    return 0;
}

static int wrong_type(const sg_gguf *g, const gguf_kv *kv, const char *expected)
{
    if (kv->type == SG_GGUF_ARRAY)
        return sg_fail(SG_EFORMAT, "%s: %s: expected %s, found an array of %s", g->path,
                       kv->key, expected, type_name(kv->elem));
    return sg_fail(SG_EFORMAT, "%s: %s: expected %s, found %s", g->path, kv->key, expected,
                   type_name(kv->type));
}

static int is_signed_int(sg_gguf_type t)
{
    return t == SG_GGUF_I8 || t == SG_GGUF_I16 || t == SG_GGUF_I32 || t == SG_GGUF_I64;
}

static int is_unsigned_int(sg_gguf_type t)
{
    return t == SG_GGUF_U8 || t == SG_GGUF_U16 || t == SG_GGUF_U32 || t == SG_GGUF_U64;
}

int sg_gguf_get_int(const sg_gguf *g, const char *key, int64_t *out)
{
    const gguf_kv *kv;
    int err = lookup(g, key, &kv);
    if (err)
        return err;
    if (is_signed_int(kv->type)) {
        *out = kv->num.i;
        return 0;
    }
    if (is_unsigned_int(kv->type)) {
        if (kv->num.u > INT64_MAX)
            return sg_fail(SG_EFORMAT, "%s: %s: value %llu is out of range", g->path, key,
                           (unsigned long long)kv->num.u);
        *out = (int64_t)kv->num.u;
        return 0;
    }
    return wrong_type(g, kv, "an integer");
}

/* Floats of either width; integers too, since they convert exactly enough
 * and some converters write e.g. rope.freq_base as an integer. */
int sg_gguf_get_float(const sg_gguf *g, const char *key, double *out)
{
    const gguf_kv *kv;
    int err = lookup(g, key, &kv);
    if (err)
        return err;
    if (kv->type == SG_GGUF_F32 || kv->type == SG_GGUF_F64)
        *out = kv->num.f;
    else if (is_signed_int(kv->type))
        *out = (double)kv->num.i;
    else if (is_unsigned_int(kv->type))
        *out = (double)kv->num.u;
    else
        return wrong_type(g, kv, "a number");
    return 0;
}

int sg_gguf_get_bool(const sg_gguf *g, const char *key, int *out)
{
    const gguf_kv *kv;
    int err = lookup(g, key, &kv);
    if (err)
        return err;
    if (kv->type != SG_GGUF_BOOL)
        return wrong_type(g, kv, "a bool");
    *out = kv->num.u != 0;
    return 0;
}

int sg_gguf_get_string(const sg_gguf *g, const char *key, const char **out)
{
    const gguf_kv *kv;
    int err = lookup(g, key, &kv);
    if (err)
        return err;
    if (kv->type != SG_GGUF_STRING)
        return wrong_type(g, kv, "a string");
    *out = kv->str;
    return 0;
}

static int lookup_array(const sg_gguf *g, const char *key, const gguf_kv **kv,
                        int want_strings)
{
    const char *expected = want_strings ? "an array of strings" : "an array of numbers";
    int err = lookup(g, key, kv);
    if (err)
        return err;
    sg_gguf_type elem = (*kv)->elem;
    if ((*kv)->type != SG_GGUF_ARRAY || elem == SG_GGUF_ARRAY || elem == SG_GGUF_BOOL ||
        want_strings != (elem == SG_GGUF_STRING))
        return wrong_type(g, *kv, expected);
    return 0;
}

int sg_gguf_get_string_array(const sg_gguf *g, const char *key, const char *const **out,
                             size_t *n)
{
    const gguf_kv *kv;
    int err = lookup_array(g, key, &kv, 1);
    if (err)
        return err;
    *out = (const char *const *)kv->data;
    *n = kv->n;
    return 0;
}

/* Element i of a numeric array, as double (exact for all but huge 64-bit
 * integers). */
static double array_elem(const gguf_kv *kv, uint64_t i)
{
    const unsigned char *p = (const unsigned char *)kv->data + i * scalar_size(kv->elem);
    switch (kv->elem) {
    case SG_GGUF_U8: return *p;
    case SG_GGUF_I8: return (int8_t)*p;
    case SG_GGUF_U16: { uint16_t v; memcpy(&v, p, 2); return v; }
    case SG_GGUF_I16: { int16_t v; memcpy(&v, p, 2); return v; }
    case SG_GGUF_U32: { uint32_t v; memcpy(&v, p, 4); return v; }
    case SG_GGUF_I32: { int32_t v; memcpy(&v, p, 4); return v; }
    case SG_GGUF_U64: { uint64_t v; memcpy(&v, p, 8); return (double)v; }
    case SG_GGUF_I64: { int64_t v; memcpy(&v, p, 8); return (double)v; }
    case SG_GGUF_F32: { float v; memcpy(&v, p, 4); return v; }
    case SG_GGUF_F64: { double v; memcpy(&v, p, 8); return v; }
    default: return 0;
    }
}

int sg_gguf_get_float_array(const sg_gguf *g, const char *key, float **out, size_t *n)
{
    const gguf_kv *kv;
    int err = lookup_array(g, key, &kv, 0);
    if (err)
        return err;
    float *v = malloc((kv->n ? kv->n : 1) * sizeof *v);
    if (!v)
        return sg_fail(-ENOMEM, "%s: %s: out of memory", g->path, key);
    for (uint64_t i = 0; i < kv->n; i++)
        v[i] = (float)array_elem(kv, i);
    *out = v;
    *n = kv->n;
    return 0;
}

int sg_gguf_get_int_array(const sg_gguf *g, const char *key, int32_t **out, size_t *n)
{
    const gguf_kv *kv;
    int err = lookup_array(g, key, &kv, 0);
    if (err)
        return err;
    if (kv->elem == SG_GGUF_F32 || kv->elem == SG_GGUF_F64)
        return wrong_type(g, kv, "an array of integers");
    int32_t *v = malloc((kv->n ? kv->n : 1) * sizeof *v);
    if (!v)
        return sg_fail(-ENOMEM, "%s: %s: out of memory", g->path, key);
    for (uint64_t i = 0; i < kv->n; i++) {
        double x = array_elem(kv, i);
        if (x < INT32_MIN || x > INT32_MAX) {
            free(v);
            return sg_fail(SG_EFORMAT, "%s: %s: element %llu (%.0f) does not fit 32 bits",
                           g->path, key, (unsigned long long)i, x);
        }
        v[i] = (int32_t)x;
    }
    *out = v;
    *n = kv->n;
    return 0;
}

/* ---- tensors ---- */

int sg_gguf_tensor_count(const sg_gguf *g) { return g->n_tensors; }

int sg_gguf_fd(const sg_gguf *g) { return g->fd; }

void sg_gguf_set_io(sg_gguf *g, sg_io *io) { g->io = io; }

const sg_gguf_tensor *sg_gguf_tensor_at(const sg_gguf *g, int i)
{
    return i >= 0 && i < g->n_tensors ? &g->tensors[i] : NULL;
}

const sg_gguf_tensor *sg_gguf_find(const sg_gguf *g, const char *name)
{
    long i = index_find(&g->tensor_index, name, tensor_name, g);
    return i < 0 ? NULL : &g->tensors[i];
}

/* The one place tensor bytes are read: n bytes at absolute offset off.
 * Short reads are resumed; end of file means the file shrank since open. */
static int read_at(const sg_gguf *g, const sg_gguf_tensor *t, void *buf, uint64_t n,
                   uint64_t off)
{
    if (g->io) {
        char what[4096 + 256]; /* messages name file and tensor */
        snprintf(what, sizeof what, "%s: %s", g->path, t->name);
        return sg_io_read(g->io, g->fd, buf, (size_t)n, off, what);
    }
    ssize_t got = sg_pread_full(g->fd, buf, (size_t)n, off);
    if (got < 0)
        return sg_fail((int)got, "%s: %s: read: %s", g->path, t->name, strerror((int)-got));
    if ((uint64_t)got < n)
        return sg_fail(SG_EFORMAT, "%s: %s: unexpected end of file at byte %llu", g->path,
                       t->name, (unsigned long long)(off + (uint64_t)got));
    return 0;
}

static int check_tensor(const sg_gguf *g, const sg_gguf_tensor *t)
{
    if (!t || t < g->tensors || t >= g->tensors + g->n_tensors)
        return sg_fail(SG_EARG, "%s: tensor does not belong to this file", g->path);
    return 0;
}

int sg_gguf_read_raw(sg_gguf *g, const sg_gguf_tensor *t, void *dst)
{
    int err = check_tensor(g, t);
    return err ? err : read_at(g, t, dst, t->nbytes, t->offset);
}

/* Converted in pieces this many values long (a multiple of every block). */
#define CONVERT_CHUNK (64 * SG_QBLOCK)

/* dst holds numel floats, 4 bytes per value; every stored type but F64
 * takes at most that, so the raw bytes are read into the tail of dst and
 * converted front to back through a small buffer: piece k's output ends
 * at 4*CONVERT_CHUNK*(k+1) bytes, never past where piece k+1's input
 * starts, so no second tensor-sized buffer is needed. */
int sg_gguf_read_f32(sg_gguf *g, const sg_gguf_tensor *t, float *dst)
{
    int err = check_tensor(g, t);
    if (err)
        return err;
    if (t->dtype == SG_DT_F32)
        return read_at(g, t, dst, t->nbytes, t->offset);
    if (t->dtype == SG_DT_F64) {
        double *tmp = malloc(t->nbytes);
        if (!tmp)
            return sg_fail(-ENOMEM, "%s: %s: out of memory", g->path, t->name);
        if (!(err = read_at(g, t, tmp, t->nbytes, t->offset)))
            err = sg_to_f32(t->dtype, tmp, dst, t->numel);
        free(tmp);
        return err;
    }
    unsigned char *raw = (unsigned char *)dst + ((uint64_t)t->numel * 4 - t->nbytes);
    if ((err = read_at(g, t, raw, t->nbytes, t->offset)))
        return err;
    float piece[CONVERT_CHUNK];
    const int64_t piece_bytes = sg_dtype_bytes(t->dtype, CONVERT_CHUNK);
    for (int64_t done = 0; done < t->numel; done += CONVERT_CHUNK) {
        int64_t n = t->numel - done < CONVERT_CHUNK ? t->numel - done : CONVERT_CHUNK;
        if ((err = sg_to_f32(t->dtype, raw + done / CONVERT_CHUNK * piece_bytes, piece, n)))
            return err;
        memcpy(dst + done, piece, (size_t)n * sizeof *piece);
    }
    return 0;
}
