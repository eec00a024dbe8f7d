/* slicegpt-stream run: the main job. Slice a model with SliceGPT, write
 * it, and report dense and sliced perplexity, sizes and time per stage. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cli_options.h"
#include "slicegpt.h"

static const char usage[] =
    "usage: slicegpt-stream run --model PATH --calib FILE --out DIR [options]\n"
    "  --model PATH          Hugging Face directory or .gguf file\n"
    "  --out DIR             where the sliced model is written (must not exist)\n"
    SG_HELP_CALIB SG_HELP_PLAN SG_HELP_DTYPE
    "  --eval FILE           report dense and sliced perplexity on this text\n"
    "  --eval-seqlen N       evaluation window (default: --seqlen)\n"
    "  --eval-windows K      evaluate at most K windows (default: all)\n"
    SG_HELP_TOKENIZER
    "  --host-mem SIZE       host memory budget, e.g. 8G (default: half of RAM); calibration\n"
    "                        activations beyond it spill to disk, zstd-compressed\n"
    "  --spill-dir DIR       where spilled activations go (default: $TMPDIR or /tmp)\n"
    "  --device auto|cuda|cpu  where the forward, covariance, eigensolves and rotations\n"
    "                        run (default auto: the GPU when there is one)\n"
    "  --gpu-mem SIZE        cap on GPU memory, e.g. 24G (default: what the card has free)\n"
    SG_HELP_AXES SG_HELP_COV
    "  --quiet               no per-block progress\n";

typedef struct {
    const char *model, *out, *eval;
    int64_t eval_seqlen, eval_windows;
    int quiet;
} run_args;

static int run_option(void *ctx, int c, const char *arg)
{
    run_args *a = ctx;
    switch (c) {
    case 'm': a->model = arg; return 0;
    case 'o': a->out = arg; return 0;
    case 'e': a->eval = arg; return 0;
    case 'E': return sg_cli_int("--eval-seqlen", arg, 2, 1 << 20, &a->eval_seqlen);
    case 'W': return sg_cli_int("--eval-windows", arg, 0, INT64_MAX, &a->eval_windows);
    case 'q': a->quiet = 1; return 0;
    }
    return -1;
}

static int eval_ppl(sg_backend *be, const char *model, const sg_tokenizer *tok, const char *text,
                    size_t len, int64_t seqlen, int64_t windows, double *ppl, sg_eval_result *r)
{
    sg_model_files *files;
    sg_token_batch batch;
    int err = sg_model_files_open(model, &files);
    if (err)
        return err;
    err = sg_batch_windows(tok, text, len, seqlen, windows, &batch);
    if (!err) {
        err = sg_evaluate_on(be, files, &batch, r);
        sg_token_batch_free(&batch);
    }
    sg_model_files_close(files);
    if (!err)
        *ppl = exp(r->nll / r->count);
    return err;
}

int sg_cmd_run(int argc, char **argv)
{
    static const struct option own[] = {
        {"model", required_argument, 0, 'm'},       {"out", required_argument, 0, 'o'},
        {"eval", required_argument, 0, 'e'},        {"eval-seqlen", required_argument, 0, 'E'},
        {"eval-windows", required_argument, 0, 'W'}, {"quiet", no_argument, 0, 'q'},
        {0, 0, 0, 0}};
    run_args a = {0};
    sg_cli_job j;
    sg_cli_job_default(&j);
    int r = sg_cli_parse(argc, argv,
                         SG_OPT_CALIB | SG_OPT_PLAN | SG_OPT_AXES | SG_OPT_COV | SG_OPT_DTYPE |
                             SG_OPT_TOKENIZER | SG_OPT_DEVICE,
                         own, run_option, &a, usage, &j);
    if (r)
        return r == SG_CLI_HELP ? SG_EXIT_OK : SG_EXIT_USAGE;
    if (optind != argc || !a.model || !a.out || !j.calib == !j.calib_tokens) {
        fputs(usage, stderr);
        return SG_EXIT_USAGE;
    }
    const char *model = a.model, *calib = j.calib, *calib_tokens = j.calib_tokens;
    const char *eval = a.eval, *tok_path = j.tokenizer;
    int64_t nsamples = j.nsamples, seqlen = j.seqlen, seed = j.seed;
    int64_t eval_seqlen = a.eval_seqlen, eval_windows = a.eval_windows;
    sg_slice_options o;
    sg_slice_options_default(&o);
    o.verbose = !a.quiet;
    o.out_dir = a.out;
    o.sparsity = j.sparsity;
    o.round_interval = j.round_interval;
    o.slice_head = j.slice_head;
    o.out_dtype = j.dtype;
    o.rotation = j.rotation;
    o.seed = (uint64_t)j.seed;
    o.damp_frac = j.damp_frac;
    o.host_mem_bytes = j.host_mem;
    o.spill_dir = j.spill_dir;
    o.chunk_tokens = j.chunk_tokens;
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
    double t0 = sg_now();
    int err = sg_model_files_open(model, &files);
    if (!err && strcmp(sg_model_files_io_backend(files), "io_uring"))
        fprintf(stderr, "slicegpt-stream: notice: reading with %s\n",
                sg_model_files_io_backend(files));
    /* pre-tokenized calibration without evaluation needs no tokenizer; the
     * sliced model then carries the model's own, if it has one */
    if (!err) {
        err = sg_model_files_tokenizer(files, tok_path, &tok);
        if (err && calib_tokens && !eval && !tok_path) {
            fprintf(stderr, "slicegpt-stream: notice: no tokenizer (%s); the sliced model will "
                            "have none\n", sg_last_error());
            err = 0;
        }
    }
    const sg_model_config *cfg = err ? NULL : sg_model_files_config(files);
    if (!err && cfg->max_positions > 0 && seqlen > cfg->max_positions)
        seqlen = cfg->max_positions;
    if (!err && calib) {
        err = sg_text_read(calib, &text, &len);
        if (!err)
            err = sg_batch_calibration(tok, text, len, nsamples, seqlen, (uint64_t)seed, &batch);
    } else if (!err) {
        err = sg_batch_pretokenized(calib_tokens, cfg->vocab_size, nsamples, seqlen,
                                    (uint64_t)seed, &batch);
    }
    if (!err && eval)
        err = sg_text_read(eval, &eval_text, &eval_len);
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
        printf("slicing %s (%s, D = %lld, %lld layers) at sparsity %.2f on %lld calibration "
               "tokens (%lld x %lld), on the %s backend%s%s%s, %s covariance, %s eigensolver\n",
               model, sg_arch_name(cfg->arch), (long long)cfg->dim, (long long)cfg->n_layers,
               o.sparsity, (long long)batch.offsets[batch.n_seq], (long long)batch.n_seq,
               (long long)seqlen, o.backend->ops->name,
               o.backend->ops->host_memory ? " (OpenBLAS kernels " : "",
               o.backend->ops->host_memory ? sg_blas_corename() : "",
               o.backend->ops->host_memory ? ")" : "", o.cov_mixed ? "mixed" : "float64",
               o.eigh == SG_EIGH_F64 ? "float64" : "mixed-precision");
        fflush(stdout);
        err = sg_slice(files, &batch, &o, &rep);
    }
    if (!err) {
        printf("sliced width d = %lld of D = %lld; written to %s\n", (long long)rep.d,
               (long long)cfg->dim, o.out_dir);
        printf("parameters: dense %lld, sliced %lld (%.1f%% of dense), stored with shortcuts "
               "and untied head %lld (%.1f%%)\n",
               (long long)rep.params_dense, (long long)rep.params_sliced,
               100.0 * rep.params_sliced / rep.params_dense, (long long)rep.params_stored,
               100.0 * rep.params_stored / rep.params_dense);
        printf("activations: %lld chunks, store budget %.1f MiB, peak resident %.1f MiB, "
               "spilled %.1f MiB as %.1f MiB zstd\n",
               (long long)rep.chunks, rep.store_budget / 1048576.0, rep.store_peak / 1048576.0,
               rep.spilled_raw / 1048576.0, rep.spilled_compressed / 1048576.0);
        if (rep.backend_peak)
            printf("GPU memory: peak %.1f MiB allocated\n", rep.backend_peak / 1048576.0);
        printf("time per stage:");
        for (int i = 0; i < SG_N_STAGES; i++)
            printf(" %s %.2fs", sg_stage_names[i], rep.seconds[i]);
        printf("; total %.2fs\n", sg_now() - t0);
    }
    if (!err && eval) {
        double dense, sliced;
        sg_eval_result rd, rs;
        int64_t es = eval_seqlen ? eval_seqlen : seqlen;
        err = eval_ppl(o.backend, model, tok, eval_text, eval_len, es, eval_windows, &dense, &rd);
        if (!err)
            err = eval_ppl(o.backend, o.out_dir, tok, eval_text, eval_len, es, eval_windows,
                           &sliced, &rs);
        if (!err)
            printf("perplexity on %s (%lld tokens, windows of %lld): dense %.4f, sliced %.4f "
                   "(%+.2f%%); eval %.0f / %.0f tokens/s\n",
                   eval, (long long)rd.count, (long long)es, dense, sliced,
                   100.0 * (sliced / dense - 1), rd.tokens / rd.seconds, rs.tokens / rs.seconds);
    }
    sg_token_batch_free(&batch);
    free(text);
    free(eval_text);
    sg_tokenizer_free(tok);
    sg_model_files_close(files);
    o.backend->ops->free(o.backend);
    return err ? sg_cli_report(err) : SG_EXIT_OK;
}
