/* libFuzzer target: a stage stream (slicegpt-stream(5)) read from an fd
 * until its END record, each record's payload through the reader of its
 * type, as a filter stage would. */
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "frame.h"
#include "fuzz_common.h"
#include "stream_records.h"

static void read_payload(const sg_record *rec)
{
    switch (rec->type) {
    case SG_REC_HEADER: {
        cJSON *h = NULL;
        if (sg_rec_read_header(rec, &h) == 0) {
            sg_model_config cfg;
            (void)sg_config_from_json(cJSON_GetObjectItemCaseSensitive(h, "config"), &cfg,
                                      "fuzz");
            cJSON_Delete(h);
        }
        break;
    }
    case SG_REC_BLOCK: {
        sg_rec_block b;
        char name[64];
        if (sg_rec_read_block(rec, &b) == 0) sg_section_name(&b, name, sizeof name);
        break;
    }
    case SG_REC_TENSOR: {
        int ndim;
        int64_t shape[4];
        const float *d;
        if (sg_rec_read_tensor(rec, &ndim, shape, &d) == 0) {
            int64_t numel = 1;
            for (int i = 0; i < ndim; i++) numel *= shape[i];
            volatile float sink = numel ? d[numel - 1] : 0.f; /* the last element is ours */
            (void)sink;
        }
        break;
    }
    case SG_REC_ACT_REF: {
        sg_rec_act_ref a;
        (void)sg_rec_read_act_ref(rec, &a);
        break;
    }
    case SG_REC_COV:
    case SG_REC_ROTATION:
    case SG_REC_SPECTRUM: {
        sg_rec_matrix m;
        if (sg_rec_read_matrix(rec, &m) == 0) {
            int64_t count = rec->type == SG_REC_SPECTRUM ? m.n : m.n * m.n;
            volatile double sink = count ? m.values[count - 1] : 0.;
            (void)sink;
        }
        (void)sg_signal_kind(rec->name);
        break;
    }
    default:
        break;
    }
    (void)sg_rec_label(rec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    int fd = sg_fuzz_file(data, size, path);
    sg_frame_reader *r = NULL;
    if (sg_frame_reader_open(fd, "fuzz", &r) != 0) return 0;
    sg_record rec;
    int n = 0;
    while (sg_frame_read(r, &rec) == 1) {
        read_payload(&rec);
        /* every other payload taken, as stream_model does with tensors */
        if (++n & 1) free(sg_frame_reader_take_payload(r));
    }
    sg_frame_reader_free(r);
    return 0;
}
