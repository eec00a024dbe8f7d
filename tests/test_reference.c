/* The bundled real models reproduce the figures in their PROVENANCE.md,
 * which were computed by an independent numpy forward pass: token ids,
 * logits at one position, greedy continuations, and mean NLL under the
 * stated per-line protocol. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "evaluate.h"
#include "llama2c.h"
#include "model_files.h"
#include "sg_error.h"
#include "tap.h"
#include "text.h"

/* Logits (n, vocab) of one sequence. */
static float *logits_of(sg_model_files *f, const int32_t *ids, int64_t n)
{
    int64_t offsets[2] = {0, n}, V = sg_model_files_config(f)->vocab_size;
    sg_token_batch b = {(int32_t *)ids, offsets, 1, NULL};
    float *logits = malloc(n * V * sizeof(float));
    if (sg_evaluate_logits(f, &b, logits)) {
        tap_diag("%s", sg_last_error());
        free(logits);
        return NULL;
    }
    return logits;
}

static int64_t argmax(const float *x, int64_t n)
{
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best])
            best = i;
    return best;
}

static void check_model(const char *what, const char *model, const char *tokenizer,
                        const float *logits_ref, const int32_t *greedy_ref, int n_greedy,
                        int64_t seqlen, int64_t first, int64_t last, double nll_ref,
                        int64_t count_ref)
{
    sg_model_files *f;
    sg_tokenizer *tok;
    int err = sg_model_files_open(model, &f);
    err = err ? err : sg_model_files_tokenizer(f, tokenizer, &tok);
    if (err) {
        tap_ok(0, "%s: opened (%s)", what, sg_last_error());
        return;
    }
    int64_t V = sg_model_files_config(f)->vocab_size;

    int32_t *ids;
    size_t n;
    const char *prompt = "Once upon a time";
    sg_tokenizer_encode(tok, prompt, strlen(prompt), 1, &ids, &n);
    const int32_t want[] = {1, 403, 407, 261, 378};
    tap_ok(n == 5 && !memcmp(ids, want, sizeof want), "%s: \"%s\" encodes to 1 403 407 261 378",
           what, prompt);
    float *logits = logits_of(f, ids, (int64_t)n);
    double max_err = 0;
    for (int i = 0; logits && i < 8; i++)
        max_err = fmax(max_err, fabs(logits[(n - 1) * V + i] - logits_ref[i]));
    tap_ok(logits && argmax(logits + (n - 1) * V, V) == 432 && max_err < 1e-4,
           "%s: next token after the prompt is 432 (\",\"), logits[0..7] within %.1g", what,
           max_err);
    free(logits);
    free(ids);

    /* greedy decoding from BOS, re-running the whole prefix each step */
    int32_t seq[64] = {1};
    int ok = 1;
    for (int i = 0; i < n_greedy && ok; i++) {
        float *l = logits_of(f, seq, i + 1);
        ok = l != NULL;
        if (ok)
            seq[i + 1] = (int32_t)argmax(l + (int64_t)i * V, V);
        free(l);
        ok = ok && seq[i + 1] == greedy_ref[i];
    }
    tap_ok(ok, "%s: greedy decoding from BOS gives the published %d ids", what, n_greedy);

    char *text;
    size_t len;
    sg_token_batch batch;
    sg_eval_result r;
    err = sg_text_read(tap_data_path("tinystories-valid-subset/tinystories_valid_first.txt"),
                       &text, &len);
    err = err ? err : sg_batch_lines(tok, text, len, seqlen, first, last, &batch);
    err = err ? err : sg_evaluate(f, &batch, &r);
    double nll = err ? NAN : r.nll / r.count;
    tap_ok(!err && r.count == count_ref && fabs(nll - nll_ref) < 6e-5,
           "%s: lines %lld-%lld give %lld tokens, mean NLL %.4f (published %lld, %.4f)", what,
           (long long)first, (long long)last, (long long)(err ? 0 : r.count), nll,
           (long long)count_ref, nll_ref);
    if (!err)
        sg_token_batch_free(&batch);
    free(text);
    sg_tokenizer_free(tok);
    sg_model_files_close(f);
}

int main(void)
{
    const char *tmp = tap_tmpdir();
    char model[4096];
    snprintf(model, sizeof model, "%s/stories260K", tmp);
    const char *tok512 = tap_data_path("stories260K/tok512.bin");
    if (sg_llama2c_to_hf(tap_data_path("stories260K/stories260K.bin"), model, tok512)) {
        tap_ok(0, "stories260K converted (%s)", sg_last_error());
        return tap_done();
    }
    const float stories_logits[] = {-10.13658f, -5.32946f, -10.13809f, -10.13686f,
                                    -10.13721f, -10.13833f, -10.13727f, -10.13764f};
    const int32_t stories_greedy[] = {403, 407, 261, 378, 432, 383, 286, 261, 376, 298,
                                      315, 421, 395, 317, 426, 338, 401, 396, 267, 337};
    check_model("stories260K", model, NULL, stories_logits, stories_greedy, 20, 512, 1, 200,
                1.4396, 19395);

    const float opt_logits[] = {-17.25266f, 2.81473f, -17.18510f, -17.26421f,
                                -17.25791f, -17.11022f, -17.17235f, -17.24792f};
    const int32_t opt_greedy[] = {410, 454, 414, 415, 416, 286, 384, 344, 444, 429};
    const char *opt = tap_data_path("tinyopt-250K");
    check_model("tinyopt-250K held out", opt, tok512, opt_logits, opt_greedy, 10, 257, 3921,
                4356, 2.2172, 40250);
    check_model("tinyopt-250K training part", opt, tok512, opt_logits, opt_greedy, 10, 257, 1,
                200, 1.7955, 19395);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", tmp);
    return tap_done();
}
