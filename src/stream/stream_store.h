/* The store directory: how the stage filters talk back upstream.
 *
 * The pipeline has a loop: capturing block l+1 needs the rotations of
 * block l, which eig computes downstream of capture, and the sliced widths,
 * which slice plans. A pipe only flows one way, so what capture needs from
 * later stages goes through files in the scratch directory the stream
 * header names ("store"): eig writes <signal>.rot, slice writes "plan",
 * each a small stream (preamble, one record, end) published atomically
 * (written under a temporary name, then renamed), and capture waits for
 * them. A stage that fails leaves "failed" there, so capture stops
 * waiting.
 *
 * Why this cannot deadlock: every stage writes each record completely as
 * soon as it has it (frame.h), and only capture ever waits for anything
 * but its input. Before waiting, capture has written everything the
 * awaited file depends on (the chunk references of that signal); cov,
 * eig and slice depend only on their input and never wait on capture;
 * write only writes files. So whatever fills a pipe is drained by a stage
 * that is not waiting on the one that fills it. */
#ifndef SG_STREAM_STORE_H
#define SG_STREAM_STORE_H

#include <errno.h>

#include "frame.h"

/* A failure another stage has reported already (it left "failed", or
 * capture stopped and took the store with it). */
#define SG_STORE_PEER_FAILED (-ECANCELED)

/* Writes dir/file as a stream of one record (type, name, parts) and an
 * end record, atomically: a reader never sees it half written.
 * SG_STORE_PEER_FAILED if dir is gone: capture removes it when it stops. */
int sg_store_put(const char *dir, const char *file, int type, const char *name,
                 const sg_frame_part *parts, int n_parts);

typedef struct {
    double timeout_s;   /* give up after this long */
    int watch_fd;       /* stop if this pipe's reader goes away (-1: none) */
    const char *from;   /* the stage expected to write the file, for messages */
    /* The stages the awaited file's inputs pass through, from the waiting
     * one to the one that writes the file (NULL-terminated), and how long
     * one of them may sit in read() while the stage before it has written
     * bytes it has not received: such a wait means something between them
     * (a buffer such as `dd bs=1M`) holds the stream back, and would never
     * end. 0: no such check. */
    const char *const *hops;
    double stall_s;
} sg_store_wait_opts;

/* How a stage's streams flow, published in dir/<stage>.flow for the
 * stall check above: bytes read and written so far, and whether the stage
 * sits in read() (waiting) since the time `since` (CLOCK_MONOTONIC). */
typedef struct {
    unsigned long long in, out;
    int waiting;
    double since;
} sg_store_flow;

/* Opens (once; *fd starts at -1) and rewrites dir/<stage>.flow. Never
 * fails: a store that is gone is the owner's to report. */
void sg_store_publish_flow(const char *dir, const char *stage, int *fd, const sg_store_flow *f);

/* Seconds on CLOCK_MONOTONIC (the clock of sg_store_flow.since). */
double sg_store_now(void);

/* Waits for dir/file, then reads its record (of type `type`) into *rec;
 * rec->payload is then the caller's, to free(). SG_STORE_PEER_FAILED,
 * -EPIPE (watch_fd's reader gone) or -ETIMEDOUT with a message naming
 * what was awaited. */
int sg_store_wait(const char *dir, const char *file, int type, const sg_store_wait_opts *o,
                  sg_record *rec);

/* Leaves dir/failed saying who failed and why (the first failure wins). */
void sg_store_mark_failed(const char *dir, const char *stage, const char *message);

#endif
