/* The stage filters but capture (cmd_capture.c) and dump (cmd_dump.c):
 *
 *   slicegpt-stream load MODEL | slicegpt-stream fold
 *     | slicegpt-stream capture --calib FILE | slicegpt-stream cov
 *     | slicegpt-stream eig | slicegpt-stream slice --sparsity S
 *     | slicegpt-stream write OUT
 *
 * load, fold, cov, eig and write call the stage functions (stages/) that
 * the fused `run` calls, in the same order; slice (like capture) is a
 * transport of the one schedule, stages/pipeline.c. So the model written
 * is the same to the byte. Records a stage does not work on pass through
 * unchanged. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "slicegpt.h"
#include "cli.h"
#include "cli_options.h"
#include "stage_common.h"

/* The stages' option parsing: the shared options of `groups` only. */
static int stage_options(int argc, char **argv, unsigned groups, const char *usage,
                         sg_cli_job *j, int operands)
{
    sg_cli_job_default(j);
    int r = sg_cli_parse(argc, argv, groups, NULL, NULL, NULL, usage, j);
    if (r)
        return r == SG_CLI_HELP ? SG_EXIT_OK : SG_EXIT_USAGE;
    if (argc - optind != operands) {
        fputs(usage, stderr);
        return SG_EXIT_USAGE;
    }
    return -1;
}

/* ---- load ---- */

static const char load_usage[] =
    "usage: slicegpt-stream load MODEL [--tokenizer FILE] [--zstd LEVEL] | ...\n"
    "Writes the model as a stream: header, tokenizer, embeddings, each block, head.\n"
    "  MODEL                 Hugging Face directory or .gguf file\n"
    "  --tokenizer FILE      tokenizer.json or llama2.c tokenizer.bin (default: the model's)\n"
    SG_HELP_ZSTD SG_HELP_PIPE_EXAMPLES;

/* The tokenizer as the fused run would copy it beside the sliced model:
 * the file given, else the model directory's, else (GGUF) the model's own
 * tokenizer written as tokenizer.json. */
static int load_tokenizer(sg_stage *st, sg_model_files *files, const char *model,
                          const char *tok_path)
{
    char path[4096];
    const char *src = tok_path;
    if (!src) {
        snprintf(path, sizeof path, "%s/tokenizer.json", model);
        if (access(path, R_OK) != 0)
            snprintf(path, sizeof path, "%s/tokenizer.bin", model);
        src = access(path, R_OK) == 0 ? path : NULL;
    }
    char *data = NULL, tmp[4096] = "";
    size_t len = 0;
    int err = 0;
    if (!src) {
        sg_tokenizer *tok;
        if (sg_model_files_tokenizer(files, NULL, &tok) != 0)
            return 0; /* none: capture then needs --calib-tokens */
        const char *t = getenv("TMPDIR");
        snprintf(tmp, sizeof tmp, "%s/slicegpt-tok-XXXXXX.json", t ? t : "/tmp");
        int fd = mkstemps(tmp, 5);
        if (fd < 0) {
            sg_tokenizer_free(tok);
            return sg_fail(-errno, "%s: %s", tmp, strerror(errno));
        }
        close(fd);
        err = sg_tokenizer_save_json(tok, tmp);
        sg_tokenizer_free(tok);
        src = tmp;
    }
    err = err ? err : sg_text_read(src, &data, &len);
    size_t n = strlen(src);
    int json = n > 5 && !strcmp(src + n - 5, ".json");
    const char *name = json ? "tokenizer.json" : "tokenizer.bin";
    err = err ? err : sg_rec_write_file(st->out, name, data, len);
    free(data);
    if (tmp[0])
        unlink(tmp);
    return err;
}

static int load_model(sg_stage *st, const char *model, const char *tok_path)
{
    sg_model_files *files;
    int err = sg_model_files_open(model, &files);
    if (err)
        return err;
    st->orig = *sg_model_files_config(files);
    const sg_model_config *o = &st->orig;
    st->header = cJSON_CreateObject();
    cJSON_AddStringToObject(st->header, "format", "slicegpt-stream");
    cJSON_AddStringToObject(st->header, "source", model);
    cJSON_AddItemToObject(st->header, "config", sg_config_to_json(o));
    if (o->sliced)
        err = sg_fail(SG_EARG, "%s: model is already sliced", model);
    err = err ? err : sg_stage_write_header(st);
    err = err ? err : load_tokenizer(st, files, model, tok_path);

    sg_model m;
    sg_model_files_prefetch_block(files, 0);
    if (!err && !(err = sg_slice_embeddings_load(files, &m))) {
        err = sg_section_write_globals(st->out, SG_SECTION_EMBEDDINGS, &m, o);
        sg_model_free(&m);
    }
    for (int64_t l = 0; !err && l < o->n_layers; l++) {
        sg_block b;
        if ((err = sg_block_load(files, o, l, &b)))
            break;
        if (l + 1 < o->n_layers)
            sg_model_files_prefetch_block(files, l + 1);
        err = sg_section_write_block(st->out, o, l, &b);
        sg_block_free(&b);
    }
    if (!err && !(err = sg_slice_head_load(files, &m))) {
        err = sg_section_write_globals(st->out, SG_SECTION_HEAD, &m, o);
        sg_model_free(&m);
    }
    err = err ? err : sg_frame_write_end(st->out);
    sg_model_files_close(files);
    return err;
}

int sg_cmd_load(int argc, char **argv)
{
    sg_cli_job j;
    int status = stage_options(argc, argv, SG_OPT_TOKENIZER | SG_OPT_ZSTD, load_usage, &j, 1);
    if (status >= 0)
        return status;
    sg_stage st;
    int err = sg_stage_open(&st, "load", 0, 1, j.zstd);
    err = err ? err : load_model(&st, argv[optind], j.tokenizer);
    return sg_stage_finish(&st, err);
}

/* ---- fold ---- */

static const char fold_usage[] =
    "usage: ... | slicegpt-stream fold [--zstd LEVEL] | ...\n"
    "Folds every norm into the linear layers that read it (after load).\n" SG_HELP_ZSTD
    SG_HELP_PIPE_EXAMPLES;

static int fold_section(sg_stage *st, sg_section *sec)
{
    const sg_model_config *o = &st->orig;
    sg_model_config folded = sg_fold_config(o);
    int err = sg_section_check(sec, o);
    if (err)
        return err;
    if (sec->sec.kind == SG_SECTION_BLOCK) {
        err = sg_fold_block(o, &sec->b);
        return err ? err : sg_section_write_block(st->out, &folded, sec->sec.layer, &sec->b);
    }
    /* the models sg_slice_embeddings_load and sg_slice_head_load return;
     * the head goes on as it is: whether the final norm folds into it
     * depends on the plan (stages/pipeline.c, slice) */
    sec->m.cfg = *o;
    if (sec->sec.kind == SG_SECTION_HEAD)
        return sg_section_write_globals(st->out, SG_SECTION_HEAD, &sec->m, o);
    sec->m.cfg.tied_embeddings = 0;
    err = sg_slice_embeddings_fold(&sec->m);
    return err ? err : sg_section_write_globals(st->out, sec->sec.kind, &sec->m, &folded);
}

static int fold_one(sg_stage *st, sg_section *sec, void *ctx) { return fold_section(st, sec); }

int sg_cmd_fold(int argc, char **argv)
{
    sg_cli_job j;
    int status = stage_options(argc, argv, SG_OPT_ZSTD, fold_usage, &j, 0);
    if (status >= 0)
        return status;
    sg_stage st;
    int err = sg_stage_open(&st, "fold", 1, 1, j.zstd);
    err = err ? err : sg_stage_read_header(&st, "load");
    err = err ? err : sg_stage_write_header(&st);
    err = err ? err : sg_stage_loop(&st, fold_one, NULL, NULL, 0);
    return sg_stage_finish(&st, err);
}

/* ---- cov ---- */

static const char cov_usage[] =
    "usage: ... | slicegpt-stream cov [--zstd LEVEL] | ...\n"
    "Accumulates each captured signal's covariance from the chunks capture names\n"
    "(after capture).\n" SG_HELP_COV SG_HELP_ZSTD SG_HELP_PIPE_EXAMPLES;

typedef struct {
    sg_act_store *reader; /* lends its machinery to read chunk files */
    sg_slice_cov cov; /* on the CPU: the filters do not use a GPU */
    float *chunk;
    int64_t chunk_cap;
    char signal[SG_FRAME_NAME_MAX + 1]; /* the signal being accumulated, "" between signals */
    int64_t next, count;
} cov_state;

static int cov_record(sg_stage *st, void *ctx)
{
    cov_state *c = ctx;
    sg_record *r = &st->rec;
    if (r->type != SG_REC_ACT_REF)
        return 0;
    sg_rec_act_ref a;
    int err = sg_rec_read_act_ref(r, &a);
    if (err)
        return err;
    int64_t D = st->orig.dim;
    if (c->signal[0] ? strcmp(c->signal, r->name) || a.index != c->next || a.count != c->count
                     : a.index != 0)
        return sg_fail(SG_EFORMAT, "%s: chunk %lld of %lld out of order (expected %s chunk %lld)",
                       sg_rec_label(r), (long long)a.index, (long long)a.count,
                       c->signal[0] ? c->signal : r->name, (long long)c->next);
    if (a.width != D)
        return sg_fail(SG_EFORMAT, "%s: chunk width %lld, the model's is %lld", sg_rec_label(r),
                       (long long)a.width, (long long)D);
    if (a.rows * D > c->chunk_cap) {
        free(c->chunk);
        c->chunk_cap = a.rows * D;
        if (!(c->chunk = malloc(c->chunk_cap * sizeof(float))))
            return sg_fail(-ENOMEM, "out of memory for a chunk of %lld rows", (long long)a.rows);
    }
    if (a.index == 0) {
        snprintf(c->signal, sizeof c->signal, "%s", r->name);
        c->count = a.count;
        if ((err = sg_slice_cov_begin(&c->cov)))
            return err;
    }
    char path[4096 + 1100];
    snprintf(path, sizeof path, "%s/%s", st->store, a.path);
    err = sg_act_store_read_file(c->reader, path, a.rows, D, c->chunk);
    /* capture removes the store only when it stops, and it sends nothing
     * after it: a chunk gone means capture failed and said so */
    if (err == -ENOENT)
        return sg_stage_store_gone(st, err);
    err = err ? err : sg_slice_cov_add(&c->cov, c->chunk, a.rows);
    if (err)
        return err;
    c->next = a.index + 1;
    if (c->next < c->count)
        return 1;
    err = sg_rec_write_cov(st->out, c->signal, a.layer, D, c->cov.tokens, c->cov.h);
    c->signal[0] = '\0';
    c->next = 0;
    return err ? err : 1;
}

int sg_cmd_cov(int argc, char **argv)
{
    sg_cli_job j;
    int status = stage_options(argc, argv, SG_OPT_COV | SG_OPT_ZSTD, cov_usage, &j, 0);
    int mixed = 0;
    if (status >= 0)
        return status;
    if (sg_cli_cov(j.cov, sg_backend_cpu(), &mixed))
        return SG_EXIT_USAGE;
    sg_stage st;
    cov_state cs = {0};
    int err = sg_stage_open(&st, "cov", 1, 1, j.zstd);
    err = err ? err : sg_stage_read_header(&st, "capture");
    if (!err && !st.store[0])
        err = sg_fail(SG_EFORMAT, "stdin: the stream header names no store directory");
    err = err ? err : sg_act_store_open(0, NULL, &cs.reader);
    err = err ? err : sg_slice_cov_init(&cs.cov, sg_backend_cpu(), st.orig.dim, mixed);
    err = err ? err : sg_stage_write_header(&st);
    /* sections pass through as records: nothing here works on weights */
    int got;
    while (!err && (got = sg_stage_next(&st)) == 1) {
        int used = cov_record(&st, &cs);
        err = used < 0 ? used : used ? 0 : sg_stage_forward(&st);
    }
    if (!err && got < 0)
        err = got;
    if (!err && cs.signal[0])
        err = sg_fail(SG_EFORMAT, "stdin: stream ends in the middle of signal %s", cs.signal);
    err = err ? err : sg_frame_write_end(st.out);
    sg_act_store_close(cs.reader);
    if (cs.cov.h)
        sg_slice_cov_free(&cs.cov);
    free(cs.chunk);
    return sg_stage_finish(&st, err);
}

/* ---- eig ---- */

static const char eig_usage[] =
    "usage: ... | slicegpt-stream eig [--damp F] [--eigh f64|mixed] [--random-rotation\n"
    "                                 [--seed N]] [--zstd LEVEL] | ...\n"
    "Eigendecomposes each covariance: its principal axes go downstream as a rotation\n"
    "record and back to capture through the store (after cov).\n"
    "  --seed N              seed of the random rotation (default 42)\n" SG_HELP_AXES
    SG_HELP_ZSTD SG_HELP_PIPE_EXAMPLES;

typedef struct {
    sg_rotation_kind kind;
    uint64_t seed;
    double damp_frac;
    sg_eigh_mode eigh;
    double *h, *q, *eig;
    int64_t D;
} eig_state;

static int eig_record(sg_stage *st, void *ctx)
{
    eig_state *e = ctx;
    sg_record *r = &st->rec;
    if (r->type != SG_REC_COV)
        return 0;
    sg_rec_matrix m;
    int err = sg_rec_read_matrix(r, &m);
    if (err)
        return err;
    if (m.n != e->D)
        return sg_fail(SG_EFORMAT, "%s: a %lld x %lld covariance, the model's width is %lld",
                       sg_rec_label(r), (long long)m.n, (long long)m.n, (long long)e->D);
    memcpy(e->h, m.values, e->D * e->D * sizeof(double));
    char signal[SG_FRAME_NAME_MAX + 1];
    snprintf(signal, sizeof signal, "%s", r->name);
    sg_rotation q = {e->q, e->q};
    err = sg_slice_axes(sg_backend_cpu(), e->h, e->D, m.layer, e->kind, e->seed, e->damp_frac,
                        e->eigh, &q, e->eig);
    /* capture waits for the file: publish it before anything else */
    char file[SG_FRAME_NAME_MAX + 8];
    snprintf(file, sizeof file, "%s.rot", signal);
    int64_t f[2] = {m.layer, e->D};
    sg_frame_part parts[2] = {{f, sizeof f}, {e->q, e->D * e->D * sizeof(double)}};
    err = err ? err : sg_store_put(st->store, file, SG_REC_ROTATION, signal, parts, 2);
    if (err == SG_STORE_PEER_FAILED)
        return sg_stage_store_gone(st, err);
    err = err ? err : sg_rec_write_spectrum(st->out, signal, m.layer, e->D, e->eig);
    err = err ? err : sg_rec_write_rotation(st->out, signal, m.layer, e->D, e->q);
    return err ? err : 1;
}

int sg_cmd_eig(int argc, char **argv)
{
    sg_cli_job j;
    int status = stage_options(argc, argv, SG_OPT_AXES | SG_OPT_ZSTD, eig_usage, &j, 0);
    if (status >= 0)
        return status;
    if (j.rotation == SG_ROTATION_UNIFORM) {
        fputs("slicegpt-stream: eig: --rotation uniform needs two passes over the model: only "
              "run does it\n", stderr);
        return SG_EXIT_USAGE;
    }
    eig_state e = {.kind = j.rotation, .seed = (uint64_t)j.seed, .damp_frac = j.damp_frac};
    if (sg_cli_eigh(j.eigh, sg_backend_cpu(), &e.eigh))
        return SG_EXIT_USAGE;
    sg_stage st;
    int err = sg_stage_open(&st, "eig", 1, 1, j.zstd);
    err = err ? err : sg_stage_read_header(&st, "cov");
    if (!err) {
        e.D = st.orig.dim;
        e.h = malloc(e.D * e.D * sizeof(double));
        e.q = malloc(e.D * e.D * sizeof(double));
        e.eig = malloc(e.D * sizeof(double));
        if (!e.h || !e.q || !e.eig)
            err = sg_fail(-ENOMEM, "out of memory for %lld x %lld matrices", (long long)e.D,
                          (long long)e.D);
    }
    err = err ? err : sg_stage_write_header(&st);
    int got;
    while (!err && (got = sg_stage_next(&st)) == 1) {
        int used = eig_record(&st, &e);
        err = used < 0 ? used : used ? 0 : sg_stage_forward(&st);
    }
    if (!err && got < 0)
        err = got;
    err = err ? err : sg_frame_write_end(st.out);
    free(e.h);
    free(e.q);
    free(e.eig);
    return sg_stage_finish(&st, err);
}

/* ---- slice ---- */

static const char slice_usage[] =
    "usage: ... | slicegpt-stream slice --sparsity S [--round-interval N] [--slice-head]\n"
    "                                   [--zstd LEVEL] | ...\n"
    "Rotates and slices the weights by the rotations eig sends (after eig); plans the\n"
    "sliced widths, which capture reads from the store.\n" SG_HELP_PLAN SG_HELP_QUIET SG_HELP_ZSTD
    SG_HELP_PIPE_EXAMPLES;

/* The pipeline (stages/pipeline.h) with slicing on and capture off: the
 * sections come in model order, each followed by the rotations of its
 * signals (eig's records), and go out sliced. */
typedef struct {
    sg_stage *st;
    sg_model_config sliced;
} slice_state;

static int slice_widths(sg_pipeline *p, sg_model_config *sliced)
{
    *sliced = ((slice_state *)p->ctx)->sliced;
    return 0;
}

/* The next section, of the kind and layer the pipeline asks for; records
 * before it pass on. */
static int slice_next_section(sg_pipeline *p, sg_section_kind kind, int64_t layer,
                              sg_section *sec)
{
    slice_state *s = p->ctx;
    int got = sg_stage_next_section(s->st, sec, NULL, NULL, 0);
    if (got <= 0)
        return got < 0 ? got : sg_fail(SG_EFORMAT, "stdin: the stream ended before the model did");
    sg_model_config folded = sg_fold_config(p->orig);
    int err = sg_section_check(sec, &folded);
    if (!err && (sec->sec.kind != kind || sec->sec.layer != layer))
        err = sg_fail(SG_EFORMAT, "stdin: a section out of model order");
    if (err)
        sg_section_free(sec);
    return err;
}

static int slice_embeddings(sg_pipeline *p, sg_model *m)
{
    sg_section sec;
    int err = slice_next_section(p, SG_SECTION_EMBEDDINGS, -1, &sec);
    if (!err) {
        *m = sec.m;
        memset(&sec.m, 0, sizeof sec.m);
        sg_section_free(&sec);
    }
    return err;
}

static int slice_block(sg_pipeline *p, int64_t l, sg_block *b)
{
    sg_section sec;
    int err = slice_next_section(p, SG_SECTION_BLOCK, l, &sec);
    if (!err) {
        *b = sec.b;
        memset(&sec.b, 0, sizeof sec.b);
        sg_section_free(&sec);
    }
    return err;
}

static int slice_head(sg_pipeline *p, sg_model *m)
{
    sg_section sec;
    int err = slice_next_section(p, SG_SECTION_HEAD, -1, &sec);
    if (!err) {
        *m = sec.m;
        memset(&sec.m, 0, sizeof sec.m);
        sg_section_free(&sec);
    }
    return err;
}

/* The signal's rotation record, the next one in the stream (spectra and
 * files before it pass on). */
static int slice_axes(sg_pipeline *p, const char *signal, int64_t layer, sg_rotation *q)
{
    sg_stage *st = ((slice_state *)p->ctx)->st;
    int64_t D = p->orig->dim;
    char name[128];
    sg_signal_name(signal, layer, name, sizeof name);
    int got = 0, err = 0;
    while (!err && (got = sg_stage_next(st)) == 1) {
        sg_record *r = &st->rec;
        if (r->type == SG_REC_ROTATION) {
            sg_rec_matrix m;
            if ((err = sg_rec_read_matrix(r, &m)))
                return err;
            if (m.n != D || m.layer != layer || strcmp(r->name, name))
                return sg_fail(SG_EFORMAT, "%s: a rotation this stage has no weights for "
                                           "(expected %s)", sg_rec_label(r), name);
            memcpy(q->host, m.values, D * D * sizeof(double)); /* the CPU backend: host = dev */
            return 0;
        }
        if (r->type == SG_REC_BLOCK || r->type == SG_REC_TENSOR || r->type == SG_REC_HEADER)
            return sg_fail(SG_EFORMAT, "%s: before the rotation of %s", sg_rec_label(r), name);
        err = sg_stage_forward(st);
    }
    if (err || got < 0)
        return err ? err : got;
    return sg_fail(SG_EFORMAT, "stdin: stream ended before the rotation of %s", name);
}

static int slice_put_embeddings(sg_pipeline *p, sg_model *m)
{
    slice_state *s = p->ctx;
    return sg_section_write_globals(s->st->out, SG_SECTION_EMBEDDINGS, m, &s->sliced);
}

static int slice_put_block(sg_pipeline *p, int64_t l, sg_block *b)
{
    slice_state *s = p->ctx;
    return sg_section_write_block(s->st->out, &s->sliced, l, b);
}

static int slice_put_head(sg_pipeline *p, sg_model *m)
{
    slice_state *s = p->ctx;
    return sg_section_write_globals(s->st->out, SG_SECTION_HEAD, m, &s->sliced);
}

static const sg_pipeline_io slice_io = {
    .widths = slice_widths,
    .embeddings = slice_embeddings,
    .block = slice_block,
    .head = slice_head,
    .axes = slice_axes,
    .put_embeddings = slice_put_embeddings,
    .put_block = slice_put_block,
    .put_head = slice_put_head,
};

int sg_cmd_slice(int argc, char **argv)
{
    sg_cli_job j;
    int status = stage_options(argc, argv, SG_OPT_PLAN | SG_OPT_ZSTD | SG_OPT_QUIET, slice_usage,
                               &j, 0);
    if (status >= 0)
        return status;
    if (j.plan.shared_basis) {
        fputs("slicegpt-stream slice: --shared-basis: the filters slice with a basis per signal; "
              "use run\n", stderr);
        return SG_EXIT_USAGE;
    }
    if (j.plan.method != SG_METHOD_REFERENCE) {
        fprintf(stderr, "slicegpt-stream slice: --method %s: %s, which only `run` makes; the "
                        "filters slice with --method reference\n",
                sg_width_method_name(j.plan.method),
                j.plan.method == SG_METHOD_NYSTROM
                    ? "it prunes each MLP from statistics of its hidden units on the calibration pass"
                    : "its widths come from a first pass over the whole model");
        return SG_EXIT_USAGE;
    }
    sg_stage st;
    slice_state s = {.st = &st};
    sg_progress progress;
    sg_cli_progress(&progress, j.quiet);
    sg_pipeline p = {.io = &slice_io, .ctx = &s, .be = sg_backend_cpu(), .slice = 1,
                     .progress = &progress, .phase = "slice"};
    int err = sg_stage_open(&st, "slice", 1, 1, j.zstd);
    err = err ? err : sg_stage_read_header(&st, "eig");
    if (!err && !st.store[0])
        err = sg_fail(SG_EFORMAT, "stdin: the stream header names no store directory");
    if (!err) {
        p.orig = &st.orig;
        int64_t d = sg_slice_plan(&st.orig, &j.plan, &s.sliced);
        err = d < 0 ? (int)d : 0;
        cJSON *plan = err ? NULL : cJSON_AddObjectToObject(st.header, "slicing");
        if (plan) {
            cJSON_AddNumberToObject(plan, "sparsity",
                                    sg_plan_sparsity(&j.plan, st.orig.dim, d));
            if (j.plan.target_size > 0)
                cJSON_AddNumberToObject(plan, "target_size", j.plan.target_size);
            cJSON_AddNumberToObject(plan, "round_interval", (double)j.plan.round_interval);
            cJSON_AddBoolToObject(plan, "slice_head", j.plan.slice_head);
            cJSON_AddStringToObject(plan, "embeddings",
                                    sg_embeddings_kept(&s.sliced) ? "keep" : "slice");
            cJSON_AddNumberToObject(plan, "d", (double)d);
            cJSON_AddItemToObject(plan, "config", sg_config_to_json(&s.sliced));
        }
    }
    err = err ? err : sg_stage_write_header(&st);
    if (!err) {
        /* capture needs the widths before its first projection: the plan
         * is the header as it now stands */
        char *json = cJSON_PrintUnformatted(st.header);
        sg_frame_part part = {json, json ? strlen(json) : 0};
        err = json ? sg_store_put(st.store, "plan", SG_REC_HEADER, "header", &part, 1)
                   : sg_fail(-ENOMEM, "out of memory");
        free(json);
        if (err == SG_STORE_PEER_FAILED)
            err = sg_stage_store_gone(&st, err);
    }
    err = err ? err : sg_pipeline_run(&p);
    if (!err) {
        /* nothing but the end may follow the head */
        sg_section sec;
        int got = sg_stage_next_section(&st, &sec, NULL, NULL, 0);
        if (got == 1) {
            sg_section_free(&sec);
            err = sg_fail(SG_EFORMAT, "stdin: a section after the head");
        } else {
            err = got < 0 ? got : sg_frame_write_end(st.out);
        }
    }
    return sg_stage_finish(&st, err);
}

/* ---- write ---- */

static const char write_usage[] =
    "usage: ... | slicegpt-stream write OUT [--dtype f32|f16|bf16]\n"
    "Writes the sliced model to the directory OUT (after slice): OUT.tmp first,\n"
    "renamed to OUT once the stream ended well.\n"
    SG_HELP_DTYPE SG_HELP_PIPE_EXAMPLES;

typedef struct {
    sg_model_config sliced;
    double sparsity;
    sg_model_writer *w;
    sg_spectra *spectra;
    char tok[4096]; /* the tokenizer, kept in a temporary file until the end */
    int next;       /* sections in model order: embeddings, blocks, head (0, 1.., L+1) */
} write_state;

static int write_section(sg_stage *st, sg_section *sec, void *ctx)
{
    write_state *s = ctx;
    int err = sg_section_check(sec, &s->sliced);
    if (err)
        return err;
    /* the writer numbers shards as they come */
    int64_t at = sec->sec.kind == SG_SECTION_EMBEDDINGS ? 0
                 : sec->sec.kind == SG_SECTION_HEAD     ? s->sliced.n_layers + 1
                                                        : sec->sec.layer + 1;
    if (at != s->next++)
        return sg_fail(SG_EFORMAT, "stdin: section out of model order");
    sec->m.cfg = s->sliced;
    if (sec->sec.kind == SG_SECTION_EMBEDDINGS)
        return sg_model_writer_embeddings(s->w, &sec->m);
    if (sec->sec.kind == SG_SECTION_HEAD)
        return sg_model_writer_head(s->w, &sec->m);
    return sg_model_writer_block(s->w, sec->sec.layer, &sec->b);
}

static int write_record(sg_stage *st, void *ctx)
{
    write_state *s = ctx;
    sg_record *r = &st->rec;
    if (r->type == SG_REC_SPECTRUM) {
        sg_rec_matrix m;
        int err = sg_rec_read_matrix(r, &m);
        const char *signal = sg_signal_kind(r->name);
        err = err ? err : sg_spectra_add(s->spectra, signal, m.layer, m.values, m.n);
        return err ? err : 1;
    }
    if (r->type == SG_REC_FILE && (!strcmp(r->name, "tokenizer.json") ||
                                   !strcmp(r->name, "tokenizer.bin"))) {
        if (s->tok[0])
            return sg_fail(SG_EFORMAT, "%s: a second tokenizer", sg_rec_label(r));
        /* sg_model_writer_finish names the copy by the source's suffix */
        int json = !strcmp(r->name, "tokenizer.json");
        const char *t = getenv("TMPDIR");
        snprintf(s->tok, sizeof s->tok, "%s/slicegpt-tok-XXXXXX%s", t ? t : "/tmp",
                 json ? ".json" : ".bin");
        int fd = mkstemps(s->tok, json ? 5 : 4);
        if (fd < 0) {
            int e = errno;
            s->tok[0] = '\0';
            return sg_fail(-e, "cannot create a temporary file in %s: %s", t ? t : "/tmp",
                           strerror(e));
        }
        ssize_t k = write(fd, r->payload, r->len);
        int e = errno;
        if (close(fd) != 0 || k != (ssize_t)r->len)
            return sg_fail(-e, "%s: cannot write: %s", s->tok, strerror(e));
        return 1;
    }
    if (r->type == SG_REC_FILE)
        return 1; /* a file this stage has no place for */
    return sg_fail(SG_EFORMAT, "%s: unexpected here (is `slicegpt-stream slice` before write?)",
                   sg_rec_label(r));
}

int sg_cmd_write(int argc, char **argv)
{
    sg_cli_job j;
    int status = stage_options(argc, argv, SG_OPT_DTYPE, write_usage, &j, 1);
    if (status >= 0)
        return status;
    sg_dtype dtype = j.dtype;
    const char *out = argv[optind];
    sg_stage st;
    write_state s = {0};
    int err = sg_stage_open(&st, "write", 1, 0, 0);
    err = err ? err : sg_stage_read_header(&st, "slice");
    if (!err) {
        const cJSON *plan = cJSON_GetObjectItemCaseSensitive(st.header, "slicing");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(plan, "sparsity");
        err = sg_config_from_json(cJSON_GetObjectItemCaseSensitive(plan, "config"), &s.sliced,
                                  "stdin: stream header \"slicing\"");
        if (!err && !cJSON_IsNumber(sp))
            err = sg_fail(SG_EFORMAT, "stdin: stream header \"slicing\" has no sparsity");
        if (!err)
            s.sparsity = sp->valuedouble;
    }
    if (!err && !(s.spectra = sg_spectra_new()))
        err = sg_fail(-ENOMEM, "out of memory");
    err = err ? err : sg_model_writer_open(out, &s.sliced, dtype, &s.w);
    err = err ? err : sg_stage_loop(&st, write_section, write_record, &s, 0);
    if (!err && s.next != s.sliced.n_layers + 2)
        err = sg_fail(SG_EFORMAT, "stdin: the stream ended without all of the model");
    if (!err) {
        err = sg_model_writer_finish(s.w, s.sparsity, s.tok[0] ? s.tok : NULL, NULL);
        s.w = NULL;
        err = err ? err : sg_spectra_write(s.spectra, out);
    }
    if (s.w)
        sg_model_writer_abort(s.w); /* OUT.tmp goes: a broken stream leaves no model behind */
    if (s.tok[0])
        unlink(s.tok);
    sg_spectra_free(s.spectra);
    return sg_stage_finish(&st, err);
}
