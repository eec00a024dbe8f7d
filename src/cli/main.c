/* slicegpt-stream: the program. Each subcommand lives in its own cmd_*.c;
 * this file only dispatches. */
#include "config.h"

#include <malloc.h>
#include <stdio.h>
#include <string.h>

#include "slicegpt.h"
#include "cli.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *what;
} commands[] = {
    {"run", sg_cmd_run, "slice a model: calibrate, rotate, slice, write, evaluate"},
    {"ppl", sg_cmd_ppl, "perplexity of a model (dense or sliced) on a text"},
    {"tasks", sg_cmd_tasks, "zero-shot accuracy (PIQA, WinoGrande, HellaSwag, ARC) of a model"},
    {"plan", sg_cmd_plan, "memory a slicing run needs, from the config alone"},
    {"report", sg_cmd_report, "summary and plots (gnuplot) of a sliced model and run reports"},
    {"load", sg_cmd_load, "stage: read a model into a stream (first of the pipe)"},
    {"fold", sg_cmd_fold, "stage: fold the norms into the weights"},
    {"capture", sg_cmd_capture, "stage: run blocks on calibration text, name the chunks"},
    {"cov", sg_cmd_cov, "stage: covariance of each captured signal"},
    {"eig", sg_cmd_eig, "stage: principal axes of each covariance"},
    {"slice", sg_cmd_slice, "stage: rotate and slice the weights"},
    {"write", sg_cmd_write, "stage: write the sliced model (last of the pipe)"},
    {"dump", sg_cmd_dump, "print a stream's records"},
};

static void print_usage(FILE *f)
{
    fprintf(f, "usage: slicegpt-stream COMMAND [options]   (COMMAND --help for its options)\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-8s %s\n", commands[i].name, commands[i].what);
    fprintf(f, "\nexamples:\n"
               "  examples/default-run.sh      (slice the bundled SmolLM2-135M by 25%%)\n"
               "  slicegpt-stream plan --model examples/llama-2-70b --host-mem 32G\n");
}

/* The BLAS line: on stdout for --version, a warning on stderr whenever the
 * kernels are a fallback that could not be replaced. */
static void blas_report(FILE *f, int always)
{
    char line[512];
    int slow = sg_blas_describe(line, sizeof line);
    if (always)
        fprintf(f, "%s\n", line);
    else if (slow)
        fprintf(f, "slicegpt-stream: warning: %s\n", line);
}

int main(int argc, char **argv)
{
    /* before any BLAS call: OpenBLAS picked its kernels when it loaded, and
     * only a new process can load it with others */
    if (sg_blas_ensure_fast(argv))
        fprintf(stderr, "slicegpt-stream: warning: %s\n", sg_last_error());
    if (argc < 2) {
        print_usage(stderr);
        return SG_EXIT_USAGE;
    }
    if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        print_usage(stdout);
        return SG_EXIT_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        puts(PACKAGE_STRING);
        blas_report(stdout, 1);
        return SG_EXIT_OK;
    }
    /* Blocks and chunks are allocated and freed in the same sizes over and
     * over; keeping freed memory in the heap instead of returning each
     * buffer to the kernel saves a page fault per page per block. */
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
    /* spilled activations must not outlive a run stopped by a signal */
    sg_act_store_install_signal_cleanup();
    /* a summary piped into tee or a log arrives as it is printed, not at
     * exit (the filters write their stream with write(2), not stdio) */
    setvbuf(stdout, NULL, _IOLBF, 0);
    blas_report(stderr, 0);
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "slicegpt-stream: unknown command '%s'\n", argv[1]);
    print_usage(stderr);
    return SG_EXIT_USAGE;
}
