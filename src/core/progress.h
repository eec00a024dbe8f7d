/* Progress of a long phase (slicing, an evaluation) for a person watching
 * it: the phase, where it is (block i/N and the stage), the rate in tokens
 * per second, the time elapsed and an estimate of the time left from the
 * measured rate.
 *
 * The library prints nothing on its own: a program that wants progress
 * makes an sg_progress on a stream (stderr) and hands it to the pipeline
 * or the evaluation; every function accepts NULL and then does nothing,
 * so callers need no test.
 *
 * On a terminal one line is redrawn in place (\r, erased to its end) and
 * ended when the phase ends. Anywhere else (a log file, a pipe) a line is
 * written at most once every `interval` seconds, plus one line when each
 * phase ends, so a run of t seconds with k phases writes at most
 * t / interval + k lines. */
#ifndef SG_PROGRESS_H
#define SG_PROGRESS_H

#include <stdint.h>
#include <stdio.h>

typedef struct {
    FILE *out;          /* NULL: silent */
    int tty;            /* redraw one line in place */
    double interval;    /* not a terminal: seconds at least between lines */
    const char *who;    /* prefix, "slicegpt-stream" */
    char phase[64];     /* "slice", "perplexity (dense)" */
    int64_t steps;      /* the phase's steps (blocks) */
    int64_t tokens;     /* tokens the whole phase pushes through the model (0: unknown) */
    int64_t done;       /* steps finished */
    double t_phase;     /* when the phase began */
    double t_line;      /* when the last line was written */
    int drawn;          /* terminal: a line is on screen, not yet ended */
    int64_t lines;      /* lines ended so far (terminal: phases) */
} sg_progress;

/* out: the stream (NULL: silent); tty: whether it is a terminal (-1: ask
 * isatty); interval: the least seconds between lines off a terminal. */
void sg_progress_init(sg_progress *p, FILE *out, int tty, const char *who, double interval);

/* A phase of `steps` equal steps over `tokens` tokens. Ends a phase still
 * open. */
void sg_progress_begin(sg_progress *p, const char *phase, int64_t steps, int64_t tokens);

/* done steps are finished; `where` says what runs now ("block 3/30
 * capture"). Written if the terminal or the interval allows. */
void sg_progress_update(sg_progress *p, int64_t done, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The phase is over: one last line with its time and rate. */
void sg_progress_end(sg_progress *p);

/* Ends a redrawn line, if one is on screen, before other output (a
 * notice, an error) goes to the same terminal. */
void sg_progress_break(sg_progress *p);

/* "1:05", "1:02:03": seconds as a person reads them. */
void sg_progress_format_time(double seconds, char *buf, size_t n);

#endif
