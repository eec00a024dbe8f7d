/* slicegpt-stream tasks: zero-shot accuracy of a model (dense or sliced) on
 * multiple-choice tasks, the requests scored block by block. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_options.h"
#include "json_report.h"
#include "slicegpt.h"
#include "task_table.h"

static const char usage[] =
    "usage: slicegpt-stream tasks --model PATH --tasks LIST [options]\n"
    "  --model PATH          Hugging Face directory (dense or sliced) or .gguf file\n"
    "  --tasks LIST          comma-separated: piqa, winogrande, hellaswag, arc_easy,\n"
    "                        arc_challenge (from the cache tools/fetch-tasks.sh fills), or\n"
    "                        paths of .jsonl(.gz) request files (slicegpt-stream(1), TASKS)\n"
    "  --limit N             the first N documents of each task (default: all)\n"
    "  --batch-tokens N      tokens per forward batch, whole documents (default 32768);\n"
    "                        each batch streams through the model one block at a time\n"
    "  --no-prefix-sharing   run each choice as its own sequence (on the CPU the tokens a\n"
    "                        document's choices share run once by default)\n"
    SG_HELP_TOKENIZER
    "  --device auto|cuda|cpu  where the blocks and the head run (default auto)\n"
    "  --gpu-mem SIZE        cap on GPU memory, e.g. 24G (default: what the card has free)\n"
    "  --json FILE.json      also write every figure printed, as JSON (also --report)\n"
    SG_HELP_QUIET
    "\nexamples:\n"
    "  tools/fetch-tasks.sh\n"
    "  slicegpt-stream tasks --model ~/.cache/slicegpt-stream/SmolLM2-135M-Instruct.Q4_1.gguf \\\n"
    "    --tasks piqa,winogrande,hellaswag,arc_easy,arc_challenge --limit 200\n"
    "  slicegpt-stream tasks --model out/smollm2-135m-sliced --tasks my-task.jsonl --json acc.json\n";

typedef struct {
    const char *model, *tasks, *json, *device;
    int64_t limit, batch_tokens, gpu_mem;
    int share_prefix;
} tasks_args;

static int tasks_option(void *ctx, int c, const char *arg)
{
    tasks_args *a = ctx;
    switch (c) {
    case 'm': a->model = arg; return 0;
    case 't': a->tasks = arg; return 0;
    case 'j': a->json = arg; return 0;
    case 'd': a->device = arg; return 0;
    case 'l': return sg_cli_int("--limit", arg, 1, INT64_MAX, &a->limit);
    case 'b': return sg_cli_int("--batch-tokens", arg, 1, INT64_MAX / 8, &a->batch_tokens);
    case 'g': return sg_cli_size("--gpu-mem", arg, &a->gpu_mem);
    case 'P': a->share_prefix = 0; return 0;
    }
    return -1;
}

int sg_cmd_tasks(int argc, char **argv)
{
    static const struct option own[] = {
        {"model", required_argument, 0, 'm'},  {"tasks", required_argument, 0, 't'},
        {"limit", required_argument, 0, 'l'},  {"batch-tokens", required_argument, 0, 'b'},
        {"json", required_argument, 0, 'j'},   {"report", required_argument, 0, 'j'},
        {"device", required_argument, 0, 'd'}, {"gpu-mem", required_argument, 0, 'g'},
        {"no-prefix-sharing", no_argument, 0, 'P'}, {0, 0, 0, 0}};
    tasks_args a = {.device = "auto", .batch_tokens = SG_TASKS_BATCH_TOKENS, .share_prefix = 1};
    sg_cli_job j;
    sg_cli_job_default(&j);
    int r = sg_cli_parse(argc, argv, SG_OPT_TOKENIZER | SG_OPT_QUIET, own, tasks_option, &a,
                         usage, &j);
    if (r)
        return r == SG_CLI_HELP ? SG_EXIT_OK : SG_EXIT_USAGE;
    if (optind != argc || !a.model || !a.tasks) {
        fputs(usage, stderr);
        return SG_EXIT_USAGE;
    }
    sg_backend *be;
    if (sg_cli_backend(a.device, a.gpu_mem, &be))
        return SG_EXIT_USAGE;
    sg_model_files *files = NULL;
    sg_tokenizer *tok = NULL;
    sg_task *tasks = NULL;
    int n = 0;
    int err = sg_model_files_open(a.model, &files);
    err = err ? err : sg_model_files_tokenizer(files, j.tokenizer, &tok);
    const sg_model_config *cfg = err ? NULL : sg_model_files_config(files);
    err = err ? err : sg_cli_tasks_load(a.tasks, a.limit, tok, cfg->max_positions, &tasks, &n);
    sg_progress progress;
    sg_cli_progress(&progress, j.quiet);
    sg_eval_result res;
    int64_t n_req = 0;
    err = err ? err
              : sg_tasks_loglik(be, files, tasks, n, a.batch_tokens, a.share_prefix, &progress,
                                "tasks", &res, &n_req);
    int status = SG_EXIT_OK;
    if (!err) {
        sg_task_score *scores = calloc(n, sizeof *scores);
        double avg, avg_norm;
        sg_cli_tasks_score(tasks, n, scores, &avg, &avg_norm);
        printf("zero-shot accuracy of %s (%s, D = %lld, %lld layers)", a.model,
               sg_arch_name(cfg->arch), (long long)cfg->dim, (long long)cfg->n_layers);
        if (a.limit)
            printf(", at most %lld documents per task", (long long)a.limit);
        printf("\n");
        sg_cli_tasks_print(tasks, n, scores);
        int64_t unshared_pos, shared_pos;
        sg_tasks_prefix_sharing(tasks, n, &unshared_pos, &shared_pos);
        printf("scored %lld requests (%lld continuation tokens, %lld positions run) in %.2f s: "
               "%.1f requests/s, %.0f tokens/s, %s%s%s; ",
               (long long)n_req, (long long)res.count, (long long)res.tokens, res.seconds,
               n_req / res.seconds, res.tokens / res.seconds, be->ops->name,
               be->ops->host_memory ? ", OpenBLAS kernels " : "",
               be->ops->host_memory ? sg_blas_corename() : "");
        if (res.tokens < unshared_pos)
            printf("shared prefixes ran once: %lld positions instead of %lld (%.1f%% fewer)\n",
                   (long long)res.tokens, (long long)unshared_pos,
                   100.0 * (unshared_pos - res.tokens) / unshared_pos);
        else
            printf("each choice its own sequence (sharing prefixes would run %lld positions, "
                   "%.1f%% fewer)\n", (long long)shared_pos,
                   unshared_pos ? 100.0 * (unshared_pos - shared_pos) / unshared_pos : 0.0);
        int64_t host_peak, gpu_peak;
        sg_cli_print_memory(be, &host_peak, &gpu_peak);
        cJSON *json = sg_json_report_new("tasks", argc, argv);
        sg_json_report_model(json, a.model, cfg);
        cJSON *jo = cJSON_AddObjectToObject(json, "options");
        cJSON_AddStringToObject(jo, "tasks", a.tasks);
        sg_json_int(jo, "limit", a.limit);
        sg_json_int(jo, "batch_tokens", a.batch_tokens);
        cJSON_AddStringToObject(jo, "backend", be->ops->name);
        sg_cli_tasks_json(json, "tasks", tasks, n, scores);
        cJSON *js = cJSON_AddObjectToObject(json, "speed");
        sg_json_int(js, "requests", n_req);
        sg_json_int(js, "continuation_tokens", res.count);
        sg_json_int(js, "positions", res.tokens);
        sg_json_int(js, "positions_unshared", unshared_pos);
        sg_json_int(js, "positions_shared", shared_pos);
        cJSON_AddNumberToObject(js, "seconds", res.seconds);
        cJSON_AddNumberToObject(js, "requests_per_s", n_req / res.seconds);
        cJSON_AddNumberToObject(js, "tokens_per_s", res.tokens / res.seconds);
        sg_json_report_memory(json, host_peak, gpu_peak);
        status = sg_json_report_finish(json, a.json);
        free(scores);
    }
    sg_cli_tasks_free(tasks, n);
    sg_tokenizer_free(tok);
    sg_model_files_close(files);
    be->ops->free(be);
    return err ? sg_cli_report(err) : status;
}
