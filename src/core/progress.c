#include "progress.h"

#include <math.h>
#include <stdarg.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

void sg_progress_init(sg_progress *p, FILE *out, int tty, const char *who, double interval)
{
    memset(p, 0, sizeof *p);
    p->out = out;
    p->tty = out && (tty < 0 ? isatty(fileno(out)) : tty);
    p->who = who ? who : "";
    p->interval = interval > 0 ? interval : 0;
    p->t_line = now();
}

void sg_progress_format_time(double s, char *buf, size_t n)
{
    if (!(s >= 0) || s > 1e8) {
        snprintf(buf, n, "--");
        return;
    }
    long t = lround(s);
    if (t >= 3600)
        snprintf(buf, n, "%ld:%02ld:%02ld", t / 3600, t / 60 % 60, t % 60);
    else
        snprintf(buf, n, "%ld:%02ld", t / 60, t % 60);
}

/* ", 1234 tokens/s, elapsed 0:42, ETA 1:03" for `done` steps after
 * `elapsed` seconds */
static void rate(const sg_progress *p, double elapsed, int final, char *buf, size_t n)
{
    char el[32], eta[32];
    double frac = p->steps > 0 ? (double)p->done / p->steps : 0;
    size_t k = 0;
    if (p->tokens > 0 && frac > 0 && elapsed > 0)
        k = snprintf(buf, n, ", %.0f tokens/s", p->tokens * frac / elapsed);
    else if (p->tokens > 0)
        k = snprintf(buf, n, ", -- tokens/s");
    else if (p->done > 0)
        k = snprintf(buf, n, ", %.1f s a block", elapsed / p->done);
    if (k >= n || final)
        return;
    sg_progress_format_time(elapsed, el, sizeof el);
    sg_progress_format_time(frac > 0 ? elapsed * (1 - frac) / frac : -1, eta, sizeof eta);
    snprintf(buf + k, n - k, ", elapsed %s, ETA %s", el, eta);
}

static void emit(sg_progress *p, const char *text, int end)
{
    if (p->tty) {
        /* redraw: back to the line's start, the text, erase what is left */
        fprintf(p->out, "\r%s\033[K%s", text, end ? "\n" : "");
        p->drawn = !end;
    } else {
        fprintf(p->out, "%s\n", text);
    }
    if (end || !p->tty)
        p->lines++;
    fflush(p->out);
}

void sg_progress_begin(sg_progress *p, const char *phase, int64_t steps, int64_t tokens)
{
    if (!p || !p->out)
        return;
    if (p->phase[0])
        sg_progress_end(p);
    snprintf(p->phase, sizeof p->phase, "%s", phase);
    p->steps = steps;
    p->tokens = tokens;
    p->done = 0;
    p->t_phase = now();
}

void sg_progress_update(sg_progress *p, int64_t done, const char *fmt, ...)
{
    if (!p || !p->out || !p->phase[0])
        return;
    double t = now();
    p->done = done;
    /* a terminal is redrawn at most 10 times a second, anything else once
     * an interval */
    if (t - p->t_line < (p->tty ? 0.1 : p->interval))
        return;
    char where[128], r[128], line[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(where, sizeof where, fmt, ap);
    va_end(ap);
    rate(p, t - p->t_phase, 0, r, sizeof r);
    snprintf(line, sizeof line, "%s: %s: %s%s", p->who, p->phase, where, r);
    emit(p, line, 0);
    p->t_line = t;
}

void sg_progress_end(sg_progress *p)
{
    if (!p || !p->out || !p->phase[0])
        return;
    double t = now();
    char r[128], line[512];
    p->done = p->steps;
    char el[32];
    sg_progress_format_time(t - p->t_phase, el, sizeof el);
    rate(p, t - p->t_phase, 1, r, sizeof r);
    snprintf(line, sizeof line, "%s: %s: done in %s%s", p->who, p->phase, el, r);
    emit(p, line, 1);
    p->t_line = t;
    p->phase[0] = 0;
}

void sg_progress_break(sg_progress *p)
{
    if (p && p->out && p->drawn) {
        fputc('\n', p->out);
        p->drawn = 0;
        p->lines++;
    }
}
