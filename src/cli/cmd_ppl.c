/* slicegpt-stream ppl: perplexity of a model (dense or sliced) on a text. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "json_report.h"
#include "slicegpt.h"

static const char usage[] =
    "usage: slicegpt-stream ppl --model PATH --text FILE|--tokens FILE [options]\n"
    "  --model PATH       Hugging Face directory (config.json + safetensors) or .gguf\n"
    "  --text FILE        UTF-8 text to score\n"
    "  --tokens FILE      or pre-tokenized ids to score (little-endian uint32), as another\n"
    "                     tool evaluated them: no tokenizer, nothing added\n"
    "  --tokens-layout stream|rows  one stream cut into windows of --seqlen (default), or\n"
    "                     rows of exactly --seqlen ids, each scored as one sequence\n"
    "  --tokenizer FILE   tokenizer.json or llama2.c tokenizer.bin (default: the model's)\n"
    "  --seqlen N         window length in tokens (default 2048, capped at the context)\n"
    "  --max-windows K    score at most K windows (default: all)\n"
    "  --per-line         score each non-empty line as BOS + line (llama2.c protocol)\n"
    "  --lines A:B        with --per-line: only non-empty lines A..B (1-based)\n"
    "  --device auto|cuda|cpu  where the blocks and the head run (default auto: the GPU\n"
    "                     when there is one)\n"
    "  --gpu-mem SIZE     cap on GPU memory, e.g. 24G (default: what the card has free)\n"
    "  --quiet            no progress on stderr (block i/N, tokens/s, ETA)\n"
    "  --report FILE.json also write every figure printed, as JSON (slicegpt-stream(1))\n"
    "\nexamples:\n"
    "  slicegpt-stream ppl --model out/smollm2-135m-sliced --text /usr/share/common-licenses/MPL-2.0 \\\n"
    "    --seqlen 512 --report sliced.json\n"
    "  slicegpt-stream ppl --model stories260K.bin --tokenizer tok512.bin --text valid.txt --per-line\n"
    "  slicegpt-stream ppl --model out/smollm2-135m-sliced --tokens wikitext2-test.u32 \\\n"
    "    --tokens-layout rows --seqlen 2048\n";

int sg_cmd_ppl(int argc, char **argv)
{
    const char *model = NULL, *text_path = NULL, *tok_path = NULL, *report = NULL;
    const char *tokens_path = NULL;
    int tokens_rows = 0, seqlen_given = 0;
    int64_t seqlen = 2048, max_windows = 0, first = 1, last = 0;
    int per_line = 0, quiet = 0;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},     {"text", required_argument, 0, 't'},
        {"tokenizer", required_argument, 0, 'k'}, {"seqlen", required_argument, 0, 's'},
        {"max-windows", required_argument, 0, 'w'}, {"per-line", no_argument, 0, 'p'},
        {"lines", required_argument, 0, 'l'},     {"help", no_argument, 0, 'h'},
        {"device", required_argument, 0, 'G'},    {"gpu-mem", required_argument, 0, 'g'},
        {"quiet", no_argument, 0, 'q'},           {"report", required_argument, 0, 'R'},
        {"tokens", required_argument, 0, 'T'},    {"tokens-layout", required_argument, 0, 'L'},
        {0, 0, 0, 0}};
    const char *device = "auto";
    int64_t gpu_mem = 0;
    int o;
    while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (o) {
        case 'm': model = optarg; break;
        case 't': text_path = optarg; break;
        case 'T': tokens_path = optarg; break;
        case 'L':
            if (strcmp(optarg, "stream") && strcmp(optarg, "rows")) {
                fprintf(stderr, "slicegpt-stream: --tokens-layout: expected stream or rows, got "
                                "'%s'\n", optarg);
                return SG_EXIT_USAGE;
            }
            tokens_rows = !strcmp(optarg, "rows");
            break;
        case 'k': tok_path = optarg; break;
        case 's':
            if (sg_cli_int("--seqlen", optarg, 2, 1 << 20, &seqlen))
                return SG_EXIT_USAGE;
            seqlen_given = 1;
            break;
        case 'w':
            if (sg_cli_int("--max-windows", optarg, 0, INT64_MAX, &max_windows))
                return SG_EXIT_USAGE;
            break;
        case 'p': per_line = 1; break;
        case 'q': quiet = 1; break;
        case 'R': report = optarg; break;
        case 'G': device = optarg; break;
        case 'g':
            if (sg_cli_size("--gpu-mem", optarg, &gpu_mem))
                return SG_EXIT_USAGE;
            break;
        case 'l':
            if (sscanf(optarg, "%lld:%lld", (long long *)&first, (long long *)&last) != 2 ||
                first < 1 || (last && last < first)) {
                fprintf(stderr, "slicegpt-stream: --lines: expected A:B, got '%s'\n", optarg);
                return SG_EXIT_USAGE;
            }
            break;
        case 'h': fputs(usage, stdout); return SG_EXIT_OK;
        default: fputs(usage, stderr); return SG_EXIT_USAGE;
        }
    }
    if (!model || !text_path == !tokens_path) {
        if (text_path && tokens_path)
            fputs("slicegpt-stream: give --text or --tokens, not both\n", stderr);
        fputs(usage, stderr);
        return SG_EXIT_USAGE;
    }
    if (tokens_path && per_line) {
        fputs("slicegpt-stream: --per-line scores lines of a text; with --tokens give "
              "--tokens-layout rows\n", stderr);
        return SG_EXIT_USAGE;
    }
    if (tokens_rows && !seqlen_given) {
        fputs("slicegpt-stream: --tokens-layout rows: give the row length, --seqlen N\n", stderr);
        return SG_EXIT_USAGE;
    }
    sg_backend *be;
    if (sg_cli_backend(device, gpu_mem, &be))
        return SG_EXIT_USAGE;
    sg_model_files *files = NULL;
    sg_tokenizer *tok = NULL;
    char *text = NULL;
    size_t len;
    sg_token_batch batch = {0};
    sg_eval_result r;
    int err = sg_model_files_open(model, &files);
    if (!err && text_path)
        err = sg_model_files_tokenizer(files, tok_path, &tok);
    if (!err && text_path)
        err = sg_text_read(text_path, &text, &len);
    if (!err && tokens_path) {
        /* the ids as given: rows must fit the context uncut */
        const sg_model_config *c = sg_model_files_config(files);
        if (tokens_rows && c->max_positions > 0 && seqlen > c->max_positions + 1)
            err = sg_fail(SG_EARG, "%s: rows of %lld ids do not fit the model's context of %lld "
                                   "(+1 for the last target)",
                          tokens_path, (long long)seqlen, (long long)c->max_positions);
        else if (!tokens_rows && c->max_positions > 0 && seqlen > c->max_positions + 1)
            seqlen = c->max_positions + 1;
        if (!err)
            err = tokens_rows ? sg_batch_token_rows(tokens_path, c->vocab_size, 0, seqlen, &batch)
                              : sg_batch_token_stream(tokens_path, c->vocab_size, seqlen,
                                                      max_windows, &batch);
        if (!err && tokens_rows && max_windows > 0 && batch.n_seq > max_windows)
            batch.n_seq = max_windows;
    } else if (!err) {
        const sg_model_config *c = sg_model_files_config(files);
        /* the last token of a window is only a target: it needs no position */
        if (c->max_positions > 0 && seqlen > c->max_positions + 1)
            seqlen = c->max_positions + 1;
        err = per_line ? sg_batch_lines(tok, text, len, seqlen, first, last, &batch)
                       : sg_batch_windows(tok, text, len, seqlen, max_windows, &batch);
    }
    sg_progress progress;
    sg_cli_progress(&progress, quiet);
    if (!err)
        err = sg_evaluate_progress(be, files, &batch, &progress, "perplexity", &r);
    int status = SG_EXIT_OK;
    if (!err) {
        printf("perplexity %.4f  mean NLL %.4f nats over %lld predicted tokens, %lld sequences; "
               "%.2f s (%.0f tokens/s, %s%s%s)\n",
               exp(r.nll / r.count), r.nll / r.count, (long long)r.count,
               (long long)batch.n_seq, r.seconds, r.tokens / r.seconds, be->ops->name,
               be->ops->host_memory ? ", OpenBLAS kernels " : "",
               be->ops->host_memory ? sg_blas_corename() : "");
        int64_t host_peak, gpu_peak;
        sg_cli_print_memory(be, &host_peak, &gpu_peak);
        cJSON *json = sg_json_report_new("ppl", argc, argv);
        sg_json_report_model(json, model, sg_model_files_config(files));
        cJSON *jo = cJSON_AddObjectToObject(json, "options");
        if (text_path)
            cJSON_AddStringToObject(jo, "text", text_path);
        else {
            cJSON_AddStringToObject(jo, "tokens", tokens_path);
            cJSON_AddStringToObject(jo, "tokens_layout", tokens_rows ? "rows" : "stream");
        }
        sg_json_int(jo, "seqlen", seqlen);
        sg_json_int(jo, "max_windows", max_windows);
        cJSON_AddBoolToObject(jo, "per_line", per_line);
        cJSON_AddStringToObject(jo, "backend", be->ops->name);
        cJSON *je = cJSON_AddObjectToObject(json, "perplexity");
        cJSON_AddNumberToObject(je, "perplexity", exp(r.nll / r.count));
        cJSON_AddNumberToObject(je, "mean_nll", r.nll / r.count);
        sg_json_int(je, "tokens", r.count);
        sg_json_int(je, "sequences", batch.n_seq);
        cJSON_AddNumberToObject(je, "seconds", r.seconds);
        cJSON_AddNumberToObject(je, "tokens_per_s", r.tokens / r.seconds);
        sg_json_report_memory(json, host_peak, gpu_peak);
        status = sg_json_report_finish(json, report);
    }
    sg_token_batch_free(&batch);
    free(text);
    sg_tokenizer_free(tok);
    sg_model_files_close(files);
    be->ops->free(be);
    return err ? sg_cli_report(err) : status;
}
