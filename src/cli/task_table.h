/* What `tasks` and `run --tasks` share: the task list read, tokenized and
 * reported; the accuracy table (the layout of the SliceGPT paper's
 * zero-shot table, one row per task and the average); its JSON. */
#ifndef SG_TASK_TABLE_H
#define SG_TASK_TABLE_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "slicegpt.h"

/* The cache folder: $SG_CACHE, else $XDG_CACHE_HOME/slicegpt-stream, else
 * ~/.cache/slicegpt-stream (as tools/fetch-*.sh). */
void sg_cli_cache_dir(char *buf, size_t n);

/* list: comma-separated task names or paths. Loads each (the first limit
 * documents; 0: all), tokenizes it for a model of max_positions positions
 * and says on stderr what was skipped. *tasks is freed by
 * sg_cli_tasks_free. Returns 0 or a library error (message recorded). */
int sg_cli_tasks_load(const char *list, int64_t limit, const sg_tokenizer *tok,
                      int64_t max_positions, sg_task **tasks, int *n);
void sg_cli_tasks_free(sg_task *tasks, int n);

/* Scores of each task from its requests' ll; the averages over tasks. */
void sg_cli_tasks_score(const sg_task *tasks, int n, sg_task_score *scores, double *avg_acc,
                        double *avg_acc_norm);

/* The table of one model. */
void sg_cli_tasks_print(const sg_task *tasks, int n, const sg_task_score *s);

/* Two models side by side, with the change (sliced - dense, points). */
void sg_cli_tasks_print_pair(const sg_task *tasks, int n, const sg_task_score *dense,
                             const sg_task_score *sliced);

/* {"name", "file", "documents", "requests", "skipped": {...},
 *  "documents_dropped", "acc", "acc_stderr", "acc_norm", "acc_norm_stderr"}
 * per task under key (an array), the average under key_average. */
void sg_cli_tasks_json(cJSON *parent, const char *key, const sg_task *tasks, int n,
                       const sg_task_score *s);

#endif
