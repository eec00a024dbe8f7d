/* sg-llama2c-to-hf: converts a llama2.c legacy checkpoint into a Hugging
 * Face llama directory (see src/llama2c.h).
 *
 *   sg-llama2c-to-hf MODEL.bin OUTDIR [--tokenizer tok.bin]
 *
 * Exit status: 0 success, 1 failure, 2 bad usage. */
#include <stdio.h>
#include <string.h>

#include "llama2c.h"
#include "sg_error.h"

int main(int argc, char **argv)
{
    const char *pos[2] = {NULL, NULL}, *tokenizer = NULL;
    int n_pos = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc)
            tokenizer = argv[++i];
        else if (argv[i][0] == '-' || n_pos == 2)
            n_pos = 3; /* unknown option or extra argument */
        else
            pos[n_pos++] = argv[i];
    }
    if (n_pos != 2) {
        fprintf(stderr, "usage: sg-llama2c-to-hf MODEL.bin OUTDIR [--tokenizer tok.bin]\n");
        return 2;
    }
    int rc = sg_llama2c_to_hf(pos[0], pos[1], tokenizer);
    if (rc) {
        fprintf(stderr, "sg-llama2c-to-hf: %s\n",
                sg_last_error()[0] ? sg_last_error() : sg_strerror(rc));
        return 1;
    }
    return 0;
}
