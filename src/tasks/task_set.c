/* Reading a task's requests (task_set.h): one line at a time, grouped into
 * documents by consecutive document ids. */
#include "task_set.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "jsonl_reader.h"
#include "sg_error.h"

const char *const sg_task_names[] = {"piqa", "winogrande", "hellaswag", "arc_easy",
                                     "arc_challenge"};

/* a gold index beyond this is taken for a malformed line */
#define MAX_CHOICES 65536
/* oe-eval numbers the unconditioned twin of document N as N + this */
#define UNCOND_DOC_OFFSET 1000000

void sg_task_cache_path(const char *cache_dir, const char *name, char *buf, size_t n)
{
    snprintf(buf, n, "%s/tasks/%s/requests.jsonl.gz", cache_dir, name);
}

static int ends_with(const char *s, const char *suffix)
{
    size_t a = strlen(s), b = strlen(suffix);
    return a >= b && !strcmp(s + a - b, suffix);
}

static int is_path(const char *spec)
{
    return strchr(spec, '/') || ends_with(spec, ".jsonl") || ends_with(spec, ".jsonl.gz");
}

void sg_task_free(sg_task *t)
{
    if (!t)
        return;
    for (int64_t i = 0; i < t->n_req; i++) {
        free(t->req[i].context);
        free(t->req[i].continuation);
        free(t->req[i].ids);
    }
    free(t->req);
    free(t->docs);
    free(t->name);
    free(t->path);
    memset(t, 0, sizeof *t);
}

/* One line's fields, from either format. The document key is the id's
 * JSON text, so numbers and strings both work. */
typedef struct {
    const char *context, *continuation;
    char key[128];
    int64_t gold;
    int uncond;
} line_fields;

static int field_error(const char *path, int64_t line, const char *what)
{
    return sg_fail(SG_EFORMAT, "%s:%lld: %s", path, (long long)line, what);
}

static int parse_line(const char *path, int64_t line, cJSON *j, line_fields *f)
{
    if (!cJSON_IsObject(j))
        return field_error(path, line, "not a JSON object");
    cJSON *req = cJSON_GetObjectItemCaseSensitive(j, "request");
    cJSON *src = cJSON_IsObject(req) ? req : j; /* oe-eval nests the texts */
    cJSON *ctx = cJSON_GetObjectItemCaseSensitive(src, "context");
    cJSON *cont = cJSON_GetObjectItemCaseSensitive(src, "continuation");
    if (!cJSON_IsString(ctx))
        return field_error(path, line, "no \"context\" string");
    if (!cJSON_IsString(cont))
        return field_error(path, line, "no \"continuation\" string");
    f->context = ctx->valuestring;
    f->continuation = cont->valuestring;
    cJSON *doc = cJSON_GetObjectItemCaseSensitive(j, src == j ? "doc" : "doc_id");
    cJSON *gold = cJSON_GetObjectItemCaseSensitive(j, src == j ? "gold" : "label");
    if (src != j && !cJSON_IsNumber(gold)) { /* older files: the document's gold */
        cJSON *d = cJSON_GetObjectItemCaseSensitive(j, "doc");
        gold = cJSON_GetObjectItemCaseSensitive(d, "gold");
    }
    if (!doc || !(cJSON_IsNumber(doc) || cJSON_IsString(doc)))
        return field_error(path, line, src == j ? "no \"doc\" id (a number or a string)"
                                                : "no \"doc_id\" number");
    /* range first: converting a double beyond int64 is undefined */
    if (!cJSON_IsNumber(gold) || !(gold->valuedouble >= 0 && gold->valuedouble <= MAX_CHOICES) ||
        gold->valuedouble != floor(gold->valuedouble))
        return field_error(path, line, src == j ? "no \"gold\" choice index (an integer, 0 to 65536)"
                                                : "no \"label\" choice index (an integer, 0 to 65536)");
    f->gold = (int64_t)gold->valuedouble;
    f->uncond = src != j && cJSON_IsNumber(doc) && doc->valuedouble >= UNCOND_DOC_OFFSET;
    if (cJSON_IsNumber(doc))
        snprintf(f->key, sizeof f->key, "n%.17g", doc->valuedouble);
    else
        snprintf(f->key, sizeof f->key, "s%s", doc->valuestring);
    return 0;
}

static int grow(void **p, int64_t *cap, int64_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    int64_t c = *cap ? *cap * 2 : 256;
    void *q = realloc(*p, c * size);
    if (!q)
        return sg_fail(-ENOMEM, "out of memory for task requests");
    *p = q;
    *cap = c;
    return 0;
}

/* The document that ends: its gold must name one of its choices. */
static int close_doc(const sg_task *t, int64_t gold)
{
    sg_task_doc *d = &t->docs[t->n_docs - 1];
    if (gold >= d->n_choices)
        return sg_fail(SG_EFORMAT, "%s:%lld: gold choice %lld, but the document has %d choices",
                       t->path, (long long)t->req[d->first].line, (long long)gold,
                       d->n_choices);
    return 0;
}

static int read_requests(sg_task *t, int64_t limit)
{
    sg_jsonl *r;
    int err = sg_jsonl_open(t->path, &r);
    if (err)
        return err;
    int64_t cap_req = 0, cap_docs = 0, lineno, gold = 0;
    char last_key[128] = "";
    const char *line;
    size_t len;
    while (!err && (err = sg_jsonl_next(r, &line, &len, &lineno)) == 1) {
        err = 0;
        if (strspn(line, " \t") == len)
            continue; /* blank lines are allowed */
        cJSON *j = cJSON_ParseWithLength(line, len);
        line_fields f;
        if (!j) {
            err = field_error(t->path, lineno, "not valid JSON");
            break;
        }
        err = parse_line(t->path, lineno, j, &f);
        if (!err && f.uncond) {
            cJSON_Delete(j);
            continue;
        }
        int new_doc = !err && (t->n_docs == 0 || strcmp(f.key, last_key));
        if (new_doc && t->n_docs > 0)
            err = close_doc(t, gold);
        if (!err && new_doc && limit > 0 && t->n_docs == limit) {
            cJSON_Delete(j);
            break;
        }
        if (!err && !new_doc && f.gold != gold)
            err = sg_fail(SG_EFORMAT, "%s:%lld: gold %lld differs from %lld on the "
                                      "document's first line",
                          t->path, (long long)lineno, (long long)f.gold, (long long)gold);
        if (!err && new_doc) {
            err = grow((void **)&t->docs, &cap_docs, t->n_docs + 1, sizeof *t->docs);
            if (!err) {
                t->docs[t->n_docs++] = (sg_task_doc){t->n_req, 0, (int)f.gold, 0};
                snprintf(last_key, sizeof last_key, "%s", f.key);
                gold = f.gold;
            }
        }
        if (!err)
            err = grow((void **)&t->req, &cap_req, t->n_req + 1, sizeof *t->req);
        if (!err) {
            sg_task_request *q = &t->req[t->n_req];
            memset(q, 0, sizeof *q);
            q->context = strdup(f.context);
            q->continuation = strdup(f.continuation);
            q->doc = t->n_docs - 1;
            q->line = lineno;
            t->n_req++;
            t->docs[t->n_docs - 1].n_choices++;
            if (!q->context || !q->continuation)
                err = sg_fail(-ENOMEM, "out of memory for task requests");
        }
        cJSON_Delete(j);
    }
    if (err == 0 && t->n_docs > 0)
        err = close_doc(t, gold);
    if (err == 0 && t->n_docs == 0)
        err = sg_fail(SG_EFORMAT, "%s: no requests", t->path);
    sg_jsonl_close(r);
    return err;
}

int sg_task_check_spec(const char *spec)
{
    if (is_path(spec))
        return 0;
    for (int i = 0; i < SG_N_TASK_NAMES; i++)
        if (!strcmp(spec, sg_task_names[i]))
            return 0;
    char names[256] = "", esc[128];
    for (int i = 0; i < SG_N_TASK_NAMES; i++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "",
                 sg_task_names[i]);
    return sg_fail(SG_EARG, "unknown task '%s' (known: %s; or the path of a .jsonl file of "
                            "requests)",
                   sg_escape(spec, strlen(spec), esc, sizeof esc), names);
}

int sg_task_load(const char *spec, const char *cache_dir, int64_t limit, sg_task *out)
{
    memset(out, 0, sizeof *out);
    char path[4096];
    int err = sg_task_check_spec(spec);
    if (err)
        return err;
    if (is_path(spec)) {
        snprintf(path, sizeof path, "%s", spec);
    } else {
        sg_task_cache_path(cache_dir, spec, path, sizeof path);
        FILE *f = fopen(path, "rb");
        if (!f)
            return sg_fail(SG_EMISSING, "%s: no task data at %s (%s; tools/fetch-tasks.sh "
                                        "puts it there)",
                           spec, path, strerror(errno));
        fclose(f);
    }
    out->name = strdup(spec);
    out->path = strdup(path);
    if (!out->name || !out->path) {
        sg_task_free(out);
        return sg_fail(-ENOMEM, "out of memory");
    }
    err = read_requests(out, limit);
    if (err)
        sg_task_free(out);
    return err;
}
