/* What every stage filter does the same way: read its input stream, write
 * its output stream, handle the header, and fail so that the pipeline
 * stops with one clear message (slicegpt-stream(5), "Failures").
 *
 * A stage that meets a problem prints "slicegpt-stream STAGE: message",
 * sends an abort record downstream, leaves a "failed" note in the store
 * (so capture, which may be waiting on a later stage, stops) and exits 1.
 * A stage that receives an abort record passes it on and exits 1 without
 * a word; so does one whose output pipe was closed (the stage after it has
 * spoken) and capture when it finds the note. The last stage's status is
 * the pipeline's, so a failure anywhere makes the pipeline fail. */
#ifndef SG_STAGE_COMMON_H
#define SG_STAGE_COMMON_H

#include <cjson/cJSON.h>
#include <errno.h>

#include "slicegpt.h"

/* A failure someone else has reported already (abort record, failed note). */
#define SG_STAGE_QUIET (-ECANCELED)

typedef struct {
    const char *name;          /* "fold" */
    sg_frame_reader *in;       /* stdin, or NULL */
    sg_frame_writer *out;      /* stdout, or NULL */
    sg_record rec;             /* the record just read */
    cJSON *header;             /* once read */
    sg_model_config orig;      /* the original model, from the header */
    char store[4096];          /* the store directory, "" until known */
    int abort_sent;
    int flow_fd;               /* store/<name>.flow (sg_store_publish_flow) */
    int waiting;               /* in sg_frame_read, for the flow file */
    double since;
} sg_stage;

/* Publishes how this stage's streams flow (bytes in and out, whether it
 * waits for input) in the store, for capture's stall check. */
void sg_stage_publish_flow(sg_stage *st, int waiting);

/* Sets up st; opens stdin and/or stdout as streams. Refuses a terminal as
 * stdout. SIGPIPE becomes an -EPIPE error. */
int sg_stage_open(sg_stage *st, const char *name, int input, int output, int zstd_level);

/* The next record into st->rec: 1, 0 at the end record, or < 0. An abort
 * record is passed on and returns SG_STAGE_QUIET. */
int sg_stage_next(sg_stage *st);

/* Writes st->rec unchanged. */
int sg_stage_forward(sg_stage *st);

/* Reads the header (the first record): the original config, the store.
 * needs: a stage that must have worked on the stream already (NULL: none);
 * a stream this stage has already worked on is refused. */
int sg_stage_read_header(sg_stage *st, const char *needs);

/* Writes st->header with this stage added to its "stages". */
int sg_stage_write_header(sg_stage *st);

/* Reports err as the header comment says, frees st, returns the exit
 * status. */
int sg_stage_finish(sg_stage *st, int err);

/* After err from a file in the store (SG_STORE_PEER_FAILED, or -ENOENT
 * for a chunk): reads the rest of the input. An abort record (capture
 * failed, and said so) makes it SG_STAGE_QUIET; a clean end means the
 * stream is a saved one replayed after its capture ended: one line says
 * so. Other errors are returned unchanged. */
int sg_stage_store_gone(sg_stage *st, int err);

/* Reads records to the end: the tensors of each section are gathered and
 * handed to on_section once the section ends (sections are checked, not
 * passed on, unless forward_sections: then every section record is passed
 * on as it comes, before anything is done with it); any other record goes
 * to on_record (NULL: none), which returns 1 if it consumed the record, 0
 * to have it passed on, or < 0. Writes the end record when output is on. */
typedef int (*sg_stage_section_fn)(sg_stage *st, sg_section *sec, void *ctx);
typedef int (*sg_stage_record_fn)(sg_stage *st, void *ctx);
int sg_stage_loop(sg_stage *st, sg_stage_section_fn on_section, sg_stage_record_fn on_record,
                  void *ctx, int forward_sections);

/* The next whole section into *sec (1; the caller frees it with
 * sg_section_free), or 0 at the end record, or < 0; other records on the
 * way go to on_record as in sg_stage_loop, and with forward_sections the
 * section's records are passed on as they come. The end record is not
 * written. */
int sg_stage_next_section(sg_stage *st, sg_section *sec, sg_stage_record_fn on_record,
                          void *ctx, int forward_sections);

#endif
