#include "cli_options.h"

#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"

void sg_cli_job_default(sg_cli_job *j)
{
    /* the method's defaults are the library's (sg_slice_options_default) */
    sg_slice_options o;
    sg_slice_options_default(&o);
    memset(j, 0, sizeof *j);
    j->nsamples = 128;
    j->seqlen = 2048;
    j->seed = (int64_t)o.seed;
    j->plan = o.plan;
    j->rotation = o.rotation;
    j->damp_frac = o.damp_frac;
    j->eigh = "auto";
    j->cov = "auto";
    j->dtype = o.out_dtype;
    j->device = "auto";
}

void sg_cli_method_default(sg_cli_job *j)
{
    if (!j->method_given)
        j->plan.method = j->rotation_asked ? SG_METHOD_REFERENCE : SG_METHOD_NYSTROM;
}

/* The shared options; vals from 256 up, so they never meet a command's own. */
enum {
    O_CALIB = 256, O_CALIB_TOKENS, O_CALIB_LAYOUT, O_METHOD, O_SHARED_BASIS, O_NSAMPLES, O_SEQLEN, O_SEED, O_CHUNK_TOKENS, O_SPILL_DIR,
    O_SPARSITY, O_TARGET_SIZE, O_ROUND, O_SLICE_HEAD, O_EMBEDDINGS, O_RANDOM, O_ROTATION, O_DAMP, O_EIGH, O_COV, O_DTYPE, O_TOKENIZER,
    O_ZSTD, O_DEVICE, O_GPU_MEM, O_HOST_MEM, O_QUIET, O_HELP
};

static const struct {
    unsigned groups;
    struct option opt;
} shared[] = {
    {SG_OPT_CALIB, {"calib", required_argument, 0, O_CALIB}},
    {SG_OPT_CALIB, {"calib-tokens", required_argument, 0, O_CALIB_TOKENS}},
    {SG_OPT_CALIB, {"calib-layout", required_argument, 0, O_CALIB_LAYOUT}},
    {SG_OPT_CALIB, {"nsamples", required_argument, 0, O_NSAMPLES}},
    {SG_OPT_CALIB, {"seqlen", required_argument, 0, O_SEQLEN}},
    {SG_OPT_CALIB | SG_OPT_AXES, {"seed", required_argument, 0, O_SEED}},
    {SG_OPT_CALIB, {"chunk-tokens", required_argument, 0, O_CHUNK_TOKENS}},
    {SG_OPT_CALIB, {"spill-dir", required_argument, 0, O_SPILL_DIR}},
    {SG_OPT_PLAN, {"sparsity", required_argument, 0, O_SPARSITY}},
    {SG_OPT_PLAN, {"target-size", required_argument, 0, O_TARGET_SIZE}},
    {SG_OPT_PLAN, {"round-interval", required_argument, 0, O_ROUND}},
    {SG_OPT_PLAN, {"slice-head", no_argument, 0, O_SLICE_HEAD}},
    {SG_OPT_PLAN, {"embeddings", required_argument, 0, O_EMBEDDINGS}},
    {SG_OPT_PLAN, {"method", required_argument, 0, O_METHOD}},
    {SG_OPT_PLAN, {"shared-basis", no_argument, 0, O_SHARED_BASIS}},
    {SG_OPT_AXES, {"random-rotation", no_argument, 0, O_RANDOM}},
    {SG_OPT_AXES, {"rotation", required_argument, 0, O_ROTATION}},
    {SG_OPT_AXES, {"damp", required_argument, 0, O_DAMP}},
    {SG_OPT_AXES, {"eigh", required_argument, 0, O_EIGH}},
    {SG_OPT_COV, {"cov", required_argument, 0, O_COV}},
    {SG_OPT_DTYPE, {"dtype", required_argument, 0, O_DTYPE}},
    {SG_OPT_TOKENIZER, {"tokenizer", required_argument, 0, O_TOKENIZER}},
    {SG_OPT_ZSTD, {"zstd", required_argument, 0, O_ZSTD}},
    {SG_OPT_DEVICE, {"device", required_argument, 0, O_DEVICE}},
    {SG_OPT_DEVICE, {"gpu-mem", required_argument, 0, O_GPU_MEM}},
    {SG_OPT_DEVICE, {"host-mem", required_argument, 0, O_HOST_MEM}},
    {SG_OPT_QUIET, {"quiet", no_argument, 0, O_QUIET}},
};
#define N_SHARED (sizeof shared / sizeof shared[0])

static int one_of(const char *opt, const char *arg, const char *const *names, int n)
{
    for (int i = 0; i < n; i++)
        if (!strcmp(arg, names[i]))
            return i;
    fprintf(stderr, "slicegpt-stream: %s: expected ", opt);
    for (int i = 0; i < n; i++)
        fprintf(stderr, "%s%s", names[i], i + 2 < n ? ", " : i + 1 < n ? " or " : "");
    fprintf(stderr, ", got '%s'\n", arg);
    return -1;
}

static int shared_option(sg_cli_job *j, int c, const char *arg)
{
    static const char *const modes[] = {"auto", "f64", "mixed"};
    static const char *const dtypes[] = {"f32", "f16", "bf16"};
    /* in sg_embed_mode order */
    static const char *const embed_modes[] = {"auto", "keep", "slice"};
    static const sg_dtype dtype_of[] = {SG_DT_F32, SG_DT_F16, SG_DT_BF16};
    int64_t v;
    int i;
    switch (c) {
    case O_CALIB: j->calib = arg; return 0;
    case O_CALIB_TOKENS: j->calib_tokens = arg; return 0;
    case O_CALIB_LAYOUT: {
        static const char *const layouts[] = {"random", "rows"};
        if ((i = one_of("--calib-layout", arg, layouts, 2)) < 0)
            return -1;
        j->calib_rows = i;
        return 0;
    }
    case O_NSAMPLES: return sg_cli_int("--nsamples", arg, 1, 1 << 24, &j->nsamples);
    case O_SEQLEN: return sg_cli_int("--seqlen", arg, 2, 1 << 20, &j->seqlen);
    case O_SEED: return sg_cli_int("--seed", arg, 0, INT64_MAX, &j->seed);
    case O_CHUNK_TOKENS: return sg_cli_int("--chunk-tokens", arg, 1, INT64_MAX, &j->chunk_tokens);
    case O_SPILL_DIR: {
        /* a directory made for us would be left behind after the run:
         * the user makes it, or picks one that exists */
        struct stat sb;
        if (stat(arg, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
            fprintf(stderr, "slicegpt-stream: --spill-dir %s: %s\n", arg,
                    stat(arg, &sb) != 0 ? "no such directory (create it first)"
                                        : "not a directory");
            return -1;
        }
        j->spill_dir = arg;
        return 0;
    }
    case O_SPARSITY: return sg_cli_double("--sparsity", arg, 0, 0.9, &j->plan.sparsity);
    case O_TARGET_SIZE:
        if (sg_cli_double("--target-size", arg, 0, 1, &j->plan.target_size))
            return -1;
        if (j->plan.target_size > 0 && j->plan.target_size < 1)
            return 0;
        fprintf(stderr, "slicegpt-stream: --target-size: expected a fraction 0 < F < 1, got '%s'\n",
                arg);
        return -1;
    case O_ROUND: return sg_cli_int("--round-interval", arg, 1, 1 << 16, &j->plan.round_interval);
    case O_SLICE_HEAD: j->plan.slice_head = j->rotation_asked = 1; return 0;
    case O_SHARED_BASIS: j->plan.shared_basis = j->rotation_asked = 1; return 0;
    case O_EMBEDDINGS:
        if ((i = one_of("--embeddings", arg, embed_modes, 3)) < 0)
            return -1;
        j->plan.embeddings = (sg_embed_mode)i;
        j->rotation_asked = 1;
        return 0;
    case O_METHOD: {
        /* in sg_width_method order */
        static const char *const methods[] = {"reference", "spectrum", "fill", "nystrom"};
        if ((i = one_of("--method", arg, methods, 4)) < 0)
            return -1;
        j->plan.method = (sg_width_method)i;
        j->method_given = 1;
        return 0;
    }
    case O_RANDOM: j->rotation = SG_ROTATION_RANDOM; j->rotation_asked = 1; return 0;
    case O_ROTATION: {
        /* in sg_rotation_kind order */
        static const char *const kinds[] = {"pca", "random", "uniform"};
        if ((i = one_of("--rotation", arg, kinds, 3)) < 0)
            return -1;
        j->rotation = (sg_rotation_kind)i;
        j->plan.uniform = j->rotation == SG_ROTATION_UNIFORM;
        j->rotation_asked = 1;
        return 0;
    }
    /* the eigensolve's damping and precision and the covariance's: a
     * rotation's only, as above */
    case O_DAMP:
        j->rotation_asked = 1;
        return sg_cli_double("--damp", arg, 0, 1e6, &j->damp_frac);
    case O_EIGH:
        if ((i = one_of("--eigh", arg, modes, 3)) < 0)
            return -1;
        j->eigh = modes[i];
        j->rotation_asked = 1;
        return 0;
    case O_COV:
        if ((i = one_of("--cov", arg, modes, 3)) < 0)
            return -1;
        j->cov = modes[i];
        j->rotation_asked = 1;
        return 0;
    case O_DTYPE:
        if ((i = one_of("--dtype", arg, dtypes, 3)) < 0)
            return -1;
        j->dtype = dtype_of[i];
        return 0;
    case O_TOKENIZER: j->tokenizer = arg; return 0;
    case O_ZSTD:
        if (sg_cli_int("--zstd", arg, 0, 19, &v))
            return -1;
        j->zstd = (int)v;
        return 0;
    case O_DEVICE: j->device = arg; return 0;
    case O_GPU_MEM: return sg_cli_size("--gpu-mem", arg, &j->gpu_mem);
    case O_HOST_MEM:
        if (sg_cli_size("--host-mem", arg, &j->host_mem))
            return -1;
        /* 0 used to mean the default silently: say so instead */
        if (j->host_mem == 0) {
            fputs("slicegpt-stream: --host-mem: must be above 0 (leave it out for half of "
                  "RAM)\n", stderr);
            return -1;
        }
        return 0;
    case O_QUIET: j->quiet = 1; return 0;
    }
    return -1;
}

int sg_cli_calib_check(const sg_cli_job *j)
{
    if (sg_cli_one_calib(j->calib, j->calib_tokens))
        return -1;
    if (j->calib_rows && !j->calib_tokens) {
        fputs("slicegpt-stream: --calib-layout rows: the rows are pre-tokenized ids; give them "
              "with --calib-tokens FILE\n", stderr);
        return -1;
    }
    return 0;
}

int sg_cli_calib_tokens(const sg_cli_job *j, int64_t vocab_size, int64_t max_positions,
                        sg_token_batch *out)
{
    if (!j->calib_rows) {
        int64_t seqlen = max_positions > 0 && j->seqlen > max_positions ? max_positions : j->seqlen;
        return sg_batch_pretokenized(j->calib_tokens, vocab_size, j->nsamples, seqlen,
                                     (uint64_t)j->seed, out);
    }
    if (max_positions > 0 && j->seqlen > max_positions)
        return sg_fail(SG_EARG, "%s: --calib-layout rows: rows of --seqlen %lld do not fit the "
                                "model's context of %lld (they would be cut); give rows of at "
                                "most %lld",
                       j->calib_tokens, (long long)j->seqlen, (long long)max_positions,
                       (long long)max_positions);
    return sg_batch_token_rows(j->calib_tokens, vocab_size, j->nsamples, j->seqlen, out);
}

int sg_cli_parse(int argc, char **argv, unsigned groups, const struct option *own,
                 sg_cli_own_fn own_fn, void *ctx, const char *usage, sg_cli_job *job)
{
    struct option table[N_SHARED + 64];
    int n = 0;
    for (size_t i = 0; i < N_SHARED; i++)
        if (shared[i].groups & groups)
            table[n++] = shared[i].opt;
    for (int i = 0; own && own[i].name && n < (int)N_SHARED + 62; i++)
        table[n++] = own[i];
    table[n++] = (struct option){"help", no_argument, 0, O_HELP};
    table[n] = (struct option){0, 0, 0, 0};
    int c, bad = 0, unknown = 0;
    while ((c = getopt_long(argc, argv, "", table, NULL)) != -1) {
        if (c == O_HELP) {
            fputs(usage, stdout);
            return SG_CLI_HELP;
        }
        if (c == '?' || c == ':')
            unknown = bad = 1;
        else if (c >= O_CALIB)
            bad |= shared_option(job, c, optarg) != 0;
        else
            bad |= own_fn(ctx, c, optarg) != 0;
    }
    if (unknown)
        fputs(usage, stderr);
    return bad ? SG_CLI_BAD : 0;
}
