#include "config.h"

#include "json_report.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include "cli.h"

void sg_json_int(cJSON *o, const char *key, int64_t v)
{
    cJSON_AddNumberToObject(o, key, (double)v);
}

cJSON *sg_json_report_new(const char *command, int argc, char **argv)
{
    cJSON *r = cJSON_CreateObject();
    if (!r)
        return NULL;
    cJSON_AddStringToObject(r, "schema", SG_REPORT_SCHEMA);
    cJSON_AddNumberToObject(r, "schema_version", SG_REPORT_VERSION);
    cJSON_AddStringToObject(r, "command", command);
    cJSON *prog = cJSON_AddObjectToObject(r, "program");
    cJSON_AddStringToObject(prog, "name", PACKAGE_NAME);
    cJSON_AddStringToObject(prog, "version", PACKAGE_VERSION);
    cJSON *args = cJSON_AddArrayToObject(r, "argv");
    for (int i = 0; i < argc; i++)
        cJSON_AddItemToArray(args, cJSON_CreateString(argv[i]));
    sg_library_version v[16];
    int n = sg_library_versions(v, 16);
    cJSON *libs = cJSON_AddObjectToObject(r, "libraries");
    for (int i = 0; i < n; i++)
        cJSON_AddStringToObject(libs, v[i].name, v[i].version);
    return r;
}

int64_t sg_json_report_disk_bytes(const char *path)
{
    struct stat sb;
    if (stat(path, &sb) != 0)
        return 0;
    if (!S_ISDIR(sb.st_mode))
        return (int64_t)sb.st_size;
    DIR *d = opendir(path);
    int64_t total = 0;
    struct dirent *e;
    while (d && (e = readdir(d))) {
        char p[4096];
        snprintf(p, sizeof p, "%s/%s", path, e->d_name);
        if (e->d_name[0] != '.' && stat(p, &sb) == 0 && S_ISREG(sb.st_mode))
            total += sb.st_size;
    }
    if (d)
        closedir(d);
    return total;
}

cJSON *sg_json_report_model(cJSON *r, const char *path, const sg_model_config *c)
{
    cJSON *m = cJSON_AddObjectToObject(r, "model");
    cJSON_AddStringToObject(m, "path", path);
    cJSON_AddStringToObject(m, "arch", sg_arch_name(c->arch));
    sg_json_int(m, "dim", c->dim);
    sg_json_int(m, "n_layers", c->n_layers);
    sg_json_int(m, "n_heads", c->n_heads);
    sg_json_int(m, "n_kv_heads", c->n_kv_heads);
    sg_json_int(m, "ffn_dim", c->ffn_dim);
    sg_json_int(m, "vocab_size", c->vocab_size);
    cJSON_AddBoolToObject(m, "sliced", c->sliced);
    sg_json_int(m, "parameters", sg_model_param_count(c));
    sg_json_int(m, "bytes", sg_json_report_disk_bytes(path));
    return m;
}

int64_t sg_json_report_host_peak(void)
{
    struct rusage ru;
    return getrusage(RUSAGE_SELF, &ru) == 0 ? (int64_t)ru.ru_maxrss * 1024 : 0;
}

void sg_json_report_memory(cJSON *r, int64_t host_peak, int64_t gpu_peak)
{
    cJSON *mem = cJSON_AddObjectToObject(r, "memory");
    sg_json_int(mem, "host_peak_bytes", host_peak);
    if (gpu_peak > 0)
        sg_json_int(mem, "gpu_peak_bytes", gpu_peak);
    else
        cJSON_AddNullToObject(mem, "gpu_peak_bytes");
}

int sg_json_report_finish(cJSON *r, const char *path)
{
    if (!path || !r) {
        cJSON_Delete(r);
        return 0;
    }
    char *text = cJSON_Print(r);
    cJSON_Delete(r);
    if (!text) {
        fprintf(stderr, "slicegpt-stream: %s: out of memory for the report\n", path);
        return SG_EXIT_FAIL;
    }
    size_t n = strlen(text);
    text[n] = '\n'; /* the terminating NUL becomes a final newline */
    int err = sg_hf_file_write_atomic(path, text, n + 1);
    free(text);
    return err ? sg_cli_report(err) : 0;
}
