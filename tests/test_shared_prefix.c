/* Shared prefixes (sg_seqs.parent): a prefix run once and several
 * sequences that continue it give, row for row, what each full sequence
 * (prefix + its own tokens) gives run on its own. Every architecture, with
 * sequences longer than an attention tile (256 rows), so the prefix's keys
 * meet tiles that start past row 0. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compare.h"
#include "forward.h"
#include "random_model.h"
#include "sg_error.h"
#include "tap.h"

enum { PREFIX = 300, N_CHILD = 3 };
static const int64_t child_len[N_CHILD] = {400, 5, 270};

/* x (tokens, dim) of the batch after every block of tm */
static int run_blocks(const test_model *tm, const int32_t *ids, const sg_seqs *seqs, float **x)
{
    const sg_model_config *c = &tm->model.cfg;
    int64_t T = sg_seqs_tokens(seqs);
    float *a = malloc(T * c->dim * sizeof(float)), *b = malloc(T * c->dim * sizeof(float));
    int err = !a || !b ? sg_fail(-1, "out of memory") : sg_embed(&tm->model, ids, seqs, a);
    for (int64_t l = 0; l < c->n_layers && !err; l++) {
        err = sg_block_forward(c, &tm->blocks[l], a, b, NULL, seqs);
        float *t = a;
        a = b, b = t;
    }
    free(b);
    *x = a;
    return err;
}

static void check(sg_model_config c, uint64_t seed, const char *what)
{
    c.max_positions = PREFIX + 400;
    test_model tm;
    if (test_model_random(&c, seed, &tm)) {
        tap_ok(0, "%s: random model (%s)", what, sg_last_error());
        return;
    }
    /* shared: [prefix][child 0][child 1][child 2]; full: prefix + child i */
    int64_t shared_off[N_CHILD + 2] = {0, PREFIX}, full_off[N_CHILD + 1] = {0};
    int64_t parent[N_CHILD + 1] = {-1};
    for (int i = 0; i < N_CHILD; i++) {
        shared_off[i + 2] = shared_off[i + 1] + child_len[i];
        full_off[i + 1] = full_off[i] + PREFIX + child_len[i];
        parent[i + 1] = 0;
    }
    int32_t *shared_ids = malloc(shared_off[N_CHILD + 1] * sizeof(int32_t));
    int32_t *full_ids = malloc(full_off[N_CHILD] * sizeof(int32_t));
    for (int64_t t = 0; t < shared_off[N_CHILD + 1]; t++)
        shared_ids[t] = (int32_t)((t * 7919 + seed) % c.vocab_size);
    for (int i = 0; i < N_CHILD; i++) {
        memcpy(full_ids + full_off[i], shared_ids, PREFIX * sizeof(int32_t));
        memcpy(full_ids + full_off[i] + PREFIX, shared_ids + shared_off[i + 1],
               child_len[i] * sizeof(int32_t));
    }
    sg_seqs shared = {N_CHILD + 1, shared_off, parent}, full = {N_CHILD, full_off, NULL};
    float *xs = NULL, *xf = NULL;
    int err = run_blocks(&tm, shared_ids, &shared, &xs);
    err = err ? err : run_blocks(&tm, full_ids, &full, &xf);
    int64_t w = tm.blocks[c.n_layers - 1].d_out; /* a sliced model's last width */
    double worst = err ? INFINITY : test_rel_diff(xs, xf, PREFIX * w);
    for (int i = 0; i < N_CHILD && !err; i++)
        worst = fmax(worst, test_rel_diff(xs + shared_off[i + 1] * w,
                                          xf + (full_off[i] + PREFIX) * w, child_len[i] * w));
    tap_ok(!err && worst < 1e-5,
           "%s: a %d-token prefix run once and %d sequences continuing it match the full "
           "sequences (%.2g)", what, PREFIX, N_CHILD, worst);
    if (err)
        tap_diag("%s", sg_last_error());
    free(shared_ids), free(full_ids), free(xs), free(xf);
    test_model_free(&tm);
}

int main(void)
{
    check(test_config_llama(), 1, "llama, GQA, rotate_half RoPE");
    check(test_config_opt(), 2, "OPT: learned positions");
    check(test_config_phi(), 3, "Phi-2: parallel block, partial rotary");
    sg_model_config c = test_config_llama();
    test_config_make_sliced(&c);
    check(c, 4, "sliced llama, shortcut matrices");
    return tap_done();
}
