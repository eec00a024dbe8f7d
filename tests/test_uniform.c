/* run --rotation uniform: one rotation for the whole network, written as a
 * plain model of hidden size d (slicer.h).
 *  - at sparsity 0 the plain model, written as Hugging Face and as GGUF and
 *    read back by our own readers as plain models (no slicegpt section),
 *    has the dense model's logits;
 *  - at 25% both have the logits of the same function written in our
 *    sliced format (norms dividing by D, no norm weights): the RMSNorm over
 *    d with eps·D/d and weights sqrt(D/d), the q/k order and the config
 *    are exact;
 *  - a tied head stays tied when the final norm's scale is a constant,
 *    else it is untied; the stored parameters are the files' elements;
 *  - LayerNorm models are refused with one line.
 * On a synthetic Llama (untied, tied, tied with a constant final norm,
 * given as GGUF) and on stories260K. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compare.h"
#include "evaluate.h"
#include "export_gguf.h"
#include "gguf.h"
#include "llama2c.h"
#include "model_files.h"
#include "plan.h"
#include "random_model.h"
#include "sg_error.h"
#include "slicer.h"
#include "synth_model.h"
#include "tap.h"

static int slice_uniform(const char *model, const char *out, const sg_token_batch *calib,
                         double sparsity, int sliced_format, sg_slice_report *rep)
{
    sg_slice_options o;
    sg_slice_options_default(&o);
    o.plan.sparsity = sparsity;
    o.rotation = SG_ROTATION_UNIFORM;
    o.uniform_sliced_format = sliced_format;
    o.out_dir = out;
    return test_slice_dir(model, calib, &o, rep);
}

/* Logits of every token of b, and the model's config. */
static int logits_of(const char *model, const sg_token_batch *b, float *logits,
                     sg_model_config *cfg)
{
    sg_model_files *f;
    int err = sg_model_files_open(model, &f);
    if (err)
        return err;
    if (cfg)
        *cfg = *sg_model_files_config(f);
    err = sg_evaluate_logits_on(NULL, f, b, logits);
    sg_model_files_close(f);
    return err;
}

/* Elements of every tensor in a model (its config's shapes). */
static int64_t stored_elements(const char *model)
{
    sg_model_files *f;
    if (sg_model_files_open(model, &f))
        return -1;
    sg_model_config c = *sg_model_files_config(f);
    sg_model_files_close(f);
    return sg_model_param_count(&c);
}

static void check_plain(const char *path, const char *what, const sg_model_config *c,
                        const sg_model_config *orig, int64_t d, int tied)
{
    tap_ok(!c->sliced && c->dim == d && c->head_dim == orig->head_dim &&
               c->ffn_dim == orig->ffn_dim && c->tied_embeddings == tied &&
               fabs(c->norm_eps / (orig->norm_eps * orig->dim / d) - 1) < 1e-6,
           "%s: %s reads back as a plain model: hidden size %lld, head_dim %lld, FFN %lld, eps "
           "%.3g, head %s", what, path, (long long)c->dim, (long long)c->head_dim,
           (long long)c->ffn_dim, c->norm_eps, c->tied_embeddings ? "tied" : "untied");
}

/* The whole proof on one model; tied: whether the head should stay tied.
 * tok: the vocabulary to put in the GGUF (may be NULL). */
static void test_uniform_model(const char *model, const char *what, const sg_token_batch *calib,
                       const sg_token_batch *eval, int tied, const sg_tokenizer *tok,
                       const char *tmp)
{
    sg_model_files *f;
    if (sg_model_files_open(model, &f)) {
        tap_ok(0, "%s: opened (%s)", what, sg_last_error());
        return;
    }
    sg_model_config orig = *sg_model_files_config(f);
    sg_model_files_close(f);
    int64_t T = eval->offsets[eval->n_seq], V = orig.vocab_size;
    float *dense = malloc(T * V * sizeof(float)), *a = malloc(T * V * sizeof(float)),
          *b = malloc(T * V * sizeof(float));
    char hf[4096], gguf[4096], sliced[4096];
    sg_model_config c;
    sg_slice_report rep;

    /* sparsity 0: the dense function, from both files */
    snprintf(hf, sizeof hf, "%s/%s-u0", tmp, what);
    snprintf(gguf, sizeof gguf, "%s/%s-u0.gguf", tmp, what);
    int err = logits_of(model, eval, dense, NULL);
    err = err ? err : slice_uniform(model, hf, calib, 0.0, 0, &rep);
    err = err ? err : sg_export_gguf(hf, gguf, SG_DT_F32, tok);
    err = err ? err : logits_of(hf, eval, a, &c);
    if (!err)
        check_plain("HF", what, &c, &orig, orig.dim, tied);
    err = err ? err : logits_of(gguf, eval, b, &c);
    if (!err)
        check_plain("GGUF", what, &c, &orig, orig.dim, tied);
    double rh = err ? INFINITY : test_rel_diff(a, dense, T * V);
    double rg = err ? INFINITY : test_rel_diff(b, dense, T * V);
    if (err)
        tap_diag("%s", sg_last_error());
    tap_ok(!err && rh < 2e-5 && rg < 2e-5,
           "%s: uniform rotation at sparsity 0, as HF and as GGUF, has the dense logits "
           "(relative %.2g, %.2g)", what, rh, rg);

    /* 25%: the plain files compute what our sliced format computes */
    int64_t d = sg_sliced_dim(orig.dim, 0.25, 8);
    snprintf(sliced, sizeof sliced, "%s/%s-u25-sliced", tmp, what);
    snprintf(hf, sizeof hf, "%s/%s-u25", tmp, what);
    snprintf(gguf, sizeof gguf, "%s/%s-u25.gguf", tmp, what);
    err = slice_uniform(model, sliced, calib, 0.25, 1, &rep);
    err = err ? err : slice_uniform(model, hf, calib, 0.25, 0, &rep);
    err = err ? err : sg_export_gguf(hf, gguf, SG_DT_F32, tok);
    err = err ? err : logits_of(sliced, eval, dense, &c);
    int sliced_ok = !err && c.sliced && c.norm_dim == orig.dim;
    err = err ? err : logits_of(hf, eval, a, &c);
    if (!err)
        check_plain("HF", what, &c, &orig, d, tied);
    err = err ? err : logits_of(gguf, eval, b, &c);
    if (!err)
        check_plain("GGUF", what, &c, &orig, d, tied);
    rh = err ? INFINITY : test_rel_diff(a, dense, T * V);
    rg = err ? INFINITY : test_rel_diff(b, dense, T * V);
    if (err)
        tap_diag("%s", sg_last_error());
    tap_ok(!err && sliced_ok && rh < 2e-5 && rg < 2e-5,
           "%s: uniform rotation at 25%% (d = %lld), as HF and as GGUF, has the logits of the "
           "same model in our sliced format (relative %.2g, %.2g)", what, (long long)d, rh, rg);
    int64_t stored = stored_elements(hf);
    tap_ok(rep.uniform && rep.uniform_tied == tied && stored == rep.params_stored,
           "%s: %lld parameters stored at 25%% (%.1f%% of dense), as run reports", what,
           (long long)stored, 100.0 * stored / rep.params_dense);
    free(dense);
    free(a);
    free(b);
}

/* The synthetic tied model with its final norm's scale one constant, as
 * GGUF (whose reader takes any tensor values we give it). */
static int tied_constant_norm(const char *path, sg_model_config cfg)
{
    sg_named_tensor *t;
    int n;
    cfg.tied_embeddings = 1;
    int err = sg_synth_model(&cfg, 5, &t, &n);
    if (err)
        return err;
    for (int i = 0; i < n; i++)
        if (!strcmp(t[i].name, "output_norm.weight"))
            for (int64_t k = 0; k < t[i].shape[0]; k++)
                ((float *)t[i].data)[k] = 1.25f;
    err = sg_gguf_save_model(path, &cfg, t, n, SG_DT_F32, NULL);
    sg_synth_free(t, n);
    return err;
}

static void test_synthetic(const char *tmp)
{
    sg_model_config cfg;
    char dir[4096], tied[4096], tied_c[4096];
    snprintf(dir, sizeof dir, "%s/synth", tmp);
    snprintf(tied, sizeof tied, "%s/synth-tied", tmp);
    snprintf(tied_c, sizeof tied_c, "%s/synth-tied-constant-norm.gguf", tmp);
    int err = sg_synth_config(SG_ARCH_LLAMA, 64, 3, 4, 2, 16, 96, 97, &cfg);
    err = err ? err : sg_synth_save_hf(dir, &cfg, 5, SG_DT_F32, 2);
    sg_model_config t = cfg;
    t.tied_embeddings = 1;
    err = err ? err : sg_synth_save_hf(tied, &t, 5, SG_DT_F32, 2);
    err = err ? err : tied_constant_norm(tied_c, cfg);
    if (err) {
        tap_ok(0, "synthetic models written (%s)", sg_last_error());
        return;
    }
    sg_token_batch calib = test_random_batch(8, 32, cfg.vocab_size, 1);
    sg_token_batch eval = test_random_batch(3, 24, cfg.vocab_size, 2);
    test_uniform_model(dir, "synthetic-llama", &calib, &eval, 0, NULL, tmp);
    test_uniform_model(tied, "synthetic-llama-tied", &calib, &eval, 0, NULL, tmp);
    test_uniform_model(tied_c, "synthetic-llama-tied-constant-norm", &calib, &eval, 1, NULL, tmp);
    sg_token_batch_free(&calib);
    sg_token_batch_free(&eval);
}

static void test_layernorm_refused(const char *tmp)
{
    sg_model_config cfg;
    char dir[4096], out[4096];
    snprintf(dir, sizeof dir, "%s/synth-opt", tmp);
    snprintf(out, sizeof out, "%s/synth-opt-u", tmp);
    int err = sg_synth_config(SG_ARCH_OPT, 64, 2, 4, 4, 16, 96, 97, &cfg);
    err = err ? err : sg_synth_save_hf(dir, &cfg, 5, SG_DT_F32, 1);
    sg_token_batch calib = test_random_batch(4, 32, cfg.vocab_size, 1);
    sg_slice_report rep;
    err = err ? err : slice_uniform(dir, out, &calib, 0.25, 0, &rep);
    tap_ok(err == SG_EUNSUPPORTED && strstr(sg_last_error(), "LayerNorm") &&
               !strchr(sg_last_error(), '\n'),
           "OPT: --rotation uniform refused in one line: %s", sg_last_error());
    sg_token_batch_free(&calib);
}

static void test_stories(const char *tmp)
{
    char model[4096];
    snprintf(model, sizeof model, "%s/stories260K", tmp);
    int err = sg_llama2c_to_hf(tap_data_path("stories260K/stories260K.bin"), model,
                               tap_data_path("stories260K/tok512.bin"));
    sg_model_files *f = NULL;
    sg_tokenizer *tok = NULL;
    char *text = NULL;
    size_t len;
    sg_token_batch calib = {0}, eval = {0};
    err = err ? err : sg_model_files_open(model, &f);
    err = err ? err : sg_model_files_tokenizer(f, NULL, &tok);
    err = err ? err : sg_text_read(
                          tap_data_path("tinystories-valid-subset/tinystories_valid_first.txt"),
                          &text, &len);
    err = err ? err : sg_batch_calibration(tok, text, len / 2, 32, 256, 42, &calib);
    err = err ? err : sg_batch_windows(tok, text + len / 2, len - len / 2, 128, 8, &eval);
    if (f)
        sg_model_files_close(f);
    if (err)
        tap_ok(0, "stories260K prepared (%s)", sg_last_error());
    else
        test_uniform_model(model, "stories260K", &calib, &eval, 0, tok, tmp);
    free(text);
    sg_tokenizer_free(tok);
    sg_token_batch_free(&calib);
    sg_token_batch_free(&eval);
}

int main(void)
{
    const char *tmp = tap_tmpdir();
    test_synthetic(tmp);
    test_layernorm_refused(tmp);
    if (tap_data_find("stories260K/stories260K.bin") &&
        tap_data_find("tinystories-valid-subset/tinystories_valid_first.txt"))
        test_stories(tmp);
    else
        tap_skip("stories260K uniform rotation", "shared data not present");
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", tmp);
    return tap_done();
}
