/* slicegpt-stream capture: runs each block on the calibration activations
 * and names the captured chunks downstream; the one stage that waits.
 *
 * It is the pipeline (stages/pipeline.h) with capture on and slicing off;
 * this file is its transport. Capturing block l needs it rotated by the
 * rotations of block l-1 and cut to the planned widths, which eig and
 * slice, further down the pipe, produce from what capture sent. They come
 * back as files in the store (stream_store.h): the widths as "plan", each
 * signal's axes as <signal>.rot. Sections are passed on as they come,
 * before anything is done with them; each captured chunk is a file in the
 * store and an act-ref record downstream.
 * Everything a wait depends on has been written downstream before it, and
 * the stages that produce the files never wait on capture, so the pipeline
 * cannot deadlock. The activation store's directory is the store named in
 * the header; capture made it and removes it when done. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "slicegpt.h"
#include "cli.h"
#include "cli_options.h"
#include "stage_common.h"

static const char usage[] =
    "usage: ... | slicegpt-stream capture (--calib FILE | --calib-tokens FILE) [options] | ...\n"
    "Runs each block on the calibration text and sends references to the captured\n"
    "activation chunks downstream (after fold; cov, eig and slice must follow).\n"
    SG_HELP_CALIB
    "  --spill-dir DIR       where the store directory is made (default: $TMPDIR or /tmp)\n"
    "  --wait-timeout S      give up waiting for a rotation after S seconds (default 3600)\n"
    "  --stall-timeout S     stop when a later stage has sat S seconds waiting for bytes the\n"
    "                        stage before it wrote: something between them (a buffer such\n"
    "                        as `dd bs=1M`) holds the stream back (default 60; 0: never)\n"
    SG_HELP_QUIET SG_HELP_ZSTD SG_HELP_PIPE_EXAMPLES;

typedef struct {
    sg_stage *st;
    const char *calib, *calib_tokens;
    int64_t nsamples, seqlen, seed, chunk_tokens;
    const sg_cli_job *job;   /* the calibration options, as parsed */
    sg_act_store *store;
    const char *dir;         /* the store directory */
    sg_tokenizer *tok;       /* from the stream's tokenizer file */
    sg_token_batch batch;
    sg_store_wait_opts from_eig, from_slice;
} capture_state;

/* The sink: each captured chunk is a file in the store; name it downstream. */
static int emit_ref(void *ctx, const char *signal, int64_t layer, const char *stored_as,
                    int64_t chunk, int64_t n_chunks, const float *x, const float *x_dev,
                    int64_t rows)
{
    capture_state *c = ((sg_pipeline *)ctx)->ctx;
    sg_rec_act_ref a = {layer, chunk, n_chunks, rows, c->st->orig.dim, ""};
    char name[128];
    sg_signal_name(signal, layer, name, sizeof name);
    int err = sg_act_store_chunk_file(c->store, stored_as, chunk, a.path, sizeof a.path);
    return err ? err : sg_rec_write_act_ref(c->st->out, name, &a);
}

/* The widths: slice publishes its plan as soon as it has read the header. */
static int capture_widths(sg_pipeline *p, sg_model_config *sliced)
{
    capture_state *c = p->ctx;
    sg_record rec;
    cJSON *h = NULL;
    sg_stage_publish_flow(c->st, 0);
    int err = sg_store_wait(c->dir, "plan", SG_REC_HEADER, &c->from_slice, &rec);
    if (err)
        return err;
    err = sg_rec_read_header(&rec, &h);
    const cJSON *plan = cJSON_GetObjectItemCaseSensitive(h, "slicing");
    err = err ? err : sg_config_from_json(cJSON_GetObjectItemCaseSensitive(plan, "config"),
                                          sliced, rec.source);
    cJSON_Delete(h);
    free(rec.payload);
    return err;
}

static int capture_axes(sg_pipeline *p, const char *signal, int64_t layer, sg_rotation *q)
{
    capture_state *c = p->ctx;
    int64_t D = p->orig->dim;
    char name[128], file[160];
    sg_signal_name(signal, layer, name, sizeof name);
    snprintf(file, sizeof file, "%s.rot", name);
    sg_record rec;
    sg_stage_publish_flow(c->st, 0);
    int err = sg_store_wait(c->dir, file, SG_REC_ROTATION, &c->from_eig, &rec);
    if (err)
        return err;
    sg_rec_matrix m;
    err = sg_rec_read_matrix(&rec, &m);
    if (!err && (m.n != D || m.layer != layer || strcmp(rec.name, name)))
        err = sg_fail(SG_EFORMAT, "%s: not the rotation of %s", rec.source, name);
    if (!err)
        memcpy(q->host, m.values, D * D * sizeof(double)); /* the CPU backend: host = dev */
    /* read: a D x D float64 matrix per signal adds up on disk */
    unlink(rec.source);
    free(rec.payload);
    return err;
}

/* The tokenizer file load sent, loaded as sg_model_files_tokenizer loads
 * an override (the fused run's --tokenizer). */
static int take_tokenizer(capture_state *c, const sg_record *r)
{
    int json = !strcmp(r->name, "tokenizer.json");
    if (!json && strcmp(r->name, "tokenizer.bin"))
        return 0;
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", c->dir, r->name);
    FILE *f = fopen(path, "wb");
    int bad = !f || fwrite(r->payload, 1, r->len, f) != r->len;
    if ((f && fclose(f) != 0) || bad)
        return sg_fail(-EIO, "%s: cannot write", path);
    sg_tokenizer_free(c->tok);
    c->tok = NULL;
    int err = json ? sg_tokenizer_load_json(path, &c->tok)
                   : sg_tokenizer_load_llama2c(path, c->st->orig.vocab_size, &c->tok);
    unlink(path);
    return err;
}

static int on_record(sg_stage *st, void *ctx)
{
    capture_state *c = ctx;
    if (st->rec.type == SG_REC_FILE) {
        int err = take_tokenizer(c, &st->rec);
        return err < 0 ? err : 0; /* and pass it on */
    }
    if (st->rec.type == SG_REC_ACT_REF || st->rec.type == SG_REC_COV ||
        st->rec.type == SG_REC_ROTATION)
        return sg_fail(SG_EFORMAT, "%s: a stream that was captured already",
                       sg_rec_label(&st->rec));
    return 0;
}

/* The next section, passed on as it comes: of the kind and layer the
 * pipeline asks for, its tensors checked against the folded model. */
static int next_section(capture_state *c, sg_section_kind kind, int64_t layer, sg_section *sec)
{
    int got = sg_stage_next_section(c->st, sec, on_record, c, 1);
    if (got <= 0)
        return got < 0 ? got : sg_fail(SG_EFORMAT, "stdin: the stream ended before the model did");
    sg_model_config folded = sg_fold_config(&c->st->orig);
    int err = sg_section_check(sec, &folded);
    if (!err && (sec->sec.kind != kind || sec->sec.layer != layer))
        err = sg_fail(SG_EFORMAT, kind == SG_SECTION_EMBEDDINGS
                                      ? "stdin: a section before the embeddings"
                                      : "stdin: a section out of order (expected block %lld)",
                      (long long)layer);
    if (err)
        sg_section_free(sec);
    return err;
}

/* The calibration batch, built as the fused run builds it. */
static int calibrate(capture_state *c, sg_pipeline *p)
{
    const sg_model_config *o = &c->st->orig;
    int64_t seqlen = c->seqlen;
    if (o->max_positions > 0 && seqlen > o->max_positions)
        seqlen = o->max_positions;
    int err;
    if (c->calib) {
        if (!c->tok)
            return sg_fail(SG_EMISSING, "stdin: the stream carries no tokenizer; give `load "
                                        "--tokenizer FILE`, or `capture --calib-tokens`");
        char *text = NULL;
        size_t len;
        err = sg_text_read(c->calib, &text, &len);
        err = err ? err : sg_batch_calibration(c->tok, text, len, c->nsamples, seqlen,
                                               (uint64_t)c->seed, &c->batch);
        free(text);
    } else {
        err = sg_cli_calib_tokens(c->job, o->vocab_size, o->max_positions, &c->batch);
    }
    err = err ? err
              : sg_cli_check_calibration(&c->batch, o->dim, 0, c->calib ? c->calib : c->calib_tokens);
    err = err ? err
              : sg_capture_init(&p->cap, p->be, &c->batch,
                                c->chunk_tokens > 0 ? c->chunk_tokens : 8192, o->dim);
    if (err)
        return err;
    p->cap.store = c->store;
    p->cap.sink = emit_ref;
    p->cap.sink_ctx = p;
    return 0;
}

/* The embeddings, as sg_slice_embeddings_fold leaves them; the
 * calibration batch is made now, the tokenizer having come before. */
static int capture_embeddings(sg_pipeline *p, sg_model *m)
{
    capture_state *c = p->ctx;
    sg_section sec;
    int err = next_section(c, SG_SECTION_EMBEDDINGS, -1, &sec);
    if (err)
        return err;
    sg_model_config untied = c->st->orig;
    untied.tied_embeddings = 0;
    *m = sec.m;
    m->cfg = sg_fold_config(&untied);
    memset(&sec.m, 0, sizeof sec.m);
    sg_section_free(&sec);
    if ((err = calibrate(c, p)))
        sg_model_free(m);
    return err;
}

static int capture_block(sg_pipeline *p, int64_t l, sg_block *b)
{
    sg_section sec;
    int err = next_section(p->ctx, SG_SECTION_BLOCK, l, &sec);
    if (err)
        return err;
    *b = sec.b;
    memset(&sec.b, 0, sizeof sec.b);
    sg_section_free(&sec);
    return 0;
}

static const sg_pipeline_io capture_io = {
    .widths = capture_widths,
    .embeddings = capture_embeddings,
    .block = capture_block,
    .axes = capture_axes,
};

static const char *const to_eig[] = {"capture", "cov", "eig", NULL};
static const char *const to_slice[] = {"capture", "cov", "eig", "slice", NULL};

static int run(capture_state *c, sg_pipeline *p, double timeout, double stall,
               const char *spill_dir)
{
    sg_stage *st = c->st;
    int err = sg_stage_read_header(st, "fold");
    if (err)
        return err;
    p->orig = &st->orig;
    /* budget 0: every chunk is a file the next stages can read */
    const char *parent = spill_dir ? spill_dir : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    err = sg_act_store_open(0, parent, &c->store);
    if (err)
        return err;
    c->dir = sg_act_store_spill_path(c->store);
    snprintf(st->store, sizeof st->store, "%s", c->dir);
    cJSON_DeleteItemFromObjectCaseSensitive(st->header, "store");
    cJSON_AddStringToObject(st->header, "store", c->dir);
    c->from_eig = (sg_store_wait_opts){timeout, STDOUT_FILENO, "eig", to_eig, stall};
    c->from_slice = (sg_store_wait_opts){timeout, STDOUT_FILENO, "slice", to_slice, stall};
    err = sg_stage_write_header(st);
    err = err ? err : sg_pipeline_run(p);
    /* the head goes on downstream, untouched */
    sg_section sec;
    int got;
    while (!err && (got = sg_stage_next_section(st, &sec, on_record, c, 1)) == 1) {
        if (sec.sec.kind != SG_SECTION_HEAD)
            err = sg_fail(SG_EFORMAT, "stdin: a section after the last block");
        sg_section_free(&sec);
    }
    if (!err && got < 0)
        err = got;
    return err ? err : sg_frame_write_end(st->out);
}

typedef struct {
    double timeout, stall;
} capture_args;

static int capture_option(void *ctx, int c, const char *arg)
{
    capture_args *a = ctx;
    if (c == 'v')
        return 0; /* --verbose: progress is on unless --quiet; kept for old scripts */
    if (c == 's')
        return sg_cli_double("--stall-timeout", arg, 0, 1e9, &a->stall);
    return sg_cli_double("--wait-timeout", arg, 0, 1e9, &a->timeout);
}

int sg_cmd_capture(int argc, char **argv)
{
    static const struct option own[] = {{"wait-timeout", required_argument, 0, 'w'},
                                        {"stall-timeout", required_argument, 0, 's'},
                                        {"verbose", no_argument, 0, 'v'},
                                        {0, 0, 0, 0}};
    capture_args a = {.timeout = 3600, .stall = 60};
    sg_cli_job j;
    sg_cli_job_default(&j);
    int r = sg_cli_parse(argc, argv, SG_OPT_CALIB | SG_OPT_ZSTD | SG_OPT_QUIET, own, capture_option, &a, usage,
                         &j);
    if (r)
        return r == SG_CLI_HELP ? SG_EXIT_OK : SG_EXIT_USAGE;
    if (optind != argc) {
        fputs(usage, stderr);
        return SG_EXIT_USAGE;
    }
    if (sg_cli_calib_check(&j))
        return SG_EXIT_USAGE;
    sg_progress progress;
    sg_cli_progress(&progress, j.quiet);
    capture_state c = {.calib = j.calib, .calib_tokens = j.calib_tokens, .nsamples = j.nsamples,
                       .seqlen = j.seqlen, .seed = j.seed, .chunk_tokens = j.chunk_tokens, .job = &j};
    sg_pipeline p = {.io = &capture_io, .ctx = &c, .be = sg_backend_cpu(), .capture = 1,
                     .progress = &progress, .phase = "capture"};
    const char *spill_dir = j.spill_dir;
    double timeout = a.timeout;
    int zstd = j.zstd;
    sg_stage st;
    c.st = &st;
    int err = sg_stage_open(&st, "capture", 1, 1, zstd);
    err = err ? err : run(&c, &p, timeout, a.stall, spill_dir);
    int status = sg_stage_finish(&st, err);
    /* the store goes with this stage; a cov still reading chunks of a
     * failed run finds them gone and stops quietly (the abort record is
     * on its way) */
    sg_capture_free(&p.cap);
    sg_act_store_close(c.store);
    sg_token_batch_free(&c.batch);
    sg_tokenizer_free(c.tok);
    return status;
}
