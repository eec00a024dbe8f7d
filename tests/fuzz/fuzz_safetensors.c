/* libFuzzer target: a single .safetensors file (header JSON, dtypes,
 * shapes, data offsets) through sg_safetensors_open. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    sg_fuzz_file(data, size, path);
    sg_safetensors *st = NULL;
    if (sg_safetensors_open(path, &st) == 0) {
        /* walk what was accepted, as the loader would */
        int n = sg_safetensors_count(st);
        for (int i = 0; i < n; i++) {
            const sg_st_tensor *t = sg_safetensors_at(st, i);
            if (sg_safetensors_find(st, t->name) == NULL) abort();
        }
        sg_safetensors_close(st);
    }
    return 0;
}
