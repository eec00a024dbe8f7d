/* The BPE engine shared by the three tokenizer kinds (see tokenizer.h).
 *
 * Text is cut into symbols (UTF-8 characters, or bytes for byte-level BPE)
 * held in a doubly linked list. Every adjacent pair that could merge sits in
 * a max-heap ordered by priority (score, or minus the merge rank), leftmost
 * first on ties; popping the best pair, merging it and pushing the two new
 * neighbour pairs gives exactly the result of llama2.c's loop that rescans
 * the whole text for the best pair after every merge, in O(n log n) instead
 * of O(n^2). Entries made stale by an earlier merge are recognised by the
 * symbol lengths they recorded and skipped.
 *
 * Internally SentencePiece's U+2581 in pieces is stored as a plain space
 * (llama2.c's tokenizer.bin already does so), so text needs no rewriting. */
#include "tokenizer.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sg_error.h"
#include "tokenizer_internal.h"

/* ---- hashing ---------------------------------------------------------- */

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static uint64_t hash_pair(uint64_t key) { return (key * 0x9E3779B97F4A7C15ull) >> 17; }

static int32_t vlookup(const sg_tokenizer *t, const char *s, size_t n)
{
    for (size_t i = hash_bytes(s, n) & t->vmask;; i = (i + 1) & t->vmask) {
        int32_t id = t->vslot[i];
        if (id < 0)
            return -1;
        if (t->norm_len[id] == n && memcmp(t->norm[id], s, n) == 0)
            return id;
    }
}

int32_t sg_tok_lookup(const sg_tokenizer *t, const char *s, size_t n) { return vlookup(t, s, n); }

static void vinsert(sg_tokenizer *t, int32_t id)
{
    const char *s = t->norm[id];
    size_t n = t->norm_len[id];
    for (size_t i = hash_bytes(s, n) & t->vmask;; i = (i + 1) & t->vmask) {
        int32_t o = t->vslot[i];
        if (o < 0) {
            t->vslot[i] = id;
            return;
        }
        if (t->norm_len[o] == n && memcmp(t->norm[o], s, n) == 0)
            return; /* the first id of a duplicated piece wins */
    }
}

static const sg_tok_pair *plookup(const sg_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t i = hash_pair(key) & t->pmask;; i = (i + 1) & t->pmask) {
        const sg_tok_pair *p = &t->pslot[i];
        if (p->id < 0)
            return NULL;
        if (p->key == key)
            return p;
    }
}

/* Returns 1 if added, 0 if the pair was there already. */
static int pinsert(sg_tokenizer *t, int32_t a, int32_t b, int32_t id, int32_t rank)
{
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (size_t i = hash_pair(key) & t->pmask;; i = (i + 1) & t->pmask) {
        sg_tok_pair *p = &t->pslot[i];
        if (p->id < 0) {
            *p = (sg_tok_pair){key, id, rank};
            return 1;
        }
        if (p->key == key)
            return 0; /* a repeated merge keeps its first (best) rank, as llama.cpp */
    }
}

static size_t pow2_above(size_t n)
{
    size_t c = 16;
    while (c < 2 * n)
        c <<= 1;
    return c;
}

/* ---- building ----------------------------------------------------------- */

/* "<0x0A>" -> 10, else -1. */
static int parse_byte_piece(const char *s)
{
    if (strlen(s) != 6 || s[0] != '<' || s[1] != '0' || s[2] != 'x' || s[5] != '>')
        return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
        if (d < 0)
            return -1;
        v = v * 16 + d;
    }
    return v;
}

static size_t put_utf8(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xC0 | cp >> 6);
        o[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xE0 | cp >> 12);
        o[1] = (char)(0x80 | (cp >> 6 & 0x3F));
        o[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    o[0] = (char)(0xF0 | cp >> 18);
    o[1] = (char)(0x80 | (cp >> 12 & 0x3F));
    o[2] = (char)(0x80 | (cp >> 6 & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* Decodes one UTF-8 character at s[0..n); returns its length (1 for an
 * invalid byte, reported as cp = 0xFFFFFFFF). */
static size_t get_utf8(const unsigned char *s, size_t n, uint32_t *cp)
{
    unsigned c = s[0];
    size_t len = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
    if (len == 0 || len > n) {
        *cp = 0xFFFFFFFFu;
        return 1;
    }
    uint32_t v = len == 1 ? c : len == 2 ? c & 0x1F : len == 3 ? c & 0x0F : c & 0x07;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80) {
            *cp = 0xFFFFFFFFu;
            return 1;
        }
        v = v << 6 | (s[i] & 0x3F);
    }
    *cp = v;
    return len;
}

/* GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves,
 * the other 68 bytes take code points 256, 257, ... in byte order. */
static void build_byte_map(sg_tokenizer *t)
{
    for (int i = 0; i < 324; i++)
        t->cp_byte[i] = -1;
    int extra = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
        uint32_t cp = printable ? (uint32_t)b : 256u + extra++;
        size_t l = put_utf8(t->byte_chr[b], cp);
        t->byte_chr[b][l] = '\0';
        t->cp_byte[cp] = (int16_t)b;
    }
}

/* Copies s, turning every U+2581 into a space. */
static char *norm_copy(const char *s, size_t *len)
{
    size_t n = strlen(s);
    char *o = malloc(n + 1);
    if (!o)
        return NULL;
    size_t j = 0;
    for (size_t i = 0; i < n;) {
        if ((unsigned char)s[i] == 0xE2 && i + 2 < n && (unsigned char)s[i + 1] == 0x96 &&
            (unsigned char)s[i + 2] == 0x81) {
            o[j++] = ' ';
            i += 3;
        } else {
            o[j++] = s[i++];
        }
    }
    o[j] = '\0';
    *len = j;
    return o;
}

void sg_tokenizer_free(sg_tokenizer *t)
{
    if (!t)
        return;
    for (size_t i = 0; i < t->n_vocab; i++) {
        if (t->norm && t->pieces && t->norm[i] != t->pieces[i])
            free(t->norm[i]);
        if (t->pieces)
            free(t->pieces[i]);
    }
    free(t->pieces);
    free(t->norm);
    free(t->norm_len);
    free(t->scores);
    free(t->types);
    free(t->plain);
    free(t->byte_of);
    free(t->vslot);
    free(t->pslot);
    free(t->merges);
    sg_pretok_free(t->pre);
    free(t);
}

/* Splits a "left right" merge at the first space after its first byte (a
 * left piece may itself be a space), as llama.cpp does. */
static int split_merge(const char *m, const char **b, size_t *alen)
{
    const char *sp = m[0] ? strchr(m + 1, ' ') : NULL;
    if (!sp)
        return -1;
    *alen = (size_t)(sp - m);
    *b = sp + 1;
    return 0;
}

static int32_t lookup_norm(const sg_tokenizer *t, const char *s, size_t n, char *tmp,
                           int normalize)
{
    if (!normalize)
        return vlookup(t, s, n);
    /* pieces of SPM merges still carry U+2581 */
    size_t j = 0;
    for (size_t i = 0; i < n;) {
        if (i + 2 < n && (unsigned char)s[i] == 0xE2 && (unsigned char)s[i + 1] == 0x96 &&
            (unsigned char)s[i + 2] == 0x81) {
            tmp[j++] = ' ';
            i += 3;
        } else {
            tmp[j++] = s[i++];
        }
    }
    return vlookup(t, tmp, j);
}

int sg_tokenizer_build_ex(const sg_tokenizer_spec *spec, const sg_tokenizer_extra *ex,
                          sg_tokenizer **out)
{
    const char *what = ex && ex->what ? ex->what : "tokenizer";
    *out = NULL;
    if (!spec || spec->n_vocab == 0 || !spec->tokens)
        return sg_fail(SG_EARG, "%s: empty vocabulary", what);
    if (spec->n_vocab > INT32_MAX / 2)
        return sg_fail(SG_EARG, "%s: vocabulary of %zu tokens is too large", what,
                       spec->n_vocab);
    if (spec->kind != SG_TOK_SCORES && spec->kind != SG_TOK_MERGES_BYTES &&
        spec->kind != SG_TOK_MERGES_SPM)
        return sg_fail(SG_EARG, "%s: unknown tokenizer kind %d", what, (int)spec->kind);
    if (spec->kind == SG_TOK_SCORES && !spec->scores)
        return sg_fail(SG_EARG, "%s: score-based tokenizer without scores", what);
    int32_t nv = (int32_t)spec->n_vocab;
    if (spec->bos_id >= nv || spec->eos_id >= nv || spec->unk_id >= nv)
        return sg_fail(SG_EARG, "%s: special token id outside the vocabulary of %d", what, nv);

    sg_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return -ENOMEM;
    size_t n = spec->n_vocab;
    int spm_like = spec->kind != SG_TOK_MERGES_BYTES;
    t->kind = spec->kind;
    t->n_vocab = n;
    t->bos = spec->bos_id < 0 ? -1 : spec->bos_id;
    t->eos = spec->eos_id < 0 ? -1 : spec->eos_id;
    t->unk = spec->unk_id < 0 ? -1 : spec->unk_id;
    t->add_bos = spec->add_bos;
    /* Byte-level BPE marks word starts with the space itself (as llama.cpp,
     * which ignores add_space_prefix for BPE vocabularies). */
    t->add_space_prefix = spm_like && spec->add_space_prefix;
    t->byte_fallback = ex ? ex->byte_fallback : 1;
    t->metaspace_split = ex ? ex->metaspace_split : 0;
    t->pieces = calloc(n, sizeof *t->pieces);
    t->norm = calloc(n, sizeof *t->norm);
    t->norm_len = calloc(n, sizeof *t->norm_len);
    t->types = malloc(n * sizeof *t->types);
    t->plain = malloc(n);
    t->byte_of = malloc(n * sizeof *t->byte_of);
    size_t vcap = pow2_above(n);
    t->vslot = malloc(vcap * sizeof *t->vslot);
    t->vmask = vcap - 1;
    if (spec->kind == SG_TOK_SCORES)
        t->scores = malloc(n * sizeof *t->scores);
    if (!t->pieces || !t->norm || !t->norm_len || !t->types || !t->plain || !t->byte_of ||
        !t->vslot || (spec->kind == SG_TOK_SCORES && !t->scores))
        goto nomem;
    memset(t->vslot, 0xff, vcap * sizeof *t->vslot);

    for (size_t i = 0; i < n; i++) {
        const char *p = spec->tokens[i] ? spec->tokens[i] : "";
        if (!(t->pieces[i] = strdup(p)))
            goto nomem;
        size_t l = strlen(p);
        if (spm_like) {
            if (!(t->norm[i] = norm_copy(p, &l)))
                goto nomem;
        } else {
            t->norm[i] = t->pieces[i];
        }
        if (l > UINT32_MAX)
            goto nomem;
        t->norm_len[i] = (uint32_t)l;
        if (t->scores) {
            t->scores[i] = spec->scores[i];
            if (isnan(spec->scores[i])) {
                sg_tokenizer_free(t);
                return sg_fail(SG_EFORMAT, "%s: token %zu has a NaN score", what, i);
            }
        }
        int bv = spm_like ? parse_byte_piece(p) : -1;
        int32_t ty = spec->types ? spec->types[i] : SG_TT_NORMAL;
        if (!spec->types) {
            if ((int32_t)i == t->bos || (int32_t)i == t->eos)
                ty = SG_TT_CONTROL;
            else if ((int32_t)i == t->unk)
                ty = SG_TT_UNKNOWN;
            else if (bv >= 0)
                ty = SG_TT_BYTE;
        }
        t->types[i] = ty;
        t->byte_of[i] = (int16_t)(spm_like && (bv >= 0 || ty == SG_TT_BYTE) ? bv : -1);
        /* Control and unknown pieces are never produced from plain text:
         * "<s>" typed by a user is text, not a BOS. */
        t->plain[i] = ty != SG_TT_CONTROL && ty != SG_TT_UNKNOWN && l > 0;
    }
    /* Plain pieces first so a control token never shadows a normal one. */
    for (int pass = 0; pass < 2; pass++)
        for (size_t i = 0; i < n; i++)
            if (t->norm_len[i] > 0 && t->plain[i] == (pass == 0))
                vinsert(t, (int32_t)i);

    if (spm_like) {
        for (int b = 0; b < 256; b++) {
            char s[8];
            snprintf(s, sizeof s, "<0x%02X>", b);
            t->byte_tok[b] = vlookup(t, s, 6);
        }
    } else {
        build_byte_map(t);
        for (int b = 0; b < 256; b++) {
            int32_t id = vlookup(t, t->byte_chr[b], strlen(t->byte_chr[b]));
            t->byte_tok[b] = id >= 0 && t->plain[id] ? id : -1;
        }
    }

    if (spec->kind != SG_TOK_SCORES) {
        size_t nm = spec->n_merges;
        if (nm > INT32_MAX)
            nm = INT32_MAX;
        size_t pcap = pow2_above(nm ? nm : 1);
        t->pslot = malloc(pcap * sizeof *t->pslot);
        t->merges = malloc((nm ? nm : 1) * sizeof *t->merges);
        if (!t->pslot || !t->merges)
            goto nomem;
        t->pmask = pcap - 1;
        for (size_t i = 0; i < pcap; i++)
            t->pslot[i].id = -1;
        size_t tmpcap = 256;
        char *tmp = malloc(tmpcap);
        if (!tmp)
            goto nomem;
        for (size_t r = 0; r < nm; r++) {
            const char *a, *b;
            size_t al, bl;
            if (ex && ex->merge_left) {
                a = ex->merge_left[r];
                b = ex->merge_right[r];
                al = strlen(a);
            } else {
                a = spec->merges[r];
                if (!a || split_merge(a, &b, &al) < 0) {
                    free(tmp);
                    sg_tokenizer_free(t);
                    return sg_fail(SG_EFORMAT, "%s: merge %zu \"%s\" is not \"left right\"",
                                   what, r, a ? a : "(null)");
                }
            }
            bl = strlen(b);
            if (al + bl + 1 > tmpcap) {
                tmpcap = 2 * (al + bl + 1);
                char *nt = realloc(tmp, tmpcap);
                if (!nt) {
                    free(tmp);
                    goto nomem;
                }
                tmp = nt;
            }
            int32_t ia = lookup_norm(t, a, al, tmp, spm_like);
            int32_t ib = lookup_norm(t, b, bl, tmp, spm_like);
            memcpy(tmp, a, al);
            memcpy(tmp + al, b, bl);
            int32_t ic = lookup_norm(t, tmp, al + bl, tmp, spm_like);
            /* A merge whose parts or result are not in the vocabulary can
             * never fire on vocabulary symbols; skip it (HF refuses such
             * files, llama.cpp carries them uselessly). */
            if (ia >= 0 && ib >= 0 && ic >= 0 && pinsert(t, ia, ib, ic, (int32_t)r)) {
                t->merges[t->n_merges][0] = ia;
                t->merges[t->n_merges++][1] = ib;
            }
        }
        free(tmp);
    }

    if (spec->kind == SG_TOK_MERGES_BYTES) {
        int ign = 0;
        int r;
        if (spec->pre_regexes && spec->n_pre_regexes > 0)
            r = sg_pretok_new(spec->pre_regexes, spec->n_pre_regexes, what, &t->pre);
        else
            r = sg_pretok_for_name(spec->pre_name, &t->pre, &ign);
        if (spec->pre_name && !(spec->pre_regexes && spec->n_pre_regexes > 0))
            snprintf(t->pre_name, sizeof t->pre_name, "%s", spec->pre_name);
        if (r < 0) {
            sg_tokenizer_free(t);
            return r;
        }
        t->ignore_merges = ex && ex->ignore_merges >= 0 ? ex->ignore_merges : ign;
    }
    *out = t;
    return 0;
nomem:
    sg_tokenizer_free(t);
    return sg_fail(-ENOMEM, "%s: out of memory building the tokenizer", what);
}

int sg_tokenizer_build(const sg_tokenizer_spec *spec, sg_tokenizer **out)
{
    return sg_tokenizer_build_ex(spec, NULL, out);
}

/* ---- encoding ----------------------------------------------------------- */

typedef struct {
    int32_t prev, next;
    uint32_t off, len;      /* bytes of the text this symbol covers; 0 once merged away */
    int32_t id;             /* token, or -1 for a character not in the vocabulary */
} sym;

typedef struct {
    double prio;            /* higher merges first */
    int32_t left, right;
    uint32_t llen, rlen;    /* lengths when pushed: a later mismatch means stale */
    int32_t id;
} cand;

typedef struct {
    const sg_tokenizer *t;
    const char *text;       /* what sym offsets point into */
    sym *s;
    size_t ns, cap_s;
    cand *h;
    size_t nh, cap_h;
    int32_t *out;
    size_t nout, cap_out;
    char *buf;              /* byte-level: a piece in mapped characters */
    size_t cap_buf;
} work;

static int grow(void **p, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 64;
    while (c < need)
        c *= 2;
    void *np = realloc(*p, c * elem);
    if (!np)
        return -ENOMEM;
    *p = np;
    *cap = c;
    return 0;
}

static int emit(work *w, int32_t id)
{
    if (w->nout == w->cap_out && grow((void **)&w->out, &w->cap_out, w->nout + 1, 4) < 0)
        return -ENOMEM;
    w->out[w->nout++] = id;
    return 0;
}

static int better(const cand *a, const cand *b)
{
    return a->prio > b->prio || (a->prio == b->prio && a->left < b->left);
}

static int heap_push(work *w, cand c)
{
    if (w->nh == w->cap_h && grow((void **)&w->h, &w->cap_h, w->nh + 1, sizeof(cand)) < 0)
        return -ENOMEM;
    size_t i = w->nh++;
    while (i > 0) {
        size_t p = (i - 1) / 2;
        if (!better(&c, &w->h[p]))
            break;
        w->h[i] = w->h[p];
        i = p;
    }
    w->h[i] = c;
    return 0;
}

static cand heap_pop(work *w)
{
    cand top = w->h[0], last = w->h[--w->nh];
    size_t i = 0, n = w->nh;
    for (;;) {
        size_t l = 2 * i + 1, b = i;
        const cand *best = &last;
        if (l < n && better(&w->h[l], best)) {
            b = l;
            best = &w->h[l];
        }
        if (l + 1 < n && better(&w->h[l + 1], best))
            b = l + 1;
        if (b == i)
            break;
        w->h[i] = w->h[b];
        i = b;
    }
    if (n)
        w->h[i] = last;
    return top;
}

static int try_pair(work *w, int32_t l, int32_t r)
{
    if (l < 0 || r < 0)
        return 0;
    const sg_tokenizer *t = w->t;
    const sym *a = &w->s[l], *b = &w->s[r];
    cand c = {0, l, r, a->len, b->len, -1};
    if (t->kind == SG_TOK_SCORES) {
        /* SentencePiece semantics: the pair merges if the text it covers is
         * a piece, even where a part is not (tok512 has no single letters,
         * only byte tokens, yet " t" is a piece). */
        int32_t id = vlookup(t, w->text + a->off, (size_t)a->len + b->len);
        if (id < 0 || !t->plain[id])
            return 0;
        c.id = id;
        c.prio = t->scores[id];
    } else {
        if (a->id < 0 || b->id < 0)
            return 0;
        const sg_tok_pair *p = plookup(t, a->id, b->id);
        if (!p)
            return 0;
        c.id = p->id;
        c.prio = -(double)p->rank;
    }
    return heap_push(w, c);
}

/* Merges the symbols w->s[0..ns) to the end. */
static int bpe_merge(work *w)
{
    int r;
    w->nh = 0;
    for (size_t i = 0; i + 1 < w->ns; i++)
        if ((r = try_pair(w, (int32_t)i, (int32_t)i + 1)) < 0)
            return r;
    while (w->nh) {
        cand c = heap_pop(w);
        sym *a = &w->s[c.left], *b = &w->s[c.right];
        if (a->len != c.llen || b->len != c.rlen || a->next != c.right)
            continue;
        a->len += b->len;
        a->id = c.id;
        b->len = 0;
        a->next = b->next;
        if (b->next >= 0)
            w->s[b->next].prev = c.left;
        if ((r = try_pair(w, a->prev, c.left)) < 0 || (r = try_pair(w, c.left, a->next)) < 0)
            return r;
    }
    return 0;
}

static int add_sym(work *w, uint32_t off, uint32_t len, int32_t id)
{
    if (w->ns == w->cap_s && grow((void **)&w->s, &w->cap_s, w->ns + 1, sizeof(sym)) < 0)
        return -ENOMEM;
    int32_t i = (int32_t)w->ns++;
    w->s[i] = (sym){i - 1, -1, off, len, id};
    if (i > 0)
        w->s[i - 1].next = i;
    return 0;
}

/* A character as llama2.c groups bytes: one byte plus up to three following
 * continuation bytes (so invalid UTF-8 still advances). */
static size_t char_len(const unsigned char *s, size_t n)
{
    size_t l = 1;
    while (l < n && l < 4 && (s[l] & 0xC0) == 0x80)
        l++;
    return l;
}

static int emit_bytes(work *w, const unsigned char *p, size_t n)
{
    int r;
    for (size_t i = 0; i < n; i++) {
        int32_t id = w->t->byte_tok[p[i]];
        if (id < 0)
            id = w->t->unk;
        if (id >= 0 && (r = emit(w, id)) < 0)
            return r;
    }
    return 0;
}

/* SCORES and SPM: text[0..n) (dummy prefix already in place) as one run. */
static int encode_spm_run(work *w, const char *text, size_t n)
{
    const sg_tokenizer *t = w->t;
    const unsigned char *u = (const unsigned char *)text;
    int r;
    w->text = text;
    w->ns = 0;
    int prev_unk = 0;
    for (size_t i = 0; i < n;) {
        size_t l = char_len(u + i, n - i);
        int32_t id = vlookup(t, text + i, l);
        if (id >= 0 && !t->plain[id])
            id = -1;
        if (id >= 0 || t->kind == SG_TOK_SCORES) {
            /* SCORES keeps an unknown character whole: it may still merge by
             * text, and falls back to bytes only at the end. */
            if ((r = add_sym(w, (uint32_t)i, (uint32_t)l, id)) < 0)
                return r;
            prev_unk = 0;
        } else {
            int have_bytes = t->byte_fallback;
            for (size_t k = 0; k < l && have_bytes; k++)
                have_bytes = t->byte_tok[u[i + k]] >= 0;
            if (have_bytes) {
                for (size_t k = 0; k < l; k++)
                    if ((r = add_sym(w, (uint32_t)(i + k), 1, t->byte_tok[u[i + k]])) < 0)
                        return r;
                prev_unk = 0;
            } else if (prev_unk) {
                w->s[w->ns - 1].len += (uint32_t)l; /* HF fuse_unk */
            } else {
                if ((r = add_sym(w, (uint32_t)i, (uint32_t)l, t->unk)) < 0)
                    return r;
                prev_unk = 1;
            }
        }
        i += l;
    }
    if ((r = bpe_merge(w)) < 0)
        return r;
    for (int32_t i = w->ns ? 0 : -1; i >= 0; i = w->s[i].next) {
        const sym *s = &w->s[i];
        if (s->id >= 0)
            r = emit(w, s->id);
        else if (t->kind == SG_TOK_SCORES)
            r = emit_bytes(w, u + s->off, s->len);
        else
            r = 0; /* an unknown character with no <unk> to stand for it */
        if (r < 0)
            return r;
    }
    return 0;
}

/* Byte-level: one pre-tokenizer piece. */
static int encode_bytes_piece(void *ctx, const char *piece, size_t n)
{
    work *w = ctx;
    const sg_tokenizer *t = w->t;
    const unsigned char *u = (const unsigned char *)piece;
    int r;
    if (n > UINT32_MAX / 2)
        return sg_fail(SG_EARG, "tokenizer: a %zu-byte pre-token is too long", n);
    if (t->ignore_merges) {
        if ((r = grow((void **)&w->buf, &w->cap_buf, 2 * n + 1, 1)) < 0)
            return r;
        size_t m = 0;
        for (size_t i = 0; i < n; i++) {
            const char *c = t->byte_chr[u[i]];
            while (*c)
                w->buf[m++] = *c++;
        }
        int32_t id = vlookup(t, w->buf, m);
        if (id >= 0 && t->plain[id])
            return emit(w, id);
    }
    w->ns = 0;
    w->text = piece;
    for (size_t i = 0; i < n; i++)
        if ((r = add_sym(w, (uint32_t)i, 1, t->byte_tok[u[i]])) < 0)
            return r;
    if ((r = bpe_merge(w)) < 0)
        return r;
    /* A byte whose stand-in character is not in the vocabulary (SmolLM2
     * lacks 0xC0, 0xFF, ...) is dropped, as Hugging Face and llama.cpp do. */
    for (int32_t i = 0; i >= 0; i = w->s[i].next)
        if (w->s[i].id >= 0 && (r = emit(w, w->s[i].id)) < 0)
            return r;
    return 0;
}

int sg_tokenizer_encode(const sg_tokenizer *t, const char *text, size_t len, int add_bos,
                        int32_t **ids, size_t *n)
{
    *ids = NULL;
    *n = 0;
    if (!t || (!text && len))
        return sg_fail(SG_EARG, "tokenizer: encode of a NULL text");
    if (len > UINT32_MAX - 8)
        return sg_fail(SG_EARG, "tokenizer: %zu bytes is too long to encode at once", len);
    work w = {.t = t};
    int r = 0;
    if (add_bos && t->add_bos && t->bos >= 0 && (r = emit(&w, t->bos)) < 0)
        goto out;
    if (len == 0)
        goto out;
    if (t->kind == SG_TOK_MERGES_BYTES) {
        r = sg_pretok_split(t->pre, text, len, encode_bytes_piece, &w);
        goto out;
    }
    /* SCORES and SPM: the dummy prefix " " (U+2581 in the vocab) starts the
     * text, so a first word matches the same pieces as any other word. */
    size_t pre = t->add_space_prefix ? 1 : 0;
    char *buf = malloc(len + pre);
    if (!buf) {
        r = -ENOMEM;
        goto out;
    }
    if (pre)
        buf[0] = ' ';
    memcpy(buf + pre, text, len);
    size_t total = len + pre;
    if (t->metaspace_split) {
        /* HF Metaspace with split: each word, with its leading space, alone */
        size_t start = 0;
        for (size_t i = 1; i <= total && r == 0; i++)
            if (i == total || buf[i] == ' ') {
                r = encode_spm_run(&w, buf + start, i - start);
                start = i;
            }
    } else {
        r = encode_spm_run(&w, buf, total);
    }
    free(buf);
out:
    free(w.s);
    free(w.h);
    free(w.buf);
    if (r < 0) {
        free(w.out);
        if (r == -ENOMEM)
            return sg_fail(r, "tokenizer: out of memory encoding %zu bytes", len);
        return r;
    }
    if (!w.out && !(w.out = malloc(sizeof *w.out)))
        return sg_fail(-ENOMEM, "tokenizer: out of memory");
    *ids = w.out;
    *n = w.nout;
    return 0;
}

/* ---- decoding ----------------------------------------------------------- */

int sg_tokenizer_decode(const sg_tokenizer *t, const int32_t *ids, size_t n, char **text,
                        size_t *len)
{
    *text = NULL;
    if (len)
        *len = 0;
    size_t cap = 64, m = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (size_t)ids[i] >= t->n_vocab)
            return sg_fail(SG_EARG, "tokenizer: decode of id %d outside the vocabulary of %zu",
                           ids[i], t->n_vocab);
        cap += t->norm_len[ids[i]] + 4;
    }
    char *o = malloc(cap);
    if (!o)
        return sg_fail(-ENOMEM, "tokenizer: out of memory decoding %zu ids", n);
    for (size_t i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (t->types[id] == SG_TT_CONTROL || id == t->bos || id == t->eos)
            continue;
        if (t->byte_of[id] >= 0) {
            o[m++] = (char)t->byte_of[id];
        } else if (t->kind == SG_TOK_MERGES_BYTES && t->types[id] != SG_TT_USER) {
            const unsigned char *p = (const unsigned char *)t->norm[id];
            size_t pl = t->norm_len[id];
            for (size_t k = 0; k < pl;) {
                uint32_t cp;
                size_t l = get_utf8(p + k, pl - k, &cp);
                if (cp < 324 && t->cp_byte[cp] >= 0) {
                    o[m++] = (char)t->cp_byte[cp];
                } else {
                    memcpy(o + m, p + k, l); /* not a byte stand-in: keep as is */
                    m += l;
                }
                k += l;
            }
        } else {
            memcpy(o + m, t->norm[id], t->norm_len[id]);
            m += t->norm_len[id];
        }
    }
    size_t skip = t->add_space_prefix && m > 0 && o[0] == ' ' ? 1 : 0;
    memmove(o, o + skip, m - skip);
    m -= skip;
    o[m] = '\0';
    *text = o;
    if (len)
        *len = m;
    return 0;
}

/* ---- accessors ---------------------------------------------------------- */

size_t sg_tokenizer_vocab_size(const sg_tokenizer *t) { return t->n_vocab; }
int32_t sg_tokenizer_bos(const sg_tokenizer *t) { return t->bos; }
int32_t sg_tokenizer_eos(const sg_tokenizer *t) { return t->eos; }
sg_tokenizer_kind sg_tokenizer_get_kind(const sg_tokenizer *t) { return t->kind; }

const char *sg_tokenizer_piece(const sg_tokenizer *t, int32_t id)
{
    return id >= 0 && (size_t)id < t->n_vocab ? t->pieces[id] : NULL;
}

int32_t sg_tokenizer_find(const sg_tokenizer *t, const char *piece)
{
    size_t l = strlen(piece);
    if (t->kind == SG_TOK_MERGES_BYTES)
        return vlookup(t, piece, l);
    char *tmp = malloc(l + 1);
    if (!tmp)
        return -1;
    int32_t id = lookup_norm(t, piece, l, tmp, 1);
    free(tmp);
    return id;
}
