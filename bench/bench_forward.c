/* Forward-pass speed against the machine's own sgemm rate, side by side.
 *
 *   bench/bench_forward [MODEL] [TOKENS] [SEQLEN]
 *
 * Measures OpenBLAS sgemm on square matrices the size of the model's big
 * GEMMs, then runs the block-at-a-time forward pass over TOKENS random
 * tokens (default 4096, windows of SEQLEN = 512) and prints tokens/s, the
 * GFLOP/s that implies (2 per multiply-add of every linear layer, the head
 * and attention) and its ratio to the measured sgemm rate. MODEL defaults
 * to the default model in the cache. Not a test: numbers only. */
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>

#include "blas_check.h"
#include "evaluate.h"
#include "model_files.h"
#include "sg_error.h"

static double sgemm_gflops(int n, int reps)
{
    float *a = malloc((size_t)n * n * 4), *b = malloc((size_t)n * n * 4), *c = malloc((size_t)n * n * 4);
    for (size_t i = 0; i < (size_t)n * n; i++)
        a[i] = b[i] = (float)(i % 7) * 0.1f;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    double t = sg_now();
    for (int r = 0; r < reps; r++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, n, n, 1, a, n, b, n, 0, c, n);
    t = sg_now() - t;
    free(a);
    free(b);
    free(c);
    return 2.0 * n * n * (double)n * reps / t / 1e9;
}

/* Multiply-adds per token of a model at a given context length. */
static double macs_per_token(const sg_model_config *c, int64_t seqlen)
{
    double qd = c->n_heads * c->head_dim, kvd = c->n_kv_heads * c->head_dim;
    double per_block = c->dim * (qd + 2 * kvd) + qd * c->dim +
                       (c->gated_mlp ? 3.0 : 2.0) * c->dim * c->ffn_dim +
                       /* scores and weighted sum over half the window on average */
                       2.0 * qd * seqlen / 2;
    return c->n_layers * per_block + (double)c->vocab_size * c->dim;
}

int main(int argc, char **argv)
{
    /* measure the kernels the program runs, not a fallback it would replace */
    sg_blas_ensure_fast(argv);
    char blas[512];
    sg_blas_describe(blas, sizeof blas);
    printf("%s\n", blas);
    char def[4096];
    const char *home = getenv("HOME");
    snprintf(def, sizeof def, "%s/.cache/slicegpt-stream/SmolLM2-135M-Instruct.Q4_1.gguf",
             home ? home : ".");
    const char *path = argc > 1 ? argv[1] : def;
    int64_t tokens = argc > 2 ? atoll(argv[2]) : 4096, seqlen = argc > 3 ? atoll(argv[3]) : 512;
    sg_model_files *f;
    if (sg_model_files_open(path, &f)) {
        fprintf(stderr, "bench_forward: %s\n", sg_last_error());
        return 1;
    }
    const sg_model_config *c = sg_model_files_config(f);
    int n = c->dim < 1024 ? 1024 : (int)c->dim;
    double peak = sgemm_gflops(n, 40);
    sg_token_batch b = {malloc(tokens * sizeof(int32_t)), malloc((tokens / seqlen + 1) * 8),
                        tokens / seqlen};
    for (int64_t s = 0; s <= b.n_seq; s++)
        b.offsets[s] = s * seqlen;
    for (int64_t i = 0; i < tokens; i++)
        b.ids[i] = (int32_t)((i * 2654435761u) % (uint64_t)c->vocab_size);
    sg_eval_result r;
    if (sg_evaluate(f, &b, &r)) {
        fprintf(stderr, "bench_forward: %s\n", sg_last_error());
        return 1;
    }
    double gflops = macs_per_token(c, seqlen) * 2 * r.tokens / r.seconds / 1e9;
    printf("model %s: D %lld, %lld layers\n", path, (long long)c->dim, (long long)c->n_layers);
    printf("sgemm %dx%dx%d: %.1f GFLOP/s\n", n, n, n, peak);
    printf("forward: %lld tokens in %.2f s = %.0f tokens/s = %.1f GFLOP/s = %.2f of sgemm\n",
           (long long)r.tokens, r.seconds, r.tokens / r.seconds, gflops, gflops / peak);
    sg_token_batch_free(&b);
    sg_model_files_close(f);
    return 0;
}
