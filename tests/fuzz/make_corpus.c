/* Writes the seeds no tool writes on its own: a tokenizer.json and a GGUF
 * with a tokenizer, both from the llama2.c tokenizer given, and a GGUF
 * model config taken from a sg-synth GGUF. The GGUF seed holds no tensors
 * (the synth seeds cover those), which keeps it small.
 *   make_corpus TOKENIZER.BIN VOCAB SYNTH.GGUF OUT.JSON OUT.GGUF
 * Built and run by hand against the gcc build (see the fuzz paragraph of
 * README.md); not part of make. */
#include <stdio.h>
#include <stdlib.h>

#include "gguf.h"
#include "sg_error.h"
#include "tokenizer.h"

int main(int argc, char **argv)
{
    if (argc != 6) {
        fprintf(stderr, "usage: make_corpus TOKENIZER.BIN VOCAB SYNTH.GGUF OUT.JSON OUT.GGUF\n");
        return 2;
    }
    sg_tokenizer *tok = NULL;
    sg_gguf *g = NULL;
    sg_model_config cfg;
    sg_gguf_vocab v;
    sg_gguf_vocab_store *store = NULL;
    int r = sg_tokenizer_load_llama2c(argv[1], atoll(argv[2]), &tok);
    if (r == 0) r = sg_tokenizer_save_json(tok, argv[4]);
    if (r == 0) r = sg_gguf_open(argv[3], &g);
    if (r == 0) r = sg_gguf_model_config(g, &cfg);
    if (r == 0) r = sg_tokenizer_gguf_vocab(tok, &v, &store);
    if (r == 0) r = sg_gguf_save_model(argv[5], &cfg, NULL, 0, SG_DT_F32, &v);
    if (r != 0) fprintf(stderr, "make_corpus: %s\n", sg_last_error());
    sg_tokenizer_gguf_vocab_free(store);
    sg_gguf_close(g);
    sg_tokenizer_free(tok);
    return r != 0;
}
