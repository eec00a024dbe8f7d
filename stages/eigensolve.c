/* Stage "eigensolve": the principal axes of each signal's covariance. */
#include "eigensolve.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu_kernels.h"
#include "sg_error.h"

int sg_slice_axes(sg_backend *be, double *h, int64_t D, int64_t layer, sg_rotation_kind kind,
                  uint64_t seed, double damp_frac, sg_eigh_mode mode, sg_rotation *q,
                  double *eig)
{
    size_t bytes = D * D * sizeof(double);
    int err;
    if (kind == SG_ROTATION_RANDOM) {
        memset(eig, 0, D * sizeof(double));
        err = sg_random_orthogonal(D, seed + 7919 * (uint64_t)(layer + 2), q->host);
        return err || q->dev == q->host ? err : be->ops->upload(be, q->dev, q->host, bytes);
    }
    err = be->ops->eigh(be, h, D, damp_frac, mode, q->dev, eig);
    return err || q->dev == q->host ? err : be->ops->download(be, q->host, q->dev, bytes);
}

struct sg_spectra {
    cJSON *list;
};

sg_spectra *sg_spectra_new(void)
{
    sg_spectra *s = malloc(sizeof *s);
    if (s && !(s->list = cJSON_CreateArray())) {
        free(s);
        s = NULL;
    }
    return s;
}

int sg_spectra_add(sg_spectra *s, const char *signal, int64_t layer, const double *eig,
                   int64_t n)
{
    cJSON *item = cJSON_CreateObject();
    if (!item)
        return sg_fail(-ENOMEM, "out of memory");
    cJSON_AddStringToObject(item, "signal", signal);
    cJSON_AddNumberToObject(item, "layer", (double)layer);
    cJSON_AddItemToObject(item, "eigenvalues", cJSON_CreateDoubleArray(eig, (int)n));
    cJSON_AddItemToArray(s->list, item);
    return 0;
}

int sg_spectra_write(const sg_spectra *s, const char *out_dir)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/eigenvalues.json", out_dir);
    char *json = cJSON_PrintUnformatted(s->list);
    if (!json)
        return sg_fail(-ENOMEM, "out of memory");
    FILE *f = fopen(path, "w");
    int err = 0, bad = !f || fputs(json, f) < 0;
    if ((f && fclose(f) != 0) || bad)
        err = sg_fail(-EIO, "%s: cannot write eigenvalue spectra", path);
    free(json);
    return err;
}

void sg_spectra_free(sg_spectra *s)
{
    if (!s)
        return;
    cJSON_Delete(s->list);
    free(s);
}

char *sg_spectra_json(const sg_spectra *s) { return cJSON_PrintUnformatted(s->list); }

int sg_spectra_from_json(sg_spectra *s, const char *json)
{
    cJSON *list = cJSON_Parse(json);
    if (!cJSON_IsArray(list)) {
        cJSON_Delete(list);
        return sg_fail(SG_EFORMAT, "resume state: bad eigenvalue spectra");
    }
    cJSON_Delete(s->list);
    s->list = list;
    return 0;
}
