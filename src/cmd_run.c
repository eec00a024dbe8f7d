/* slicegpt-stream run: the main job. Slice a model with SliceGPT, write
 * it, and report dense and sliced perplexity, sizes and time per stage. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "evaluate.h"
#include "model_files.h"
#include "sg_error.h"
#include "slicer.h"
#include "text.h"

static const char usage[] =
    "usage: slicegpt-stream run --model PATH --calib FILE --out DIR [options]\n"
    "  --model PATH          Hugging Face directory or .gguf file\n"
    "  --calib FILE          calibration text (documents separated by blank lines)\n"
    "  --calib-tokens FILE   or pre-tokenized calibration: little-endian uint32 ids\n"
    "  --out DIR             where the sliced model is written (must not exist)\n"
    "  --sparsity S          fraction of the hidden dimension removed (default 0.25)\n"
    "  --nsamples N          calibration samples (default 128)\n"
    "  --seqlen N            tokens per sample (default 2048, capped at the context)\n"
    "  --seed N              calibration sampling seed (default 42)\n"
    "  --round-interval N    sliced width is a multiple of N (default 8)\n"
    "  --slice-head          also slice the last block's output and the head\n"
    "  --dtype f32|f16|bf16  dtype of the written weights (default f32)\n"
    "  --eval FILE           report dense and sliced perplexity on this text\n"
    "  --eval-seqlen N       evaluation window (default: --seqlen)\n"
    "  --eval-windows K      evaluate at most K windows (default: all)\n"
    "  --tokenizer FILE      tokenizer.json or llama2.c tokenizer.bin (default: the model's)\n"
    "  --random-rotation     control experiment: a random orthogonal Q instead of PCA\n"
    "  --host-mem SIZE       host memory budget, e.g. 8G (default: half of RAM); calibration\n"
    "                        activations beyond it spill to disk, zstd-compressed\n"
    "  --spill-dir DIR       where spilled activations go (default: $TMPDIR or /tmp)\n"
    "  --chunk-tokens N      calibration tokens per activation chunk (default 8192)\n"
    "  --device auto|cuda|cpu  where the forward, covariance, eigensolves and rotations\n"
    "                        run (default auto: the GPU when there is one)\n"
    "  --gpu-mem SIZE        cap on GPU memory, e.g. 24G (default: what the card has free)\n"
    "  --eigh auto|f64|mixed eigensolver: float64 dsyevd, or a float32 solve refined to\n"
    "                        float64 accuracy (default auto: mixed on a GPU, f64 on the CPU)\n"
    "  --cov auto|f64|mixed  covariance products: float64, or float32 slices of 1024 rows\n"
    "                        summed in float64 (default auto: mixed where the GPU's float64\n"
    "                        is under 1/8 of its float32, as on consumer cards)\n"
    "  --quiet               no per-block progress\n";

static int parse_dtype(const char *s, sg_dtype *dt)
{
    if (!strcmp(s, "f32"))
        *dt = SG_DT_F32;
    else if (!strcmp(s, "f16"))
        *dt = SG_DT_F16;
    else if (!strcmp(s, "bf16"))
        *dt = SG_DT_BF16;
    else {
        fprintf(stderr, "slicegpt-stream: --dtype: expected f32, f16 or bf16, got '%s'\n", s);
        return -1;
    }
    return 0;
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
    const char *model = NULL, *calib = NULL, *calib_tokens = NULL, *eval = NULL, *tok_path = NULL;
    int64_t nsamples = 128, seqlen = 2048, seed = 42, eval_seqlen = 0, eval_windows = 0;
    sg_slice_options o;
    sg_slice_options_default(&o);
    o.verbose = 1;
    static const struct option opts[] = {
        {"model", required_argument, 0, 'm'},       {"calib", required_argument, 0, 'c'},
        {"calib-tokens", required_argument, 0, 'C'}, {"out", required_argument, 0, 'o'},
        {"sparsity", required_argument, 0, 's'},    {"nsamples", required_argument, 0, 'n'},
        {"seqlen", required_argument, 0, 'L'},      {"seed", required_argument, 0, 'S'},
        {"round-interval", required_argument, 0, 'r'}, {"slice-head", no_argument, 0, 'H'},
        {"dtype", required_argument, 0, 'd'},       {"eval", required_argument, 0, 'e'},
        {"eval-seqlen", required_argument, 0, 'E'}, {"eval-windows", required_argument, 0, 'W'},
        {"tokenizer", required_argument, 0, 'k'},   {"random-rotation", no_argument, 0, 'R'},
        {"quiet", no_argument, 0, 'q'},             {"help", no_argument, 0, 'h'},
        {"host-mem", required_argument, 0, 'M'},    {"spill-dir", required_argument, 0, 'D'},
        {"chunk-tokens", required_argument, 0, 'T'}, {"device", required_argument, 0, 'G'},
        {"gpu-mem", required_argument, 0, 'g'},     {"eigh", required_argument, 0, 'i'},
        {"cov", required_argument, 0, 'V'},
        {0, 0, 0, 0}};
    const char *device = "auto", *eigh = "auto", *cov = "auto";
    int64_t gpu_mem = 0;
    int c, bad = 0;
    int64_t round_interval = 8;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'c': calib = optarg; break;
        case 'C': calib_tokens = optarg; break;
        case 'o': o.out_dir = optarg; break;
        case 's': bad |= sg_cli_double("--sparsity", optarg, 0, 0.9, &o.sparsity); break;
        case 'n': bad |= sg_cli_int("--nsamples", optarg, 1, 1 << 24, &nsamples); break;
        case 'L': bad |= sg_cli_int("--seqlen", optarg, 2, 1 << 20, &seqlen); break;
        case 'S': bad |= sg_cli_int("--seed", optarg, 0, INT64_MAX, &seed); break;
        case 'r': bad |= sg_cli_int("--round-interval", optarg, 1, 1 << 16, &round_interval); break;
        case 'H': o.slice_head = 1; break;
        case 'd': bad |= parse_dtype(optarg, &o.out_dtype); break;
        case 'e': eval = optarg; break;
        case 'E': bad |= sg_cli_int("--eval-seqlen", optarg, 2, 1 << 20, &eval_seqlen); break;
        case 'W': bad |= sg_cli_int("--eval-windows", optarg, 0, INT64_MAX, &eval_windows); break;
        case 'k': tok_path = optarg; break;
        case 'R': o.rotation = SG_ROTATION_RANDOM; break;
        case 'q': o.verbose = 0; break;
        case 'M': bad |= sg_cli_size("--host-mem", optarg, &o.host_mem_bytes); break;
        case 'D': o.spill_dir = optarg; break;
        case 'T': bad |= sg_cli_int("--chunk-tokens", optarg, 1, INT64_MAX, &o.chunk_tokens); break;
        case 'G': device = optarg; break;
        case 'g': bad |= sg_cli_size("--gpu-mem", optarg, &gpu_mem); break;
        case 'i': eigh = optarg; break;
        case 'V': cov = optarg; break;
        case 'h': fputs(usage, stdout); return SG_EXIT_OK;
        default: bad = 1;
        }
    }
    if (bad || !model || !o.out_dir || !calib == !calib_tokens) {
        if (!bad)
            fputs(usage, stderr);
        return SG_EXIT_USAGE;
    }
    o.round_interval = round_interval;
    o.seed = (uint64_t)seed;
    if (sg_cli_backend(device, gpu_mem, &o.backend) || sg_cli_eigh(eigh, o.backend, &o.eigh) ||
        sg_cli_cov(cov, o.backend, &o.cov_mixed)) {
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
               "tokens (%lld x %lld), on the %s backend, %s covariance, %s eigensolver\n",
               model, sg_arch_name(cfg->arch), (long long)cfg->dim, (long long)cfg->n_layers,
               o.sparsity, (long long)batch.offsets[batch.n_seq], (long long)batch.n_seq,
               (long long)seqlen, o.backend->ops->name, o.cov_mixed ? "mixed" : "float64",
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
