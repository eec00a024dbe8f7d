/* libFuzzer target: the tokenizer files. The first byte picks the format
 * (even: tokenizer.json, odd: llama2.c tokenizer.bin, whose vocabulary
 * size is not in the file: the next two bytes give it, little-endian);
 * the rest is the file. A tokenizer that loads encodes a short string and
 * decodes it back. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_common.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 3) return 0;
    int llama2c = data[0] & 1;
    int64_t vocab = data[1] | (int64_t)data[2] << 8;
    char path[64];
    sg_fuzz_file(data + 3, size - 3, path);
    sg_tokenizer *tok = NULL;
    int r = llama2c ? sg_tokenizer_load_llama2c(path, vocab, &tok)
                    : sg_tokenizer_load_json(path, &tok);
    if (r != 0) return 0;
    static const char text[] = "Once upon a time, \xc3\xa9t\xc3\xa9 <s> 42!\n\xff";
    int32_t *ids = NULL;
    size_t n = 0;
    if (sg_tokenizer_encode(tok, text, sizeof text - 1, 1, &ids, &n) == 0) {
        char *back = NULL;
        size_t len = 0;
        if (sg_tokenizer_decode(tok, ids, n, &back, &len) == 0) free(back);
        free(ids);
    }
    sg_tokenizer_free(tok);
    return 0;
}
