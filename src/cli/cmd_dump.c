/* slicegpt-stream dump: a stream's records, one line each, for humans.
 *
 *   slicegpt-stream load MODEL | slicegpt-stream fold | slicegpt-stream dump
 *
 * Columns: record number, byte offset of the record and of its payload in
 * the stream, bytes stored (after zstd, if the record is compressed), type,
 * name, and what the payload says. Every record is checked as every stage
 * checks it, so dump is also a stream validator: exit 0 for a complete,
 * sound stream, 1 otherwise (an abort record included). */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "slicegpt.h"
#include "stage_common.h"

static const char usage[] =
    "usage: ... | slicegpt-stream dump [--header]\n"
    "Prints each record of the stream on stdin; exits 1 unless the stream is complete\n"
    "and sound.\n"
    "  --header              print the header record's JSON in full\n"
    "\nexamples:\n"
    "  slicegpt-stream load ~/.cache/slicegpt-stream/SmolLM2-135M-Instruct.Q4_1.gguf |\n"
    "    slicegpt-stream dump --header | head -40\n"
    "  slicegpt-stream load MODEL | slicegpt-stream fold --zstd 3 | slicegpt-stream dump\n";

/* Input-derived strings are printed escaped: a crafted stream must not
 * send terminal escapes or break the one-line-per-record format. */
static const char *esc(const char *s)
{
    static char buf[4][4 * 4096 + 1];
    static int next;
    char *b = buf[next++ % 4];
    return sg_escape(s, strlen(s), b, sizeof buf[0]);
}

static void join_stages(const cJSON *h, char *buf, size_t n)
{
    const cJSON *s;
    size_t k = 0;
    buf[0] = '\0';
    cJSON_ArrayForEach(s, cJSON_GetObjectItemCaseSensitive(h, "stages"))
    {
        if (cJSON_IsString(s) && k < n)
            k += snprintf(buf + k, n - k, "%s%s", k ? "," : "", esc(s->valuestring));
    }
}

static int describe(const sg_record *r, int full_header)
{
    int err = 0;
    switch (r->type) {
    case SG_REC_HEADER: {
        cJSON *h;
        if ((err = sg_rec_read_header(r, &h)))
            break;
        if (full_header) {
            char *json = cJSON_Print(h);
            printf("\n%s", json ? json : "");
            cJSON_free(json);
        } else {
            char stages[256];
            join_stages(h, stages, sizeof stages);
            const cJSON *src = cJSON_GetObjectItemCaseSensitive(h, "source");
            const cJSON *store = cJSON_GetObjectItemCaseSensitive(h, "store");
            const cJSON *d = cJSON_GetObjectItemCaseSensitive(
                cJSON_GetObjectItemCaseSensitive(h, "slicing"), "d");
            printf("stages=%s source=%s", stages, cJSON_IsString(src) ? esc(src->valuestring) : "?");
            if (cJSON_IsString(store))
                printf(" store=%s", esc(store->valuestring));
            if (cJSON_IsNumber(d))
                printf(" sliced_width=%lld", (long long)d->valuedouble);
        }
        cJSON_Delete(h);
        break;
    }
    case SG_REC_FILE: printf("%llu bytes", (unsigned long long)r->len); break;
    case SG_REC_BLOCK: {
        sg_rec_block b;
        if (!(err = sg_rec_read_block(r, &b)))
            printf("%s", b.end ? "end" : "begin");
        break;
    }
    case SG_REC_TENSOR: {
        int ndim;
        int64_t shape[4];
        const float *x;
        if ((err = sg_rec_read_tensor(r, &ndim, shape, &x)))
            break;
        int64_t n = 1;
        printf("f32 (");
        for (int i = 0; i < ndim; i++) {
            printf("%s%lld", i ? ", " : "", (long long)shape[i]);
            n *= shape[i];
        }
        double ss = 0;
        for (int64_t i = 0; i < n; i++)
            ss += (double)x[i] * x[i];
        printf(") rms %.4g", sqrt(ss / n));
        break;
    }
    case SG_REC_ACT_REF: {
        sg_rec_act_ref a;
        if (!(err = sg_rec_read_act_ref(r, &a)))
            printf("chunk %lld/%lld (%lld, %lld) %s", (long long)a.index + 1, (long long)a.count,
                   (long long)a.rows, (long long)a.width, esc(a.path));
        break;
    }
    case SG_REC_COV:
    case SG_REC_ROTATION:
    case SG_REC_SPECTRUM: {
        sg_rec_matrix m;
        if ((err = sg_rec_read_matrix(r, &m)))
            break;
        printf("layer %lld ", (long long)m.layer);
        if (r->type == SG_REC_SPECTRUM) {
            printf("%lld eigenvalues:", (long long)m.n);
            for (int64_t i = 0; i < m.n && i < 4; i++)
                printf(" %.4g", m.values[i]);
            printf(m.n > 4 ? " ... %.4g" : "", m.values[m.n - 1]);
        } else {
            double trace = 0;
            for (int64_t i = 0; i < m.n; i++)
                trace += m.values[i * m.n + i];
            printf("(%lld, %lld) trace %.6g", (long long)m.n, (long long)m.n, trace);
            if (r->type == SG_REC_COV)
                printf(" over %lld tokens", (long long)m.tokens);
        }
        break;
    }
    case SG_REC_ABORT: {
        char msg[4 * 4096 + 1];
        size_t len = r->len < 4096 ? r->len : 4096;
        printf("%s", sg_escape((const char *)r->payload, len, msg, sizeof msg));
        break;
    }
    case SG_REC_END: printf("stream complete"); break;
    }
    printf("\n");
    return err;
}

int sg_cmd_dump(int argc, char **argv)
{
    static const struct option opts[] = {
        {"header", no_argument, 0, 'H'}, {"help", no_argument, 0, 'h'}, {0, 0, 0, 0}};
    int c, bad = 0, full_header = 0;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'H': full_header = 1; break;
        case 'h': fputs(usage, stdout); return SG_EXIT_OK;
        default: bad = 1;
        }
    }
    if (bad || optind != argc) {
        fputs(usage, stderr);
        return SG_EXIT_USAGE;
    }
    sg_stage st;
    int err = sg_stage_open(&st, "dump", 1, 0, 0);
    uint64_t offset = SG_FRAME_PREAMBLE;
    int got = 1, aborted = 0;
    if (!err)
        printf("# record offset payload_at stored type name details\n");
    while (!err && got == 1) {
        got = sg_frame_read(st.in, &st.rec);
        if (got < 0) {
            err = got;
            break;
        }
        const sg_record *r = &st.rec;
        uint64_t payload_at = offset + SG_FRAME_HEADER + strlen(r->name);
        printf("%llu %llu %llu %llu%s %s %s ", (unsigned long long)r->seq,
               (unsigned long long)offset, (unsigned long long)payload_at,
               (unsigned long long)r->stored, r->flags & SG_FRAME_ZSTD ? "(zstd)" : "",
               sg_rec_type_name(r->type), r->name[0] ? esc(r->name) : "-");
        err = describe(r, full_header);
        offset = payload_at + r->stored + 4;
        if (r->type == SG_REC_ABORT) {
            aborted = 1; /* nothing sound can follow */
            break;
        }
    }
    fflush(stdout);
    /* an aborted stream was reported by the stage that failed */
    return sg_stage_finish(&st, err ? err : aborted ? SG_STAGE_QUIET : 0);
}
