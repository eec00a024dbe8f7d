#include "task_table.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_report.h"

void sg_cli_cache_dir(char *buf, size_t n)
{
    const char *c = getenv("SG_CACHE"), *x = getenv("XDG_CACHE_HOME"), *h = getenv("HOME");
    if (c && *c)
        snprintf(buf, n, "%s", c);
    else if (x && *x)
        snprintf(buf, n, "%s/slicegpt-stream", x);
    else
        snprintf(buf, n, "%s/.cache/slicegpt-stream", h ? h : ".");
}

void sg_cli_tasks_free(sg_task *tasks, int n)
{
    for (int i = 0; tasks && i < n; i++)
        sg_task_free(&tasks[i]);
    free(tasks);
}

static void report_skips(const sg_task *t, int64_t max_positions)
{
    static const char *const why[] = {NULL, "with an empty continuation",
                                      "longer than the model's context", "with no context and "
                                      "no BOS or EOS token to start from"};
    int64_t total = 0;
    for (int r = 1; r < 4; r++)
        total += t->skipped[r];
    if (!total)
        return;
    fprintf(stderr, "slicegpt-stream: %s: %lld request%s skipped (", t->name, (long long)total,
            total == 1 ? "" : "s");
    const char *sep = "";
    for (int r = 1; r < 4; r++)
        if (t->skipped[r]) {
            fprintf(stderr, "%s%lld %s", sep, (long long)t->skipped[r], why[r]);
            if (r == SG_REQ_TOO_LONG)
                fprintf(stderr, " (%lld positions)", (long long)max_positions);
            fprintf(stderr, ", the first at line %lld", (long long)t->first_skipped_line[r]);
            sep = "; ";
        }
    fprintf(stderr, "); %lld of %lld document%s left out\n", (long long)t->docs_dropped,
            (long long)t->n_docs, t->n_docs == 1 ? "" : "s");
}

int sg_cli_tasks_load(const char *list, int64_t limit, const sg_tokenizer *tok,
                      int64_t max_positions, sg_task **tasks, int *n)
{
    char cache[4096];
    sg_cli_cache_dir(cache, sizeof cache);
    char *copy = strdup(list);
    int cap = 1;
    for (const char *p = list; *p; p++)
        cap += *p == ',';
    sg_task *t = calloc(cap, sizeof *t);
    *tasks = NULL;
    *n = 0;
    if (!copy || !t) {
        free(copy);
        free(t);
        return sg_fail(-ENOMEM, "out of memory");
    }
    int err = 0, k = 0;
    char *save = NULL;
    /* every name known before any file is read */
    for (char *spec = strtok_r(copy, ",", &save); spec && !err;
         spec = strtok_r(NULL, ",", &save))
        err = sg_task_check_spec(spec);
    free(copy);
    copy = err ? NULL : strdup(list);
    if (!err && !copy)
        err = sg_fail(-ENOMEM, "out of memory");
    save = NULL;
    for (char *spec = err ? NULL : strtok_r(copy, ",", &save); spec && !err;
         spec = strtok_r(NULL, ",", &save)) {
        if (!*spec)
            continue;
        err = sg_task_load(spec, cache, limit, &t[k]);
        if (!err) {
            k++;
            err = sg_task_tokenize(&t[k - 1], tok, max_positions);
        }
        if (!err) {
            report_skips(&t[k - 1], max_positions);
            if (t[k - 1].docs_dropped == t[k - 1].n_docs)
                err = sg_fail(SG_EFORMAT, "%s: every document has a request that cannot be "
                                          "scored", t[k - 1].name);
        }
    }
    if (!err && k == 0)
        err = sg_fail(SG_EARG, "--tasks: no task named");
    free(copy);
    if (err) {
        sg_cli_tasks_free(t, k);
        return err;
    }
    *tasks = t;
    *n = k;
    return 0;
}

void sg_cli_tasks_score(const sg_task *tasks, int n, sg_task_score *scores, double *avg_acc,
                        double *avg_acc_norm)
{
    double a = 0, an = 0;
    for (int i = 0; i < n; i++) {
        sg_task_score_compute(&tasks[i], &scores[i]);
        a += scores[i].acc;
        an += scores[i].acc_norm;
    }
    *avg_acc = n ? a / n : 0;
    *avg_acc_norm = n ? an / n : 0;
}

/* a task's name in the table: a file's base name */
static const char *label(const sg_task *t)
{
    const char *s = strrchr(t->name, '/');
    return s ? s + 1 : t->name;
}

static int name_width(const sg_task *tasks, int n)
{
    int w = 8;
    for (int i = 0; i < n; i++)
        if ((int)strlen(label(&tasks[i])) > w)
            w = (int)strlen(label(&tasks[i]));
    return w;
}

void sg_cli_tasks_print(const sg_task *tasks, int n, const sg_task_score *s)
{
    int w = name_width(tasks, n);
    double a = 0, an = 0;
    printf("%-*s %6s  %-14s  %-14s\n", w, "task", "docs", "acc %", "acc_norm %");
    for (int i = 0; i < n; i++) {
        printf("%-*s %6lld  %5.2f ± %5.2f   %5.2f ± %5.2f\n", w, label(&tasks[i]),
               (long long)s[i].docs, 100 * s[i].acc, 100 * s[i].acc_stderr, 100 * s[i].acc_norm,
               100 * s[i].acc_norm_stderr);
        a += s[i].acc / n;
        an += s[i].acc_norm / n;
    }
    printf("%-*s %6s  %5.2f           %5.2f\n", w, "average", "", 100 * a, 100 * an);
}

void sg_cli_tasks_print_pair(const sg_task *tasks, int n, const sg_task_score *d,
                             const sg_task_score *s)
{
    int w = name_width(tasks, n);
    double a[4] = {0};
    printf("%-*s %6s  %-14s  %-14s  %6s    %-14s  %-14s  %6s\n", w, "task", "docs",
           "dense acc %", "sliced acc %", "change", "dense norm %", "sliced norm %", "change");
    for (int i = 0; i < n; i++) {
        printf("%-*s %6lld  %5.2f ± %5.2f   %5.2f ± %5.2f   %+6.2f    %5.2f ± %5.2f   "
               "%5.2f ± %5.2f   %+6.2f\n",
               w, label(&tasks[i]), (long long)d[i].docs, 100 * d[i].acc, 100 * d[i].acc_stderr,
               100 * s[i].acc, 100 * s[i].acc_stderr, 100 * (s[i].acc - d[i].acc),
               100 * d[i].acc_norm, 100 * d[i].acc_norm_stderr, 100 * s[i].acc_norm,
               100 * s[i].acc_norm_stderr, 100 * (s[i].acc_norm - d[i].acc_norm));
        a[0] += d[i].acc / n;
        a[1] += s[i].acc / n;
        a[2] += d[i].acc_norm / n;
        a[3] += s[i].acc_norm / n;
    }
    printf("%-*s %6s  %5.2f           %5.2f            %+6.2f    %5.2f           %5.2f"
           "            %+6.2f\n",
           w, "average", "", 100 * a[0], 100 * a[1], 100 * (a[1] - a[0]), 100 * a[2],
           100 * a[3], 100 * (a[3] - a[2]));
}

void sg_cli_tasks_json(cJSON *parent, const char *key, const sg_task *tasks, int n,
                       const sg_task_score *s)
{
    cJSON *arr = cJSON_AddArrayToObject(parent, key);
    double a = 0, an = 0;
    for (int i = 0; i < n; i++) {
        const sg_task *t = &tasks[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", t->name);
        cJSON_AddStringToObject(o, "file", t->path);
        sg_json_int(o, "documents", s[i].docs);
        sg_json_int(o, "requests", t->n_req);
        cJSON *sk = cJSON_AddObjectToObject(o, "skipped");
        sg_json_int(sk, "empty_continuation", t->skipped[SG_REQ_EMPTY]);
        sg_json_int(sk, "too_long", t->skipped[SG_REQ_TOO_LONG]);
        sg_json_int(sk, "no_context", t->skipped[SG_REQ_NO_CONTEXT]);
        sg_json_int(o, "documents_dropped", t->docs_dropped);
        cJSON_AddNumberToObject(o, "acc", s[i].acc);
        cJSON_AddNumberToObject(o, "acc_stderr", s[i].acc_stderr);
        cJSON_AddNumberToObject(o, "acc_norm", s[i].acc_norm);
        cJSON_AddNumberToObject(o, "acc_norm_stderr", s[i].acc_norm_stderr);
        cJSON_AddItemToArray(arr, o);
        a += s[i].acc / n;
        an += s[i].acc_norm / n;
    }
    char k2[128];
    snprintf(k2, sizeof k2, "%s_average", key);
    cJSON *avg = cJSON_AddObjectToObject(parent, k2);
    cJSON_AddNumberToObject(avg, "acc", a);
    cJSON_AddNumberToObject(avg, "acc_norm", an);
}
