/* calib_draw: the calibration sequences `--calib-tokens FILE` draws (seeded
 * random windows of a stream of uint32 ids), written as rows: nsamples x
 * seqlen little-endian uint32 ids, in the order drawn. test_reference.sh
 * gives them back with --calib-layout rows and expects the same model.
 *
 *   calib_draw STREAM VOCAB NSAMPLES SEQLEN SEED OUT */
#include <stdio.h>
#include <stdlib.h>

#include "slicegpt.h"

int main(int argc, char **argv)
{
    if (argc != 7) {
        fputs("usage: calib_draw STREAM VOCAB NSAMPLES SEQLEN SEED OUT\n", stderr);
        return 2;
    }
    sg_token_batch b;
    if (sg_batch_pretokenized(argv[1], atoll(argv[2]), atoll(argv[3]), atoll(argv[4]),
                              strtoull(argv[5], NULL, 10), &b)) {
        fprintf(stderr, "calib_draw: %s\n", sg_last_error());
        return 1;
    }
    FILE *f = fopen(argv[6], "wb");
    for (int64_t i = 0; f && i < b.offsets[b.n_seq]; i++) {
        uint32_t v = (uint32_t)b.ids[i];
        unsigned char le[4] = {v, v >> 8, v >> 16, v >> 24};
        fwrite(le, 1, 4, f);
    }
    int bad = !f || fclose(f) != 0;
    if (bad)
        fprintf(stderr, "calib_draw: cannot write %s\n", argv[6]);
    sg_token_batch_free(&b);
    return bad;
}
