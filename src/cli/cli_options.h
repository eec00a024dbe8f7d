/* The options `run` and the stage filters share: one struct, one meaning,
 * one parser. Each command takes the groups it needs (a filter the ones of
 * its stage, `run` all of them) plus options of its own; an option means
 * the same wherever it is taken, so `run --damp 0.02` and `eig --damp
 * 0.02` compute the same rotations. */
#ifndef SG_CLI_OPTIONS_H
#define SG_CLI_OPTIONS_H

#include <getopt.h>
#include <stdint.h>

#include "slicegpt.h"

enum {
    SG_OPT_CALIB = 1 << 0,     /* --calib --calib-tokens --calib-layout --nsamples --seqlen
                                  --seed --chunk-tokens --spill-dir */
    SG_OPT_PLAN = 1 << 1,      /* --sparsity --target-size --round-interval --slice-head
                                  --embeddings --method --shared-basis */
    SG_OPT_AXES = 1 << 2,      /* --rotation --random-rotation --seed --damp --eigh */
    SG_OPT_COV = 1 << 3,       /* --cov */
    SG_OPT_DTYPE = 1 << 4,     /* --dtype */
    SG_OPT_TOKENIZER = 1 << 5, /* --tokenizer */
    SG_OPT_ZSTD = 1 << 6,      /* --zstd */
    SG_OPT_DEVICE = 1 << 7,    /* --device --gpu-mem --host-mem */
    SG_OPT_QUIET = 1 << 8,     /* --quiet: no progress on stderr */
};

typedef struct {
    /* calibration */
    const char *calib, *calib_tokens;
    int calib_rows;            /* --calib-layout rows: the file is the sequences, in order */
    int64_t nsamples, seqlen, seed, chunk_tokens;
    const char *spill_dir;
    /* the widths */
    sg_plan_options plan;
    int method_given;          /* --method was on the command line */
    int rotation_asked;        /* an option only a rotation has: --rotation, --random-rotation,
                                  --shared-basis, --slice-head, --embeddings, --damp,
                                  --eigh, --cov */
    /* the axes and covariances */
    sg_rotation_kind rotation;
    double damp_frac;
    const char *eigh, *cov; /* "auto", "f64", "mixed": sg_cli_eigh, sg_cli_cov */
    /* output and transport */
    sg_dtype dtype;
    const char *tokenizer;
    int zstd;
    /* where */
    const char *device;
    int64_t gpu_mem, host_mem;
    /* what a person sees */
    int quiet;
} sg_cli_job;

void sg_cli_job_default(sg_cli_job *job);

/* `run` and `plan` without --method: nystrom, which wins at equal stored
 * size on every bundled model (bench/quality.sh), unless an option only
 * a rotation has asks for the published method: then reference. The
 * stage filters slice with reference, the one method they have. */
void sg_cli_method_default(sg_cli_job *job);

/* --calib or --calib-tokens, one of them, and --calib-layout rows only with
 * --calib-tokens: 0, or -1 after a message. */
int sg_cli_calib_check(const sg_cli_job *job);

/* The pre-tokenized calibration of a job (--calib-tokens): seeded random
 * windows of seqlen (default), or with --calib-layout rows the file's rows
 * as they are, which must then be exactly --nsamples x --seqlen ids and
 * fit the context (max_positions, 0: no limit) uncut. */
int sg_cli_calib_tokens(const sg_cli_job *job, int64_t vocab_size, int64_t max_positions,
                        sg_token_batch *out);

/* A command's own option c (its val in `own`) with its argument: 0, or
 * -1 after printing why. */
typedef int (*sg_cli_own_fn)(void *ctx, int c, const char *arg);

/* getopt_long over argv with the shared options of `groups`, the
 * command's own options (own, may be NULL; vals below 256) handled by
 * own_fn, and --help. Returns 0 when parsed (optind: the first operand),
 * SG_CLI_HELP when --help printed usage on stdout, SG_CLI_BAD after a
 * message (an unknown option also prints usage on stderr). */
enum { SG_CLI_HELP = 1, SG_CLI_BAD = 2 };
int sg_cli_parse(int argc, char **argv, unsigned groups, const struct option *own,
                 sg_cli_own_fn own_fn, void *ctx, const char *usage, sg_cli_job *job);

/* The usage lines of the shared options, for usage texts. */
#define SG_HELP_CALIB                                                                         \
    "  --calib FILE          calibration text (documents separated by blank lines)\n"        \
    "  --calib-tokens FILE   or pre-tokenized calibration: little-endian uint32 ids\n"       \
    "  --calib-layout random|rows  --calib-tokens as one stream, --nsamples windows drawn\n"  \
    "                        at seeded random offsets (default), or exactly --nsamples x\n" \
    "                        --seqlen ids taken as the sequences, in order (to reproduce\n"  \
    "                        another tool's calibration)\n"                                  \
    "  --nsamples N          calibration samples (default 128)\n"                            \
    "  --seqlen N            tokens per sample (default 2048, capped at the context)\n"      \
    "  --seed N              calibration sampling seed (default 42)\n"                       \
    "  --chunk-tokens N      calibration tokens per activation chunk (default 8192)\n"
#define SG_HELP_PLAN                                                                          \
    "  --sparsity S          fraction of the hidden dimension SliceGPT removes (default\n"  \
    "                        0.25); nystrom stores what SliceGPT stores at S\n"             \
    "  --target-size F       instead: the widest width whose stored parameters (shortcuts\n"  \
    "                        and heads included) are at most F x the dense model's\n"        \
    "  --method nystrom|reference|spectrum|fill  what is cut: nystrom (run's default),\n"  \
    "                        each MLP's hidden width, to the reference's stored size,\n"    \
    "                        keeping the units of largest leverage and refitting the\n"    \
    "                        down projection by least squares (run only); reference\n"    \
    "                        (the default with --rotation, --embeddings, --slice-head,\n"  \
    "                        --shared-basis, --damp, --eigh, --cov), the residual\n"     \
    "                        stream to one width d, the published SliceGPT bit for\n"    \
    "                        bit; run only: a width per signal from a first pass\n"      \
    "                        over the dense model: spectrum, at the reference's\n"       \
    "                        stored size; fill, the reference's widths widened with\n"   \
    "                        what --target-size leaves after them\n"                      \
    "  --shared-basis        one basis per block: each block's output keeps its mid basis,\n" \
    "                        so its MLP shortcut is the identity and is not stored (a\n"   \
    "                        --target-size spends that on a wider d; run only)\n"          \
    "  --round-interval N    sliced width is a multiple of N (default 8)\n"                  \
    "  --slice-head          also slice the last block's output and the head\n"                \
    "  --embeddings auto|keep|slice  keep the token embeddings as they are and the head\n"  \
    "                        tied to them, or rotate and cut them (the published method;\n" \
    "                        default auto: keep for tied RMSNorm models, else slice)\n"
#define SG_HELP_AXES                                                                          \
    "  --damp F              eigensolver damping, F x mean diagonal (default 0.01)\n"        \
    "  --rotation pca|random|uniform  pca: one basis per signal (the published method,\n"  \
    "                        default); random: a random orthogonal Q, the control (seeded\n" \
    "                        by --seed, also --random-rotation); uniform (run only): one\n"  \
    "                        basis for the whole network, written as a plain model of\n"    \
    "                        hidden size d that stock loaders run (RMSNorm models)\n"        \
    "  --eigh auto|f64|mixed eigensolver: float64 dsyevd, or a float32 solve refined to\n"   \
    "                        float64 accuracy (default auto: mixed on a GPU, f64 on the CPU)\n"
#define SG_HELP_COV                                                                           \
    "  --cov auto|f64|mixed  covariance products: float64, or float32 slices of 1024 rows\n" \
    "                        summed in float64 (default auto: mixed where the GPU's float64\n" \
    "                        is under 1/8 of its float32, as on consumer cards)\n"
#define SG_HELP_DTYPE                                                                         \
    "  --dtype f32|f16|bf16  dtype of the written weights (default f32)\n"
#define SG_HELP_TOKENIZER                                                                     \
    "  --tokenizer FILE      tokenizer.json or llama2.c tokenizer.bin (default: the model's)\n"
#define SG_HELP_QUIET                                                                         \
    "  --quiet               no progress on stderr (stage, block i/N, tokens/s, ETA)\n"
/* The examples a filter's --help ends with: the whole pipe, which every
 * filter is one part of, and a look at one stage's output. */
#define SG_HELP_PIPE_EXAMPLES                                                                 \
    "\nexamples:\n"                                                                          \
    "  M=~/.cache/slicegpt-stream/SmolLM2-135M-Instruct.Q4_1.gguf\n"                          \
    "  slicegpt-stream load $M | slicegpt-stream fold |\n"                                    \
    "    slicegpt-stream capture --calib /usr/share/common-licenses/GPL-3 --nsamples 16 --seqlen 256 |\n" \
    "    slicegpt-stream cov | slicegpt-stream eig | slicegpt-stream slice --sparsity 0.25 |\n" \
    "    slicegpt-stream write smollm2-sliced\n"                                              \
    "  slicegpt-stream load $M | slicegpt-stream fold | slicegpt-stream dump | head\n"
#define SG_HELP_ZSTD                                                                          \
    "  --zstd LEVEL          compress record payloads with zstd (1..19; default 0: off)\n"

#endif
