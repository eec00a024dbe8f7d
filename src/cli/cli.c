#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_report.h"
#include "slicegpt.h"

int sg_cli_report(int code)
{
    const char *msg = sg_last_error();
    fprintf(stderr, "slicegpt-stream: %s\n", msg[0] ? msg : sg_strerror(code));
    return SG_EXIT_FAIL;
}

int sg_cli_int(const char *opt, const char *arg, int64_t min, int64_t max, int64_t *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(arg, &end, 10);
    if (errno || end == arg || *end || v < min || v > max) {
        fprintf(stderr, "slicegpt-stream: %s: expected an integer in [%lld, %lld], got '%s'\n",
                opt, (long long)min, (long long)max, arg);
        return -1;
    }
    *out = v;
    return 0;
}

int sg_cli_double(const char *opt, const char *arg, double min, double max, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    if (errno || end == arg || *end || !(v >= min && v <= max)) {
        fprintf(stderr, "slicegpt-stream: %s: expected a number in [%g, %g], got '%s'\n", opt,
                min, max, arg);
        return -1;
    }
    *out = v;
    return 0;
}

int sg_cli_size(const char *opt, const char *arg, int64_t *out)
{
    char *end;
    errno = 0;
    double v = strtod(arg, &end);
    double unit = 1;
    switch (*end) {
    case 'k': case 'K': unit = 1024.0; end++; break;
    case 'm': case 'M': unit = 1024.0 * 1024; end++; break;
    case 'g': case 'G': unit = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': unit = 1024.0 * 1024 * 1024 * 1024; end++; break;
    }
    if (*end == 'B' || *end == 'b')
        end++;
    if (errno || end == arg || *end || !(v >= 0) || v * unit > 9e18) {
        fprintf(stderr, "slicegpt-stream: %s: expected a size such as 512M or 24G, got '%s'\n",
                opt, arg);
        return -1;
    }
    *out = (int64_t)(v * unit);
    return 0;
}

int sg_cli_backend(const char *device, int64_t gpu_mem, sg_backend **out)
{
    *out = NULL;
    if (!strcmp(device, "cpu")) {
        *out = sg_backend_cpu();
        return 0;
    }
    if (strcmp(device, "cuda") && strcmp(device, "auto")) {
        fprintf(stderr, "slicegpt-stream: --device: expected cpu, cuda or auto, got '%s'\n",
                device);
        return -1;
    }
    *out = sg_backend_cuda_init(0, (size_t)gpu_mem);
    if (*out)
        return 0;
    if (!strcmp(device, "cuda")) {
        fprintf(stderr, "slicegpt-stream: --device cuda: %s\n", sg_last_error());
        return -1;
    }
    fprintf(stderr, "slicegpt-stream: notice: running on the CPU (%s)\n", sg_last_error());
    *out = sg_backend_cpu();
    return 0;
}

int sg_cli_eigh(const char *arg, const sg_backend *be, sg_eigh_mode *out)
{
    if (!strcmp(arg, "f64"))
        *out = SG_EIGH_F64;
    else if (!strcmp(arg, "mixed"))
        *out = SG_EIGH_MIXED;
    else if (!strcmp(arg, "auto"))
        *out = be->ops->host_memory ? SG_EIGH_F64 : SG_EIGH_MIXED;
    else {
        fprintf(stderr, "slicegpt-stream: --eigh: expected f64, mixed or auto, got '%s'\n", arg);
        return -1;
    }
    return 0;
}

int sg_cli_cov(const char *arg, sg_backend *be, int *mixed)
{
    if (!strcmp(arg, "f64") || !strcmp(arg, "mixed")) {
        *mixed = !strcmp(arg, "mixed");
        return 0;
    }
    if (strcmp(arg, "auto")) {
        fprintf(stderr, "slicegpt-stream: --cov: expected f64, mixed or auto, got '%s'\n", arg);
        return -1;
    }
    sg_backend_mem m = {0};
    *mixed = !be->ops->memory(be, &m) && m.f64_ratio > 8;
    return 0;
}

void sg_cli_calib_counts(const sg_token_batch *b, char *buf, size_t n)
{
    int64_t lo = INT64_MAX, hi = 0;
    for (int64_t s = 0; s < b->n_seq; s++) {
        int64_t len = b->offsets[s + 1] - b->offsets[s];
        lo = len < lo ? len : lo;
        hi = len > hi ? len : hi;
    }
    if (b->n_seq == 0 || lo == hi)
        snprintf(buf, n, "%lld tokens (%lld x %lld)", (long long)b->offsets[b->n_seq],
                 (long long)b->n_seq, (long long)hi);
    else
        snprintf(buf, n, "%lld tokens (%lld sequences of %lld to %lld)",
                 (long long)b->offsets[b->n_seq], (long long)b->n_seq, (long long)lo,
                 (long long)hi);
}

int sg_cli_check_calibration(const sg_token_batch *b, int64_t D, int nystrom, const char *source)
{
    int64_t tokens = b->n_seq > 0 ? b->offsets[b->n_seq] : 0;
    if (tokens < D)
        return sg_fail(SG_EARG,
                       "%s: %lld calibration tokens, fewer than the hidden size D = %lld: the "
                       "%s would be rank-deficient; give more text, --nsamples or --seqlen",
                       source, (long long)tokens, (long long)D,
                       nystrom ? "hidden units' correlation" : "covariance");
    if (tokens < SG_CALIB_WARN_FACTOR * D)
        fprintf(stderr,
                "slicegpt-stream: warning: %s: only %lld calibration tokens for D = %lld (under "
                "%d x D): %s will be poorly estimated\n",
                source, (long long)tokens, (long long)D, SG_CALIB_WARN_FACTOR,
                nystrom ? "the hidden units' correlation" : "the principal axes");
    return 0;
}

int sg_cli_one_calib(const char *calib, const char *calib_tokens)
{
    if (calib && calib_tokens)
        fputs("slicegpt-stream: give --calib or --calib-tokens, not both\n", stderr);
    else if (!calib && !calib_tokens)
        fputs("slicegpt-stream: --calib FILE (text) or --calib-tokens FILE is needed\n", stderr);
    else
        return 0;
    return -1;
}

void sg_cli_progress(sg_progress *p, int quiet)
{
    const char *env = getenv("SG_PROGRESS_INTERVAL");
    char *end;
    double interval = env ? strtod(env, &end) : 5;
    if (!env || end == env || !(interval >= 0))
        interval = 5;
    sg_progress_init(p, quiet ? NULL : stderr, -1, "slicegpt-stream", interval);
}

void sg_cli_print_memory(sg_backend *be, int64_t *host_peak, int64_t *gpu_peak)
{
    sg_backend_mem bm;
    *host_peak = sg_json_report_host_peak();
    *gpu_peak = !be->ops->host_memory && !be->ops->memory(be, &bm) ? (int64_t)bm.peak : 0;
    printf("memory: host peak %.1f MiB resident", *host_peak / 1048576.0);
    if (*gpu_peak)
        printf(", GPU peak %.1f MiB allocated", *gpu_peak / 1048576.0);
    printf("\n");
}
