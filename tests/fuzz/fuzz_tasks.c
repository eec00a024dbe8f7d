/* libFuzzer target: a task request file (JSONL, plain or gzipped, either
 * line format) through sg_task_load, then the per-character length
 * acc_norm divides by. */
#include <stddef.h>
#include <stdint.h>

#include "fuzz_common.h"
#include "task_set.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    sg_fuzz_file(data, size, path);
    sg_task t;
    if (sg_task_load(path, "/nonexistent", 0, &t) == 0) {
        for (int64_t i = 0; i < t.n_req; i++)
            (void)sg_utf8_chars(t.req[i].continuation);
        sg_task_free(&t);
    }
    return 0;
}
