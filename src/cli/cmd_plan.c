/* slicegpt-stream plan: what a slicing run will hold, from the config alone.
 *
 * Reads config.json (or a GGUF header) and prints, per stage, the bytes the
 * run keeps on the host and on the GPU, and whether it fits the budgets.
 * No weights are read, so it answers for models that are not on disk. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "cli_options.h"
#include "json_report.h"
#include "slicegpt.h"

static const char usage[] =
    "usage: slicegpt-stream plan --model PATH [options]\n"
    "  --model PATH        config.json, a directory holding one, or a .gguf file\n"
    "  --nsamples N        calibration samples (default 128)\n"
    "  --seqlen N          tokens per sample (default 2048)\n"
    "  --sparsity S, --target-size F, --round-interval N, --slice-head, --embeddings M\n"
    "                      the widths, as `run` takes them\n"
    "  --chunk-tokens N    tokens per activation chunk (default 8192)\n"
    "  --host-mem SIZE     host budget (default: half of RAM)\n"
    "  --gpu-mem SIZE      GPU budget (default 24G)\n"
    "  --weight-bytes N    bytes per stored weight (default: from torch_dtype, else 2)\n"
    "  --report FILE.json  also write every figure printed, as JSON (slicegpt-stream(1))\n"
    "\nexamples:\n"
    "  slicegpt-stream plan --model examples/llama-2-70b --host-mem 32G --gpu-mem 24G\n"
    "  slicegpt-stream plan --model ~/.cache/slicegpt-stream/SmolLM2-135M-Instruct.Q4_1.gguf \\\n"
    "    --nsamples 32 --seqlen 512 --report plan.json\n";

static double gib(int64_t b) { return b / 1073741824.0; }

/* One row of a table: printed in GiB, recorded in bytes under key. */
static void row(cJSON *o, const char *key, const char *label, int64_t bytes)
{
    printf("  %-58s %8.2f\n", label, gib(bytes));
    sg_json_int(o, key, bytes);
}

/* Bytes per weight as stored: config.json's torch_dtype, if any. */
static double stored_weight_bytes(const char *config_path)
{
    FILE *f = fopen(config_path, "r");
    char buf[1 << 16];
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    if (strstr(buf, "\"float32\""))
        return 4;
    return 2; /* float16 / bfloat16, the usual release dtype */
}

typedef struct {
    const char *model, *report;
    int64_t nsamples, seqlen, chunk, host, gpu;
    double wbytes;
} plan_args;

static int plan_option(void *ctx, int c, const char *arg)
{
    plan_args *a = ctx;
    switch (c) {
    case 'm': a->model = arg; return 0;
    case 'R': a->report = arg; return 0;
    case 'n': return sg_cli_int("--nsamples", arg, 1, 1 << 24, &a->nsamples);
    case 'L': return sg_cli_int("--seqlen", arg, 2, 1 << 20, &a->seqlen);
    case 'T': return sg_cli_int("--chunk-tokens", arg, 1, INT64_MAX, &a->chunk);
    case 'H': return sg_cli_size("--host-mem", arg, &a->host);
    case 'G': return sg_cli_size("--gpu-mem", arg, &a->gpu);
    case 'w': return sg_cli_double("--weight-bytes", arg, 0.5, 8, &a->wbytes);
    }
    return -1;
}

int sg_cmd_plan(int argc, char **argv)
{
    static const struct option own[] = {
        {"model", required_argument, 0, 'm'},    {"nsamples", required_argument, 0, 'n'},
        {"seqlen", required_argument, 0, 'L'},   {"chunk-tokens", required_argument, 0, 'T'},
        {"host-mem", required_argument, 0, 'H'}, {"gpu-mem", required_argument, 0, 'G'},
        {"weight-bytes", required_argument, 0, 'w'}, {"report", required_argument, 0, 'R'},
        {0, 0, 0, 0}};
    plan_args a = {.nsamples = 128, .seqlen = 2048, .chunk = 8192, .gpu = (int64_t)24 << 30};
    sg_cli_job j;
    sg_cli_job_default(&j);
    int r = sg_cli_parse(argc, argv, SG_OPT_PLAN, own, plan_option, &a, usage, &j);
    if (r)
        return r == SG_CLI_HELP ? SG_EXIT_OK : SG_EXIT_USAGE;
    if (optind != argc || !a.model) {
        fputs(usage, stderr);
        return SG_EXIT_USAGE;
    }
    sg_cli_method_default(&j);
    const char *model = a.model;
    int64_t nsamples = a.nsamples, seqlen = a.seqlen, chunk = a.chunk, host = a.host, gpu = a.gpu;
    double wbytes = a.wbytes;
    sg_model_config cfg;
    char path[4096];
    struct stat sb;
    int err;
    size_t len = strlen(model);
    if (len > 5 && !strcmp(model + len - 5, ".gguf")) {
        sg_gguf *g;
        err = sg_gguf_open(model, &g);
        if (!err) {
            err = sg_gguf_model_config(g, &cfg);
            sg_gguf_close(g);
        }
        if (!wbytes)
            wbytes = 0.6; /* quantized: about 4.5-8.5 bits a weight */
    } else {
        snprintf(path, sizeof path, "%s%s", model,
                 stat(model, &sb) == 0 && S_ISDIR(sb.st_mode) ? "/config.json" : "");
        err = sg_hf_config_load(path, &cfg);
        if (!wbytes)
            wbytes = stored_weight_bytes(path);
    }
    if (err)
        return sg_cli_report(err);
    if (host == 0)
        host = (int64_t)sysconf(_SC_PHYS_PAGES) * sysconf(_SC_PAGE_SIZE) / 2;

    int64_t D = cfg.dim, T = nsamples * (seqlen < cfg.max_positions || !cfg.max_positions
                                             ? seqlen : cfg.max_positions);
    int64_t maxseq = T / nsamples, chunk_tokens = chunk < maxseq ? maxseq : chunk;
    if (chunk_tokens > T)
        chunk_tokens = T;
    int64_t block_params = sg_block_param_count(&cfg, 0);
    sg_slice_memory m;
    sg_slice_memory_estimate(&cfg, (int64_t)(block_params * wbytes), chunk_tokens, maxseq, &m);
    sg_model_config sliced, written;
    int64_t d = sg_slice_plan(&cfg, &j.plan, &sliced);
    if (d < 0)
        return sg_cli_report((int)d);
    /* what run writes: nystrom on an RMSNorm model, a plain model */
    if (!sg_nystrom_plain_config(&cfg, &sliced, &written))
        written = sliced;
    /* the store's peak: block input (width d), the captured residual and
     * the block output (width D) at once; --method spectrum's first pass
     * runs the dense model (input width D) and keeps every signal's
     * spectrum until the widths are chosen */
    int spectrum = j.plan.method == SG_METHOD_SPECTRUM || j.plan.method == SG_METHOD_FILL;
    int nystrom = j.plan.method == SG_METHOD_NYSTROM;
    /* --method nystrom: no covariance, no rotations; C (F x F, float64)
     * and a chunk of hidden units, and the solve's work, all on the host
     * as a CPU run holds them */
    if (nystrom)
        sg_slice_memory_nystrom(&cfg, chunk_tokens, 1, &m);
    int64_t store_peak = T * ((spectrum ? D : d) + 2 * D) * (int64_t)sizeof(float);
    int64_t spectra_bytes = spectrum ? sg_schedule_spectra_bytes(D, cfg.n_layers) +
                                           sg_schedule_probe_bytes(D)
                                     : 0;
    m.total += spectra_bytes;
    int64_t total_params = sg_model_param_count(&cfg);

    cJSON *json = sg_json_report_new("plan", argc, argv);
    printf("model: %s, %s, D %lld, %lld layers, %lld heads (%lld KV), FFN %lld, vocab %lld, "
           "%.2f B parameters\n",
           model, sg_arch_name(cfg.arch), (long long)D, (long long)cfg.n_layers,
           (long long)cfg.n_heads, (long long)cfg.n_kv_heads, (long long)cfg.ffn_dim,
           (long long)cfg.vocab_size, total_params / 1e9);
    sg_json_report_model(json, model, &cfg);
    printf("calibration: %lld samples x %lld tokens = %lld tokens, chunks of %lld tokens\n",
           (long long)nsamples, (long long)maxseq, (long long)T, (long long)chunk_tokens);
    cJSON *jc = cJSON_AddObjectToObject(json, "calibration");
    sg_json_int(jc, "samples", nsamples);
    sg_json_int(jc, "seqlen", maxseq);
    sg_json_int(jc, "tokens", T);
    sg_json_int(jc, "chunk_tokens", chunk_tokens);
    if (nystrom)
        printf("residual stream kept at D = %lld (nothing rotated); MLP hidden width %lld of "
               "%lld in every block (--method nystrom, multiple of %lld)\n", (long long)D,
               (long long)sg_layer_ffn(&sliced, 0), (long long)cfg.ffn_dim,
               (long long)j.plan.round_interval);
    else if (spectrum)
        printf("sliced widths: one per signal, chosen by run from the spectra of a first pass "
               "(--method spectrum), storing at most what d = %lld of D = %lld stores at "
               "sparsity %.2f (multiple of %lld); embeddings %s\n", (long long)d, (long long)D,
               sg_plan_sparsity(&j.plan, D, d), (long long)j.plan.round_interval,
               sg_embeddings_kept(&sliced) ? "kept" : "rotated and cut");
    else
        printf("sliced width: d = %lld of D = %lld at sparsity %.2f (multiple of %lld), the width "
               "run uses; embeddings %s\n", (long long)d, (long long)D,
               sg_plan_sparsity(&j.plan, D, d), (long long)j.plan.round_interval,
               sg_embeddings_kept(&sliced) ? "kept" : "rotated and cut");
    printf("parameters: dense %lld, stored when sliced %lld (%.1f%%)\n",
           (long long)sg_model_param_count(&cfg), (long long)sg_model_param_count(&written),
           100.0 * sg_model_param_count(&written) / sg_model_param_count(&cfg));
    cJSON *jo = cJSON_AddObjectToObject(json, "options");
    cJSON_AddNumberToObject(jo, "sparsity", sg_plan_sparsity(&j.plan, D, d));
    if (j.plan.target_size > 0)
        cJSON_AddNumberToObject(jo, "target_size", j.plan.target_size);
    sg_json_int(jo, "round_interval", j.plan.round_interval);
    cJSON_AddBoolToObject(jo, "slice_head", j.plan.slice_head);
    cJSON_AddStringToObject(jo, "embeddings", sg_embeddings_kept(&sliced) ? "keep" : "slice");
    cJSON_AddStringToObject(jo, "method", sg_width_method_name(j.plan.method));
    cJSON_AddNumberToObject(jo, "weight_bytes", wbytes);
    cJSON *jw = cJSON_AddObjectToObject(json, "widths");
    sg_json_int(jw, "D", D);
    sg_json_int(jw, "d", d);
    cJSON *jp = cJSON_AddObjectToObject(json, "parameters");
    sg_json_int(jp, "dense", total_params);
    sg_json_int(jp, "stored", sg_model_param_count(&written));
    printf("\nhost, held at once (GiB):\n");
    cJSON *jh = cJSON_AddObjectToObject(json, "host");
    row(jh, "load_bytes", "load        block weights as stored, current + prefetched", m.block_raw);
    row(jh, "block_bytes", "fold/slice  one block in float32 (+ shortcuts)", m.block_f32);
    row(jh, "capture_bytes", "capture     chunk buffers + forward scratch",
        m.chunk_buffers + m.forward_scratch);
    row(jh, "covariance_bytes", "covariance  H and eigensolver work (float64)", m.covariance);
    row(jh, "rotations_bytes", "rotate      Q_prev, Q_mid, Q_out (float64)", m.rotations);
    row(jh, "globals_bytes", "embed/head  embeddings, then the untied head", m.globals);
    if (spectrum)
        row(jh, "spectra_bytes", "schedule    the spectra and per-token energies (--method spectrum)",
            spectra_bytes);
    if (nystrom)
        row(jh, "ffn_stats_bytes", "prune       hidden units' correlation and its solve (--method nystrom)",
            m.ffn_stats);
    row(jh, "fixed_bytes", "fixed total", m.total);
    row(jh, "store_peak_bytes", "activation store peak (input + residual + output)", store_peak);
    int64_t store_budget = host > m.total ? host - m.total : 0;
    int64_t spilled = store_peak > store_budget ? store_peak - store_budget : 0;
    row(jh, "gpu_run_next_block_bytes", "a GPU run also: the next block, page-locked, while one runs",
        m.block_f32);
    /* a CPU run keeps a block's hidden units in the store between the
     * statistics and the output (a GPU computes them twice instead) */
    int64_t cpu_hidden = nystrom ? T * cfg.ffn_dim * (int64_t)sizeof(float) : 0;
    int64_t cpu_spilled = store_peak + cpu_hidden > store_budget
                              ? store_peak + cpu_hidden - store_budget : 0;
    if (nystrom)
        row(jh, "cpu_run_hidden_bytes", "a CPU run also: the store keeps a block's hidden units "
            "(--method nystrom)", cpu_hidden);
    printf("  host budget %.2f GiB: %s", gib(host),
           m.total > host ? "DOES NOT FIT (fixed part exceeds the budget)\n" : "fits");
    if (m.total <= host && spilled)
        printf(", spilling about %.2f GiB of activations to disk (zstd)", gib(spilled));
    else if (m.total <= host)
        printf(", activations stay in memory");
    if (m.total <= host && cpu_spilled != spilled)
        printf("; on the CPU %.2f GiB spilled", gib(cpu_spilled));
    if (m.total <= host)
        printf("\n");
    sg_json_int(jh, "budget_bytes", host);
    cJSON_AddBoolToObject(jh, "fits", m.total <= host);
    sg_json_int(jh, "spilled_bytes", m.total <= host ? spilled : 0);
    if (nystrom)
        sg_json_int(jh, "cpu_run_spilled_bytes", m.total <= host ? cpu_spilled : 0);

    /* GPU (run --device cuda, stages/): one block's weights, one
     * chunk's activations and forward scratch, the D x D work (H, three
     * rotations, the mixed eigensolver's four n x n matrices, cuSOLVER's
     * syevd workspace of about 2 n² and a float32 copy, the backend's 256
     * MiB scratch), the rotated copy of a weight beside the block while it
     * is made (at most F x D), and in a block's second half the next
     * block, uploaded meanwhile */
    int64_t f64 = sizeof(double), f32 = sizeof(float);
    int64_t gpu_block = m.block_f32, gpu_chunk = m.chunk_buffers + m.forward_scratch;
    int64_t gpu_dd = D * D * f64 * (1 + 3 + 4 + 2) + D * D * f32 + ((int64_t)256 << 20);
    int64_t gpu_rotate = cfg.ffn_dim * D * f32;
    if (nystrom) { /* nothing rotated: only the backend's scratch */
        gpu_dd = (int64_t)256 << 20;
        gpu_rotate = 0;
    }
    /* --method nystrom: C (F x F, float64), its float32 slice and a chunk
     * of hidden units stay on the GPU beside the block */
    int64_t F = cfg.ffn_dim;
    int64_t gpu_ffn = nystrom ? F * F * (f64 + f32) + chunk_tokens * F * f32 : 0;
    int64_t gpu_total = 2 * gpu_block + gpu_chunk + gpu_dd + gpu_rotate + gpu_ffn;
    printf("\nGPU, held at once (GiB):\n");
    cJSON *jg = cJSON_AddObjectToObject(json, "gpu");
    row(jg, "blocks_bytes", "one block in float32, and the next one arriving", 2 * gpu_block);
    row(jg, "chunk_bytes", "one activation chunk + forward scratch", gpu_chunk);
    row(jg, "eigensolver_bytes", "covariance, eigensolver work, rotations", gpu_dd);
    row(jg, "rotate_bytes", "a weight's rotated copy, while it is made", gpu_rotate);
    if (nystrom)
        row(jg, "ffn_stats_bytes", "the hidden units' correlation and a chunk of them", gpu_ffn);
    printf("  total %.2f GiB of %.2f GiB: %s\n", gib(gpu_total), gib(gpu),
           gpu_total <= gpu ? "fits" : "DOES NOT FIT (lower --chunk-tokens)");
    sg_json_int(jg, "total_bytes", gpu_total);
    sg_json_int(jg, "budget_bytes", gpu);
    cJSON_AddBoolToObject(jg, "fits", gpu_total <= gpu);
    if (sg_json_report_finish(json, a.report))
        return SG_EXIT_FAIL;
    return m.total <= host && gpu_total <= gpu ? SG_EXIT_OK : SG_EXIT_FAIL;
}
