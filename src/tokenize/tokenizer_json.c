/* Hugging Face tokenizer.json, model type BPE, in the two shapes causal LMs
 * use:
 *  - byte-level (GPT-2, Llama-3, Qwen2, SmolLM): pre_tokenizer ByteLevel,
 *    alone or in a Sequence after Split {Regex} / Digits steps;
 *  - SentencePiece-style (Llama-2, Mistral): byte_fallback, with either the
 *    normalizer Prepend "▁" + Replace " " -> "▁" or a Metaspace
 *    pre-tokenizer.
 * Added tokens extend the vocabulary (special ones become control tokens);
 * they are not matched inside text (see tokenizer.h). An NFC normalizer is
 * accepted and not applied (as llama.cpp): input text is assumed NFC. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pretokenize.h"
#include "read_file.h"
#include "sg_error.h"
#include "tokenizer.h"
#include "tokenizer_internal.h"


typedef struct {
    const char *path;
    int byte_level, metaspace, metaspace_split, prefix;
    const char *regex[16];
    char *owned[16];        /* regexes built here (escaped Split strings) */
    size_t n_regex;
} pre_state;

static const char *type_of(const cJSON *o)
{
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "type");
    return cJSON_IsString(t) ? t->valuestring : "";
}

static int flag(const cJSON *o, const char *key, int dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

static int add_regex(pre_state *st, const char *re, char *owned)
{
    if (st->n_regex == 16) {
        free(owned);
        return sg_fail(SG_EUNSUPPORTED, "%s: more than 16 pre-tokenizer steps", st->path);
    }
    st->owned[st->n_regex] = owned;
    st->regex[st->n_regex++] = re;
    return 0;
}

/* A literal string as a PCRE2 pattern. */
static char *escape_literal(const char *s)
{
    char *o = malloc(2 * strlen(s) + 1), *p = o;
    if (!o)
        return NULL;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x80 && !((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
                          (c >= 'A' && c <= 'Z') || c == ' '))
            *p++ = '\\';
        *p++ = *s;
    }
    *p = '\0';
    return o;
}

static int parse_pre(pre_state *st, const cJSON *o)
{
    if (!o || cJSON_IsNull(o))
        return 0;
    const char *type = type_of(o);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, "pretokenizers"), *e;
        if (!cJSON_IsArray(list))
            return sg_fail(SG_EFORMAT, "%s: pre_tokenizer Sequence without a list", st->path);
        cJSON_ArrayForEach(e, list)
        {
            int r = parse_pre(st, e);
            if (r < 0)
                return r;
        }
        return 0;
    }
    if (!strcmp(type, "ByteLevel")) {
        if (flag(o, "add_prefix_space", 0))
            return sg_fail(SG_EUNSUPPORTED, "%s: ByteLevel add_prefix_space is not supported",
                           st->path);
        st->byte_level = 1;
        return flag(o, "use_regex", 1) ? add_regex(st, sg_pretok_gpt2_regex, NULL) : 0;
    }
    if (!strcmp(type, "Digits"))
        return add_regex(st, flag(o, "individual_digits", 0) ? "\\p{N}" : "\\p{N}+", NULL);
    if (!strcmp(type, "Split")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(o, "behavior");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        const cJSON *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
        if (flag(o, "invert", 0) || !cJSON_IsString(beh) ||
            strcmp(beh->valuestring, "Isolated"))
            return sg_fail(SG_EUNSUPPORTED, "%s: only Split with behavior Isolated is supported",
                           st->path);
        if (cJSON_IsString(re))
            return add_regex(st, re->valuestring, NULL);
        if (cJSON_IsString(str)) {
            char *e = escape_literal(str->valuestring);
            if (!e)
                return sg_fail(-ENOMEM, "%s: out of memory", st->path);
            return add_regex(st, e, e);
        }
        return sg_fail(SG_EFORMAT, "%s: Split without a Regex or String pattern", st->path);
    }
    if (!strcmp(type, "Metaspace")) {
        const cJSON *rep = cJSON_GetObjectItemCaseSensitive(o, "replacement");
        const cJSON *scheme = cJSON_GetObjectItemCaseSensitive(o, "prepend_scheme");
        if (cJSON_IsString(rep) && strcmp(rep->valuestring, "\xe2\x96\x81"))
            return sg_fail(SG_EUNSUPPORTED, "%s: Metaspace replacement other than U+2581",
                           st->path);
        st->metaspace = 1;
        st->metaspace_split = flag(o, "split", 1);
        if (cJSON_IsString(scheme))
            st->prefix = strcmp(scheme->valuestring, "never") != 0;
        else
            st->prefix = flag(o, "add_prefix_space", 1);
        return 0;
    }
    return sg_fail(SG_EUNSUPPORTED, "%s: pre_tokenizer type '%s' is not supported", st->path,
                   type);
}

/* Accepts the Llama-2 normalizer (Prepend "▁", Replace " " -> "▁") and NFC. */
static int parse_normalizer(pre_state *st, const cJSON *o)
{
    if (!o || cJSON_IsNull(o))
        return 0;
    const char *type = type_of(o);
    if (!strcmp(type, "Sequence")) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(o, "normalizers"), *e;
        cJSON_ArrayForEach(e, list)
        {
            int r = parse_normalizer(st, e);
            if (r < 0)
                return r;
        }
        return 0;
    }
    if (!strcmp(type, "NFC"))
        return 0;
    if (!strcmp(type, "Prepend")) {
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "prepend");
        if (cJSON_IsString(p) && !strcmp(p->valuestring, "\xe2\x96\x81")) {
            st->prefix = 1;
            return 0;
        }
    }
    if (!strcmp(type, "Replace")) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(o, "pattern");
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, "content");
        if (cJSON_IsString(s) && cJSON_IsString(c) && !strcmp(s->valuestring, " ") &&
            !strcmp(c->valuestring, "\xe2\x96\x81"))
            return 0; /* spaces are U+2581 inside the engine already */
    }
    return sg_fail(SG_EUNSUPPORTED, "%s: normalizer '%s' is not supported", st->path, type);
}

/* BOS from a TemplateProcessing whose single-sequence template starts with a
 * special token (Llama-2, Llama-3), looked for inside Sequence too. */
static int32_t template_bos(const cJSON *pp)
{
    if (!pp)
        return -1;
    const char *type = type_of(pp);
    if (!strcmp(type, "Sequence")) {
        const cJSON *e;
        cJSON_ArrayForEach(e, cJSON_GetObjectItemCaseSensitive(pp, "processors"))
        {
            int32_t b = template_bos(e);
            if (b >= 0)
                return b;
        }
        return -1;
    }
    if (strcmp(type, "TemplateProcessing"))
        return -1;
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(pp, "single"), 0);
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(first, "SpecialToken");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(st, "id");
    if (!cJSON_IsString(name))
        return -1;
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(pp, "special_tokens"), name->valuestring);
    const cJSON *id = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(sp, "ids"), 0);
    return cJSON_IsNumber(id) ? (int32_t)id->valuedouble : -1;
}

static int is_id(const cJSON *v) { return cJSON_IsNumber(v) && v->valuedouble >= 0 &&
                                          v->valuedouble < (1 << 24) &&
                                          v->valuedouble == (double)(int32_t)v->valuedouble; }

int sg_tokenizer_load_json(const char *path, sg_tokenizer **out)
{
    *out = NULL;
    char *buf = NULL;
    size_t len = 0;
    int r = sg_read_file(path, (size_t)1 << 30, &buf, &len);
    if (r < 0)
        return r;
    cJSON *root = cJSON_ParseWithLength(buf, len);
    const char **tokens = NULL, **ml = NULL, **mr = NULL;
    int32_t *types = NULL;
    float *scores = NULL;
    char *split_buf = NULL;
    pre_state st = {.path = path};
    if (!root) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= buf && at <= buf + len ? (size_t)(at - buf) : 0;
        r = sg_fail(SG_EFORMAT, "%s: not valid JSON (near byte %zu)", path, off);
        goto out;
    }
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(root, "model");
    const cJSON *vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    const cJSON *merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    const cJSON *mtype = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    if (!cJSON_IsObject(model) || !cJSON_IsObject(vocab)) {
        r = sg_fail(SG_EFORMAT, "%s: no model.vocab object", path);
        goto out;
    }
    if (cJSON_IsString(mtype) && strcmp(mtype->valuestring, "BPE")) {
        r = sg_fail(SG_EUNSUPPORTED, "%s: model type %s is not BPE", path, mtype->valuestring);
        goto out;
    }
    if (merges && !cJSON_IsArray(merges)) {
        r = sg_fail(SG_EFORMAT, "%s: model.merges is not a list", path);
        goto out;
    }
    static const char *const affixes[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const cJSON *a = cJSON_GetObjectItemCaseSensitive(model, affixes[i]);
        if (cJSON_IsString(a) && a->valuestring[0]) {
            r = sg_fail(SG_EUNSUPPORTED, "%s: model.%s is not supported", path, affixes[i]);
            goto out;
        }
    }

    /* The vocabulary: model.vocab plus added_tokens, indexed by id. */
    size_t n = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, vocab)
    {
        if (!is_id(e)) {
            r = sg_fail(SG_EFORMAT, "%s: vocab entry \"%s\" has no valid id", path, e->string);
            goto out;
        }
        if ((size_t)e->valuedouble + 1 > n)
            n = (size_t)e->valuedouble + 1;
    }
    cJSON_ArrayForEach(e, added)
    {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!is_id(id) || !cJSON_IsString(c)) {
            r = sg_fail(SG_EFORMAT, "%s: added token without id or content", path);
            goto out;
        }
        if ((size_t)id->valuedouble + 1 > n)
            n = (size_t)id->valuedouble + 1;
    }
    if (n == 0) {
        r = sg_fail(SG_EFORMAT, "%s: empty vocabulary", path);
        goto out;
    }
    /* ids index a table: a few entries with huge ids would make a huge,
     * mostly empty one (a 10 KB file asking for 1.7 GB, found by fuzzing);
     * real vocabularies number their tokens densely */
    size_t entries = (size_t)cJSON_GetArraySize(vocab) + (size_t)cJSON_GetArraySize(added);
    if (n > 2 * entries + 1024) {
        r = sg_fail(SG_EFORMAT, "%s: token ids run to %zu for %zu tokens: ids must be dense",
                    path, n - 1, entries);
        goto out;
    }
    tokens = calloc(n, sizeof *tokens);
    types = malloc(n * sizeof *types);
    if (!tokens || !types) {
        r = sg_fail(-ENOMEM, "%s: out of memory", path);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        types[i] = 1;
    cJSON_ArrayForEach(e, vocab)
    {
        size_t id = (size_t)e->valuedouble;
        if (tokens[id]) {
            r = sg_fail(SG_EFORMAT, "%s: id %zu given to both \"%s\" and \"%s\"", path, id,
                        tokens[id], e->string);
            goto out;
        }
        tokens[id] = e->string;
    }
    cJSON_ArrayForEach(e, added)
    {
        size_t id = (size_t)cJSON_GetObjectItemCaseSensitive(e, "id")->valuedouble;
        const char *c = cJSON_GetObjectItemCaseSensitive(e, "content")->valuestring;
        if (tokens[id] && strcmp(tokens[id], c)) {
            r = sg_fail(SG_EFORMAT, "%s: added token \"%s\" reuses id %zu of \"%s\"", path, c,
                        id, tokens[id]);
            goto out;
        }
        tokens[id] = c;
        types[id] = flag(e, "special", 0) ? 3 : 4;
    }

    /* Merges: "left right" strings (older files) or [left, right] pairs. */
    size_t nm = (size_t)cJSON_GetArraySize(merges), im = 0;
    ml = calloc(nm ? nm : 1, sizeof *ml);
    mr = calloc(nm ? nm : 1, sizeof *mr);
    size_t split_len = 0;
    cJSON_ArrayForEach(e, merges)
    {
        if (cJSON_IsString(e))
            split_len += strlen(e->valuestring) + 1;
    }
    split_buf = malloc(split_len ? split_len : 1);
    if (!ml || !mr || !split_buf) {
        r = sg_fail(-ENOMEM, "%s: out of memory", path);
        goto out;
    }
    char *sp = split_buf;
    cJSON_ArrayForEach(e, merges)
    {
        if (cJSON_IsString(e)) {
            const char *s = e->valuestring;
            const char *space = s[0] ? strchr(s + 1, ' ') : NULL;
            if (!space) {
                r = sg_fail(SG_EFORMAT, "%s: merge %zu \"%s\" is not \"left right\"", path, im,
                            s);
                goto out;
            }
            size_t l = strlen(s);
            memcpy(sp, s, l + 1);
            sp[space - s] = '\0';
            ml[im] = sp;
            mr[im] = sp + (space - s) + 1;
            sp += l + 1;
        } else if (cJSON_GetArraySize(e) == 2 && cJSON_IsString(e->child) &&
                   cJSON_IsString(e->child->next)) {
            ml[im] = e->child->valuestring;
            mr[im] = e->child->next->valuestring;
        } else {
            r = sg_fail(SG_EFORMAT, "%s: merge %zu is neither \"a b\" nor [a, b]", path, im);
            goto out;
        }
        im++;
    }

    if ((r = parse_pre(&st, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"))) < 0 ||
        (r = parse_normalizer(&st, cJSON_GetObjectItemCaseSensitive(root, "normalizer"))) < 0)
        goto out;
    if (!strcmp(type_of(cJSON_GetObjectItemCaseSensitive(root, "decoder")), "ByteLevel") &&
        !st.metaspace)
        st.byte_level = 1;
    int byte_fallback = flag(model, "byte_fallback", 0);
    sg_tokenizer_spec spec = {
        .n_vocab = n,
        .tokens = tokens,
        .types = types,
        .n_merges = nm,
        .bos_id = -1,
        .eos_id = -1,
        .unk_id = -1,
    };
    sg_tokenizer_extra ex = SG_TOKENIZER_EXTRA_DEFAULT;
    ex.what = path;
    ex.merge_left = ml;
    ex.merge_right = mr;
    ex.ignore_merges = flag(model, "ignore_merges", 0);
    if (st.byte_level && !st.metaspace) {
        spec.kind = SG_TOK_MERGES_BYTES;
        /* ByteLevel without its regex: the whole text is one piece. */
        if (st.n_regex == 0 && (r = add_regex(&st, "(?s).+", NULL)) < 0)
            goto out;
        spec.pre_regexes = st.regex;
        spec.n_pre_regexes = st.n_regex;
    } else if (byte_fallback || st.metaspace || st.prefix) {
        if (st.n_regex) {
            r = sg_fail(SG_EUNSUPPORTED, "%s: Split/Digits with a SentencePiece-style BPE",
                        path);
            goto out;
        }
        spec.kind = SG_TOK_MERGES_SPM;
        spec.add_space_prefix = st.prefix;
        /* Our own extension (tokenizer_save.c): a score-based vocabulary
         * keeps its scores, so it reloads as exactly the same tokenizer. */
        const cJSON *sc = cJSON_GetObjectItemCaseSensitive(model, "sg_scores");
        if (sc) {
            if (!cJSON_IsArray(sc) || (size_t)cJSON_GetArraySize(sc) != n ||
                !(scores = malloc(n * sizeof *scores))) {
                r = sg_fail(SG_EFORMAT, "%s: model.sg_scores is not %zu numbers", path, n);
                goto out;
            }
            size_t i = 0;
            cJSON_ArrayForEach(e, sc)
            {
                if (!cJSON_IsNumber(e)) {
                    r = sg_fail(SG_EFORMAT, "%s: model.sg_scores[%zu] is not a number", path, i);
                    goto out;
                }
                scores[i++] = (float)e->valuedouble;
            }
            spec.kind = SG_TOK_SCORES;
            spec.scores = scores;
        }
        ex.byte_fallback = byte_fallback;
        ex.metaspace_split = st.metaspace && st.metaspace_split;
    } else {
        r = sg_fail(SG_EUNSUPPORTED,
                    "%s: neither a ByteLevel nor a byte-fallback (SentencePiece-style) BPE",
                    path);
        goto out;
    }

    const cJSON *unk = cJSON_GetObjectItemCaseSensitive(model, "unk_token");
    const cJSON *pp = cJSON_GetObjectItemCaseSensitive(root, "post_processor");
    int32_t bos = template_bos(pp);
    spec.add_bos = bos >= 0 && (size_t)bos < n;
    /* Otherwise by the usual names. */
    static const char *const bos_names[] = {"<s>", "<|begin_of_text|>", "<|startoftext|>"};
    static const char *const eos_names[] = {"</s>", "<|end_of_text|>", "<|endoftext|>"};
    for (size_t i = 0; i < n; i++) {
        if (!tokens[i])
            continue;
        for (int k = 0; k < 3; k++) {
            if (bos < 0 && !strcmp(tokens[i], bos_names[k]))
                bos = (int32_t)i;
            if (spec.eos_id < 0 && !strcmp(tokens[i], eos_names[k]))
                spec.eos_id = (int32_t)i;
        }
        if (cJSON_IsString(unk) && spec.unk_id < 0 && !strcmp(tokens[i], unk->valuestring))
            spec.unk_id = (int32_t)i;
    }
    spec.bos_id = bos < (int32_t)n ? bos : -1;
    /* Written by sg_tokenizer_save_json: the source's own choices. */
    const cJSON *special = cJSON_GetObjectItemCaseSensitive(model, "sg_special");
    if (cJSON_IsObject(special)) {
        const cJSON *b = cJSON_GetObjectItemCaseSensitive(special, "bos");
        const cJSON *eo = cJSON_GetObjectItemCaseSensitive(special, "eos");
        spec.bos_id = is_id(b) && b->valuedouble < n ? (int32_t)b->valuedouble : -1;
        spec.eos_id = is_id(eo) && eo->valuedouble < n ? (int32_t)eo->valuedouble : -1;
        spec.add_bos = flag(special, "add_bos", 0) && spec.bos_id >= 0;
    }
    r = sg_tokenizer_build_ex(&spec, &ex, out);
out:
    for (size_t i = 0; i < st.n_regex; i++)
        free(st.owned[i]);
    free(split_buf);
    free(ml);
    free(mr);
    free(tokens);
    free(types);
    free(scores);
    cJSON_Delete(root);
    free(buf);
    return r;
}
