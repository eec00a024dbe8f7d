/* libFuzzer target: a Hugging Face config.json through sg_hf_config_load. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"
#include "hf_config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    sg_fuzz_file(data, size, path);
    sg_model_config cfg;
    (void)sg_hf_config_load(path, &cfg);
    return 0;
}
