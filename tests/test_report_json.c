/* --report FILE.json: the record parses with cJSON, and every figure in it
 * that the command printed is the figure printed. Each check formats the
 * JSON's number the way the command formats it and finds that text in the
 * command's stdout, so a figure recorded but printed differently (or
 * computed twice and drifting) fails.
 *
 * run, ppl and plan on stories260K (converted to a Hugging Face
 * directory), calibrated and scored on a TinyStories excerpt. Needs the
 * shared data; skipped without it. */
#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "tap.h"

static const char *build;
static char out[1 << 16];

/* Runs a shell command; its stdout into out. Returns the exit status. */
static int sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    FILE *p = popen(cmd, "r");
    if (!p)
        return -1;
    size_t n = fread(out, 1, sizeof out - 1, p);
    out[n] = 0;
    int st = pclose(p);
    return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
}

static cJSON *load(const char *path)
{
    FILE *f = fopen(path, "rb");
    static char buf[1 << 20];
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = 0;
    return n ? cJSON_Parse(buf) : NULL;
}

/* The number at a.b (b may be NULL); NaN when absent. */
static double get(const cJSON *r, const char *a, const char *b)
{
    const cJSON *x = cJSON_GetObjectItemCaseSensitive(r, a);
    if (b)
        x = cJSON_GetObjectItemCaseSensitive(x, b);
    return cJSON_IsNumber(x) ? x->valuedouble : 0.0 / 0.0;
}

/* The text fmt makes of the JSON's numbers is in what was printed. */
static void printed(const char *what, const char *fmt, ...)
{
    char want[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(want, sizeof want, fmt, ap);
    va_end(ap);
    if (!tap_ok(strstr(out, want) != NULL, "%s: printed as recorded", what))
        tap_diag("expected to find \"%s\" in:\n%s", want, out);
}

static int same_schema(const cJSON *r, const char *command)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(r, "schema");
    const cJSON *c = cJSON_GetObjectItemCaseSensitive(r, "command");
    const cJSON *libs = cJSON_GetObjectItemCaseSensitive(r, "libraries");
    return cJSON_IsString(s) && !strcmp(s->valuestring, "slicegpt-stream-report") &&
           get(r, "schema_version", NULL) == 1 && cJSON_IsString(c) &&
           !strcmp(c->valuestring, command) &&
           cJSON_IsString(cJSON_GetObjectItemCaseSensitive(libs, "openblas")) &&
           cJSON_IsString(cJSON_GetObjectItemCaseSensitive(libs, "zstd")) &&
           cJSON_IsString(cJSON_GetObjectItemCaseSensitive(libs, "liburing")) &&
           cJSON_IsString(cJSON_GetObjectItemCaseSensitive(libs, "cjson"));
}

int main(void)
{
    const char *stories = tap_data_path("stories260K/stories260K.bin");
    const char *tok = tap_data_path("stories260K/tok512.bin");
    const char *text = tap_data_path("tinystories-valid-subset/tinystories_valid_first.txt");
    build = getenv("SG_BUILDDIR") ? getenv("SG_BUILDDIR") : ".";
    const char *dir = tap_tmpdir();
    char sgs[4200];
    snprintf(sgs, sizeof sgs, "%s/slicegpt-stream", build);
    if (sh("'%s/tools/sg-llama2c-to-hf' '%s' '%s/model' --tokenizer '%s' >/dev/null", build,
           stories, dir, tok) != 0) {
        tap_ok(0, "stories260K converted to a Hugging Face directory");
        return tap_done();
    }

    /* ---- run ---- */
    int st = sh("'%s' run --device cpu --method reference --quiet --model '%s/model' --calib '%s' --nsamples 24 "
                "--seqlen 64 --eval '%s' --eval-windows 20 --out '%s/sliced' --report '%s/run.json'",
                sgs, dir, text, text, dir, dir);
    tap_ok(st == 0, "run --report exits 0");
    char path[4400];
    snprintf(path, sizeof path, "%s/run.json", dir);
    cJSON *r = load(path);
    tap_ok(r != NULL, "run: the report parses");
    tap_ok(r && same_schema(r, "run"), "run: schema, command and library versions");
    snprintf(path, sizeof path, "%s/run.json.tmp", dir);
    tap_ok(access(path, F_OK) != 0, "run: no temporary file left behind");
    if (r) {
        printed("run: model", "slicing %s/model (llama, D = %.0f, %.0f layers) at sparsity %.2f "
                "(--method reference) on %.0f tokens (%.0f x %.0f) of calibration", dir, get(r, "model", "dim"),
                get(r, "model", "n_layers"), get(r, "options", "sparsity"),
                get(r, "calibration", "tokens"), get(r, "calibration", "samples"),
                get(r, "calibration", "seqlen"));
        printed("run: widths", "sliced width d = %.0f of D = %.0f", get(r, "widths", "d"),
                get(r, "widths", "D"));
        printed("run: parameters", "stored: %.0f parameters, %.1f%% of dense %.0f (shortcuts and "
                "heads included)", get(r, "parameters", "stored"),
                get(r, "parameters", "stored_percent"), get(r, "parameters", "dense"));
        printed("run: parameters as the paper counts them", "as the paper counts them (no "
                "shortcuts, head as before): %.0f (%.1f%% of dense)",
                get(r, "parameters", "sliced"), get(r, "parameters", "sliced_percent"));
        printed("run: bytes", "%.2f MiB on disk as F32, dense at F32 %.2f MiB (the input file: "
                "%.2f MiB)", get(r, "bytes", "stored") / 1048576,
                get(r, "bytes", "dense_at_output_dtype") / 1048576,
                get(r, "bytes", "dense") / 1048576);
        printed("run: activations", "activations: %.0f chunks, store budget %.1f MiB, peak "
                "resident %.1f MiB, spilled %.1f MiB as %.1f MiB zstd",
                get(r, "activations", "chunks"), get(r, "activations", "store_budget_bytes") / 1048576,
                get(r, "activations", "store_peak_bytes") / 1048576,
                get(r, "activations", "spilled_bytes") / 1048576,
                get(r, "activations", "spilled_compressed_bytes") / 1048576);
        printed("run: time per stage", "time per stage: load %.2fs fold %.2fs capture %.2fs "
                "covariance %.2fs eigensolve %.2fs rotate/slice %.2fs write %.2fs; total %.2fs",
                get(r, "seconds", "load"), get(r, "seconds", "fold"), get(r, "seconds", "capture"),
                get(r, "seconds", "covariance"), get(r, "seconds", "eigensolve"),
                get(r, "seconds", "rotate/slice"), get(r, "seconds", "write"),
                get(r, "seconds", "total"));
        printed("run: perplexity", "(%.0f tokens, windows of %.0f): dense %.4f, sliced %.4f "
                "(%+.2f%%); eval %.0f / %.0f tokens/s", get(r, "perplexity", "tokens"),
                get(r, "perplexity", "seqlen"), get(r, "perplexity", "dense"),
                get(r, "perplexity", "sliced"), get(r, "perplexity", "change_percent"),
                get(r, "perplexity", "dense_tokens_per_s"),
                get(r, "perplexity", "sliced_tokens_per_s"));
        printed("run: memory", "memory: host peak %.1f MiB resident\n",
                get(r, "memory", "host_peak_bytes") / 1048576);
        const cJSON *w = cJSON_GetObjectItemCaseSensitive(r, "widths");
        const cJSON *d_out = cJSON_GetObjectItemCaseSensitive(w, "d_out");
        tap_ok(cJSON_GetArraySize(d_out) == (int)get(r, "model", "n_layers"),
               "run: a width per layer");
        tap_ok(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(
                   cJSON_GetObjectItemCaseSensitive(r, "memory"), "gpu_peak_bytes")),
               "run: no GPU peak on the CPU");
    }
    cJSON_Delete(r);

    /* ---- ppl ---- */
    st = sh("'%s' ppl --device cpu --quiet --model '%s/sliced' --text '%s' --seqlen 64 "
            "--max-windows 20 --report '%s/ppl.json'", sgs, dir, text, dir);
    tap_ok(st == 0, "ppl --report exits 0");
    snprintf(path, sizeof path, "%s/ppl.json", dir);
    r = load(path);
    tap_ok(r && same_schema(r, "ppl"), "ppl: the report parses, schema and versions");
    if (r) {
        printed("ppl: perplexity", "perplexity %.4f  mean NLL %.4f nats over %.0f predicted "
                "tokens, %.0f sequences; %.2f s (%.0f tokens/s, cpu",
                get(r, "perplexity", "perplexity"), get(r, "perplexity", "mean_nll"),
                get(r, "perplexity", "tokens"), get(r, "perplexity", "sequences"),
                get(r, "perplexity", "seconds"), get(r, "perplexity", "tokens_per_s"));
        printed("ppl: memory", "memory: host peak %.1f MiB resident\n",
                get(r, "memory", "host_peak_bytes") / 1048576);
        tap_ok(get(r, "model", "parameters") > 0 &&
                   cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(
                       cJSON_GetObjectItemCaseSensitive(r, "model"), "sliced")),
               "ppl: the model, sliced, and its parameters");
    }
    cJSON_Delete(r);

    /* ---- plan ---- */
    st = sh("'%s' plan --method reference --model '%s/model' --host-mem 1G --gpu-mem 1G --report '%s/plan.json'",
            sgs, dir, dir);
    tap_ok(st == 0, "plan --report exits 0");
    snprintf(path, sizeof path, "%s/plan.json", dir);
    r = load(path);
    tap_ok(r && same_schema(r, "plan"), "plan: the report parses, schema and versions");
    if (r) {
        printed("plan: calibration", "calibration: %.0f samples x %.0f tokens = %.0f tokens, "
                "chunks of %.0f tokens", get(r, "calibration", "samples"),
                get(r, "calibration", "seqlen"), get(r, "calibration", "tokens"),
                get(r, "calibration", "chunk_tokens"));
        printed("plan: width", "sliced width: d = %.0f of D = %.0f", get(r, "widths", "d"),
                get(r, "widths", "D"));
        printed("plan: host fixed total", "fixed total %*s%8.2f\n", 47, "",
                get(r, "host", "fixed_bytes") / 1073741824);
        printed("plan: GPU total", "total %.2f GiB of %.2f GiB", get(r, "gpu", "total_bytes") /
                1073741824, get(r, "gpu", "budget_bytes") / 1073741824);
    }
    cJSON_Delete(r);

    /* a report that cannot be written fails the command with one line */
    st = sh("'%s' plan --model '%s/model' --report '%s/no/such/dir/plan.json' 2>&1 >/dev/null",
            sgs, dir, dir);
    tap_ok(st == 1 && strchr(out, '\n') == strrchr(out, '\n') && strstr(out, "plan.json"),
           "an unwritable report: exit 1, one line naming it");

    sh("rm -rf '%s'", dir);
    return tap_done();
}
