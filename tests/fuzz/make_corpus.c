/* Writes the seeds no tool writes on its own: a tokenizer.json and a GGUF
 * with a tokenizer, both from the llama2.c tokenizer given, and a GGUF
 * model config taken from a sg-synth GGUF. The GGUF seed holds no tensors
 * (the synth seeds cover those), which keeps it small.
 *   make_corpus TOKENIZER.BIN VOCAB SYNTH.GGUF OUT.JSON OUT.GGUF
 * Built by hand against libslicegpt.a; not part of make.
 *
 * How tests/fuzz/corpus was made (S=tools/sg-synth, common flags --dim 16
 * --heads 2 --ffn 32 --layers 1; tok512.bin is stories260K's):
 *   safetensors/  $S --arch opt --vocab 32 --ctx 16 --dtype f16 --format hf,
 *                 --arch phi --vocab 32 --dtype bf16, --arch llama --layers 2
 *                 --kv-heads 1 --vocab 32 --ctx 16: their model.safetensors
 *   gguf/         $S --arch llama --kv-heads 1 --vocab 32 --format gguf (f32)
 *                 and --dtype q8_0; tok512-no-tensors.gguf from this program
 *                 with a --vocab 512 q8_0 synth GGUF
 *   hf_config/    tinyopt-250K's config.json and the three synth ones
 *   tokenizer/    a selector byte and a u16 vocabulary size (see
 *                 fuzz_tokenizer.c) before tok512.json (this program),
 *                 tok512.bin (vocab 512) and a hand-written byte-level BPE
 *   stream/       `slicegpt-stream load --zstd 19` of the vocab-512 synth
 *                 model with tok512.bin | fold | capture (2 x 16 tokens) |
 *                 cov | eig | slice, the stream after capture and after cov
 *                 cut at 52000 and 58000 bytes, the one after eig whole, and
 *                 `load --zstd 3` of the vocab-32 llama GGUF
 *   tasks/        own.jsonl written by hand (our line format), and the first
 *                 8 lines of arc_easy's oe-eval requests.jsonl.gz
 *                 (tools/fetch-tasks.sh), gzip -9 */
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
