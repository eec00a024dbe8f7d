/* --report FILE.json: a machine-readable record of a run, ppl or plan
 * command holding every figure it prints (schema: slicegpt-stream(1),
 * REPORT FILES). The command fills its own sections; this file adds what
 * every record has (schema, program, argv, library versions, the host's
 * memory peak) and writes it atomically. */
#ifndef SG_JSON_REPORT_H
#define SG_JSON_REPORT_H

#include <cjson/cJSON.h>
#include <stdint.h>

#include "slicegpt.h"

#define SG_REPORT_SCHEMA "slicegpt-stream-report"
#define SG_REPORT_VERSION 1

/* {"schema", "schema_version", "command", "program": {name, version},
 *  "argv": [...], "libraries": {...}}; NULL when out of memory. */
cJSON *sg_json_report_new(const char *command, int argc, char **argv);

/* "model": the path and the architecture of cfg, its parameter count and
 * the bytes its files take on disk. */
cJSON *sg_json_report_model(cJSON *r, const char *path, const sg_model_config *cfg);

/* Bytes of the regular files at path (a file, or a directory's files). */
int64_t sg_json_report_disk_bytes(const char *path);

/* The most host memory this process has had resident (getrusage). */
int64_t sg_json_report_host_peak(void);

/* "memory": {"host_peak_bytes", "gpu_peak_bytes" (null on the CPU)} */
void sg_json_report_memory(cJSON *r, int64_t host_peak, int64_t gpu_peak);

/* Writes r to path (path.tmp, fsync, rename) and frees it. A NULL path
 * only frees. Returns 0, or prints why and returns SG_EXIT_FAIL. */
int sg_json_report_finish(cJSON *r, const char *path);

/* cJSON_AddNumberToObject for int64 counts (exact below 2^53) */
void sg_json_int(cJSON *o, const char *key, int64_t v);

#endif
