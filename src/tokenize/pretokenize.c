/* Regex pre-tokenization (see pretokenize.h). The pattern tables follow
 * llama.cpp's llm_tokenizer_bpe (src/llama-vocab.cpp), written as the
 * original Hugging Face patterns where PCRE2 can run them directly. */
#define PCRE2_CODE_UNIT_WIDTH 8
#include "pretokenize.h"

#include <errno.h>
#include <pcre2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sg_error.h"

/* Hugging Face ByteLevel. llama.cpp drops the final "|\s+": the only text it
 * would match is a lone whitespace before a non-space, which becomes a
 * between-match piece anyway, so both give the same pieces. */
const char sg_pretok_gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* Llama-3 writes (?i:'s|...); PCRE2's Unicode caseless matching would also
 * accept U+017F for 's', so the ASCII-only form llama.cpp uses is kept. */
#define CONTRACTIONS "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
static const char llama3_regex[] =
    CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                 "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char qwen2_regex[] =
    CONTRACTIONS "|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                 "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
#define UPPERISH "[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]"
#define LOWERISH "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]"
static const char gpt4o_regex[] =
    "[^\\r\\n\\p{L}\\p{N}]?" UPPERISH "*" LOWERISH "+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|[^\\r\\n\\p{L}\\p{N}]?" UPPERISH "+" LOWERISH "*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
    "|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char tekken_regex[] =
    "[^\\r\\n\\p{L}\\p{N}]?" UPPERISH "*" LOWERISH "+"
    "|[^\\r\\n\\p{L}\\p{N}]?" UPPERISH "+" LOWERISH "*"
    "|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
static const char poro_regex[] = " ?[^(\\s|.,!?…。，、।۔،)]+";

typedef struct {
    const char *names;          /* space-separated GGUF names */
    int ignore_merges;
    const char *regex[5];       /* NULL-terminated */
} pre_entry;

static const pre_entry pre_table[] = {
    {"gpt2 gpt-2 phi-2 mpt olmo jais exaone4 roberta-bpe jina-v1-en jina-v2-code jina-es "
     "jina-de jina-v2-es jina-v2-de gigachat a.x-4.0 mellum modern-bert trillion "
     "granite-docling",
     0, {sg_pretok_gpt2_regex}},
    {"default", 0,
     {"[\\p{P}\\$\\+<=>\\^~\\|]+", sg_pretok_gpt2_regex, "\\p{N}+", "[0-9][0-9][0-9]"}},
    {"starcoder refact command-r smollm codeshell exaone minerva-7b", 0,
     {"\\p{N}", sg_pretok_gpt2_regex}},
    {"falcon", 0, {"[\\p{P}\\$\\+<=>\\^~\\|`]+", sg_pretok_gpt2_regex, "[0-9][0-9][0-9]"}},
    {"llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2", 1, {llama3_regex}},
    {"dbrx smaug-bpe glm4 chatglm-bpe", 0, {llama3_regex}},
    {"qwen2 qwen2.5 qwen-2.5 deepseek-r1-qwen kormo stablelm2 megrez hunyuan", 0,
     {qwen2_regex}},
    {"poro-chat bloom gpt3-finnish", 0, {poro_regex}},
    {"viking", 0, {poro_regex, "\\p{N}"}},
    {"tekken", 1, {tekken_regex}},
    {"gpt-4o llama4", 0, {gpt4o_regex}},
    {"deepseek-coder", 0,
     {"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", "[一-龥ࠀ-一가-퟿]+", "\\p{N}"}},
    {"deepseek-v3 hunyuan-dense", 0,
     {"\\p{N}{1,3}", "[一-龥぀-ゟ゠-ヿ]+",
      "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\\r\\n\\p{L}\\p{P}\\p{S}]?"
      "[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}},
};

struct sg_pretok {
    size_t n;
    pcre2_code **re;
    char **pattern;         /* the sources, for writing tokenizer.json */
};

void sg_pretok_free(sg_pretok *p)
{
    if (!p)
        return;
    for (size_t i = 0; i < p->n; i++) {
        pcre2_code_free(p->re[i]);
        free(p->pattern[i]);
    }
    free(p->re);
    free(p->pattern);
    free(p);
}

int sg_pretok_new(const char *const *patterns, size_t n, const char *what, sg_pretok **out)
{
    *out = NULL;
    if (n == 0)
        return sg_fail(SG_EARG, "%s: empty pre-tokenizer pattern list", what);
    sg_pretok *p = calloc(1, sizeof *p);
    if (!p || !(p->re = calloc(n, sizeof *p->re)) ||
        !(p->pattern = calloc(n, sizeof *p->pattern))) {
        if (p)
            free(p->re);
        free(p);
        return sg_fail(-ENOMEM, "%s: out of memory", what);
    }
    for (size_t i = 0; i < n; i++) {
        int err;
        PCRE2_SIZE off;
        uint32_t opts = PCRE2_UTF | PCRE2_UCP;
#ifdef PCRE2_MATCH_INVALID_UTF
        opts |= PCRE2_MATCH_INVALID_UTF;
#endif
        p->re[i] = pcre2_compile((PCRE2_SPTR)patterns[i], PCRE2_ZERO_TERMINATED, opts, &err,
                                 &off, NULL);
        if (!p->re[i]) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(err, msg, sizeof msg);
            p->n = i;
            sg_pretok_free(p);
            return sg_fail(SG_EFORMAT, "%s: pre-tokenizer regex %zu at offset %zu: %s", what, i,
                           (size_t)off, (const char *)msg);
        }
        p->n = i + 1;
        if (!(p->pattern[i] = strdup(patterns[i]))) {
            sg_pretok_free(p);
            return sg_fail(-ENOMEM, "%s: out of memory", what);
        }
        /* JIT is an optional speed-up: a build without it still matches. */
        pcre2_jit_compile(p->re[i], PCRE2_JIT_COMPLETE);
    }
    *out = p;
    return 0;
}

int sg_pretok_for_name(const char *name, sg_pretok **out, int *ignore_merges)
{
    const char *key = name && *name ? name : "gpt2";
    size_t klen = strlen(key);
    for (size_t e = 0; e < sizeof pre_table / sizeof pre_table[0]; e++) {
        const char *s = pre_table[e].names;
        while (*s) {
            size_t l = strcspn(s, " ");
            if (l == klen && memcmp(s, key, l) == 0) {
                size_t n = 0;
                while (n < 5 && pre_table[e].regex[n])
                    n++;
                if (ignore_merges)
                    *ignore_merges = pre_table[e].ignore_merges;
                char what[96];
                snprintf(what, sizeof what, "pre-tokenizer '%s'", key);
                return sg_pretok_new(pre_table[e].regex, n, what, out);
            }
            s += l;
            while (*s == ' ')
                s++;
        }
    }
    *out = NULL;
    return sg_fail(SG_EUNSUPPORTED, "tokenizer: unknown pre-tokenizer type '%s'", key);
}

size_t sg_pretok_patterns(const sg_pretok *p, const char *const **out)
{
    *out = (const char *const *)p->pattern;
    return p->n;
}

typedef struct {
    const sg_pretok *p;
    pcre2_match_data **md;
    pcre2_match_context *mctx;
    sg_pretok_cb cb;
    void *ctx;
} split_state;

static size_t utf8_step(const unsigned char *s, size_t pos, size_t n)
{
    pos++;
    while (pos < n && (s[pos] & 0xC0) == 0x80)
        pos++;
    return pos;
}

static int split_level(split_state *st, size_t level, const char *s, size_t n)
{
    if (n == 0)
        return 0;
    if (level == st->p->n)
        return st->cb(st->ctx, s, n);
    pcre2_match_data *md = st->md[level];
    size_t pos = 0, last = 0;
    int r;
    while (pos < n) {
        int rc = pcre2_match(st->p->re[level], (PCRE2_SPTR)s, n, pos, 0, md, st->mctx);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[160];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return sg_fail(SG_EFORMAT, "tokenizer: pre-tokenizer regex %zu failed: %s", level,
                           (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
        size_t ms = ov[0], me = ov[1];
        if (me <= ms) {
            /* An empty match splits nothing; look again one character on. */
            pos = utf8_step((const unsigned char *)s, ms, n);
            continue;
        }
        if (ms > last && (r = split_level(st, level + 1, s + last, ms - last)))
            return r;
        if ((r = split_level(st, level + 1, s + ms, me - ms)))
            return r;
        last = pos = me;
    }
    if (last < n)
        return split_level(st, level + 1, s + last, n - last);
    return 0;
}

int sg_pretok_split(const sg_pretok *p, const char *text, size_t len, sg_pretok_cb cb,
                    void *ctx)
{
    /* Match data and the JIT stack are per call so one pre-tokenizer can
     * serve several threads. */
    split_state st = {p, calloc(p->n, sizeof *st.md), pcre2_match_context_create(NULL), cb,
                      ctx};
    pcre2_jit_stack *js = pcre2_jit_stack_create(32 * 1024, 8 * 1024 * 1024, NULL);
    int r = 0;
    if (!st.md || !st.mctx) {
        r = -ENOMEM;
        goto out;
    }
    if (js)
        pcre2_jit_stack_assign(st.mctx, NULL, js);
    for (size_t i = 0; i < p->n; i++)
        if (!(st.md[i] = pcre2_match_data_create_from_pattern(p->re[i], NULL))) {
            r = -ENOMEM;
            goto out;
        }
    r = split_level(&st, 0, text, len);
out:
    if (st.md)
        for (size_t i = 0; i < p->n; i++)
            pcre2_match_data_free(st.md[i]);
    free(st.md);
    pcre2_match_context_free(st.mctx);
    pcre2_jit_stack_free(js);
    return r;
}
