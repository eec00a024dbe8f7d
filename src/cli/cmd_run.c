/* slicegpt-stream run: the main job. Slice a model with SliceGPT, write
 * it, and report dense and sliced perplexity, sizes and time per stage. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "cli_options.h"
#include "json_report.h"
#include "slicegpt.h"
#include "task_table.h"

static const char usage[] =
    "usage: slicegpt-stream run --model PATH --calib FILE --out DIR [options]\n"
    "  --model PATH          Hugging Face directory or .gguf file\n"
    "  --out DIR             where the sliced model is written (must not exist)\n"
    "  --resume              continue the killed run of this same job found in DIR.tmp\n"
    "                        (refused, one line, if its model or options differ; a plain\n"
    "                        rerun continues it too, or starts again if they differ)\n"
    SG_HELP_CALIB SG_HELP_PLAN SG_HELP_DTYPE
    "  --eval FILE           report dense and sliced perplexity on this text\n"
    "  --eval-seqlen N       evaluation window (default: --seqlen; capped at the context, as\n"
    "                        in ppl)\n"
    "  --eval-windows K      evaluate at most K windows (default: all)\n"
    "  --tasks LIST          also score dense and sliced zero-shot accuracy on these tasks\n"
    "                        (as the tasks command: piqa, winogrande, hellaswag, arc_easy,\n"
    "                        arc_challenge or .jsonl paths), the same requests for both\n"
    "  --tasks-limit N       the first N documents of each task (default: all)\n"
    "  --report FILE.json    also write every figure printed, as JSON (slicegpt-stream(1))\n"
    "  --out-gguf FILE       with --rotation uniform or --method nystrom (RMSNorm models):\n"
    "                        also write the plain model as GGUF\n"
    "                        for llama.cpp\n"
    "  --gguf-type T         its matrices: f32, f16, bf16, q8_0, q4_0 or q4_1 (default f16)\n"
    SG_HELP_TOKENIZER
    "  --host-mem SIZE       host memory budget above 0, e.g. 8G (default: half of RAM);\n"
    "                        calibration activations beyond it spill to disk, zstd-compressed\n"
    "  --spill-dir DIR       where spilled activations go (default: $TMPDIR or /tmp)\n"
    "  --device auto|cuda|cpu  where the forward, covariance, eigensolves and rotations\n"
    "                        run (default auto: the GPU when there is one)\n"
    "  --gpu-mem SIZE        cap on GPU memory, e.g. 24G (default: what the card has free)\n"
    SG_HELP_AXES SG_HELP_COV SG_HELP_QUIET
    "\nexamples (the first is examples/default-run.sh, the second\n"
    "examples/llama-2-70b/slice.sh on a 24 GB GPU):\n"
    "  slicegpt-stream run --model ~/.cache/slicegpt-stream/SmolLM2-135M-Instruct.Q4_1.gguf \\\n"
    "    --calib calib.txt --nsamples 32 --seqlen 512 --eval eval.txt --eval-seqlen 512 \\\n"
    "    --out out/smollm2-135m-sliced --report smollm2.json\n"
    "  slicegpt-stream run --model Llama-2-70b-hf --calib wikitext2-train.txt --nsamples 128 \\\n"
    "    --seqlen 2048 --device cuda --gpu-mem 24G --host-mem 32G --dtype bf16 \\\n"
    "    --eval wikitext2-test.txt --out llama-2-70b-sliced\n";

typedef struct {
    const char *model, *out, *eval, *report, *out_gguf, *tasks;
    int64_t eval_seqlen, eval_windows, tasks_limit;
    sg_dtype gguf_type;
    int resume;
} run_args;

static int run_option(void *ctx, int c, const char *arg)
{
    run_args *a = ctx;
    switch (c) {
    case 'm': a->model = arg; return 0;
    case 'o': a->out = arg; return 0;
    case 'e': a->eval = arg; return 0;
    case 'R': a->report = arg; return 0;
    case 'E': return sg_cli_int("--eval-seqlen", arg, 2, 1 << 20, &a->eval_seqlen);
    case 'W': return sg_cli_int("--eval-windows", arg, 0, INT64_MAX, &a->eval_windows);
    case 'G': a->out_gguf = arg; return 0;
    case 'r': a->resume = 1; return 0;
    case 'K': a->tasks = arg; return 0;
    case 'L': return sg_cli_int("--tasks-limit", arg, 1, INT64_MAX, &a->tasks_limit);
    case 'T': {
        static const char *const names[] = {"f32", "f16", "bf16", "q8_0", "q4_0", "q4_1"};
        static const sg_dtype types[] = {SG_DT_F32, SG_DT_F16, SG_DT_BF16,
                                         SG_DT_Q8_0, SG_DT_Q4_0, SG_DT_Q4_1};
        for (int i = 0; i < 6; i++)
            if (!strcmp(arg, names[i])) {
                a->gguf_type = types[i];
                return 0;
            }
        fprintf(stderr, "slicegpt-stream: --gguf-type: expected f32, f16, bf16, q8_0, q4_0 or "
                        "q4_1, got '%s'\n", arg);
        return -1;
    }
    }
    return -1;
}

static int eval_ppl(sg_backend *be, const char *model, const sg_token_batch *batch,
                    sg_progress *pr, const char *phase, double *ppl, sg_eval_result *r)
{
    sg_model_files *files;
    int err = sg_model_files_open(model, &files);
    if (err)
        return err;
    err = sg_evaluate_progress(be, files, batch, pr, phase, r);
    sg_model_files_close(files);
    if (!err)
        *ppl = exp(r->nll / r->count);
    return err;
}

/* Zero-shot accuracy of the dense and the sliced model on the same
 * requests, side by side. */
static int run_tasks(sg_backend *be, const char *dense, const char *sliced, sg_task *tasks,
                     int n, int64_t limit, sg_progress *pr, cJSON *json)
{
    sg_task_score *sc = calloc(2 * (size_t)n, sizeof *sc);
    sg_eval_result r[2];
    int64_t n_req = 0;
    int err = sc ? 0 : sg_fail(-ENOMEM, "out of memory");
    const char *paths[2] = {dense, sliced}, *phases[2] = {"tasks, dense", "tasks, sliced"};
    for (int m = 0; m < 2 && !err; m++) {
        sg_model_files *files;
        double avg, avg_norm;
        err = sg_model_files_open(paths[m], &files);
        if (err)
            break;
        err = sg_tasks_loglik(be, files, tasks, n, SG_TASKS_BATCH_TOKENS, 1, pr, phases[m],
                              &r[m], &n_req);
        sg_model_files_close(files);
        if (!err)
            sg_cli_tasks_score(tasks, n, sc + m * n, &avg, &avg_norm);
    }
    if (!err) {
        printf("zero-shot accuracy");
        if (limit)
            printf(", at most %lld documents per task", (long long)limit);
        printf(", dense and sliced on the same %lld requests:\n", (long long)n_req);
        sg_cli_tasks_print_pair(tasks, n, sc, sc + n);
        printf("tasks: %.1f / %.1f requests/s, %.0f / %.0f tokens/s\n", n_req / r[0].seconds,
               n_req / r[1].seconds, r[0].tokens / r[0].seconds, r[1].tokens / r[1].seconds);
        cJSON *jt = cJSON_AddObjectToObject(json, "zero_shot");
        sg_json_int(jt, "limit", limit);
        sg_json_int(jt, "requests", n_req);
        sg_cli_tasks_json(jt, "dense", tasks, n, sc);
        sg_cli_tasks_json(jt, "sliced", tasks, n, sc + n);
        cJSON_AddNumberToObject(jt, "dense_requests_per_s", n_req / r[0].seconds);
        cJSON_AddNumberToObject(jt, "sliced_requests_per_s", n_req / r[1].seconds);
    }
    free(sc);
    return err;
}

int sg_cmd_run(int argc, char **argv)
{
    static const struct option own[] = {
        {"model", required_argument, 0, 'm'},       {"out", required_argument, 0, 'o'},
        {"eval", required_argument, 0, 'e'},        {"eval-seqlen", required_argument, 0, 'E'},
        {"eval-windows", required_argument, 0, 'W'}, {"report", required_argument, 0, 'R'},
        {"out-gguf", required_argument, 0, 'G'},    {"gguf-type", required_argument, 0, 'T'},
        {"resume", no_argument, 0, 'r'},            {"tasks", required_argument, 0, 'K'},
        {"tasks-limit", required_argument, 0, 'L'}, {0, 0, 0, 0}};
    run_args a = {.gguf_type = SG_DT_F16};
    sg_cli_job j;
    sg_cli_job_default(&j);
    int r = sg_cli_parse(argc, argv,
                         SG_OPT_CALIB | SG_OPT_PLAN | SG_OPT_AXES | SG_OPT_COV | SG_OPT_DTYPE |
                             SG_OPT_TOKENIZER | SG_OPT_DEVICE | SG_OPT_QUIET,
                         own, run_option, &a, usage, &j);
    if (r)
        return r == SG_CLI_HELP ? SG_EXIT_OK : SG_EXIT_USAGE;
    if (optind != argc || !a.model || !a.out) {
        fputs(usage, stderr);
        return SG_EXIT_USAGE;
    }
    if (sg_cli_calib_check(&j))
        return SG_EXIT_USAGE;
    sg_cli_method_default(&j);
    if (a.out_gguf && j.rotation != SG_ROTATION_UNIFORM && j.plan.method != SG_METHOD_NYSTROM) {
        fputs("slicegpt-stream: --out-gguf: only a plain model has a GGUF form (--rotation "
              "uniform, or --method nystrom on an RMSNorm model)\n", stderr);
        return SG_EXIT_USAGE;
    }
    if (a.out_gguf && sg_model_writer_check_out(a.out_gguf))
        return sg_cli_report(SG_EARG);
    /* before any work: an --out that exists (a dangling link included)
     * would otherwise fail only when the finished model is renamed */
    if (sg_model_writer_check_out(a.out))
        return sg_cli_report(SG_EARG);
    const char *model = a.model, *calib = j.calib, *calib_tokens = j.calib_tokens;
    const char *eval = a.eval, *tok_path = j.tokenizer;
    int64_t nsamples = j.nsamples, seqlen = j.seqlen, seed = j.seed;
    int64_t eval_seqlen = a.eval_seqlen, eval_windows = a.eval_windows;
    sg_slice_options o;
    sg_slice_options_default(&o);
    sg_progress progress;
    sg_cli_progress(&progress, j.quiet);
    o.progress = &progress;
    o.out_dir = a.out;
    o.plan = j.plan;
    o.out_dtype = j.dtype;
    o.rotation = j.rotation;
    o.seed = (uint64_t)j.seed;
    o.damp_frac = j.damp_frac;
    o.host_mem_bytes = j.host_mem;
    o.spill_dir = j.spill_dir;
    o.chunk_tokens = j.chunk_tokens;
    o.resumable = 1; /* a killed run leaves OUT.tmp to continue from */
    o.resume = a.resume;
    if (sg_cli_backend(j.device, j.gpu_mem, &o.backend) ||
        sg_cli_eigh(j.eigh, o.backend, &o.eigh) || sg_cli_cov(j.cov, o.backend, &o.cov_mixed)) {
        if (o.backend)
            o.backend->ops->free(o.backend);
        return SG_EXIT_USAGE;
    }

    sg_model_files *files = NULL;
    sg_tokenizer *tok = NULL;
    char *text = NULL, *eval_text = NULL;
    size_t len = 0, eval_len = 0;
    sg_token_batch batch = {0};
    sg_slice_report rep;
    cJSON *json = sg_json_report_new("run", argc, argv);
    int report_failed = 0;
    double t0 = sg_now();
    int err = sg_model_files_open(model, &files);
    if (!err && strcmp(sg_model_files_io_backend(files), "io_uring"))
        fprintf(stderr, "slicegpt-stream: notice: reading with %s\n",
                sg_model_files_io_backend(files));
    /* pre-tokenized calibration without evaluation needs no tokenizer; the
     * sliced model then carries the model's own, if it has one */
    if (!err) {
        err = sg_model_files_tokenizer(files, tok_path, &tok);
        if (err && calib_tokens && !eval && !a.tasks && !tok_path) {
            fprintf(stderr, "slicegpt-stream: notice: no tokenizer (%s); the sliced model will "
                            "have none\n", sg_last_error());
            err = 0;
        }
    }
    const sg_model_config *cfg = err ? NULL : sg_model_files_config(files);
    if (!err && a.out_gguf && j.plan.method == SG_METHOD_NYSTROM && cfg->norm != SG_NORM_RMS)
        err = sg_fail(SG_EARG, "--out-gguf: %s is a LayerNorm model (%s), whose folded norms "
                               "--method nystrom writes in the per-layer format, which has no "
                               "GGUF form", model, sg_arch_name(cfg->arch));
    if (!err && cfg->max_positions > 0 && seqlen > cfg->max_positions)
        seqlen = cfg->max_positions;
    if (!err && calib) {
        err = sg_text_read(calib, &text, &len);
        if (!err)
            err = sg_batch_calibration(tok, text, len, nsamples, seqlen, (uint64_t)seed, &batch);
    } else if (!err) {
        err = sg_cli_calib_tokens(&j, cfg->vocab_size, cfg->max_positions, &batch);
    }
    if (!err)
        err = sg_cli_check_calibration(&batch, cfg->dim,
                                       j.plan.method == SG_METHOD_NYSTROM,
                                       calib ? calib : calib_tokens);
    /* the evaluation windows, capped at the context as ppl caps them, made
     * now: a problem with them must stop the run before anything is written */
    int64_t es = eval_seqlen ? eval_seqlen : seqlen;
    sg_token_batch eval_batch = {0};
    if (!err && cfg->max_positions > 0 && es > cfg->max_positions + 1)
        es = cfg->max_positions + 1;
    if (!err && eval)
        err = sg_text_read(eval, &eval_text, &eval_len);
    if (!err && eval)
        err = sg_batch_windows(tok, eval_text, eval_len, es, eval_windows, &eval_batch);
    /* the task requests too, tokenized once for both models */
    sg_task *tasks = NULL;
    int n_tasks = 0;
    if (!err && a.tasks)
        err = sg_cli_tasks_load(a.tasks, a.tasks_limit, tok, cfg->max_positions, &tasks,
                                &n_tasks);
    if (!err) {
        /* the sliced model carries its tokenizer: the file we were given or
         * the model's own, else the one in use, written as tokenizer.json */
        static char src[4096];
        if (tok_path)
            o.tokenizer_src = tok_path;
        else {
            snprintf(src, sizeof src, "%s/tokenizer.json", model);
            FILE *f = fopen(src, "rb");
            if (!f) {
                snprintf(src, sizeof src, "%s/tokenizer.bin", model);
                f = fopen(src, "rb");
            }
            if (f) {
                fclose(f);
                o.tokenizer_src = src;
            }
        }
        o.tok = tok;
        char counts[128], goal[64];
        sg_cli_calib_counts(&batch, counts, sizeof counts);
        int ny = o.plan.method == SG_METHOD_NYSTROM;
        if (o.plan.target_size > 0)
            snprintf(goal, sizeof goal, "to at most %.3g of the dense size", o.plan.target_size);
        else if (ny)
            snprintf(goal, sizeof goal, "to the size sparsity %.2f stores", o.plan.sparsity);
        else
            snprintf(goal, sizeof goal, "at sparsity %.2f", o.plan.sparsity);
        printf("%s %s (%s, D = %lld, %lld layers) %s (--method %s) on %s of calibration, "
               "on the %s backend%s%s%s, %s%s%s\n",
               ny ? "pruning the MLPs of" : "slicing", model, sg_arch_name(cfg->arch),
               (long long)cfg->dim, (long long)cfg->n_layers, goal,
               sg_width_method_name(o.plan.method), counts, o.backend->ops->name,
               o.backend->ops->host_memory ? " (OpenBLAS kernels " : "",
               o.backend->ops->host_memory ? sg_blas_corename() : "",
               o.backend->ops->host_memory ? ")" : "",
               ny ? "hidden units' correlation in float32 slices summed in float64, float64 solve"
                  : o.cov_mixed ? "mixed covariance" : "float64 covariance",
               ny ? "" : ", ",
               ny ? "" : o.eigh == SG_EIGH_F64 ? "float64 eigensolver" : "mixed-precision eigensolver");
        sg_json_report_model(json, model, cfg);
        cJSON *jo = cJSON_AddObjectToObject(json, "options");
        cJSON_AddNumberToObject(jo, "sparsity", o.plan.sparsity);
        if (o.plan.target_size > 0)
            cJSON_AddNumberToObject(jo, "target_size", o.plan.target_size);
        sg_json_int(jo, "round_interval", o.plan.round_interval);
        cJSON_AddBoolToObject(jo, "slice_head", o.plan.slice_head);
        cJSON_AddStringToObject(jo, "embeddings", sg_embed_mode_name(o.plan.embeddings));
        cJSON_AddStringToObject(jo, "method", sg_width_method_name(o.plan.method));
        cJSON_AddBoolToObject(jo, "shared_basis", o.plan.shared_basis);
        cJSON_AddStringToObject(jo, "rotation",
                                o.rotation == SG_ROTATION_RANDOM    ? "random"
                                : o.rotation == SG_ROTATION_UNIFORM ? "uniform"
                                                                    : "pca");
        cJSON_AddNumberToObject(jo, "damp", o.damp_frac);
        cJSON_AddStringToObject(jo, "dtype", sg_dtype_name(o.out_dtype));
        cJSON_AddStringToObject(jo, "backend", o.backend->ops->name);
        cJSON_AddStringToObject(jo, "covariance", o.cov_mixed ? "mixed" : "float64");
        cJSON_AddStringToObject(jo, "eigensolver",
                                o.eigh == SG_EIGH_F64 ? "float64" : "mixed-precision");
        sg_json_int(jo, "host_mem", j.host_mem);
        sg_json_int(jo, "gpu_mem", j.gpu_mem);
        cJSON_AddStringToObject(jo, "out", o.out_dir);
        cJSON *jc = cJSON_AddObjectToObject(json, "calibration");
        cJSON_AddStringToObject(jc, "text", calib ? calib : calib_tokens);
        if (calib_tokens)
            cJSON_AddStringToObject(jc, "layout", j.calib_rows ? "rows" : "random");
        sg_json_int(jc, "tokens", batch.offsets[batch.n_seq]);
        sg_json_int(jc, "samples", batch.n_seq);
        sg_json_int(jc, "seqlen", seqlen);
        sg_json_int(jc, "seed", seed);
        err = sg_slice(files, &batch, &o, &rep);
    }
    if (!err) {
        if (rep.resumed) {
            printf("resumed a killed run of this job at %s %lld of %lld\n",
                   rep.resumed_at < cfg->n_layers ? "block" : "the head, after block",
                   (long long)(rep.resumed_at < cfg->n_layers ? rep.resumed_at + 1
                                                               : cfg->n_layers),
                   (long long)cfg->n_layers);
            sg_json_int(json, "resumed_at_block", rep.resumed_at);
        }
        if (rep.uniform)
            printf("sliced width d = %lld of D = %lld, one rotation for the whole network: a "
                   "plain %s model of hidden size %lld, head %s; written to %s\n",
                   (long long)rep.d, (long long)cfg->dim, sg_arch_name(cfg->arch),
                   (long long)rep.d,
                   rep.uniform_tied ? "tied to the rotated embeddings"
                   : cfg->tied_embeddings ? "untied (the final norm's scale is not a constant)"
                                          : "its own",
                   o.out_dir);
        else if (rep.sliced.residual_kept)
            printf("residual stream kept at D = %lld (nothing rotated); MLP hidden width %lld "
                   "of %lld in every block (--method nystrom); written to %s%s%s\n",
                   (long long)cfg->dim, (long long)sg_layer_ffn(&rep.sliced, 0),
                   (long long)cfg->ffn_dim, o.out_dir,
                   rep.plain ? " as a plain model: " : "",
                   rep.plain ? sg_arch_name(cfg->arch) : "");
        else
            printf("sliced width d = %lld of D = %lld, embeddings %s; written to %s\n",
                   (long long)rep.d, (long long)cfg->dim,
                   rep.embeddings_kept ? "kept (head tied to them)" : "rotated and cut",
                   o.out_dir);
        if (o.plan.method == SG_METHOD_SPECTRUM || o.plan.method == SG_METHOD_FILL) {
            /* the schedule as written in config.json's slicegpt section */
            const sg_model_config *w = &rep.sliced;
            printf("schedule (--method %s, %s d = %lld): "
                   "embeddings %lld, head reads %lld\n  d_mid:",
                   sg_width_method_name(o.plan.method),
                   o.plan.method == SG_METHOD_FILL ? "the budget left over from"
                                                   : "the reference's stored size at",
                   (long long)rep.d, (long long)w->embed_dim, (long long)w->head_in_dim);
            for (int64_t l = 0; l < w->n_layers; l++)
                printf(" %lld", (long long)w->d_mid[l]);
            printf("\n  d_out:");
            for (int64_t l = 0; l < w->n_layers; l++)
                printf(" %lld", (long long)w->d_out[l]);
            printf("\n");
        }
        if (a.out_gguf) {
            err = sg_export_gguf(o.out_dir, a.out_gguf, a.gguf_type, tok);
            if (!err)
                printf("GGUF (%s): %s, %.2f MiB\n", sg_dtype_name(a.gguf_type), a.out_gguf,
                       sg_json_report_disk_bytes(a.out_gguf) / 1048576.0);
        }
    }
    if (!err) {
        const sg_model_config sliced = rep.sliced; /* the plan the run followed */
        cJSON *jw = cJSON_AddObjectToObject(json, "widths");
        sg_json_int(jw, "D", cfg->dim);
        sg_json_int(jw, "d", rep.d);
        sg_json_int(jw, "embeddings", sliced.embed_dim);
        sg_json_int(jw, "head_in", sliced.head_in_dim);
        cJSON_AddBoolToObject(jw, "embeddings_kept", rep.embeddings_kept);
        cJSON *l_in = cJSON_AddArrayToObject(jw, "d_in");
        cJSON *l_mid = cJSON_AddArrayToObject(jw, "d_mid");
        cJSON *l_out = cJSON_AddArrayToObject(jw, "d_out");
        cJSON *l_ffn = cJSON_AddArrayToObject(jw, "d_ffn");
        cJSON_AddBoolToObject(jw, "residual_kept", sliced.residual_kept);
        for (int64_t l = 0; l < sliced.n_layers; l++) {
            cJSON_AddItemToArray(l_in, cJSON_CreateNumber((double)sliced.d_in[l]));
            cJSON_AddItemToArray(l_mid, cJSON_CreateNumber((double)sliced.d_mid[l]));
            cJSON_AddItemToArray(l_out, cJSON_CreateNumber((double)sliced.d_out[l]));
            cJSON_AddItemToArray(l_ffn, cJSON_CreateNumber((double)sg_layer_ffn(&sliced, l)));
        }
        int64_t disk_dense = sg_json_report_disk_bytes(model);
        int64_t disk_out = sg_json_report_disk_bytes(o.out_dir);
        printf("stored: %lld parameters, %.1f%% of dense %lld (shortcuts and heads included); "
               "%.2f MiB on disk as %s, dense at %s %.2f MiB (the input file: %.2f MiB)\n",
               (long long)rep.params_stored, 100.0 * rep.params_stored / rep.params_dense,
               (long long)rep.params_dense, disk_out / 1048576.0, sg_dtype_name(o.out_dtype),
               sg_dtype_name(o.out_dtype),
               sg_dtype_bytes(o.out_dtype, rep.params_dense) / 1048576.0,
               disk_dense / 1048576.0);
        printf("parameters as the paper counts them (no shortcuts, head as before): %lld "
               "(%.1f%% of dense)\n",
               (long long)rep.params_sliced, 100.0 * rep.params_sliced / rep.params_dense);
        cJSON *jp = cJSON_AddObjectToObject(json, "parameters");
        sg_json_int(jp, "dense", rep.params_dense);
        sg_json_int(jp, "sliced", rep.params_sliced);
        sg_json_int(jp, "stored", rep.params_stored);
        cJSON_AddNumberToObject(jp, "sliced_percent", 100.0 * rep.params_sliced / rep.params_dense);
        cJSON_AddNumberToObject(jp, "stored_percent", 100.0 * rep.params_stored / rep.params_dense);
        cJSON *jb = cJSON_AddObjectToObject(json, "bytes");
        sg_json_int(jb, "dense", disk_dense);
        sg_json_int(jb, "stored", disk_out);
        sg_json_int(jb, "dense_at_output_dtype", sg_dtype_bytes(o.out_dtype, rep.params_dense));
        printf("activations: %lld chunks, store budget %.1f MiB, peak resident %.1f MiB, "
               "spilled %.1f MiB as %.1f MiB zstd\n",
               (long long)rep.chunks, rep.store_budget / 1048576.0, rep.store_peak / 1048576.0,
               rep.spilled_raw / 1048576.0, rep.spilled_compressed / 1048576.0);
        cJSON *ja = cJSON_AddObjectToObject(json, "activations");
        sg_json_int(ja, "chunks", rep.chunks);
        sg_json_int(ja, "store_budget_bytes", rep.store_budget);
        sg_json_int(ja, "store_peak_bytes", rep.store_peak);
        sg_json_int(ja, "spilled_bytes", rep.spilled_raw);
        sg_json_int(ja, "spilled_compressed_bytes", rep.spilled_compressed);
        double total = sg_now() - t0;
        cJSON *js = cJSON_AddObjectToObject(json, "seconds");
        printf("time per stage:");
        for (int i = 0; i < SG_N_STAGES; i++) {
            printf(" %s %.2fs", sg_stage_names[i], rep.seconds[i]);
            cJSON_AddNumberToObject(js, sg_stage_names[i], rep.seconds[i]);
        }
        printf("; total %.2fs\n", total);
        cJSON_AddNumberToObject(js, "total", total);
    }
    if (!err && eval) {
        double dense, sliced;
        sg_eval_result rd, rs;
        err = eval_ppl(o.backend, model, &eval_batch, &progress, "perplexity, dense", &dense, &rd);
        if (!err)
            err = eval_ppl(o.backend, o.out_dir, &eval_batch, &progress, "perplexity, sliced",
                           &sliced, &rs);
        if (!err) {
            printf("perplexity on %s (%lld tokens, windows of %lld): dense %.4f, sliced %.4f "
                   "(%+.2f%%); eval %.0f / %.0f tokens/s\n",
                   eval, (long long)rd.count, (long long)es, dense, sliced,
                   100.0 * (sliced / dense - 1), rd.tokens / rd.seconds, rs.tokens / rs.seconds);
            cJSON *je = cJSON_AddObjectToObject(json, "perplexity");
            cJSON_AddStringToObject(je, "text", eval);
            sg_json_int(je, "tokens", rd.count);
            sg_json_int(je, "seqlen", es);
            sg_json_int(je, "windows", eval_windows);
            cJSON_AddNumberToObject(je, "dense", dense);
            cJSON_AddNumberToObject(je, "sliced", sliced);
            cJSON_AddNumberToObject(je, "change_percent", 100.0 * (sliced / dense - 1));
            cJSON_AddNumberToObject(je, "dense_tokens_per_s", rd.tokens / rd.seconds);
            cJSON_AddNumberToObject(je, "sliced_tokens_per_s", rs.tokens / rs.seconds);
        }
    }
    if (!err && a.tasks)
        err = run_tasks(o.backend, model, o.out_dir, tasks, n_tasks, a.tasks_limit, &progress,
                        json);
    if (!err) {
        int64_t host_peak = sg_json_report_host_peak();
        printf("memory: host peak %.1f MiB resident", host_peak / 1048576.0);
        if (rep.backend_peak)
            printf(", GPU peak %.1f MiB allocated", rep.backend_peak / 1048576.0);
        printf("\n");
        sg_json_report_memory(json, host_peak, rep.backend_peak);
        report_failed = sg_json_report_finish(json, a.report) != 0; /* it says why */
        json = NULL;
    }
    cJSON_Delete(json);
    sg_cli_tasks_free(tasks, n_tasks);
    sg_token_batch_free(&batch);
    sg_token_batch_free(&eval_batch);
    free(text);
    free(eval_text);
    sg_tokenizer_free(tok);
    sg_model_files_close(files);
    o.backend->ops->free(o.backend);
    return err ? sg_cli_report(err) : report_failed ? SG_EXIT_FAIL : SG_EXIT_OK;
}
