/* One Llama-2-70B-shaped block through every GPU operation the slicing
 * pipeline needs, timed stage by stage, then extrapolated to the model.
 *
 *   bench/bench_block_gpu [--gpu-mem 24G] [--seqs 128] [--seqlen 2048]
 *       [--dim 8192] [--ffn 28672] [--heads 64] [--kv-heads 8]
 *       [--head-dim 128] [--chunk-seqs 4] [--sparsity 0.3] [--blocks 80]
 *       [--quick] [--cpu]
 *
 * Synthetic weights (uniform, unit-variance outputs) and inputs whose
 * covariance has a few outlier directions above a decaying bulk, like a
 * transformer's residual stream. Per block, as stages/ and the slicer do:
 *   upload     the block's weights (host → GPU)
 *   attention  per chunk of sequences: upload the inputs, the backend's
 *              block_forward (attention half: the slicer's own call);
 *              download the residual stream after attention (the store)
 *   cov mid    H_mid += xᵀx of that signal, float64
 *   eigh       H_mid's eigenvectors, float64 (dsyevd) and mixed (ssyevd +
 *              float64 refinement), with how far apart their leading-d
 *              subspaces are; --quick skips the second covariance's solves
 *   rotate     every weight of the block rotated and sliced in float64,
 *              the attention shortcut, and the sliced weights downloaded
 *   mlp        per chunk: upload, the backend's block_forward_mlp,
 *              download (the next block's inputs)
 *   cov out    H_out of the block output, and its eigensolves
 * Activations stream through GPU chunks of --chunk-seqs sequences and a
 * host store, as the activation store does; every stage ends with a
 * synchronize, so times do not overlap. Peak GPU memory is the backend's
 * own accounting (everything it allocated, capped by --gpu-mem) and what
 * the device reports (cudaMemGetInfo through the backend), sampled at the
 * end of every stage. The forward runs at the full width D (a sliced
 * model's later blocks are narrower: this is the upper bound).
 *
 * Exits 77 (skip) when there is no GPU or no CUDA in the build. --cpu runs
 * the same program on the CPU backend instead: a dry run at small sizes
 * that checks the program itself where no GPU is. */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend.h"
#include "sg_error.h"
#include "synth_model.h"

typedef struct {
    int64_t seqs, seqlen, D, F, nh, nkv, hd, chunk_seqs, blocks;
    double sparsity;
    size_t gpu_mem;
    int quick, cpu;
} opts;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static size_t parse_size(const char *s)
{
    char *end;
    double v = strtod(s, &end);
    switch (*end) {
    case 'k': case 'K': v *= 1024.0; break;
    case 'm': case 'M': v *= 1024.0 * 1024; break;
    case 'g': case 'G': v *= 1024.0 * 1024 * 1024; break;
    case 't': case 'T': v *= 1024.0 * 1024 * 1024 * 1024; break;
    }
    return (size_t)v;
}

/* ---- host data, filled by all cores ---- */

typedef struct {
    float *x;
    int64_t begin, end, cols;
    const float *col_scale; /* NULL: uniform scale */
    float scale;
    uint64_t seed;
} fill_job;

static void *fill_part(void *arg)
{
    fill_job *j = arg;
    uint64_t s = j->seed * 0x9e3779b97f4a7c15ull + (uint64_t)j->begin * 0xbf58476d1ce4e5b9ull + 1;
    for (int64_t i = j->begin; i < j->end; i++) {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        float u = (float)((s >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f; /* [-1, 1) */
        j->x[i] = u * j->scale * (j->col_scale ? j->col_scale[i % j->cols] : 1.0f);
    }
    return NULL;
}

/* x (n) uniform in ±scale·col_scale[i % cols], deterministic in seed */
static void fill(float *x, int64_t n, int64_t cols, const float *col_scale, float scale,
                 uint64_t seed)
{
    enum { T = 16 };
    pthread_t th[T];
    fill_job jobs[T];
    for (int t = 0; t < T; t++) {
        jobs[t] = (fill_job){x, n * t / T, n * (t + 1) / T, cols, col_scale, scale, seed + t};
        pthread_create(&th[t], NULL, fill_part, &jobs[t]);
    }
    for (int t = 0; t < T; t++)
        pthread_join(th[t], NULL);
}

/* ---- timing and memory ---- */

enum { ST_UPLOAD, ST_ATTN, ST_COV_MID, ST_EIG64_MID, ST_EIGMX_MID, ST_ROTATE, ST_MLP, ST_COV_OUT,
       ST_EIG64_OUT, ST_EIGMX_OUT, ST_H2D, ST_D2H, N_ST };
static const char *st_names[N_ST] = {
    "upload weights", "attention half", "covariance (mid)", "eigh f64 (mid)",
    "eigh mixed (mid)", "rotate + slice + download", "MLP half", "covariance (out)",
    "eigh f64 (out)", "eigh mixed (out)", "activations host->GPU", "activations GPU->host"};
static double st_time[N_ST];
static size_t device_peak, device_base;

static sg_backend *be;

static void die(const char *what)
{
    fprintf(stderr, "bench_block_gpu: %s: %s\n", what, sg_last_error());
    exit(1);
}

#define TRY(call)                     \
    do {                              \
        if ((call))                   \
            die(#call);               \
    } while (0)

static void sample_memory(void)
{
    sg_backend_mem m;
    if (be->ops->memory(be, &m) == 0 && m.device_total) {
        size_t used = m.device_total - m.device_free;
        if (used > device_peak)
            device_peak = used;
    }
}

/* runs until the GPU is idle and adds the wall time since t0 to stage st */
static void stage_end(int st, double t0)
{
    TRY(be->ops->synchronize(be));
    st_time[st] += now() - t0;
    sample_memory();
}

static void *dev(size_t bytes)
{
    void *p;
    if (be->ops->alloc(be, bytes, &p))
        die("alloc");
    return p;
}

static void *upload(const void *host, size_t bytes)
{
    void *p = dev(bytes);
    TRY(be->ops->upload(be, p, host, bytes));
    return p;
}

/* ---- the block ---- */

/* ‖Y[:, d:]ᵀ·X[:, :d]‖_F for Y and X (D, D) in backend memory: how far
 * apart two leading-d subspaces are. A report outside the timed stages,
 * so the float64 product runs on the host (the table has no dgemm). */
static double subspace_gap(const double *y, const double *x, int64_t D, int64_t d)
{
    double *hy = malloc(D * D * sizeof(double)), *hx = malloc(D * D * sizeof(double));
    double *c = malloc((D - d) * d * sizeof(double)), e = 0;
    if (!hy || !hx || !c)
        die("out of host memory for a subspace comparison");
    TRY(be->ops->download(be, hy, y, D * D * sizeof(double)));
    TRY(be->ops->download(be, hx, x, D * D * sizeof(double)));
    /* C (D - d, d) = Y[:, d:]ᵀ (D - d, D)·X[:, :d] (D, d) */
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)(D - d), (int)d, (int)D, 1.0,
                hy + d, (int)D, hx, (int)D, 0.0, c, (int)d);
    for (int64_t i = 0; i < (D - d) * d; i++)
        e += c[i] * c[i];
    free(hy), free(hx), free(c);
    return sqrt(e);
}

/* Both eigensolves of one covariance; q64 receives the float64 basis. */
static void eigensolves(const double *h, int64_t D, int64_t d, int st64, int stmx, double *q64,
                        const char *what)
{
    size_t bytes = D * D * sizeof(double);
    double *work = dev(bytes), *qm = dev(bytes);
    double *w64 = malloc(D * sizeof(double)), *wm = malloc(D * sizeof(double));

    TRY(be->ops->copy(be, work, h, bytes));
    TRY(be->ops->synchronize(be));
    double t0 = now();
    TRY(be->ops->eigh(be, work, D, 0.01, SG_EIGH_F64, q64, w64));
    stage_end(st64, t0);
    printf("  %s: eigh f64   %7.2f s\n", what, st_time[st64]);
    fflush(stdout);

    TRY(be->ops->copy(be, work, h, bytes));
    TRY(be->ops->synchronize(be));
    t0 = now();
    TRY(be->ops->eigh(be, work, D, 0.01, SG_EIGH_MIXED, qm, wm));
    stage_end(stmx, t0);
    sg_eigh_stats st;
    sg_eigh_last_stats(&st);
    double dw = 0;
    for (int64_t i = 0; i < D; i++)
        dw = fmax(dw, fabs(wm[i] - w64[i]) / w64[0]);
    printf("  %s: eigh mixed %7.2f s (%d sweeps, %lld runs re-solved, largest %lld, depth %d%s);\n"
           "      vs f64: eigenvalues %.1e·λmax, leading-%lld subspace %.1e; λmax/λmin %.2e\n",
           what, st_time[stmx], st.iterations, (long long)st.clusters, (long long)st.largest,
           st.depth, st.fallback ? ", FELL BACK to dsyevd" : "", dw, (long long)d,
           subspace_gap(q64, qm, D, d), w64[0] / w64[D - 1]);
    fflush(stdout);
    free(w64), free(wm);
    be->ops->release(be, work);
    be->ops->release(be, qm);
}

int main(int argc, char **argv)
{
    opts o = {128, 2048, 8192, 28672, 64, 8, 128, 4, 80, 0.3, (size_t)24 << 30, 0, 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--quick") || !strcmp(a, "--cpu")) {
            *(a[2] == 'q' ? &o.quick : &o.cpu) = 1;
            continue;
        }
        if (!v) {
            fprintf(stderr, "bench_block_gpu: %s needs a value\n", a);
            return 2;
        }
        i++;
        if (!strcmp(a, "--gpu-mem")) o.gpu_mem = parse_size(v);
        else if (!strcmp(a, "--seqs")) o.seqs = atoll(v);
        else if (!strcmp(a, "--seqlen")) o.seqlen = atoll(v);
        else if (!strcmp(a, "--dim")) o.D = atoll(v);
        else if (!strcmp(a, "--ffn")) o.F = atoll(v);
        else if (!strcmp(a, "--heads")) o.nh = atoll(v);
        else if (!strcmp(a, "--kv-heads")) o.nkv = atoll(v);
        else if (!strcmp(a, "--head-dim")) o.hd = atoll(v);
        else if (!strcmp(a, "--chunk-seqs")) o.chunk_seqs = atoll(v);
        else if (!strcmp(a, "--sparsity")) o.sparsity = atof(v);
        else if (!strcmp(a, "--blocks")) o.blocks = atoll(v);
        else {
            fprintf(stderr, "bench_block_gpu: unknown option %s\n", a);
            return 2;
        }
    }
    be = o.cpu ? sg_backend_cpu() : sg_backend_cuda_init(0, o.gpu_mem);
    if (!be) {
        printf("bench_block_gpu: SKIP: no GPU backend: %s\n", sg_last_error());
        return 77;
    }
    const int64_t D = o.D, F = o.F, qd = o.nh * o.hd, kvd = o.nkv * o.hd;
    const int64_t T = o.seqs * o.seqlen, cs = o.chunk_seqs * o.seqlen;
    const int64_t d = (int64_t)floor((1 - o.sparsity) * D / 8) * 8;
    if (o.seqs % o.chunk_seqs || o.nh % o.nkv) {
        fprintf(stderr, "bench_block_gpu: --seqs must be a multiple of --chunk-seqs, heads of kv-heads\n");
        return 2;
    }
    sample_memory();
    device_base = device_peak;
    printf("block: D %lld, FFN %lld, %lld heads / %lld kv heads of %lld; calibration %lld x %lld "
           "tokens in chunks of %lld; sliced width %lld; GPU cap %.1f GiB\n",
           (long long)D, (long long)F, (long long)o.nh, (long long)o.nkv, (long long)o.hd,
           (long long)o.seqs, (long long)o.seqlen, (long long)cs, (long long)d,
           o.gpu_mem / 1073741824.0);
    fflush(stdout);

    /* host: weights, and the activation store (the block's input is
     * generated chunk by chunk; the store then holds mid, then out) */
    double tg = now();
    int64_t sizes[7] = {qd * D, kvd * D, kvd * D, D * qd, F * D, F * D, D * F};
    int64_t fan_in[7] = {D, D, D, qd, D, D, F};
    float *hw[7];
    for (int i = 0; i < 7; i++) {
        hw[i] = malloc(sizes[i] * sizeof(float));
        if (!hw[i]) {
            fprintf(stderr, "bench_block_gpu: out of host memory for weights\n");
            return 1;
        }
        fill(hw[i], sizes[i], 1, NULL, sqrtf(3.0f / fan_in[i]), 100 + i);
    }
    float *ones = malloc(D * sizeof(float)), *col_scale = malloc(D * sizeof(float));
    for (int64_t i = 0; i < D; i++) {
        ones[i] = 1.0f;
        /* a decaying bulk and six outlier dimensions, as in LLM residuals */
        col_scale[i] = (float)(2.0 / pow(1.0 + (double)((i * 2654435761u) % D) / 64.0, 0.5));
    }
    for (int k = 0; k < 6; k++)
        col_scale[(k * 1543 + 77) % D] = 60.0f;
    float *store = malloc((size_t)T * D * sizeof(float)), *xin = malloc(cs * D * sizeof(float));
    if (!store || !xin) {
        fprintf(stderr, "bench_block_gpu: out of host memory for the activation store\n");
        return 1;
    }
    /* the block as the slicer sees it: a one-layer Llama config (RMSNorm,
     * rotate_half RoPE, SwiGLU), the weights in backend memory */
    sg_model_config cfg;
    if (sg_synth_config(SG_ARCH_LLAMA, D, 1, o.nh, o.nkv, o.hd, F, 32000, &cfg)) {
        fprintf(stderr, "bench_block_gpu: %s\n", sg_last_error());
        return 2;
    }
    int64_t *offsets = malloc((o.chunk_seqs + 1) * sizeof(int64_t));
    for (int64_t s = 0; s <= o.chunk_seqs; s++)
        offsets[s] = s * o.seqlen;
    sg_seqs chunk = {o.chunk_seqs, offsets, NULL};
    printf("host data generated in %.1f s\n", now() - tg);
    fflush(stdout);

    /* upload the block */
    double t0 = now();
    sg_block w = {.d_in = D, .d_mid = D, .d_out = D};
    w.wq = upload(hw[0], sizes[0] * 4);
    w.wk = upload(hw[1], sizes[1] * 4);
    w.wv = upload(hw[2], sizes[2] * 4);
    w.wo = upload(hw[3], sizes[3] * 4);
    w.w_gate = upload(hw[4], sizes[4] * 4);
    w.w_up = upload(hw[5], sizes[5] * 4);
    w.w_down = upload(hw[6], sizes[6] * 4);
    w.attn_norm_w = upload(ones, D * 4);
    w.ffn_norm_w = upload(ones, D * 4);
    stage_end(ST_UPLOAD, t0);

    /* chunk buffers: the block's input, the residual after attention, its
     * output (the forward's own scratch is allocated per call) */
    float *x = dev(cs * D * 4), *mid = dev(cs * D * 4), *out = dev(cs * D * 4);
    double *hmid = dev(D * D * 8), *hout = dev(D * D * 8), *qmid = dev(D * D * 8);
    double *zeros = calloc(D * D, sizeof(double));
    TRY(be->ops->upload(be, hmid, zeros, D * D * 8));
    TRY(be->ops->upload(be, hout, zeros, D * D * 8));
    free(zeros);

    /* attention half */
    for (int64_t c0 = 0; c0 < T; c0 += cs) {
        fill(xin, cs * D, D, col_scale, 1.0f, 1000 + c0);
        t0 = now();
        TRY(be->ops->upload(be, x, xin, cs * D * 4));
        stage_end(ST_H2D, t0);
        t0 = now();
        TRY(be->ops->block_forward(be, &cfg, &w, x, NULL, mid, &chunk));
        stage_end(ST_ATTN, t0);
        t0 = now();
        TRY(be->ops->cov_accumulate(be, hmid, D, mid, cs, 0));
        stage_end(ST_COV_MID, t0);
        t0 = now();
        TRY(be->ops->download(be, store + c0 * D, mid, cs * D * 4));
        stage_end(ST_D2H, t0);
    }
    printf("attention half %.2f s, covariance %.2f s\n", st_time[ST_ATTN], st_time[ST_COV_MID]);
    fflush(stdout);

    eigensolves(hmid, D, d, ST_EIG64_MID, ST_EIGMX_MID, qmid, "H_mid");

    /* rotate and slice every weight once (Q_mid stands in for Q_prev and
     * Q_out: the work is the same), the shortcut, download the results */
    t0 = now();
    {
        struct {
            const float *w;
            int64_t rows, cols;
            int reader;
        } rot[7] = {{w.wq, qd, D, 1},     {w.wk, kvd, D, 1},   {w.wv, kvd, D, 1},
                    {w.wo, D, qd, 0},     {w.w_gate, F, D, 1}, {w.w_up, F, D, 1},
                    {w.w_down, D, F, 0}};
        float *host_out = malloc(F * d * 4);
        for (int i = 0; i < 7; i++) {
            int64_t n_out = rot[i].reader ? rot[i].rows * d : d * rot[i].cols;
            float *outp = dev(n_out * 4);
            if (rot[i].reader)
                TRY(be->ops->rotate_reader(be, rot[i].w, rot[i].rows, D, qmid, d, outp));
            else
                TRY(be->ops->rotate_writer(be, rot[i].w, D, rot[i].cols, qmid, d, outp));
            TRY(be->ops->download(be, host_out, outp, n_out * 4));
            be->ops->release(be, outp);
        }
        /* the shortcut as slice_steps.c extends it: S (d, D), built on the
         * host from Q_prev, times Q_out[:, :d] by a reader rotation (S's
         * values do not change the time) */
        float *sc = dev(d * D * 4), *sco = dev(d * d * 4), *hsc = malloc(d * d * 4);
        TRY(be->ops->zero(be, sc, d * D * 4));
        TRY(be->ops->rotate_reader(be, sc, d, D, qmid, d, sco));
        TRY(be->ops->download(be, hsc, sco, d * d * 4));
        free(hsc);
        be->ops->release(be, sc);
        be->ops->release(be, sco);
        free(host_out);
    }
    stage_end(ST_ROTATE, t0);
    printf("rotate + slice %.2f s\n", st_time[ST_ROTATE]);
    fflush(stdout);

    /* MLP half */
    for (int64_t c0 = 0; c0 < T; c0 += cs) {
        t0 = now();
        TRY(be->ops->upload(be, mid, store + c0 * D, cs * D * 4));
        stage_end(ST_H2D, t0);
        t0 = now();
        TRY(be->ops->block_forward_mlp(be, &cfg, &w, mid, out, cs));
        stage_end(ST_MLP, t0);
        t0 = now();
        TRY(be->ops->cov_accumulate(be, hout, D, out, cs, 0));
        stage_end(ST_COV_OUT, t0);
        t0 = now();
        TRY(be->ops->download(be, store + c0 * D, out, cs * D * 4));
        stage_end(ST_D2H, t0);
    }
    printf("MLP half %.2f s, covariance %.2f s\n", st_time[ST_MLP], st_time[ST_COV_OUT]);
    fflush(stdout);
    if (!o.quick) {
        double *qout = dev(D * D * 8);
        eigensolves(hout, D, d, ST_EIG64_OUT, ST_EIGMX_OUT, qout, "H_out");
        be->ops->release(be, qout);
    } else {
        st_time[ST_EIG64_OUT] = st_time[ST_EIG64_MID];
        st_time[ST_EIGMX_OUT] = st_time[ST_EIGMX_MID];
    }

    /* report */
    sg_backend_mem m;
    be->ops->memory(be, &m);
    double flops_attn = 2.0 * T * D * (2.0 * qd + 2.0 * kvd) + 4.0 * o.seqs * o.nh * o.hd *
                        (double)o.seqlen * (o.seqlen + 1) / 2;
    double flops_mlp = 6.0 * T * D * F, flops_cov = (double)T * D * (D + 1);
    printf("\nper-stage times (one block):\n");
    for (int i = 0; i < N_ST; i++) {
        printf("  %-28s %8.2f s", st_names[i], st_time[i]);
        if (i == ST_ATTN)
            printf("   %6.1f TFLOP/s", flops_attn / st_time[i] / 1e12);
        if (i == ST_MLP)
            printf("   %6.1f TFLOP/s", flops_mlp / st_time[i] / 1e12);
        if (i == ST_COV_MID || i == ST_COV_OUT)
            printf("   %6.1f TFLOP/s float64", flops_cov / st_time[i] / 1e12);
        if (o.quick && (i == ST_EIG64_OUT || i == ST_EIGMX_OUT))
            printf("   (--quick: the mid solve's time)");
        printf("\n");
    }
    double common = 0;
    for (int i = 0; i < N_ST; i++)
        if (i != ST_EIG64_MID && i != ST_EIGMX_MID && i != ST_EIG64_OUT && i != ST_EIGMX_OUT)
            common += st_time[i];
    double blk64 = common + st_time[ST_EIG64_MID] + st_time[ST_EIG64_OUT];
    double blkmx = common + st_time[ST_EIGMX_MID] + st_time[ST_EIGMX_OUT];
    printf("\npeak GPU memory: %.2f GiB allocated through the backend (cap %.1f GiB), "
           "%.2f GiB used on the device (%.2f GiB before start)\n",
           m.peak / 1073741824.0, o.gpu_mem / 1073741824.0, device_peak / 1073741824.0,
           device_base / 1073741824.0);
    printf("one block: %.1f s with float64 eigensolves, %.1f s with mixed\n", blk64, blkmx);
    printf("extrapolated %lld blocks: %.1f min (f64), %.1f min (mixed); stages run back to back, "
           "no overlap\n",
           (long long)o.blocks, blk64 * o.blocks / 60, blkmx * o.blocks / 60);

    be->ops->free(be);
    for (int i = 0; i < 7; i++)
        free(hw[i]);
    free(store), free(xin), free(ones), free(col_scale), free(offsets);
    return 0;
}
