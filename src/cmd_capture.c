/* slicegpt-stream capture: runs each block on the calibration activations
 * and names the captured chunks downstream; the one stage that waits.
 *
 * Capturing block l needs it rotated by the rotations of block l-1 and cut
 * to the planned widths, which eig and slice, further down the pipe,
 * produce from what capture sent. They come back as files in the store
 * (stream_store.h). Per block capture:
 *   passes the block's records on, as they come;
 *   rotates the input side (sg_slice_block_input), runs the attention
 *     half on every chunk, writes each chunk to the store and an act-ref
 *     record downstream;
 *   waits for blk.<l>.attention_output.rot, rotates the middle, runs the
 *     MLP half the same way (sequential blocks);
 *   waits for blk.<l>.block_output.rot and projects the output into the
 *     next block's inputs.
 * Everything a wait depends on has been written downstream before it, and
 * the stages that produce the files never wait on capture, so the pipeline
 * cannot deadlock. The activation store's directory is the store named in
 * the header; capture made it and removes it when done. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "act_store.h"
#include "cli.h"
#include "fold.h"
#include "sg_error.h"
#include "slice_steps.h"
#include "stage_common.h"
#include "stream_store.h"
#include "text.h"
#include "tokenizer.h"

static const char usage[] =
    "usage: ... | slicegpt-stream capture (--calib FILE | --calib-tokens FILE) [options] | ...\n"
    "Runs each block on the calibration text and sends references to the captured\n"
    "activation chunks downstream (after fold; cov, eig and slice must follow).\n"
    "  --calib FILE          calibration text (documents separated by blank lines)\n"
    "  --calib-tokens FILE   or pre-tokenized calibration: little-endian uint32 ids\n"
    "  --nsamples N          calibration samples (default 128)\n"
    "  --seqlen N            tokens per sample (default 2048, capped at the context)\n"
    "  --seed N              calibration sampling seed (default 42)\n"
    "  --chunk-tokens N      calibration tokens per activation chunk (default 8192)\n"
    "  --spill-dir DIR       where the store directory is made (default: $TMPDIR or /tmp)\n"
    "  --wait-timeout S      give up waiting for a rotation after S seconds (default 3600)\n"
    "  --verbose             progress per block on stderr\n" SG_STAGE_ZSTD_HELP;

typedef struct {
    sg_stage *st;
    const char *calib, *calib_tokens;
    int64_t nsamples, seqlen, seed, chunk_tokens;
    int verbose;
    sg_act_store *store;
    const char *dir;         /* the store directory */
    sg_tokenizer *tok;       /* from the stream's tokenizer file */
    sg_token_batch batch;
    sg_capture cap;
    int have_cap, have_plan;
    int64_t next_layer;      /* blocks come in order: each needs the one before */
    sg_model_config sliced;  /* from slice's plan */
    int64_t D;
    double *q_prev, *q_mid, *q_out;
    sg_store_wait_opts from_eig, from_slice;
} capture_state;

/* The sink: each captured chunk is a file in the store; name it downstream. */
static int emit_ref(void *ctx, const char *signal, int64_t layer, const char *stored_as,
                    int64_t chunk, int64_t n_chunks, const float *x, const float *x_dev,
                    int64_t rows)
{
    capture_state *c = ctx;
    sg_rec_act_ref a = {layer, chunk, n_chunks, rows, c->D, ""};
    char name[128];
    sg_signal_name(signal, layer, name, sizeof name);
    int err = sg_act_store_chunk_file(c->store, stored_as, chunk, a.path, sizeof a.path);
    return err ? err : sg_rec_write_act_ref(c->st->out, name, &a);
}

static int wait_plan(capture_state *c)
{
    sg_record rec;
    cJSON *h = NULL;
    int err = sg_store_wait(c->dir, "plan", SG_REC_HEADER, &c->from_slice, &rec);
    if (err)
        return err;
    err = sg_rec_read_header(&rec, &h);
    const cJSON *plan = cJSON_GetObjectItemCaseSensitive(h, "slicing");
    err = err ? err : sg_config_from_json(cJSON_GetObjectItemCaseSensitive(plan, "config"),
                                          &c->sliced, rec.source);
    cJSON_Delete(h);
    free(rec.payload);
    c->have_plan = !err;
    return err;
}

static int wait_rotation(capture_state *c, const char *signal, int64_t layer, double *q)
{
    char name[128], file[160];
    sg_signal_name(signal, layer, name, sizeof name);
    snprintf(file, sizeof file, "%s.rot", name);
    sg_record rec;
    int err = sg_store_wait(c->dir, file, SG_REC_ROTATION, &c->from_eig, &rec);
    if (err)
        return err;
    sg_rec_matrix m;
    err = sg_rec_read_matrix(&rec, &m);
    if (!err && (m.n != c->D || m.layer != layer || strcmp(rec.name, name)))
        err = sg_fail(SG_EFORMAT, "%s: not the rotation of %s", rec.source, name);
    if (!err)
        memcpy(q, m.values, c->D * c->D * sizeof(double));
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

/* The calibration batch, built as the fused run builds it. */
static int calibrate(capture_state *c)
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
        err = sg_batch_pretokenized(c->calib_tokens, o->vocab_size, c->nsamples, seqlen,
                                    (uint64_t)c->seed, &c->batch);
    }
    err = err ? err
              : sg_capture_init(&c->cap, sg_backend_cpu(), &c->batch,
                                c->chunk_tokens > 0 ? c->chunk_tokens : 8192, c->D);
    if (err)
        return err;
    c->have_cap = 1;
    c->cap.store = c->store;
    c->cap.sink = emit_ref;
    c->cap.sink_ctx = c;
    return 0;
}

/* The filters run on the CPU backend, whose memory is the host's: a
 * rotation is one array. */
static sg_rotation on_host(double *q) { return (sg_rotation){q, q}; }

static int capture_embeddings(capture_state *c, sg_section *sec)
{
    /* the folded embeddings, as sg_slice_embeddings_fold leaves them */
    sg_model_config untied = c->st->orig;
    untied.tied_embeddings = 0;
    sec->m.cfg = sg_fold_config(&untied);
    int err = calibrate(c);
    err = err ? err : sg_capture_embeddings(&c->cap, &sec->m);
    err = err ? err : wait_plan(c);
    err = err ? err : wait_rotation(c, "embeddings", -1, c->q_prev);
    sg_rotation q0 = on_host(c->q_prev);
    return err ? err : sg_capture_advance(&c->cap, &q0, c->sliced.embed_dim);
}

static int capture_block(capture_state *c, sg_section *sec)
{
    const sg_model_config *o = &c->st->orig;
    int64_t l = sec->sec.layer, D = c->D;
    int64_t d_in = c->sliced.d_in[l], d_mid = c->sliced.d_mid[l], d_out = c->sliced.d_out[l];
    sg_block *b = &sec->b;
    sg_model_config work;
    if (c->verbose)
        fprintf(stderr, "slicegpt-stream capture: block %lld/%lld\n", (long long)l + 1,
                (long long)o->n_layers);
    sg_backend *cpu = sg_backend_cpu();
    sg_rotation q_prev = on_host(c->q_prev), q_mid = on_host(c->q_mid), q_out = on_host(c->q_out);
    int err = sg_slice_block_input(cpu, o, b, &q_prev, d_in);
    if (err)
        return err;
    sg_slice_work_config(&c->sliced, l, D, &work);
    err = sg_capture_attention(&c->cap, &work, b, l);
    if (!err && !o->parallel_block) {
        err = wait_rotation(c, "attention_output", l, c->q_mid);
        err = err ? err : sg_slice_block_mid(cpu, o, b, &q_mid, d_in, d_mid);
        work.d_mid[l] = d_mid;
        err = err ? err : sg_capture_mlp(&c->cap, &work, b, &q_mid, d_mid, l);
    }
    err = err ? err : wait_rotation(c, "block_output", l, c->q_out);
    err = err ? err : sg_capture_advance(&c->cap, &q_out, d_out);
    double *swap = c->q_prev;
    c->q_prev = c->q_out;
    c->q_out = swap;
    return err;
}

static int on_section(sg_stage *st, sg_section *sec, void *ctx)
{
    capture_state *c = ctx;
    sg_model_config folded = sg_fold_config(&st->orig);
    int err = sg_section_check(sec, &folded);
    if (err || sec->sec.kind == SG_SECTION_HEAD)
        return err;
    if (sec->sec.kind == SG_SECTION_EMBEDDINGS)
        return c->have_cap ? sg_fail(SG_EFORMAT, "stdin: a second embeddings section")
                           : capture_embeddings(c, sec);
    if (!c->have_plan || sec->sec.layer != c->next_layer)
        return sg_fail(SG_EFORMAT, "stdin: block %lld out of order (expected %s %lld)",
                       (long long)sec->sec.layer,
                       c->have_plan ? "block" : "the embeddings, then block",
                       (long long)c->next_layer);
    c->next_layer++;
    return capture_block(c, sec);
}

static int run(capture_state *c, double timeout, const char *spill_dir)
{
    sg_stage *st = c->st;
    int err = sg_stage_read_header(st, "fold");
    if (err)
        return err;
    c->D = st->orig.dim;
    /* budget 0: every chunk is a file the next stages can read */
    const char *parent = spill_dir ? spill_dir : getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    err = sg_act_store_open(0, parent, &c->store);
    if (err)
        return err;
    c->dir = sg_act_store_spill_path(c->store);
    snprintf(st->store, sizeof st->store, "%s", c->dir);
    cJSON_DeleteItemFromObjectCaseSensitive(st->header, "store");
    cJSON_AddStringToObject(st->header, "store", c->dir);
    c->from_eig = (sg_store_wait_opts){timeout, STDOUT_FILENO, "eig"};
    c->from_slice = (sg_store_wait_opts){timeout, STDOUT_FILENO, "slice"};
    c->q_prev = malloc(c->D * c->D * sizeof(double));
    c->q_mid = malloc(c->D * c->D * sizeof(double));
    c->q_out = malloc(c->D * c->D * sizeof(double));
    if (!c->q_prev || !c->q_mid || !c->q_out)
        return sg_fail(-ENOMEM, "out of memory for rotations of width %lld", (long long)c->D);
    err = sg_stage_write_header(st);
    return err ? err : sg_stage_loop(st, on_section, on_record, c, 1);
}

int sg_cmd_capture(int argc, char **argv)
{
    static const struct option opts[] = {
        {"calib", required_argument, 0, 'c'},        {"calib-tokens", required_argument, 0, 'C'},
        {"nsamples", required_argument, 0, 'n'},     {"seqlen", required_argument, 0, 'L'},
        {"seed", required_argument, 0, 'S'},         {"chunk-tokens", required_argument, 0, 'T'},
        {"spill-dir", required_argument, 0, 'D'},    {"wait-timeout", required_argument, 0, 'w'},
        {"verbose", no_argument, 0, 'v'},            {"zstd", required_argument, 0, 'z'},
        {"help", no_argument, 0, 'h'},               {0, 0, 0, 0}};
    capture_state c = {.nsamples = 128, .seqlen = 2048, .seed = 42};
    const char *spill_dir = NULL;
    double timeout = 3600;
    int opt, bad = 0, zstd = 0;
    while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (opt) {
        case 'c': c.calib = optarg; break;
        case 'C': c.calib_tokens = optarg; break;
        case 'n': bad |= sg_cli_int("--nsamples", optarg, 1, 1 << 24, &c.nsamples); break;
        case 'L': bad |= sg_cli_int("--seqlen", optarg, 2, 1 << 20, &c.seqlen); break;
        case 'S': bad |= sg_cli_int("--seed", optarg, 0, INT64_MAX, &c.seed); break;
        case 'T': bad |= sg_cli_int("--chunk-tokens", optarg, 1, INT64_MAX, &c.chunk_tokens); break;
        case 'D': spill_dir = optarg; break;
        case 'w': bad |= sg_cli_double("--wait-timeout", optarg, 0, 1e9, &timeout); break;
        case 'v': c.verbose = 1; break;
        case 'z': bad |= sg_stage_parse_zstd(optarg, &zstd); break;
        case 'h': fputs(usage, stdout); return SG_EXIT_OK;
        default: bad = 1;
        }
    }
    if (bad || optind != argc || !c.calib == !c.calib_tokens) {
        fputs(usage, stderr);
        return SG_EXIT_USAGE;
    }
    sg_stage st;
    c.st = &st;
    int err = sg_stage_open(&st, "capture", 1, 1, zstd);
    err = err ? err : run(&c, timeout, spill_dir);
    int status = sg_stage_finish(&st, err);
    /* the store goes with this stage; a cov still reading chunks of a
     * failed run finds them gone and stops quietly (the abort record is
     * on its way) */
    if (c.have_cap)
        sg_capture_free(&c.cap);
    sg_act_store_close(c.store);
    sg_token_batch_free(&c.batch);
    sg_tokenizer_free(c.tok);
    free(c.q_prev);
    free(c.q_mid);
    free(c.q_out);
    return status;
}
