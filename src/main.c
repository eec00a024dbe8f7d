/* slicegpt-stream: the program. Each subcommand lives in its own cmd_*.c;
 * this file only dispatches. */
#include "config.h"

#include <stdio.h>
#include <string.h>

#include "act_store.h"
#include "cli.h"

static const struct {
    const char *name;
    int (*fn)(int, char **);
    const char *what;
} commands[] = {
    {"run", sg_cmd_run, "slice a model: calibrate, rotate, slice, write, evaluate"},
    {"ppl", sg_cmd_ppl, "perplexity of a model (dense or sliced) on a text"},
    {"plan", sg_cmd_plan, "memory a slicing run needs, from the config alone"},
};

static void print_usage(FILE *f)
{
    fprintf(f, "usage: slicegpt-stream COMMAND [options]   (COMMAND --help for its options)\n");
    /* spilled activations must not outlive a run stopped by a signal */
    sg_act_store_install_signal_cleanup();
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-6s %s\n", commands[i].name, commands[i].what);
}

int main(int argc, char **argv)
{
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
        return SG_EXIT_OK;
    }
    /* spilled activations must not outlive a run stopped by a signal */
    sg_act_store_install_signal_cleanup();
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (!strcmp(argv[1], commands[i].name))
            return commands[i].fn(argc - 1, argv + 1);
    fprintf(stderr, "slicegpt-stream: unknown command '%s'\n", argv[1]);
    print_usage(stderr);
    return SG_EXIT_USAGE;
}
