/* libFuzzer target: a GGUF file through sg_gguf_open, then what a run
 * reads from it: the model config and the tokenizer (then one encode). */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "fuzz_common.h"
#include "gguf.h"
#include "tokenizer.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    sg_fuzz_file(data, size, path);
    sg_gguf *g = NULL;
    if (sg_gguf_open(path, &g) != 0) return 0;
    sg_model_config cfg;
    (void)sg_gguf_model_config(g, &cfg);
    sg_tokenizer *tok = NULL;
    if (sg_gguf_tokenizer(g, &tok) == 0) {
        int32_t *ids = NULL;
        size_t n = 0;
        static const char text[] = "Once upon a time, \xc3\xa9t\xc3\xa9 <s> 42!";
        if (sg_tokenizer_encode(tok, text, sizeof text - 1, 1, &ids, &n) == 0) free(ids);
        sg_tokenizer_free(tok);
    }
    sg_gguf_close(g);
    return 0;
}
