/* The block forward pass composed of backend ops (forward_ops.c) against
 * forward.c, block by block, for every architecture and for sliced
 * blocks: on the CPU backend always (same ops, so the composition itself
 * is what is checked), and through the CUDA backend's block_forward when
 * a GPU is present (then also its weights upload and project_rows).
 * Packed sequences span two of the composition's 4096-token groups. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "compare.h"
#include "forward_ops.h"
#include "random_model.h"
#include "cpu_kernels.h"
#include "sg_error.h"
#include "tap.h"

static sg_backend *gpu;

static void *put(sg_backend *be, const void *host, size_t bytes)
{
    void *p = NULL;
    if (be->ops->alloc(be, bytes, &p) || (host && be->ops->upload(be, p, host, bytes)))
        return NULL;
    return p;
}

/* Block l of tm on backend be with the composition (or be's own
 * block_forward when use_op): the block output, the residual after
 * attention (sequential blocks), and the MLP half alone from that
 * residual; each compared with forward.c. Returns the worst relative
 * difference. */
static double block_on(sg_backend *be, int use_op, const sg_model_config *c,
                       const sg_block *host, const float *x, const sg_seqs *seqs)
{
    int64_t T = sg_seqs_tokens(seqs);
    size_t in_b = T * host->d_in * sizeof(float), mid_b = T * host->d_mid * sizeof(float);
    size_t out_b = T * host->d_out * sizeof(float);
    float *want_out = malloc(out_b), *want_mid = malloc(mid_b), *want_mlp = malloc(out_b);
    float *got_out = malloc(out_b), *got_mid = malloc(mid_b), *got_mlp = malloc(out_b);
    double worst = INFINITY;
    if (sg_block_forward(c, host, x, want_out, want_mid, seqs) ||
        (!c->parallel_block && sg_block_forward_mlp(c, host, want_mid, want_mlp, T)))
        goto done;
    sg_block dev;
    if (sg_block_to_backend(be, c, host, &dev))
        goto done;
    float *dx = put(be, x, in_b), *dmid = put(be, NULL, mid_b), *dout = put(be, NULL, out_b);
    int err = !dx || !dmid || !dout;
    if (!err && use_op)
        err = be->ops->block_forward(be, c, &dev, dx, dout, dmid, seqs);
    else if (!err)
        err = sg_block_forward_ops(be, c, &dev, dx, dout, dmid, seqs);
    err = err ? err : be->ops->download(be, got_out, dout, out_b);
    err = err ? err : be->ops->download(be, got_mid, dmid, mid_b);
    worst = test_rel_diff(got_out, want_out, T * host->d_out);
    if (!c->parallel_block) {
        worst = fmax(worst, test_rel_diff(got_mid, want_mid, T * host->d_mid));
        err = err ? err : be->ops->upload(be, dmid, want_mid, mid_b);
        if (!err && use_op)
            err = be->ops->block_forward_mlp(be, c, &dev, dmid, dout, T);
        else if (!err)
            err = sg_block_forward_mlp_ops(be, c, &dev, dmid, dout, T);
        err = err ? err : be->ops->download(be, got_mlp, dout, out_b);
        worst = fmax(worst, test_rel_diff(got_mlp, want_mlp, T * host->d_out));
    }
    if (err) {
        tap_diag("%s", sg_last_error());
        worst = INFINITY;
    }
    be->ops->release(be, dx);
    be->ops->release(be, dmid);
    be->ops->release(be, dout);
    sg_block_backend_release(be, &dev);
done:
    free(want_out), free(want_mid), free(want_mlp);
    free(got_out), free(got_mid), free(got_mlp);
    return worst;
}

/* Every block of a random model of config c, fed its own embedded
 * inputs, on the CPU composition and (when present) the GPU. */
static void check(const sg_model_config *c, uint64_t seed, const char *what)
{
    test_model tm;
    if (test_model_random(c, seed, &tm)) {
        tap_ok(0, "%s: random model (%s)", what, sg_last_error());
        return;
    }
    /* 83 sequences of up to 60 tokens: 4,5xx tokens, two groups */
    enum { N_SEQ = 83 };
    int64_t offsets[N_SEQ + 1] = {0};
    for (int s = 0; s < N_SEQ; s++)
        offsets[s + 1] = offsets[s] + 1 + (s * 37 + 11) % 60;
    sg_seqs seqs = {N_SEQ, offsets, NULL};
    int64_t T = offsets[N_SEQ], width = c->dim;
    int32_t *ids = malloc(T * sizeof(int32_t));
    for (int64_t t = 0; t < T; t++)
        ids[t] = (int32_t)((t * 7919 + seed) % c->vocab_size);
    float *x = malloc(T * width * sizeof(float)), *y = malloc(T * width * sizeof(float));
    double cpu_worst = 0, gpu_worst = 0;
    int err = sg_embed(&tm.model, ids, &seqs, x);
    for (int64_t l = 0; l < c->n_layers && !err; l++) {
        const sg_block *b = &tm.blocks[l];
        cpu_worst = fmax(cpu_worst, block_on(sg_backend_cpu(), 0, c, b, x, &seqs));
        if (gpu)
            gpu_worst = fmax(gpu_worst, block_on(gpu, 1, c, b, x, &seqs));
        err = sg_block_forward(c, b, x, y, NULL, &seqs);
        float *t = x;
        x = y, y = t;
    }
    tap_ok(!err && cpu_worst < 1e-5, "%s: composed ops on the CPU match forward.c (%.2g)", what,
           cpu_worst);
    if (gpu)
        tap_ok(!err && gpu_worst < 1e-4, "%s: CUDA block_forward matches forward.c (%.2g)", what,
               gpu_worst);
    else {
        char name[256];
        snprintf(name, sizeof name, "%s: CUDA block_forward", what);
        tap_skip(name, "no GPU");
    }
    free(ids), free(x), free(y);
    test_model_free(&tm);
}

/* project_rows on the GPU against the CPU's sg_project_rows */
static void check_project(void)
{
    const int64_t rows = 300, D = 64, d = 40;
    float *x = malloc(rows * D * sizeof(float)), *want = malloc(rows * d * sizeof(float));
    float *got = malloc(rows * d * sizeof(float));
    double *q = malloc(D * D * sizeof(double));
    uint64_t st = 7;
    for (int64_t i = 0; i < rows * D; i++)
        x[i] = (float)test_gauss(&st);
    for (int64_t i = 0; i < D * D; i++)
        q[i] = test_gauss(&st) / 8;
    sg_project_rows(x, rows, D, q, d, want);
    float *dx = put(gpu, x, rows * D * sizeof(float)), *dout = put(gpu, NULL, rows * d * 4);
    double *dq = put(gpu, q, D * D * sizeof(double));
    int err = !dx || !dout || !dq;
    err = err ? err : gpu->ops->project_rows(gpu, dx, rows, D, dq, d, dout);
    err = err ? err : gpu->ops->download(gpu, got, dout, rows * d * sizeof(float));
    double r = err ? INFINITY : test_rel_diff(got, want, rows * d);
    tap_ok(r < 1e-5, "cuda: project_rows matches the CPU (%.2g)", r);
    gpu->ops->release(gpu, dx), gpu->ops->release(gpu, dout), gpu->ops->release(gpu, dq);
    free(x), free(want), free(got), free(q);
}

int main(void)
{
    gpu = sg_backend_cuda_init(0, 0);
    if (!gpu)
        tap_diag("no CUDA backend: %s", sg_last_error());

    sg_model_config c = test_config_llama();
    check(&c, 1, "llama, GQA, rotate_half RoPE");
    c.rope = SG_ROPE_PAIRS;
    c.qkv_bias = 1;
    check(&c, 2, "pair-wise RoPE, q/k/v bias");
    c = test_config_opt();
    check(&c, 3, "OPT: LayerNorm, learned positions, ReLU, biases");
    c = test_config_phi();
    check(&c, 4, "Phi-2: parallel block, partial rotary, GELU");
    c = test_config_llama();
    test_config_make_sliced(&c);
    check(&c, 5, "sliced llama, shortcut matrices");
    c = test_config_phi();
    test_config_make_sliced(&c);
    check(&c, 6, "sliced Phi-2");

    if (gpu) {
        check_project();
        gpu->ops->free(gpu);
    } else {
        tap_skip("cuda: project_rows", "no GPU");
    }
    return tap_done();
}
