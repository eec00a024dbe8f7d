/* Writing a tokenizer as Hugging Face tokenizer.json, so a sliced model
 * carries the tokenizer of the model it came from (a GGUF vocabulary has no
 * file of its own to copy).
 *
 * Byte-level vocabularies are written as GPT-2 style BPE: each
 * pre-tokenizer pattern becomes a Split (Isolated) step before ByteLevel.
 * SentencePiece-style ones are written as Llama-2's converter writes them:
 * byte_fallback, Prepend "▁" + Replace " " -> "▁". A score-based vocabulary
 * (llama2.c, GGUF "llama") has no merge list; the merges are derived from
 * the scores as Hugging Face's SentencePiece converter does (every split of
 * a piece into two pieces, ordered by the piece's score), and the scores
 * themselves are kept in model.sg_scores (Hugging Face ignores unknown model
 * fields) so that sg_tokenizer_load_json rebuilds exactly the same
 * tokenizer. BOS, EOS and whether BOS is added go to model.sg_special. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fd_io.h"
#include "sg_error.h"
#include "tokenizer_internal.h"

/* A piece as written to the file: internal spaces back to U+2581 for the
 * SentencePiece kinds. */
static char *file_piece(const sg_tokenizer *t, int32_t id)
{
    if (t->kind == SG_TOK_MERGES_BYTES || t->types[id] == SG_TT_CONTROL)
        return strdup(t->pieces[id]);
    const char *s = t->norm[id];
    size_t n = t->norm_len[id], spaces = 0;
    for (size_t i = 0; i < n; i++)
        spaces += s[i] == ' ';
    char *o = malloc(n + 2 * spaces + 1), *p = o;
    if (!o)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') {
            memcpy(p, "\xe2\x96\x81", 3);
            p += 3;
        } else {
            *p++ = s[i];
        }
    }
    *p = '\0';
    return o;
}

typedef struct {
    float score;
    int32_t id, a, b;
} derived_merge;

static int cmp_derived(const void *x, const void *y)
{
    const derived_merge *p = x, *q = y;
    if (p->score != q->score)
        return p->score > q->score ? -1 : 1;
    if (p->id != q->id)
        return p->id < q->id ? -1 : 1;
    if (p->a != q->a)
        return p->a < q->a ? -1 : 1;
    return (p->b > q->b) - (p->b < q->b);
}

/* Every (a, b) with a + b a piece, a and b pieces, best score first. */
static int derive_merges(const sg_tokenizer *t, derived_merge **out, size_t *n)
{
    size_t cap = 1024, m = 0;
    derived_merge *d = malloc(cap * sizeof *d);
    if (!d)
        return -ENOMEM;
    for (size_t id = 0; id < t->n_vocab; id++) {
        if (!t->plain[id] || t->byte_of[id] >= 0 || sg_tok_lookup(t, t->norm[id],
                                                                  t->norm_len[id]) != (int32_t)id)
            continue;
        for (uint32_t k = 1; k < t->norm_len[id]; k++) {
            int32_t a = sg_tok_lookup(t, t->norm[id], k);
            int32_t b = sg_tok_lookup(t, t->norm[id] + k, t->norm_len[id] - k);
            if (a < 0 || b < 0 || !t->plain[a] || !t->plain[b])
                continue;
            if (m == cap) {
                derived_merge *nd = realloc(d, (cap *= 2) * sizeof *d);
                if (!nd) {
                    free(d);
                    return -ENOMEM;
                }
                d = nd;
            }
            d[m++] = (derived_merge){t->scores[id], (int32_t)id, a, b};
        }
    }
    qsort(d, m, sizeof *d, cmp_derived);
    *out = d;
    *n = m;
    return 0;
}

static cJSON *add_pair(cJSON *merges, const char *a, const char *b)
{
    cJSON *pair = cJSON_CreateArray();
    if (pair) {
        cJSON_AddItemToArray(pair, cJSON_CreateString(a));
        cJSON_AddItemToArray(pair, cJSON_CreateString(b));
        cJSON_AddItemToArray(merges, pair);
    }
    return pair;
}

static cJSON *typed(const char *type)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "type", type);
    return o;
}

static cJSON *build_json(const sg_tokenizer *t)
{
    int spm = t->kind != SG_TOK_MERGES_BYTES;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "version", "1.0");
    cJSON_AddNullToObject(root, "truncation");
    cJSON_AddNullToObject(root, "padding");

    char **fp = calloc(t->n_vocab, sizeof *fp);
    if (!fp)
        goto fail;
    for (size_t i = 0; i < t->n_vocab; i++)
        if (!(fp[i] = file_piece(t, (int32_t)i)))
            goto fail;

    cJSON *added = cJSON_AddArrayToObject(root, "added_tokens");
    for (size_t i = 0; i < t->n_vocab; i++) {
        int ty = t->types[i];
        if (ty != SG_TT_CONTROL && ty != SG_TT_USER && ty != SG_TT_UNKNOWN)
            continue;
        cJSON *a = cJSON_CreateObject();
        cJSON_AddNumberToObject(a, "id", (double)i);
        cJSON_AddStringToObject(a, "content", fp[i]);
        cJSON_AddBoolToObject(a, "single_word", 0);
        cJSON_AddBoolToObject(a, "lstrip", 0);
        cJSON_AddBoolToObject(a, "rstrip", 0);
        cJSON_AddBoolToObject(a, "normalized", ty == SG_TT_USER);
        cJSON_AddBoolToObject(a, "special", ty != SG_TT_USER);
        cJSON_AddItemToArray(added, a);
    }

    if (spm && !t->metaspace_split) {
        cJSON *norm = cJSON_AddObjectToObject(root, "normalizer"), *list;
        cJSON_AddStringToObject(norm, "type", "Sequence");
        list = cJSON_AddArrayToObject(norm, "normalizers");
        if (t->add_space_prefix) {
            cJSON *p = typed("Prepend");
            cJSON_AddStringToObject(p, "prepend", "\xe2\x96\x81");
            cJSON_AddItemToArray(list, p);
        }
        cJSON *r = typed("Replace");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(r, "pattern"), "String", " ");
        cJSON_AddStringToObject(r, "content", "\xe2\x96\x81");
        cJSON_AddItemToArray(list, r);
        cJSON_AddNullToObject(root, "pre_tokenizer");
    } else if (spm) {
        cJSON_AddNullToObject(root, "normalizer");
        cJSON *m = cJSON_AddObjectToObject(root, "pre_tokenizer");
        cJSON_AddStringToObject(m, "type", "Metaspace");
        cJSON_AddStringToObject(m, "replacement", "\xe2\x96\x81");
        cJSON_AddStringToObject(m, "prepend_scheme", t->add_space_prefix ? "first" : "never");
        cJSON_AddBoolToObject(m, "split", 1);
    } else {
        cJSON_AddNullToObject(root, "normalizer");
        cJSON *seq = cJSON_AddObjectToObject(root, "pre_tokenizer");
        cJSON_AddStringToObject(seq, "type", "Sequence");
        cJSON *list = cJSON_AddArrayToObject(seq, "pretokenizers");
        const char *const *pat;
        size_t np = sg_pretok_patterns(t->pre, &pat);
        /* GPT-2's own pattern, last, is ByteLevel's use_regex */
        int last_is_gpt2 = np > 0 && strcmp(pat[np - 1], sg_pretok_gpt2_regex) == 0;
        for (size_t i = 0; i < np - (size_t)last_is_gpt2; i++) {
            cJSON *s = typed("Split");
            cJSON_AddStringToObject(cJSON_AddObjectToObject(s, "pattern"), "Regex", pat[i]);
            cJSON_AddStringToObject(s, "behavior", "Isolated");
            cJSON_AddBoolToObject(s, "invert", 0);
            cJSON_AddItemToArray(list, s);
        }
        cJSON *bl = typed("ByteLevel");
        cJSON_AddBoolToObject(bl, "add_prefix_space", 0);
        cJSON_AddBoolToObject(bl, "trim_offsets", 1);
        cJSON_AddBoolToObject(bl, "use_regex", last_is_gpt2);
        cJSON_AddItemToArray(list, bl);
    }

    if (t->add_bos && t->bos >= 0) {
        cJSON *pp = cJSON_AddObjectToObject(root, "post_processor");
        cJSON_AddStringToObject(pp, "type", "TemplateProcessing");
        const char *bos = fp[t->bos];
        static const char *const seqs[2][2] = {{"single", "A"}, {"pair", "B"}};
        for (int k = 0; k < 2; k++) {
            cJSON *tpl = cJSON_AddArrayToObject(pp, seqs[k][0]);
            for (int j = 0; j <= k; j++) {
                cJSON *st = cJSON_CreateObject(), *sq = cJSON_CreateObject();
                cJSON *sti = cJSON_AddObjectToObject(st, "SpecialToken");
                cJSON_AddStringToObject(sti, "id", bos);
                cJSON_AddNumberToObject(sti, "type_id", j);
                cJSON *sqi = cJSON_AddObjectToObject(sq, "Sequence");
                cJSON_AddStringToObject(sqi, "id", seqs[j][1]);
                cJSON_AddNumberToObject(sqi, "type_id", j);
                cJSON_AddItemToArray(tpl, st);
                cJSON_AddItemToArray(tpl, sq);
            }
        }
        cJSON *sp = cJSON_AddObjectToObject(cJSON_AddObjectToObject(pp, "special_tokens"), bos);
        cJSON_AddStringToObject(sp, "id", bos);
        cJSON_AddItemToObject(sp, "ids", cJSON_CreateIntArray(&t->bos, 1));
        cJSON_AddItemToObject(sp, "tokens", cJSON_CreateStringArray(&bos, 1));
    } else {
        cJSON_AddNullToObject(root, "post_processor");
    }

    cJSON *dec;
    if (spm) {
        dec = cJSON_AddObjectToObject(root, "decoder");
        cJSON_AddStringToObject(dec, "type", "Sequence");
        cJSON *list = cJSON_AddArrayToObject(dec, "decoders");
        cJSON *r = typed("Replace");
        cJSON_AddStringToObject(cJSON_AddObjectToObject(r, "pattern"), "String",
                                "\xe2\x96\x81");
        cJSON_AddStringToObject(r, "content", " ");
        cJSON_AddItemToArray(list, r);
        cJSON_AddItemToArray(list, typed("ByteFallback"));
        cJSON_AddItemToArray(list, typed("Fuse"));
        if (t->add_space_prefix) {
            cJSON *s = typed("Strip");
            cJSON_AddStringToObject(s, "content", " ");
            cJSON_AddNumberToObject(s, "start", 1);
            cJSON_AddNumberToObject(s, "stop", 0);
            cJSON_AddItemToArray(list, s);
        }
    } else {
        dec = cJSON_AddObjectToObject(root, "decoder");
        cJSON_AddStringToObject(dec, "type", "ByteLevel");
        cJSON_AddBoolToObject(dec, "add_prefix_space", 1);
        cJSON_AddBoolToObject(dec, "trim_offsets", 1);
        cJSON_AddBoolToObject(dec, "use_regex", 1);
    }

    cJSON *model = cJSON_AddObjectToObject(root, "model");
    cJSON_AddStringToObject(model, "type", "BPE");
    cJSON_AddNullToObject(model, "dropout");
    if (t->unk >= 0)
        cJSON_AddStringToObject(model, "unk_token", fp[t->unk]);
    else
        cJSON_AddNullToObject(model, "unk_token");
    cJSON_AddNullToObject(model, "continuing_subword_prefix");
    cJSON_AddNullToObject(model, "end_of_word_suffix");
    cJSON_AddBoolToObject(model, "fuse_unk", spm);
    cJSON_AddBoolToObject(model, "byte_fallback", spm && t->byte_fallback);
    cJSON_AddBoolToObject(model, "ignore_merges", t->ignore_merges);
    cJSON *vocab = cJSON_AddObjectToObject(model, "vocab");
    for (size_t i = 0; i < t->n_vocab; i++)
        if (fp[i][0])
            cJSON_AddItemToObject(vocab, fp[i], cJSON_CreateNumber((double)i));
    /* tokenizer.json has no place for these (HF keeps them in
     * tokenizer_config.json); kept here for sg_tokenizer_load_json. */
    cJSON *sp = cJSON_AddObjectToObject(model, "sg_special");
    cJSON_AddNumberToObject(sp, "bos", t->bos);
    cJSON_AddNumberToObject(sp, "eos", t->eos);
    cJSON_AddBoolToObject(sp, "add_bos", t->add_bos);
    cJSON *merges = cJSON_AddArrayToObject(model, "merges");
    if (t->kind == SG_TOK_SCORES) {
        derived_merge *d;
        size_t nd;
        if (derive_merges(t, &d, &nd) < 0)
            goto fail;
        for (size_t i = 0; i < nd; i++)
            add_pair(merges, fp[d[i].a], fp[d[i].b]);
        free(d);
        cJSON *sc = cJSON_AddArrayToObject(model, "sg_scores");
        for (size_t i = 0; i < t->n_vocab; i++)
            cJSON_AddItemToArray(sc, cJSON_CreateNumber(t->scores[i]));
    } else {
        for (size_t i = 0; i < t->n_merges; i++)
            add_pair(merges, fp[t->merges[i][0]], fp[t->merges[i][1]]);
    }
    for (size_t i = 0; i < t->n_vocab; i++)
        free(fp[i]);
    free(fp);
    return root;
fail:
    if (fp)
        for (size_t i = 0; i < t->n_vocab; i++)
            free(fp[i]);
    free(fp);
    cJSON_Delete(root);
    return NULL;
}

int sg_tokenizer_save_json(const sg_tokenizer *t, const char *path)
{
    cJSON *root = build_json(t);
    char *text = root ? cJSON_PrintUnformatted(root) : NULL;
    cJSON_Delete(root);
    if (!text)
        return sg_fail(-ENOMEM, "%s: out of memory writing the tokenizer", path);
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (!tmp) {
        free(text);
        return sg_fail(-ENOMEM, "%s: out of memory", path);
    }
    snprintf(tmp, plen + 16, "%s.tmp.XXXXXX", path);
    int r = 0, fd = mkstemp(tmp);
    if (fd < 0) {
        r = sg_fail(-errno, "%s: cannot create %s: %s", path, tmp, strerror(errno));
        goto out;
    }
    int werr = sg_write_all(fd, text, strlen(text));
    if (werr)
        r = sg_fail(werr, "%s: write failed: %s", tmp, strerror(-werr));
    /* the data must be on disk before the rename makes it visible */
    if (!r && fsync(fd) != 0)
        r = sg_fail(-errno, "%s: fsync failed: %s", tmp, strerror(errno));
    if (!r)
        fchmod(fd, 0644);
    close(fd);
    if (!r && rename(tmp, path) != 0)
        r = sg_fail(-errno, "%s: cannot rename from %s: %s", path, tmp, strerror(errno));
    if (r)
        unlink(tmp);
out:
    free(tmp);
    free(text);
    return r;
}

/* ---- as GGUF metadata ---- */

struct sg_gguf_vocab_store {
    size_t n_tokens, n_merges;
    char **tokens, **merges;
};

void sg_tokenizer_gguf_vocab_free(sg_gguf_vocab_store *st)
{
    if (!st)
        return;
    for (size_t i = 0; st->tokens && i < st->n_tokens; i++)
        free(st->tokens[i]);
    for (size_t i = 0; st->merges && i < st->n_merges; i++)
        free(st->merges[i]);
    free(st->tokens);
    free(st->merges);
    free(st);
}

int sg_tokenizer_gguf_vocab(const sg_tokenizer *t, sg_gguf_vocab *v, sg_gguf_vocab_store **out)
{
    memset(v, 0, sizeof *v);
    *out = NULL;
    if (t->kind == SG_TOK_MERGES_SPM)
        return sg_fail(SG_EUNSUPPORTED, "a SentencePiece vocabulary with merges and no scores "
                                        "has no GGUF form here");
    sg_gguf_vocab_store *st = calloc(1, sizeof *st);
    if (!st || !(st->tokens = calloc(t->n_vocab, sizeof(char *))))
        goto nomem;
    st->n_tokens = t->n_vocab;
    for (size_t i = 0; i < t->n_vocab; i++)
        if (!(st->tokens[i] = file_piece(t, (int32_t)i)))
            goto nomem;
    if (t->kind == SG_TOK_MERGES_BYTES) {
        if (!(st->merges = calloc(t->n_merges ? t->n_merges : 1, sizeof(char *))))
            goto nomem;
        st->n_merges = t->n_merges;
        for (size_t i = 0; i < t->n_merges; i++) {
            const char *a = t->pieces[t->merges[i][0]], *b = t->pieces[t->merges[i][1]];
            size_t n = strlen(a) + strlen(b) + 2;
            if (!(st->merges[i] = malloc(n)))
                goto nomem;
            snprintf(st->merges[i], n, "%s %s", a, b);
        }
        v->model = "gpt2";
        v->pre = t->pre_name[0] ? t->pre_name : NULL;
        v->merges = (const char *const *)st->merges;
        v->n_merges = st->n_merges;
    } else {
        v->model = "llama";
        v->scores = t->scores;
    }
    v->tokens = (const char *const *)st->tokens;
    v->n_tokens = st->n_tokens;
    v->types = t->types;
    *out = st;
    return 0;
nomem:
    sg_tokenizer_gguf_vocab_free(st);
    return sg_fail(-ENOMEM, "out of memory building the GGUF vocabulary");
}
