#include "stage_common.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "slicegpt.h"

int sg_stage_open(sg_stage *st, const char *name, int input, int output, int zstd_level)
{
    memset(st, 0, sizeof *st);
    st->name = name;
    st->flow_fd = -1;
    /* a closed pipe is an error to report (or not), not a silent death */
    signal(SIGPIPE, SIG_IGN);
    if (output && isatty(STDOUT_FILENO))
        return sg_fail(SG_EARG, "stdout is a terminal: pipe it into the next stage (or "
                                "`slicegpt-stream dump`)");
    int err = 0;
    if (output)
        err = sg_frame_writer_open(STDOUT_FILENO, "stdout", zstd_level, &st->out);
    if (!err && input)
        err = sg_frame_reader_open(STDIN_FILENO, "stdin", &st->in);
    return err;
}

void sg_stage_publish_flow(sg_stage *st, int waiting)
{
    if (!st->store[0])
        return;
    if (waiting != st->waiting || !waiting)
        st->since = sg_store_now();
    st->waiting = waiting;
    sg_store_flow f = {sg_frame_reader_bytes(st->in), sg_frame_writer_bytes(st->out), waiting,
                       st->since};
    sg_store_publish_flow(st->store, st->name, &st->flow_fd, &f);
}

int sg_stage_next(sg_stage *st)
{
    sg_stage_publish_flow(st, 1);
    int got = sg_frame_read(st->in, &st->rec);
    sg_stage_publish_flow(st, 0);
    if (got == 1 && st->rec.type == SG_REC_ABORT) {
        if (st->out && !st->abort_sent)
            sg_stage_forward(st);
        st->abort_sent = 1;
        return SG_STAGE_QUIET;
    }
    return got;
}

int sg_stage_forward(sg_stage *st)
{
    sg_frame_part p = {st->rec.payload, st->rec.len};
    return sg_frame_write(st->out, st->rec.type, st->rec.name, &p, 1);
}

static int has_stage(const cJSON *header, const char *name)
{
    const cJSON *s, *stages = cJSON_GetObjectItemCaseSensitive(header, "stages");
    cJSON_ArrayForEach(s, stages)
    {
        if (cJSON_IsString(s) && !strcmp(s->valuestring, name))
            return 1;
    }
    return 0;
}

int sg_stage_read_header(sg_stage *st, const char *needs)
{
    int got = sg_stage_next(st);
    if (got <= 0)
        return got < 0 ? got : sg_fail(SG_EFORMAT, "stdin: stream holds no header");
    if (st->rec.type != SG_REC_HEADER)
        return sg_fail(SG_EFORMAT, "%s: the stream must begin with a header record",
                       sg_rec_label(&st->rec));
    int err = sg_rec_read_header(&st->rec, &st->header);
    if (err)
        return err;
    const cJSON *fmt = cJSON_GetObjectItemCaseSensitive(st->header, "format");
    if (!cJSON_IsString(fmt) || strcmp(fmt->valuestring, "slicegpt-stream"))
        return sg_fail(SG_EFORMAT, "%s: \"format\" is not \"slicegpt-stream\"",
                       sg_rec_label(&st->rec));
    err = sg_config_from_json(cJSON_GetObjectItemCaseSensitive(st->header, "config"), &st->orig,
                              sg_rec_label(&st->rec));
    if (err)
        return err;
    const cJSON *store = cJSON_GetObjectItemCaseSensitive(st->header, "store");
    if (cJSON_IsString(store))
        snprintf(st->store, sizeof st->store, "%s", store->valuestring);
    if (needs && !has_stage(st->header, needs))
        return sg_fail(SG_EARG, "stdin: this stream has not been through `slicegpt-stream %s`, "
                                "which must come before `%s` in the pipe",
                       needs, st->name);
    if (has_stage(st->header, st->name))
        return sg_fail(SG_EARG, "stdin: this stream has been through `slicegpt-stream %s` "
                                "already",
                       st->name);
    return 0;
}

int sg_stage_write_header(sg_stage *st)
{
    cJSON *stages = cJSON_GetObjectItemCaseSensitive(st->header, "stages");
    if (!cJSON_IsArray(stages)) {
        cJSON_DeleteItemFromObjectCaseSensitive(st->header, "stages");
        stages = cJSON_AddArrayToObject(st->header, "stages");
    }
    if (!stages || !cJSON_AddItemToArray(stages, cJSON_CreateString(st->name)))
        return sg_fail(-ENOMEM, "out of memory");
    return sg_rec_write_header(st->out, st->header);
}

int sg_stage_finish(sg_stage *st, int err)
{
    if (err && err != SG_STAGE_QUIET && err != -EPIPE) {
        char msg[1100];
        const char *m = sg_last_error();
        snprintf(msg, sizeof msg, "%s", m[0] ? m : sg_strerror(err));
        fprintf(stderr, "slicegpt-stream %s: %s\n", st->name, msg);
        if (st->store[0])
            sg_store_mark_failed(st->store, st->name, msg);
        if (st->out && !st->abort_sent)
            sg_rec_write_abort(st->out, st->name, msg);
        st->abort_sent = 1;
    } else if (err && st->out && !st->abort_sent) {
        /* reported elsewhere: stop the stages after this one quietly too */
        sg_rec_write_abort(st->out, st->name, "an earlier stage failed");
    }
    sg_frame_reader_free(st->in);
    sg_frame_writer_free(st->out);
    if (st->flow_fd >= 0)
        close(st->flow_fd);
    cJSON_Delete(st->header);
    memset(st, 0, sizeof *st);
    return err ? SG_EXIT_FAIL : SG_EXIT_OK;
}

int sg_stage_next_section(sg_stage *st, sg_section *sec, sg_stage_record_fn on_record,
                          void *ctx, int forward_sections)
{
    int in_section = 0, got, err = 0;
    while (!err && (got = sg_stage_next(st)) == 1) {
        sg_record *r = &st->rec;
        if (forward_sections && (r->type == SG_REC_BLOCK || r->type == SG_REC_TENSOR) &&
            (err = sg_stage_forward(st)))
            break;
        if (r->type == SG_REC_BLOCK) {
            sg_rec_block b;
            if ((err = sg_rec_read_block(r, &b)))
                break;
            char name[64];
            sg_section_name(in_section ? &sec->sec : &b, name, sizeof name);
            if (b.end != in_section || (in_section && strcmp(name, r->name)))
                err = sg_fail(SG_EFORMAT, "%s: section boundary out of place", sg_rec_label(r));
            else if (!b.end)
                sg_section_begin(sec, &b);
            else
                return 1;
            in_section = !b.end && !err;
        } else if (in_section && r->type == SG_REC_TENSOR) {
            err = sg_section_add(sec, r, st->in);
        } else if (r->type == SG_REC_TENSOR) {
            err = sg_fail(SG_EFORMAT, "%s: tensor outside a section", sg_rec_label(r));
        } else if (r->type == SG_REC_HEADER) {
            err = sg_fail(SG_EFORMAT, "%s: a second header", sg_rec_label(r));
        } else {
            int used = on_record ? on_record(st, ctx) : 0;
            err = used < 0 ? used : used ? 0 : sg_stage_forward(st);
        }
    }
    if (in_section)
        sg_section_free(sec);
    if (err)
        return err;
    if (got < 0)
        return got;
    return in_section ? sg_fail(SG_EFORMAT, "stdin: stream ends inside a section") : 0;
}

int sg_stage_loop(sg_stage *st, sg_stage_section_fn on_section, sg_stage_record_fn on_record,
                  void *ctx, int forward_sections)
{
    sg_section sec;
    int got;
    while ((got = sg_stage_next_section(st, &sec, on_record, ctx, forward_sections)) == 1) {
        int err = on_section(st, &sec, ctx);
        sg_section_free(&sec);
        if (err)
            return err;
    }
    if (got < 0)
        return got;
    return st->out ? sg_frame_write_end(st->out) : 0;
}

int sg_stage_store_gone(sg_stage *st, int err)
{
    if (err != SG_STORE_PEER_FAILED && err != -ENOENT)
        return err;
    /* capture removes the store when it stops; if it failed, its abort
     * record is on the way. A stream that instead ends cleanly was saved
     * and is being replayed after its capture ended: say so. */
    int got;
    while ((got = sg_stage_next(st)) == 1)
        ;
    if (got == 0)
        return sg_fail(SG_EARG,
                       "%s: the store is gone: this stream was saved from an earlier pipe and "
                       "capture removed its store when it ended; a captured stream cannot be "
                       "replayed, run the pipe from capture again",
                       st->store);
    return SG_STAGE_QUIET;
}
