/* llama2.c tokenizer.bin (written by llama2.c's tokenizer.py export):
 * little-endian i32 max_token_length, then per token f32 score, i32 byte
 * length, the bytes (no terminator). Id 0 is <unk>, 1 BOS, 2 EOS (llama2.c
 * hard-codes these); pieces already use ' ' where SentencePiece has U+2581.
 * Read strictly: every length is checked against the file before use. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "read_file.h"
#include "sg_error.h"
#include "tokenizer.h"
#include "tokenizer_internal.h"


static int32_t rd_i32(const unsigned char *p)
{
    return (int32_t)((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24);
}

int sg_tokenizer_load_llama2c(const char *path, int64_t vocab_size, sg_tokenizer **out)
{
    *out = NULL;
    /* vocab_size 0: as many tokens as the file holds. */
    if (vocab_size < 0 || vocab_size > (1 << 24))
        return sg_fail(SG_EARG, "%s: bad vocabulary size %lld", path, (long long)vocab_size);
    char *text = NULL;
    size_t size = 0;
    int r = sg_read_file(path, (size_t)1 << 30, &text, &size);
    unsigned char *buf = (unsigned char *)text;
    if (r < 0)
        return r;
    char **tokens = NULL;
    float *scores = NULL;
    size_t n = 0, cap = 0, pos = 4;
    if (size < 4) {
        r = sg_fail(SG_EFORMAT, "%s: truncated header (%zu bytes)", path, size);
        goto out;
    }
    int32_t max_len = rd_i32(buf);
    if (max_len <= 0 || max_len > (1 << 16)) {
        r = sg_fail(SG_EFORMAT, "%s: bad max_token_length %d", path, max_len);
        goto out;
    }
    while (vocab_size ? n < (size_t)vocab_size : pos < size) {
        if (size - pos < 8) {
            r = sg_fail(SG_EFORMAT, "%s: truncated at token %zu (offset %zu)", path, n, pos);
            goto out;
        }
        float score;
        uint32_t sbits = (uint32_t)rd_i32(buf + pos);
        memcpy(&score, &sbits, 4);
        int32_t len = rd_i32(buf + pos + 4);
        pos += 8;
        if (!isfinite(score)) {
            r = sg_fail(SG_EFORMAT, "%s: token %zu has a non-finite score", path, n);
            goto out;
        }
        if (len < 0 || len > max_len) {
            r = sg_fail(SG_EFORMAT, "%s: token %zu has length %d (max_token_length %d)", path,
                        n, len, max_len);
            goto out;
        }
        if (size - pos < (size_t)len) {
            r = sg_fail(SG_EFORMAT, "%s: truncated inside token %zu (offset %zu)", path, n,
                        pos);
            goto out;
        }
        if (memchr(buf + pos, 0, (size_t)len)) {
            r = sg_fail(SG_EFORMAT, "%s: token %zu contains a NUL byte", path, n);
            goto out;
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 1024;
            char **nt = realloc(tokens, cap * sizeof *tokens);
            float *ns = nt ? realloc(scores, cap * sizeof *scores) : NULL;
            if (nt)
                tokens = nt;
            if (ns)
                scores = ns;
            if (!nt || !ns) {
                r = sg_fail(-ENOMEM, "%s: out of memory", path);
                goto out;
            }
        }
        if (!(tokens[n] = malloc((size_t)len + 1))) {
            r = sg_fail(-ENOMEM, "%s: out of memory", path);
            goto out;
        }
        memcpy(tokens[n], buf + pos, (size_t)len);
        tokens[n][len] = '\0';
        scores[n] = score;
        n++;
        pos += (size_t)len;
    }
    if (pos != size) {
        r = sg_fail(SG_EFORMAT, "%s: %zu bytes left after %zu tokens (wrong vocab size?)", path,
                    size - pos, n);
        goto out;
    }
    if (n < 3) {
        r = sg_fail(SG_EFORMAT, "%s: only %zu tokens; llama2.c needs <unk>, BOS, EOS", path, n);
        goto out;
    }
    sg_tokenizer_spec spec = {
        .kind = SG_TOK_SCORES,
        .n_vocab = n,
        .tokens = (const char *const *)tokens,
        .scores = scores,
        .bos_id = 1,
        .eos_id = 2,
        .unk_id = 0,
        .add_bos = 1,
        .add_space_prefix = 1,
    };
    sg_tokenizer_extra ex = SG_TOKENIZER_EXTRA_DEFAULT;
    ex.what = path;
    r = sg_tokenizer_build_ex(&spec, &ex, out);
out:
    for (size_t i = 0; i < n; i++)
        free(tokens[i]);
    free(tokens);
    free(scores);
    free(buf);
    return r;
}
