/* --method nystrom (stages/prune_ffn.h): the MLP's hidden width cut by
 * ridge leverage and the down projection refitted by least squares.
 *  - the selection against leverage scores computed another way (an
 *    eigendecomposition of C), and on units built to be redundant or dead;
 *  - the refit against LAPACK's QR least squares on the hidden units
 *    themselves (not their correlation), with and without the bias unit;
 *  - whole runs on synthetic Llama, OPT and Phi-2 models: the written
 *    model is what the plan printed (widths, no shortcuts, the stored
 *    count), its logits are those of the float64 reference forward, the
 *    device path writes the same model and mixes up no pointers, and with
 *    nothing to cut the dense logits come back;
 *  - the hidden units kept from the statistics pass (the CPU's shortcut:
 *    no second gate and up projection) through the refitted down
 *    projection give the cut block's own MLP output. */
#include <errno.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compare.h"
#include "device_sim.h"
#include "evaluate.h"
#include "forward.h"
#include "forward_ops.h"
#include "model.h"
#include "model_files.h"
#include "prune_ffn.h"
#include "random_model.h"
#include "ref_forward.h"
#include "sg_error.h"
#include "slicer.h"
#include "synth_model.h"
#include "tap.h"

/* h (n, F): random units, unit 1 a copy of unit 0 plus a little noise
 * (redundant), unit 2 always 0 (dead), unit 3 a mix of 4 and 5 */
static double *hidden_units(int64_t n, int64_t F, uint64_t seed)
{
    double *h = malloc(n * F * sizeof(double));
    uint64_t s = seed;
    for (int64_t t = 0; t < n; t++) {
        double *r = h + t * F;
        for (int64_t j = 0; j < F; j++)
            r[j] = test_gauss(&s) * (1.0 + 0.1 * (double)(j % 7)) + (j % 3 == 0 ? 0.5 : 0.0);
        r[1] = r[0] + 1e-3 * test_gauss(&s);
        r[2] = 0;
        r[3] = 0.6 * r[4] - 0.8 * r[5];
    }
    return h;
}

static double *correlation(const double *h, int64_t n, int64_t F)
{
    double *c = calloc(F * F, sizeof(double));
    for (int64_t t = 0; t < n; t++)
        for (int64_t i = 0; i < F; i++)
            for (int64_t j = 0; j < F; j++)
                c[i * F + j] += h[t * F + i] * h[t * F + j];
    return c;
}

/* ℓ_i = Σ_k V_ik² λ_k / (λ_k + λ) from C = V Λ Vᵀ */
static void leverage_by_eigen(const double *c, int64_t F, double lambda, double *lev)
{
    double *v = malloc(F * F * sizeof(double)), *w = malloc(F * sizeof(double));
    memcpy(v, c, F * F * sizeof(double));
    LAPACKE_dsyev(LAPACK_ROW_MAJOR, 'V', 'U', F, v, F, w);
    for (int64_t i = 0; i < F; i++) {
        lev[i] = 0;
        for (int64_t k = 0; k < F; k++)
            lev[i] += v[i * F + k] * v[i * F + k] * w[k] / (w[k] + lambda);
    }
    free(v);
    free(w);
}

static void test_select(void)
{
    int64_t n = 400, F = 24, f = 16;
    double *h = hidden_units(n, F, 11), *c = correlation(h, n, F);
    double md = 0, lev[24];
    for (int64_t i = 0; i < F; i++)
        md += c[i * F + i] / F;
    leverage_by_eigen(c, F, 1e-2 * md, lev);
    int64_t keep[24];
    int err = sg_ffn_select(c, F, f, 1e-2, keep);
    /* the f largest by the eigen route, ascending */
    int64_t order[24];
    for (int64_t i = 0; i < F; i++)
        order[i] = i;
    for (int64_t i = 0; i < F; i++)
        for (int64_t j = i + 1; j < F; j++)
            if (lev[order[j]] > lev[order[i]]) {
                int64_t t = order[i];
                order[i] = order[j];
                order[j] = t;
            }
    int same = !err;
    for (int64_t i = 0; same && i < f; i++) {
        int found = 0;
        for (int64_t j = 0; j < f; j++)
            found |= keep[j] == order[i];
        same = found;
    }
    int ascending = 1, has_dead = 0, has_both_copies = 0, has_0 = 0, has_1 = 0;
    for (int64_t i = 0; i < f; i++) {
        ascending &= i == 0 || keep[i] > keep[i - 1];
        has_dead |= keep[i] == 2;
        has_0 |= keep[i] == 0;
        has_1 |= keep[i] == 1;
    }
    has_both_copies = has_0 && has_1;
    tap_ok(same && ascending, "selection: the %lld units of largest ridge leverage (as an "
           "eigendecomposition of C scores them), in ascending order", (long long)f);
    tap_ok(!has_dead && !has_both_copies && lev[2] < 1e-12,
           "selection: a dead unit (leverage %.2g) and one of two near copies are cut (leverages "
           "%.3f, %.3f)", lev[2], lev[0], lev[1]);
    double zero[4] = {0};
    err = sg_ffn_select(zero, 2, 1, 1e-2, keep);
    tap_ok(err == SG_ENUMERIC && strstr(sg_last_error(), "no calibration signal"),
           "selection: units that never fire are one clear error: %s", sg_last_error());
    free(h);
    free(c);
}

/* the refit against QR least squares on h itself */
static void test_refit(int bias)
{
    int64_t n = 300, F = 20, f = 12, d_out = 7;
    double *h = hidden_units(n, F, 5 + bias), *c = correlation(h, n, F);
    double sum[20] = {0};
    for (int64_t t = 0; t < n; t++)
        for (int64_t j = 0; j < F; j++)
            sum[j] += h[t * F + j];
    float w[7 * 20], w_new[7 * 12];
    uint64_t s = 99;
    for (int64_t i = 0; i < d_out * F; i++)
        w[i] = (float)test_gauss(&s);
    int64_t keep[12] = {0, 4, 5, 6, 7, 9, 10, 12, 13, 15, 17, 19};
    double delta[7] = {0};
    int err = sg_ffn_refit(c, bias ? sum : NULL, n, F, w, d_out, keep, f, 0.0, w_new, delta);

    /* A (n, f [+1]) = the units kept [and 1s], B (n, d_out) = h Wᵀ */
    int64_t k = f + bias;
    double *a = malloc(n * k * sizeof(double)), *b = malloc(n * d_out * sizeof(double));
    for (int64_t t = 0; t < n; t++) {
        for (int64_t i = 0; i < f; i++)
            a[t * k + i] = h[t * F + keep[i]];
        if (bias)
            a[t * k + f] = 1;
        for (int64_t o = 0; o < d_out; o++) {
            double y = 0;
            for (int64_t j = 0; j < F; j++)
                y += h[t * F + j] * w[o * F + j];
            b[t * d_out + o] = y;
        }
    }
    LAPACKE_dgels(LAPACK_ROW_MAJOR, 'N', n, k, d_out, a, k, b, d_out);
    double e = 0, scale = 0;
    for (int64_t o = 0; o < d_out; o++) {
        for (int64_t i = 0; i < f; i++) {
            e = fmax(e, fabs(w_new[o * f + i] - b[i * d_out + o]));
            scale = fmax(scale, fabs(b[i * d_out + o]));
        }
        if (bias)
            e = fmax(e, fabs(delta[o] - b[f * d_out + o]));
    }
    tap_ok(!err && e / scale < 1e-5, "refit%s: the normal equations on C give QR's least squares "
           "on the units themselves (relative %.2g)", bias ? " with the bias unit" : "", e / scale);
    free(a);
    free(b);
    free(h);
    free(c);
}

/* the written model against the float64 reference forward */
static double ref_diff(const char *dir, const sg_token_batch *eval, const float *logits)
{
    sg_model_files *f;
    if (sg_model_files_open(dir, &f))
        return INFINITY;
    const sg_model_config *c = sg_model_files_config(f);
    sg_model m;
    sg_block *blocks = calloc(c->n_layers, sizeof(sg_block));
    int err = sg_model_load(f, &m);
    for (int64_t l = 0; l < c->n_layers && !err; l++)
        err = sg_block_load(f, c, l, &blocks[l]);
    int64_t T = eval->offsets[eval->n_seq], V = c->vocab_size;
    double *ref = malloc(T * V * sizeof(double));
    for (int64_t s = 0; s < eval->n_seq && !err; s++)
        ref_logits(&m, blocks, eval->ids + eval->offsets[s], eval->offsets[s + 1] - eval->offsets[s],
                   ref + eval->offsets[s] * V);
    double e = 0, scale = 1e-30;
    for (int64_t i = 0; i < T * V && !err; i++) {
        e = fmax(e, fabs(logits[i] - ref[i]));
        scale = fmax(scale, fabs(ref[i]));
    }
    for (int64_t l = 0; l < c->n_layers; l++)
        sg_block_free(&blocks[l]);
    free(blocks);
    free(ref);
    if (!err)
        sg_model_free(&m);
    sg_model_files_close(f);
    return err || isnan(e) ? INFINITY : e / scale;
}

static int run_nystrom(sg_backend *be, const char *model, const char *out,
                       const sg_token_batch *calib, double sparsity, sg_slice_report *rep)
{
    sg_slice_options o;
    sg_slice_options_default(&o);
    o.plan.method = SG_METHOD_NYSTROM;
    o.plan.sparsity = sparsity;
    o.out_dir = out;
    o.backend = be;
    return test_slice_dir(model, calib, &o, rep);
}

static int logits_on(sg_backend *be, const char *dir, const sg_token_batch *b, float *logits)
{
    sg_model_files *f;
    int err = sg_model_files_open(dir, &f);
    err = err ? err : sg_evaluate_logits_on(be, f, b, logits);
    if (!err || f)
        sg_model_files_close(f);
    return err;
}

static void test_synthetic(sg_arch arch, const char *what, const char *tmp)
{
    sg_model_config cfg;
    char dir[4096], out[4200], sim_out[4200], zero[4200];
    snprintf(dir, sizeof dir, "%s/%s", tmp, what);
    snprintf(out, sizeof out, "%s-ny", dir);
    snprintf(sim_out, sizeof sim_out, "%s-ny-sim", dir);
    snprintf(zero, sizeof zero, "%s-ny0", dir);
    /* OPT's learned positions and untied head are most of a small model:
     * give its MLP the share a real OPT's has (F = 4D) */
    int64_t F = arch == SG_ARCH_OPT ? 256 : 96;
    int err = test_synth_dir(arch, F, dir, &cfg);
    if (err) {
        tap_ok(0, "%s: synthetic model written (%s)", what, sg_last_error());
        return;
    }
    sg_token_batch calib = test_random_batch(8, 32, cfg.vocab_size, 1);
    sg_token_batch eval = test_random_batch(3, 24, cfg.vocab_size, 2);
    int64_t T = eval.offsets[eval.n_seq], V = cfg.vocab_size;
    float *a = malloc(T * V * sizeof(float)), *b = malloc(T * V * sizeof(float));

    sg_slice_report rep;
    err = run_nystrom(NULL, dir, out, &calib, 0.25, &rep);
    if (err)
        tap_diag("%s", sg_last_error());
    int shortcuts = -1;
    int64_t stored = err ? -1 : test_stored_elements(out, &shortcuts);
    sg_model_files *f = NULL;
    int same_widths = !err && !sg_model_files_open(out, &f);
    const sg_model_config *w = same_widths ? sg_model_files_config(f) : NULL;
    int64_t fw = rep.sliced.d_ffn[0];
    /* an RMSNorm model comes back as its own architecture with a smaller
     * intermediate size; a LayerNorm one in the per-layer format */
    int plain = same_widths && !w->sliced && cfg.norm == SG_NORM_RMS && w->ffn_dim == fw;
    for (int64_t l = 0; same_widths && l < w->n_layers; l++)
        same_widths = (plain || w->residual_kept) && sg_layer_ffn(w, l) == fw &&
                      w->d_in[l] == cfg.dim && w->d_mid[l] == cfg.dim && w->d_out[l] == cfg.dim;
    if (f)
        sg_model_files_close(f);
    tap_ok(same_widths && fw > 0 && fw < cfg.ffn_dim && fw % 8 == 0 &&
               plain == (cfg.norm == SG_NORM_RMS),
           "%s: written as planned (%s): residual kept at D = %lld, MLP hidden width %lld of "
           "%lld in every block", what, plain ? "a plain model" : "the per-layer format",
           (long long)cfg.dim, (long long)fw, (long long)cfg.ffn_dim);
    tap_ok(stored == rep.params_stored && shortcuts == 0,
           "%s: no shortcut stored (%d), the files hold the %lld parameters reported (%lld)", what,
           shortcuts, (long long)rep.params_stored, (long long)stored);

    err = err ? err : logits_on(NULL, out, &eval, a);
    double rel = err ? INFINITY : ref_diff(out, &eval, a);
    tap_ok(rel < 2e-5, "%s: the pruned model's logits are the float64 reference forward's "
           "(relative %.2g)", what, rel);

    sg_backend *sim = device_sim_new(0);
    sg_slice_report rep_sim;
    int e2 = run_nystrom(sim, dir, sim_out, &calib, 0.25, &rep_sim);
    e2 = e2 ? e2 : logits_on(NULL, sim_out, &eval, b);
    double rel_sim = e2 || err ? INFINITY : test_rel_diff(b, a, T * V);
    e2 = e2 ? e2 : logits_on(sim, out, &eval, b);
    double rel_eval = e2 || err ? INFINITY : test_rel_diff(b, a, T * V);
    if (e2)
        tap_diag("%s", sg_last_error());
    sg_backend_mem m;
    sim->ops->memory(sim, &m);
    tap_ok(rel_sim < 1e-4 && rel_eval < 1e-5 && device_sim_violations(sim) == 0 &&
               m.in_use == 0,
           "%s: the device path prunes to the same model (logits within %.2g) and evaluates it "
           "(%.2g), no pointer mixed up (%d), nothing left held (%zu bytes)",
           what, rel_sim, rel_eval, device_sim_violations(sim), m.in_use);
    sim->ops->free(sim);

    /* every device allocation refused in turn (the statistics', the pruned
     * tensors'): each run fails with that error, or succeeds where the
     * run can do without it; none leaves a model, a .tmp or memory held */
    long total = 0, clean = 0;
    char count_out[4300];
    snprintf(count_out, sizeof count_out, "%s-count", dir);
    sim = device_sim_new(0);
    if (!run_nystrom(sim, dir, count_out, &calib, 0.25, &rep_sim))
        total = device_sim_allocations(sim);
    sim->ops->free(sim);
    for (long k = 1; arch == SG_ARCH_LLAMA && k <= total; k++) {
        char fail_out[4300], fail_tmp[4400];
        snprintf(fail_out, sizeof fail_out, "%s-fail%ld", dir, k);
        snprintf(fail_tmp, sizeof fail_tmp, "%s.tmp", fail_out);
        sim = device_sim_new(0);
        device_sim_fail_at(sim, k);
        int e = run_nystrom(sim, dir, fail_out, &calib, 0.25, &rep_sim);
        sim->ops->memory(sim, &m);
        int ok = m.in_use == 0 && access(fail_tmp, F_OK) != 0 &&
                 (e ? e == -ENOMEM && access(fail_out, F_OK) != 0 : access(fail_out, F_OK) == 0);
        if (!ok)
            tap_diag("allocation %ld refused: error %d (%s), %zu bytes held", k, e,
                     sg_last_error(), m.in_use);
        clean += ok;
        sim->ops->free(sim);
    }
    if (arch == SG_ARCH_LLAMA)
        tap_ok(total > 0 && clean == total,
               "%s: %ld of %ld runs with a device allocation refused ended cleanly", what, clean,
               total);

    /* sparsity 0: the reference stores shortcuts at full width, so the
     * budget keeps every unit, and nothing is rotated: the dense model */
    e2 = run_nystrom(NULL, dir, zero, &calib, 0.0, &rep);
    e2 = e2 ? e2 : logits_on(NULL, dir, &eval, a);
    e2 = e2 ? e2 : logits_on(NULL, zero, &eval, b);
    double rel0 = e2 ? INFINITY : test_rel_diff(b, a, T * V);
    tap_ok(!e2 && rep.sliced.d_ffn[0] == cfg.ffn_dim && rel0 < 1e-5,
           "%s: with nothing to cut every unit stays (%lld) and the dense logits come back "
           "(relative %.2g)", what, (long long)rep.sliced.d_ffn[0], rel0);
    free(a);
    free(b);
    sg_token_batch_free(&calib);
    sg_token_batch_free(&eval);
}

/* The CPU keeps a block's hidden units from the statistics pass and, once
 * the MLP is cut, sends the kept units' columns through the refitted down
 * projection instead of running the cut MLP again: both must agree. */
static void test_kept_units(sg_model_config cfg, const char *what)
{
    test_model tm;
    sg_backend *be = sg_backend_cpu();
    int64_t rows = 48, D = cfg.dim, F = cfg.ffn_dim, f = F / 2;
    float *x = malloc(rows * D * sizeof(float)), *h = malloc(rows * F * sizeof(float));
    float *kept_out = malloc(rows * D * sizeof(float)), *run_out = malloc(rows * D * sizeof(float));
    uint64_t seed = 17;
    for (int64_t i = 0; i < rows * D; i++)
        x[i] = (float)test_gauss(&seed);
    sg_ffn_stats st = {0};
    int err = test_model_random(&cfg, 5, &tm);
    sg_block *b = &tm.blocks[0];
    err = err ? err : sg_ffn_stats_init(&st, be, F, rows, 0);
    err = err ? err : sg_ffn_stats_begin(&st);
    err = err ? err : sg_ffn_stats_add(&st, &cfg, b, x, rows);
    if (!err)
        memcpy(h, st.hidden, rows * F * sizeof(float));
    err = err ? err : sg_prune_ffn(&st, &cfg, b, f);
    int moved = !err && st.kept == f;
    if (!err) {
        sg_ffn_keep_columns(&st, h, rows);
        for (int64_t r = 0; r < rows && moved; r++)
            for (int64_t j = 0; j < f; j++)
                moved &= h[r * f + j] == st.hidden[r * F + st.keep[j]];
    }
    err = err ? err : sg_block_mlp_down_ops(be, b, h, x, rows, kept_out);
    err = err ? err : sg_block_forward_mlp(&cfg, b, x, run_out, rows);
    double rel = err ? 1 : test_rel_diff(kept_out, run_out, rows * D);
    tap_ok(!err && moved && rel < 1e-5,
           "%s: the kept units' columns (%lld of %lld, moved exactly: %d) through the refitted "
           "down projection give the cut block's MLP output (relative %.2g)%s%s",
           what, (long long)f, (long long)F, moved, rel, err ? ": " : "",
           err ? sg_last_error() : "");
    if (st.be)
        sg_ffn_stats_free(&st);
    test_model_free(&tm);
    free(x);
    free(h);
    free(kept_out);
    free(run_out);
}

int main(void)
{
    const char *tmp = tap_tmpdir();
    test_select();
    test_refit(0);
    test_refit(1);
    test_kept_units(test_config_llama(), "kept units, llama");
    test_kept_units(test_config_opt(), "kept units, opt");
    test_synthetic(SG_ARCH_LLAMA, "nystrom-llama", tmp);
    test_synthetic(SG_ARCH_OPT, "nystrom-opt", tmp);
    test_synthetic(SG_ARCH_PHI, "nystrom-phi", tmp);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", tmp);
    return tap_done();
}
