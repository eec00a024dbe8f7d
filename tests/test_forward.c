/* The fast float32 forward pass agrees with an independent float64
 * reference, for every architecture and for sliced (shortcut) blocks, on
 * several packed sequences of different lengths. */
#include <math.h>
#include <stdlib.h>

#include "random_model.h"
#include "ref_forward.h"
#include "tap.h"

/* max |fast - ref| / max |ref| over all logits, for sequences of the
 * given lengths (0-terminated, at most 4) */
static double compare_lens(const sg_model_config *cfg, uint64_t seed, const char *what,
                           const int64_t *lens)
{
    test_model tm;
    if (test_model_random(cfg, seed, &tm))
        return INFINITY;
    int64_t offsets[5] = {0};
    int n_seq = 0;
    while (n_seq < 4 && lens[n_seq])
        n_seq++;
    for (int i = 0; i < n_seq; i++)
        offsets[i + 1] = offsets[i] + lens[i];
    int64_t T = offsets[n_seq], V = cfg->vocab_size;
    int32_t *ids = malloc(T * sizeof(int32_t));
    for (int64_t t = 0; t < T; t++)
        ids[t] = (int32_t)((t * 7919 + seed) % V);
    float *fast = malloc(T * V * sizeof(float));
    double *ref = malloc(T * V * sizeof(double)), err = 0, scale = 0;
    if (test_model_logits(&tm, ids, offsets, n_seq, fast))
        err = INFINITY;
    for (int s = 0; s < n_seq; s++) {
        ref_logits(&tm.model, tm.blocks, ids + offsets[s], lens[s], ref + offsets[s] * V);
    }
    for (int64_t i = 0; i < T * V; i++) {
        err = fmax(err, fabs(fast[i] - ref[i]));
        scale = fmax(scale, fabs(ref[i]));
    }
    free(ids);
    free(fast);
    free(ref);
    test_model_free(&tm);
    double rel = err / scale;
    tap_diag("%s: max |logit error| %.3g, relative %.3g", what, err, rel);
    return rel;
}

static double compare(const sg_model_config *cfg, uint64_t seed, const char *what)
{
    const int64_t lens[] = {17, 5, 31, 1};
    return compare_lens(cfg, seed, what, lens);
}

int main(void)
{
    const double tol = 2e-5;
    sg_model_config c = test_config_llama();
    tap_ok(compare(&c, 1, "llama, GQA, rotate_half RoPE") < tol, "llama matches float64");

    c.rope = SG_ROPE_PAIRS;
    c.qkv_bias = 1;
    c.tied_embeddings = 1;
    c.rope_scaling = SG_ROPE_SCALE_LLAMA3;
    c.rope_factor = 8;
    c.rope_low_freq_factor = 1;
    c.rope_high_freq_factor = 4;
    c.rope_original_max_positions = 16;
    c.rope_theta = 500000;
    tap_ok(compare(&c, 2, "llama3 scaling, pair-wise RoPE, q/k/v bias, tied") < tol,
           "llama3-style model matches float64");

    /* longer than one attention tile (256 query rows): tiles see only the
     * keys up to their last row, and GQA heads are stacked per tile */
    c = test_config_llama();
    c.max_positions = 600;
    const int64_t long_lens[] = {300, 260, 3, 0};
    tap_ok(compare_lens(&c, 8, "llama, sequences spanning two attention tiles", long_lens) < tol,
           "attention tiles match float64 on long sequences");

    c = test_config_opt();
    tap_ok(compare(&c, 3, "OPT: LayerNorm, learned positions, ReLU, biases") < tol,
           "OPT matches float64");

    c = test_config_phi();
    tap_ok(compare(&c, 4, "Phi-2: parallel block, partial rotary, GELU") < tol,
           "Phi-2 matches float64");

    c = test_config_llama();
    test_config_make_sliced(&c);
    tap_ok(compare(&c, 5, "sliced llama with shortcut matrices") < tol,
           "sliced llama matches float64");

    c = test_config_opt();
    test_config_make_sliced(&c);
    tap_ok(compare(&c, 6, "sliced OPT with shortcut matrices") < tol,
           "sliced OPT matches float64");

    c = test_config_phi();
    test_config_make_sliced(&c);
    tap_ok(compare(&c, 7, "sliced Phi-2 with one shortcut per block") < tol,
           "sliced Phi-2 matches float64");
    return tap_done();
}
