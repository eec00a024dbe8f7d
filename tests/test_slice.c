/* SliceGPT end to end on the CPU.
 *  - folding norms leaves the logits unchanged, for every architecture;
 *  - rotating without slicing (sparsity 0) leaves logits and perplexity
 *    unchanged, on synthetic models of each architecture and on the real
 *    bundled models;
 *  - PCA recovers a known spectrum and subspace;
 *  - on the real Llama model, perplexity rises monotonically with
 *    sparsity, and PCA beats a random rotation by far;
 *  - the device path (tests/device_sim.c: separate memory, weights and
 *    activations uploaded and downloaded, the forward composed of ops, as
 *    on a GPU) slices to the same model as the CPU path, with no pointer
 *    mixed up and nothing left allocated; and the mixed-precision
 *    eigensolver slices the real model as well as dsyevd. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "compare.h"
#include "cpu_kernels.h"
#include "device_sim.h"
#include "evaluate.h"
#include "fold.h"
#include "gguf.h"
#include "read_file.h"
#include "llama2c.h"
#include "random_model.h"
#include "safetensors.h"
#include "sg_error.h"
#include "slicer.h"
#include "synth_model.h"
#include "tap.h"

static void test_fold(sg_model_config cfg, const char *arch)
{
    test_model tm;
    int64_t offsets[3] = {0, 19, 30}, T = 30, V = cfg.vocab_size;
    int32_t ids[30];
    for (int i = 0; i < 30; i++)
        ids[i] = (i * 37 + 11) % V;
    float *before = malloc(T * V * sizeof(float)), *after = malloc(T * V * sizeof(float));
    int err = test_model_random(&cfg, 11, &tm);
    err = err ? err : test_model_logits(&tm, ids, offsets, 2, before);
    err = err ? err : sg_fold_globals(&tm.model);
    for (int64_t l = 0; !err && l < cfg.n_layers; l++)
        err = sg_fold_block(&cfg, &tm.blocks[l]);
    err = err ? err : test_model_logits(&tm, ids, offsets, 2, after);
    double rel = err ? INFINITY : test_rel_diff(after, before, T * V);
    tap_ok(!err && rel < 1e-5, "%s: folded model has the same logits (relative %.2g)", arch, rel);
    test_model_free(&tm);
    free(before);
    free(after);
}

/* Slices model_dir at sparsity into out_dir with calibration batch calib,
 * on backend be (NULL: the CPU) with eigensolver eigh, the embeddings as
 * embed says; *rep (when not NULL) gets the report. */
static int slice_with(sg_backend *be, sg_eigh_mode eigh, int cov_mixed, const char *model_dir,
                      const char *out_dir, const sg_token_batch *calib, double sparsity,
                      sg_rotation_kind rotation, sg_embed_mode embed, sg_slice_report *rep)
{
    sg_slice_options o;
    sg_slice_options_default(&o);
    o.plan.sparsity = sparsity;
    o.rotation = rotation;
    o.out_dir = out_dir;
    o.backend = be;
    o.eigh = eigh;
    o.cov_mixed = cov_mixed;
    o.plan.embeddings = embed;
    return test_slice_dir(model_dir, calib, &o, rep);
}

static int slice_on(sg_backend *be, sg_eigh_mode eigh, int cov_mixed, const char *model_dir,
                    const char *out_dir, const sg_token_batch *calib, double sparsity,
                    sg_rotation_kind rotation)
{
    return slice_with(be, eigh, cov_mixed, model_dir, out_dir, calib, sparsity, rotation,
                      SG_EMBED_AUTO, NULL);
}

static int slice(const char *model_dir, const char *out_dir, const sg_token_batch *calib,
                 double sparsity, sg_rotation_kind rotation)
{
    return slice_on(NULL, SG_EIGH_F64, 0, model_dir, out_dir, calib, sparsity, rotation);
}

/* Evaluates model_dir on backend be (NULL: the CPU): logits of every
 * token when logits is not NULL, else the NLL into *r. */
static int eval_on(sg_backend *be, const char *model_dir, const sg_token_batch *b,
                   float *logits, sg_eval_result *r)
{
    sg_model_files *f;
    int err = sg_model_files_open(model_dir, &f);
    if (err)
        return err;
    err = logits ? sg_evaluate_logits_on(be, f, b, logits) : sg_evaluate_on(be, f, b, r);
    sg_model_files_close(f);
    return err;
}

static int logits_of(const char *model_dir, const sg_token_batch *b, float *logits,
                     sg_eval_result *r)
{
    return eval_on(NULL, model_dir, b, logits, r);
}

/* The device path against the CPU path on model_dir: at sparsity 0 the
 * logits of the dense model, at 25% those of the CPU's sliced model. */
static void test_device_path(const char *model_dir, const char *what,
                             const sg_token_batch *calib, const sg_token_batch *eval,
                             int64_t vocab, const char *tmp)
{
    sg_backend *sim = device_sim_new(0);
    char cpu_out[4096], sim_out[4096], sim0[4096];
    snprintf(cpu_out, sizeof cpu_out, "%s/%s-cpu25", tmp, what);
    snprintf(sim_out, sizeof sim_out, "%s/%s-sim25", tmp, what);
    snprintf(sim0, sizeof sim0, "%s/%s-sim0", tmp, what);
    int64_t T = eval->offsets[eval->n_seq];
    float *a = malloc(T * vocab * sizeof(float)), *b = malloc(T * vocab * sizeof(float));
    int err = slice_on(sim, SG_EIGH_F64, 0, model_dir, sim0, calib, 0.0, SG_ROTATION_PCA);
    err = err ? err : logits_of(model_dir, eval, a, NULL);
    err = err ? err : logits_of(sim0, eval, b, NULL);
    double rel0 = err ? INFINITY : test_rel_diff(b, a, T * vocab);
    if (!err)
        err = slice(model_dir, cpu_out, calib, 0.25, SG_ROTATION_PCA);
    if (!err)
        err = slice_on(sim, SG_EIGH_F64, 0, model_dir, sim_out, calib, 0.25, SG_ROTATION_PCA);
    err = err ? err : logits_of(cpu_out, eval, a, NULL);
    err = err ? err : logits_of(sim_out, eval, b, NULL);
    double rel = err ? INFINITY : test_rel_diff(b, a, T * vocab);
    /* evaluation on the device: logits and NLL of the CPU's sliced model */
    sg_eval_result rc = {0}, rs = {0};
    err = err ? err : eval_on(sim, cpu_out, eval, b, NULL);
    double rel_eval = err ? INFINITY : test_rel_diff(b, a, T * vocab);
    err = err ? err : eval_on(NULL, cpu_out, eval, NULL, &rc);
    err = err ? err : eval_on(sim, cpu_out, eval, NULL, &rs);
    if (err)
        tap_diag("%s", sg_last_error());
    sg_backend_mem m;
    sim->ops->memory(sim, &m);
    tap_ok(!err && rel0 < 2e-5, "%s: device path, rotated and unsliced, keeps the dense logits "
           "(relative %.2g)", what, rel0);
    tap_ok(!err && rel < 1e-4, "%s: device path at 25%% gives the CPU's sliced model (logits "
           "within %.2g)", what, rel);
    tap_ok(!err && rel_eval < 1e-5 && rs.count == rc.count &&
               fabs(rs.nll / rc.nll - 1) < 1e-6,
           "%s: evaluation on the device path: logits within %.2g, NLL %.8g vs %.8g", what,
           rel_eval, rs.nll, rc.nll);
    tap_ok(device_sim_violations(sim) == 0 && m.in_use == 0,
           "%s: device path mixed up no pointers (%d) and released everything (%zu bytes left)",
           what, device_sim_violations(sim), m.in_use);
    sim->ops->free(sim);

    /* every allocation on the device refused in turn: each run fails with
     * that one error, or, where the refused allocation is one the run can
     * do without, succeeds; none leaves a model or anything held */
    char count_out[4096];
    snprintf(count_out, sizeof count_out, "%s/%s-count", tmp, what);
    sim = device_sim_new(0);
    err = slice_on(sim, SG_EIGH_F64, 0, model_dir, count_out, calib, 0.25, SG_ROTATION_PCA);
    long total = err ? 0 : device_sim_allocations(sim), tried = 0, clean = 0;
    sim->ops->free(sim);
    for (long n = 1; n <= total; n++, tried++) {
        char fail_out[4096];
        snprintf(fail_out, sizeof fail_out, "%s/%s-fail%ld", tmp, what, n);
        sim = device_sim_new(0);
        device_sim_fail_at(sim, n);
        err = slice_on(sim, SG_EIGH_F64, 0, model_dir, fail_out, calib, 0.25, SG_ROTATION_PCA);
        sim->ops->memory(sim, &m);
        char fail_tmp[4200];
        snprintf(fail_tmp, sizeof fail_tmp, "%s.tmp", fail_out);
        int ok = m.in_use == 0 && access(fail_tmp, F_OK) != 0 &&
                 (err ? err == -ENOMEM && strstr(sg_last_error(), "refused") &&
                            access(fail_out, F_OK) != 0
                      : access(fail_out, F_OK) == 0);
        if (!ok)
            tap_diag("allocation %ld refused: error %d (%s), %zu bytes held", n, err,
                     sg_last_error(), m.in_use);
        clean += ok;
        sim->ops->free(sim);
    }
    tap_ok(tried > 0 && clean == tried,
           "%s: %ld of %ld runs with a device allocation refused ended cleanly (of %ld "
           "allocations)", what, clean, tried, total);

    /* a device too small: one clear error, no model, nothing left held */
    char small[4096];
    snprintf(small, sizeof small, "%s/%s-small", tmp, what);
    sim = device_sim_new(64 << 10);
    err = slice_on(sim, SG_EIGH_F64, 0, model_dir, small, calib, 0.25, SG_ROTATION_PCA);
    char tmp_dir[4200];
    snprintf(tmp_dir, sizeof tmp_dir, "%s.tmp", small);
    sim->ops->memory(sim, &m);
    tap_ok(err == -ENOMEM && strstr(sg_last_error(), "cap") && access(small, F_OK) != 0 &&
               access(tmp_dir, F_OK) != 0 && m.in_use == 0,
           "%s: a 64 KiB device fails cleanly: %s", what, sg_last_error());
    sim->ops->free(sim);
    free(a);
    free(b);
}

/* Rotation only: the sliced model must compute the dense model's logits. */
static void test_rotation_invariance(const char *model_dir, const char *what,
                                     const sg_token_batch *calib, const sg_token_batch *eval,
                                     int64_t vocab, const char *tmp)
{
    char out[4096];
    snprintf(out, sizeof out, "%s/%s-s0", tmp, what);
    int64_t T = eval->offsets[eval->n_seq];
    float *dense = malloc(T * vocab * sizeof(float)), *rot = malloc(T * vocab * sizeof(float));
    int err = slice(model_dir, out, calib, 0.0, SG_ROTATION_PCA);
    err = err ? err : logits_of(model_dir, eval, dense, NULL);
    err = err ? err : logits_of(out, eval, rot, NULL);
    double rel = err ? INFINITY : test_rel_diff(rot, dense, T * vocab);
    if (err)
        tap_diag("%s", sg_last_error());
    tap_ok(!err && rel < 2e-5, "%s: rotated, unsliced model has the dense logits (relative %.2g)",
           what, rel);
    free(dense);
    free(rot);
}

/* A shard cut short after the model was opened: the block read from it
 * is loaded by the helper thread that prepares the next block on a GPU
 * run, and its error (naming the file) must reach the caller, with no
 * model written and nothing left held on the device. */
static void test_device_truncated(const char *tmp)
{
    sg_model_config cfg;
    char dir[4096], shard[4200], out[4200];
    snprintf(dir, sizeof dir, "%s/cut", tmp);
    snprintf(out, sizeof out, "%s/cut-out", tmp);
    int err = sg_synth_config(SG_ARCH_LLAMA, 64, 4, 4, 2, 16, 96, 97, &cfg);
    err = err ? err : sg_synth_save_hf(dir, &cfg, 5, SG_DT_F32, 2);
    sg_model_files *f = NULL;
    err = err ? err : sg_model_files_open(dir, &f);
    sg_token_batch calib = test_random_batch(8, 32, cfg.vocab_size, 1);
    snprintf(shard, sizeof shard, "%s/model-00002-of-00002.safetensors", dir);
    struct stat st;
    if (!err && (stat(shard, &st) != 0 || truncate(shard, st.st_size / 2) != 0))
        err = -1;
    sg_backend *sim = device_sim_new(0);
    if (!err) {
        sg_slice_options o;
        sg_slice_options_default(&o);
        o.out_dir = out;
        o.backend = sim;
        sg_slice_report rep;
        err = sg_slice(f, &calib, &o, &rep);
    }
    sg_backend_mem m;
    sim->ops->memory(sim, &m);
    char tmp_out[4300];
    snprintf(tmp_out, sizeof tmp_out, "%s.tmp", out);
    tap_ok(err < 0 && strstr(sg_last_error(), "model-00002-of-00002.safetensors") &&
               access(out, F_OK) != 0 && access(tmp_out, F_OK) != 0 && m.in_use == 0,
           "device path, a shard cut short after opening: %s", sg_last_error());
    sim->ops->free(sim);
    sg_model_files_close(f);
    sg_token_batch_free(&calib);
}


/* What run prints as stored is what the files hold, for each way of
 * treating the embeddings that applies to the model. */
static void test_stored_count(const char *model_dir, const char *what,
                              const sg_token_batch *calib, sg_embed_mode embed, const char *tmp)
{
    char out[4096];
    snprintf(out, sizeof out, "%s/%s-count-%s", tmp, what, sg_embed_mode_name(embed));
    sg_slice_report rep;
    int err = slice_with(NULL, SG_EIGH_F64, 0, model_dir, out, calib, 0.25, SG_ROTATION_PCA,
                         embed, &rep);
    int64_t n = err ? -1 : test_stored_elements(out, NULL);
    tap_ok(!err && n == rep.params_stored,
           "%s, embeddings %s: the files hold the %lld parameters reported as stored (%lld)",
           what, sg_embed_mode_name(embed), (long long)rep.params_stored, (long long)n);
}

/* Embeddings kept (tied RMSNorm models): at sparsity 0 the dense logits;
 * the table is written as it was and no head at all; sliced, it stores
 * less than the published method at the same width. */
static void test_embeddings_kept(const char *model_dir, const char *what,
                                 const sg_token_batch *calib, const sg_token_batch *eval,
                                 int64_t vocab, const char *tmp)
{
    char keep0[4096], keep[4096], cut[4096];
    snprintf(keep0, sizeof keep0, "%s/%s-keep0", tmp, what);
    snprintf(keep, sizeof keep, "%s/%s-keep25", tmp, what);
    snprintf(cut, sizeof cut, "%s/%s-slice25", tmp, what);
    int64_t T = eval->offsets[eval->n_seq];
    float *dense = malloc(T * vocab * sizeof(float)), *kept = malloc(T * vocab * sizeof(float));
    sg_slice_report rk, rs;
    int err = slice_with(NULL, SG_EIGH_F64, 0, model_dir, keep0, calib, 0.0, SG_ROTATION_PCA,
                         SG_EMBED_KEEP, NULL);
    err = err ? err : logits_of(model_dir, eval, dense, NULL);
    err = err ? err : logits_of(keep0, eval, kept, NULL);
    double rel = err ? INFINITY : test_rel_diff(kept, dense, T * vocab);
    if (err)
        tap_diag("%s", sg_last_error());
    tap_ok(!err && rel < 2e-5, "%s, embeddings kept, rotated and unsliced: the dense logits "
           "(relative %.2g)", what, rel);
    err = slice_with(NULL, SG_EIGH_F64, 0, model_dir, keep, calib, 0.25, SG_ROTATION_PCA,
                     SG_EMBED_KEEP, &rk);
    err = err ? err : slice_with(NULL, SG_EIGH_F64, 0, model_dir, cut, calib, 0.25,
                                 SG_ROTATION_PCA, SG_EMBED_SLICE, &rs);
    /* the table is the original's, to the bit; the head is that table */
    sg_safetensors *a = NULL, *b = NULL;
    int same = 0, headless = 0;
    if (!err && !sg_safetensors_open(model_dir, &a) && !sg_safetensors_open(keep, &b)) {
        /* both written as Hugging Face names */
        const sg_st_tensor *ta = sg_safetensors_find(a, "model.embed_tokens.weight"),
                           *tb = sg_safetensors_find(b, "model.embed_tokens.weight");
        if (ta && tb && ta->numel == tb->numel) {
            float *x = malloc(ta->numel * sizeof(float)), *y = malloc(tb->numel * sizeof(float));
            same = !sg_safetensors_read_f32(a, ta, x) && !sg_safetensors_read_f32(b, tb, y) &&
                   !memcmp(x, y, ta->numel * sizeof(float));
            free(x);
            free(y);
        }
        headless = !sg_safetensors_find(b, "lm_head.weight") &&
                   sg_safetensors_find(b, "model.norm.weight");
    }
    sg_safetensors_close(a);
    sg_safetensors_close(b);
    tap_ok(!err && same && headless, "%s, embeddings kept: the table written is the original, "
           "bit for bit, with the final norm and no separate head", what);
    tap_ok(!err && rk.params_stored < rs.params_stored,
           "%s at 25%%: embeddings kept store %lld parameters, sliced ones %lld", what,
           (long long)rk.params_stored, (long long)rs.params_stored);
    free(dense);
    free(kept);
}

/* The same weights read from GGUF (q/k rows in pair-wise RoPE order) and
 * from Hugging Face safetensors (rotate-half order) slice to the same
 * model: the writer puts q/k back in Hugging Face order, and the config
 * names a type of its own, not a stock one. */
static void test_gguf_input(const char *tmp)
{
    sg_model_config cfg;
    char hf[4096], gguf[4096], out_hf[4096], out_gguf[4096];
    snprintf(hf, sizeof hf, "%s/layout-hf", tmp);
    snprintf(gguf, sizeof gguf, "%s/layout.gguf", tmp);
    snprintf(out_hf, sizeof out_hf, "%s/layout-hf-sliced", tmp);
    snprintf(out_gguf, sizeof out_gguf, "%s/layout-gguf-sliced", tmp);
    sg_named_tensor *t = NULL;
    int n = 0;
    int err = sg_synth_config(SG_ARCH_LLAMA, 64, 2, 4, 2, 16, 96, 97, &cfg);
    err = err ? err : sg_synth_save_hf(hf, &cfg, 9, SG_DT_F32, 1);
    err = err ? err : sg_synth_model(&cfg, 9, &t, &n);
    err = err ? err : sg_gguf_save_model(gguf, &cfg, t, n, SG_DT_F32, NULL);
    sg_synth_free(t, n);
    sg_token_batch calib = test_random_batch(8, 32, cfg.vocab_size, 1);
    sg_token_batch eval = test_random_batch(3, 24, cfg.vocab_size, 2);
    err = err ? err : slice(hf, out_hf, &calib, 0.25, SG_ROTATION_PCA);
    err = err ? err : slice(gguf, out_gguf, &calib, 0.25, SG_ROTATION_PCA);
    int64_t T = eval.offsets[eval.n_seq], V = cfg.vocab_size;
    float *a = malloc(T * V * sizeof(float)), *b = malloc(T * V * sizeof(float));
    err = err ? err : logits_of(out_hf, &eval, a, NULL);
    err = err ? err : logits_of(out_gguf, &eval, b, NULL);
    double rel = err ? INFINITY : test_rel_diff(b, a, T * V);
    char path[4200], *text = NULL;
    size_t len;
    snprintf(path, sizeof path, "%s/config.json", out_gguf);
    int stock = 1, half = 0;
    if (!err && !sg_read_file(path, 1 << 20, &text, &len)) {
        cJSON *c = cJSON_Parse(text);
        const cJSON *mt = cJSON_GetObjectItemCaseSensitive(c, "model_type");
        const cJSON *ar = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(c, "architectures"), 0);
        const cJSON *rl = cJSON_GetObjectItemCaseSensitive(
            cJSON_GetObjectItemCaseSensitive(c, "slicegpt"), "rope_layout");
        stock = !cJSON_IsString(mt) || strcmp(mt->valuestring, "slicegpt_llama") ||
                !cJSON_IsString(ar) || strcmp(ar->valuestring, "SliceGPTLlamaForCausalLM");
        half = cJSON_IsString(rl) && !strcmp(rl->valuestring, "half");
        cJSON_Delete(c);
    }
    free(text);
    if (err)
        tap_diag("%s", sg_last_error());
    tap_ok(!err && rel < 1e-4 && half && !stock,
           "a GGUF model slices to the HF model's logits (relative %.2g), written with q/k in "
           "rotate-half order under model_type slicegpt_llama", rel);
    free(a);
    free(b);
    sg_token_batch_free(&calib);
    sg_token_batch_free(&eval);
}

/* SmolLM2-135M's shape (the default model), from its config alone: kept
 * embeddings store less than dense at 25%, the published method more. */
static void test_smollm2_shape(void)
{
    sg_model_config c;
    int err = sg_synth_config(SG_ARCH_LLAMA, 576, 30, 9, 3, 64, 1536, 49152, &c);
    c.tied_embeddings = 1;
    sg_model_config keep, cut;
    sg_plan_options o;
    sg_plan_options_default(&o);
    int64_t dk = err ? -1 : sg_slice_plan(&c, &o, &keep);
    o.embeddings = SG_EMBED_SLICE;
    int64_t ds = err ? -1 : sg_slice_plan(&c, &o, &cut);
    int64_t dense = sg_model_param_count(&c), pk = sg_model_param_count(&keep),
            ps = sg_model_param_count(&cut);
    tap_ok(dk == 432 && ds == 432 && pk < dense && ps > dense,
           "SmolLM2-135M's shape at 25%%: embeddings kept store %.1f%% of dense, sliced %.1f%%",
           100.0 * pk / dense, 100.0 * ps / dense);
    /* --target-size: the widest width within the budget */
    o.embeddings = SG_EMBED_AUTO;
    o.target_size = 0.8;
    sg_model_config t, wider;
    int64_t dt = sg_slice_plan(&c, &o, &t);
    o.target_size = 0;
    o.sparsity = 1.0 - (double)(dt + 8) / 576;
    sg_slice_plan(&c, &o, &wider);
    tap_ok(dt > 0 && sg_model_param_count(&t) <= 0.8 * dense &&
               sg_model_param_count(&wider) > 0.8 * dense,
           "--target-size 0.8 on SmolLM2-135M's shape: d = %lld stores %.1f%%, d + 8 would store "
           "%.1f%%", (long long)dt, 100.0 * sg_model_param_count(&t) / dense,
           100.0 * sg_model_param_count(&wider) / dense);
}

static void test_synthetic(sg_arch arch, const char *what, const char *tmp)
{
    sg_model_config cfg;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s/%s", tmp, what);
    int err = test_synth_dir(arch, 96, dir, &cfg);
    if (err) {
        tap_ok(0, "%s: synthetic model written (%s)", what, sg_last_error());
        return;
    }
    sg_token_batch calib = test_random_batch(8, 32, cfg.vocab_size, 1);
    sg_token_batch eval = test_random_batch(3, 24, cfg.vocab_size, 2);
    test_rotation_invariance(dir, what, &calib, &eval, cfg.vocab_size, tmp);
    test_device_path(dir, what, &calib, &eval, cfg.vocab_size, tmp);
    test_stored_count(dir, what, &calib, SG_EMBED_SLICE, tmp);
    if (arch == SG_ARCH_LLAMA) {
        /* the same model with its head tied to the embeddings */
        char tied[4200];
        snprintf(tied, sizeof tied, "%s-tied", dir);
        cfg.tied_embeddings = 1;
        err = sg_synth_save_hf(tied, &cfg, 5, SG_DT_F32, 2);
        if (err)
            tap_ok(0, "%s-tied: synthetic model written (%s)", what, sg_last_error());
        else {
            char name[128];
            snprintf(name, sizeof name, "%s-tied", what);
            test_embeddings_kept(tied, name, &calib, &eval, cfg.vocab_size, tmp);
            test_stored_count(tied, name, &calib, SG_EMBED_KEEP, tmp);
            test_device_path(tied, name, &calib, &eval, cfg.vocab_size, tmp);
        }
    }
    sg_token_batch_free(&calib);
    sg_token_batch_free(&eval);
}

/* H built from exactly known directions: X has one row sqrt(λ_j)·r_jᵀ per
 * direction, so XᵀX = Σ λ_j r_j r_jᵀ; the solver must return λ_j + δ in
 * order and r_j up to sign. */
static void test_pca_known(void)
{
    const int64_t d = 24;
    double *r = malloc(d * d * sizeof(double)), *q = malloc(d * d * sizeof(double));
    double lambda[24], eig[24], mean = 0;
    sg_random_orthogonal(d, 99, r);
    float *x = malloc(d * d * sizeof(float));
    for (int64_t j = 0; j < d; j++) {
        lambda[j] = pow(0.7, (double)j) * 10.0;
        mean += lambda[j] / d;
        for (int64_t i = 0; i < d; i++)
            x[j * d + i] = (float)(sqrt(lambda[j]) * r[i * d + j]);
    }
    /* the covariance as the stages accumulate it: the CPU backend's op */
    sg_backend *cpu = sg_backend_cpu();
    double *h = calloc(d * d, sizeof(double));
    cpu->ops->cov_accumulate(cpu, h, d, x, d, 0);
    int err = sg_eigh_descending(h, d, 0.01, q, eig);
    double val_err = 0, vec_err = 0;
    for (int64_t j = 0; j < d; j++) {
        /* x was rounded to float32, so compare at float32 precision */
        val_err = fmax(val_err, fabs(eig[j] - (lambda[j] + 0.01 * mean)) / lambda[0]);
        double dot = 0;
        for (int64_t i = 0; i < d; i++)
            dot += q[i * d + j] * r[i * d + j];
        if (j < 12) /* well-separated leading directions */
            vec_err = fmax(vec_err, 1 - fabs(dot));
    }
    tap_ok(!err && val_err < 1e-6, "PCA: known spectrum recovered, descending (error %.2g)",
           val_err);
    tap_ok(!err && vec_err < 1e-6, "PCA: leading directions recovered (1 - |cos| <= %.2g)",
           vec_err);
    free(h);
    free(r);
    free(q);
    free(x);

    /* statistical version: Gaussian samples with that covariance; the
     * leading 4-dimensional subspace is found to sampling accuracy */
    const int64_t T = 20000, k = 4;
    uint64_t seed = 3;
    r = malloc(d * d * sizeof(double));
    q = malloc(d * d * sizeof(double));
    sg_random_orthogonal(d, 7, r);
    x = malloc(T * d * sizeof(float));
    for (int64_t t = 0; t < T; t++) {
        double z[24];
        for (int64_t j = 0; j < d; j++)
            z[j] = test_gauss(&seed) * sqrt(j < k ? 100.0 : 1.0);
        for (int64_t i = 0; i < d; i++) {
            double acc = 0;
            for (int64_t j = 0; j < d; j++)
                acc += r[i * d + j] * z[j];
            x[t * d + i] = (float)acc;
        }
    }
    h = calloc(d * d, sizeof(double));
    cpu->ops->cov_accumulate(cpu, h, d, x, T, 0);
    err = sg_eigh_descending(h, d, 0.0, q, eig);
    /* energy of the estimated top-k subspace inside the true one */
    double captured = 0;
    for (int64_t a = 0; a < k; a++)
        for (int64_t b = 0; b < k; b++) {
            double dot = 0;
            for (int64_t i = 0; i < d; i++)
                dot += q[i * d + a] * r[i * d + b];
            captured += dot * dot;
        }
    tap_ok(!err && captured > k - 0.01,
           "PCA: sampled signal's top-%lld subspace found (%.4f of %lld)", (long long)k, captured,
           (long long)k);
    tap_ok(!err && fabs(eig[0] / T / 100.0 - 1) < 0.05 && fabs(eig[k] / T - 1) < 0.1,
           "PCA: sampled eigenvalues near 100 and 1 (%.2f, %.2f)", eig[0] / T, eig[k] / T);
    free(h);
    free(r);
    free(q);
    free(x);
}

/* Calibration and evaluation batches from the TinyStories text. */
static int story_batches(const char *model_dir, sg_token_batch *calib, sg_token_batch *eval)
{
    sg_model_files *f;
    sg_tokenizer *tok;
    char *text;
    size_t len;
    int err = sg_model_files_open(model_dir, &f);
    if (err)
        return err;
    err = sg_model_files_tokenizer(f, NULL, &tok);
    sg_model_files_close(f);
    if (err)
        return err;
    err = sg_text_read(tap_data_path("tinystories-valid-subset/tinystories_valid_first.txt"),
                       &text, &len);
    err = err ? err : sg_batch_calibration(tok, text, len / 2, 64, 256, 42, calib);
    /* evaluate on the second half, which calibration never saw */
    err = err ? err : sg_batch_windows(tok, text + len / 2, len - len / 2, 256, 40, eval);
    free(text);
    sg_tokenizer_free(tok);
    return err;
}

static void test_stories(const char *tmp)
{
    char model[4096], out[4096];
    snprintf(model, sizeof model, "%s/stories260K", tmp);
    int err = sg_llama2c_to_hf(tap_data_path("stories260K/stories260K.bin"), model,
                                 tap_data_path("stories260K/tok512.bin"));
    sg_token_batch calib, eval;
    err = err ? err : story_batches(model, &calib, &eval);
    if (err) {
        tap_ok(0, "stories260K prepared (%s)", sg_last_error());
        return;
    }
    test_rotation_invariance(model, "stories260K", &calib, &eval, 512, tmp);

    const double sparsity[] = {0.0, 0.1, 0.2, 0.3};
    double ppl[4];
    sg_eval_result r;
    err = logits_of(model, &eval, NULL, &r);
    double dense = err ? NAN : exp(r.nll / r.count);
    for (int i = 0; i < 4; i++) {
        snprintf(out, sizeof out, "%s/stories-%d", tmp, i);
        int e = slice(model, out, &calib, sparsity[i], SG_ROTATION_PCA);
        e = e ? e : logits_of(out, &eval, NULL, &r);
        ppl[i] = e ? NAN : exp(r.nll / r.count);
        tap_diag("stories260K sparsity %.1f: perplexity %.4f (dense %.4f)", sparsity[i], ppl[i],
                 dense);
    }
    tap_ok(fabs(ppl[0] / dense - 1) < 1e-4, "stories260K: sparsity 0 keeps perplexity (%.6f vs %.6f)",
           ppl[0], dense);
    tap_ok(ppl[0] < ppl[1] && ppl[1] < ppl[2] && ppl[2] < ppl[3],
           "stories260K: perplexity rises monotonically with sparsity");

    snprintf(out, sizeof out, "%s/stories-25", tmp);
    err = slice(model, out, &calib, 0.25, SG_ROTATION_PCA);
    err = err ? err : logits_of(out, &eval, NULL, &r);
    double pca = err ? NAN : exp(r.nll / r.count);
    snprintf(out, sizeof out, "%s/stories-25-random", tmp);
    err = slice(model, out, &calib, 0.25, SG_ROTATION_RANDOM);
    err = err ? err : logits_of(out, &eval, NULL, &r);
    double rnd = err ? NAN : exp(r.nll / r.count);
    tap_diag("stories260K at 25%%: PCA %.3f, random rotation %.3f, dense %.3f", pca, rnd, dense);
    tap_ok(isfinite(pca) && pca > dense, "stories260K at 25%%: finite and above dense");
    tap_ok(isfinite(rnd) && rnd > 10 * pca, "stories260K at 25%%: PCA is far better than a random rotation");

    /* the consumer-GPU configuration, simulated: device path, mixed
     * covariance, mixed eigensolver */
    sg_backend *sim = device_sim_new(0);
    snprintf(out, sizeof out, "%s/stories-25-mixed", tmp);
    err = slice_on(NULL, SG_EIGH_MIXED, 0, model, out, &calib, 0.25, SG_ROTATION_PCA);
    err = err ? err : logits_of(out, &eval, NULL, &r);
    double mixed = err ? NAN : exp(r.nll / r.count);
    snprintf(out, sizeof out, "%s/stories-25-sim", tmp);
    err = slice_on(sim, SG_EIGH_MIXED, 1, model, out, &calib, 0.25, SG_ROTATION_PCA);
    err = err ? err : eval_on(sim, out, &eval, NULL, &r); /* two chunks, many head rows */
    double dev = err ? NAN : exp(r.nll / r.count);
    sim->ops->free(sim);
    tap_diag("stories260K at 25%%: dsyevd %.6f, mixed eigensolver %.6f, device path + mixed "
             "covariance + mixed eigensolver %.6f", pca, mixed, dev);
    tap_ok(fabs(mixed / pca - 1) < 1e-4, "stories260K at 25%%: the mixed eigensolver's "
           "perplexity is dsyevd's (%+.2g%%)", 100 * (mixed / pca - 1));
    tap_ok(fabs(dev / pca - 1) < 5e-3, "stories260K at 25%%: sliced and evaluated on the device "
           "path, mixed covariance and eigensolver, within 0.5%% of the CPU path (%+.2g%%)",
           100 * (dev / pca - 1));
    sg_token_batch_free(&calib);
    sg_token_batch_free(&eval);
}

static void test_tinyopt(const char *tmp)
{
    const char *model = tap_data_path("tinyopt-250K");
    /* random ids: the OPT model ships without a tokenizer of its own */
    sg_token_batch calib = test_random_batch(16, 64, 512, 3), eval = test_random_batch(4, 64, 512, 4);
    test_rotation_invariance(model, "tinyopt-250K", &calib, &eval, 512, tmp);
    sg_token_batch_free(&calib);
    sg_token_batch_free(&eval);
}

int main(void)
{
    const char *tmp = tap_tmpdir();
    test_fold(test_config_llama(), "llama");
    test_fold(test_config_opt(), "OPT");
    test_fold(test_config_phi(), "Phi-2");
    test_pca_known();
    test_smollm2_shape();
    test_gguf_input(tmp);
    test_synthetic(SG_ARCH_LLAMA, "synthetic-llama", tmp);
    test_synthetic(SG_ARCH_OPT, "synthetic-opt", tmp);
    test_synthetic(SG_ARCH_PHI, "synthetic-phi", tmp);
    test_device_truncated(tmp);
    if (tap_data_find("tinyopt-250K/config.json"))
        test_tinyopt(tmp);
    else
        tap_skip("tinyopt-250K rotation invariance", "shared data not present");
    if (tap_data_find("stories260K/stories260K.bin") &&
        tap_data_find("tinystories-valid-subset/tinystories_valid_first.txt"))
        test_stories(tmp);
    else
        tap_skip("stories260K slicing", "shared data not present");
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", tmp);
    return tap_done();
}
