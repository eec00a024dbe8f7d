/* What the subcommands of the slicegpt-stream program share: their entry
 * points, and the one way a program reports a library error. */
#ifndef SG_CLI_H
#define SG_CLI_H

#include <stdint.h>

#include "slicegpt.h"

/* Exit statuses, documented in slicegpt-stream(1). */
enum { SG_EXIT_OK = 0, SG_EXIT_FAIL = 1, SG_EXIT_USAGE = 2 };

/* Prints "slicegpt-stream: <last error message>" (or the generic text of
 * code when no message was recorded) to stderr; returns SG_EXIT_FAIL. */
int sg_cli_report(int code);

/* Parses a number option strictly; prints a usage error and returns -1 on
 * junk or out-of-range values. */
int sg_cli_int(const char *opt, const char *arg, int64_t min, int64_t max, int64_t *out);
int sg_cli_double(const char *opt, const char *arg, double min, double max, double *out);

/* A byte size: a number with an optional K, M, G or T suffix (powers of 1024). */
int sg_cli_size(const char *opt, const char *arg, int64_t *out);

/* The backend --device names: "cpu", "cuda" (GPU 0, an error without one)
 * or "auto" (cuda when a GPU answers, else the CPU, with a notice saying
 * why). gpu_mem caps the GPU's allocations (0: what the card has free).
 * Returns 0, or prints why and returns -1. */
int sg_cli_backend(const char *device, int64_t gpu_mem, sg_backend **out);

/* --eigh f64|mixed|auto (auto: mixed on a GPU, f64 on the CPU) */
int sg_cli_eigh(const char *arg, const sg_backend *be, sg_eigh_mode *out);

/* --cov f64|mixed|auto (auto: mixed where the device's float64 runs at
 * under 1/8 of its float32, as on consumer GPUs; else f64). *mixed = 0|1. */
int sg_cli_cov(const char *arg, sg_backend *be, int *mixed);

/* Calibration of fewer tokens than the hidden size D gives a
 * rank-deficient covariance: refused (one line naming source). Below
 * SG_CALIB_WARN_FACTOR * D tokens a warning says the estimate is poor:
 * the principal axes, or with nystrom set (--method nystrom) the MLP's
 * hidden units' correlation.
 * Returns 0 or an error code with the message recorded (sg_fail). */
#define SG_CALIB_WARN_FACTOR 8
int sg_cli_check_calibration(const sg_token_batch *b, int64_t D, int nystrom, const char *source);

/* "N tokens (S sequences of L)" or "... of 2 to L" when they differ: the
 * counts the calibration really has. */
void sg_cli_calib_counts(const sg_token_batch *b, char *buf, size_t n);

/* --calib and --calib-tokens: exactly one; prints why and returns -1 if not. */
int sg_cli_one_calib(const char *calib, const char *calib_tokens);

/* The progress line of a command (progress.h): on stderr unless quiet;
 * off a terminal at most one line every SG_PROGRESS_INTERVAL seconds
 * (default 5), plus one as each phase ends. */
void sg_cli_progress(sg_progress *p, int quiet);

/* Prints "memory: host peak ... (, GPU peak ...)" and returns both peaks
 * (bytes; the GPU's 0 on the CPU) for the JSON report. */
void sg_cli_print_memory(sg_backend *be, int64_t *host_peak, int64_t *gpu_peak);

int sg_cmd_ppl(int argc, char **argv);
int sg_cmd_plan(int argc, char **argv);
int sg_cmd_run(int argc, char **argv);
int sg_cmd_report(int argc, char **argv);
int sg_cmd_tasks(int argc, char **argv);

/* Tokens per forward batch of tasks and run --tasks (--batch-tokens). */
#define SG_TASKS_BATCH_TOKENS 32768

/* The stage filters (slicegpt-stream(5)): cmd_stages.c, cmd_capture.c, cmd_dump.c */
int sg_cmd_load(int argc, char **argv);
int sg_cmd_fold(int argc, char **argv);
int sg_cmd_capture(int argc, char **argv);
int sg_cmd_cov(int argc, char **argv);
int sg_cmd_eig(int argc, char **argv);
int sg_cmd_slice(int argc, char **argv);
int sg_cmd_write(int argc, char **argv);
int sg_cmd_dump(int argc, char **argv);

#endif
