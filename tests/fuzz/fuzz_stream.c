/* libFuzzer target: a stage stream (slicegpt-stream(5)) read from an fd
 * until its END record, each record's payload through the reader of its
 * type, as a filter stage would.
 *
 * Every record carries two CRC-32Cs, which a mutation almost never keeps
 * right: left as they are, the fuzzer would only ever test the checksum
 * check. So the input is first walked as far as its own lengths allow and
 * both checksums of each record rewritten to match, and the reader sees
 * what a damaged-but-checksummed (or hostile) stream would hold. */
#include <cjson/cJSON.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include <string.h>

#include "crc32c.h"
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

/* Header layout (frame.c rec_header): sync[4], u16 type, u16 flags, u64 seq,
 * u64 stored, u64 len, u32 name_len, u32 crc (over the 36 bytes before it
 * and the name); then name, stored bytes, u32 crc of those. */
static void fix_checksums(uint8_t *b, size_t size)
{
    size_t pos = SG_FRAME_PREAMBLE;
    while (pos < size && size - pos >= SG_FRAME_HEADER) {
        uint8_t *h = b + pos;
        uint64_t stored;
        uint32_t name_len;
        memcpy(&stored, h + 16, 8);
        memcpy(&name_len, h + 32, 4);
        if (name_len > SG_FRAME_NAME_MAX || name_len > size - pos - SG_FRAME_HEADER) return;
        uint32_t crc = sg_crc32c(sg_crc32c(0, h, 36), h + SG_FRAME_HEADER, name_len);
        memcpy(h + 36, &crc, 4);
        pos += SG_FRAME_HEADER + name_len;
        if (size - pos < 4 || stored > size - pos - 4) return;
        crc = sg_crc32c(0, b + pos, stored);
        memcpy(b + pos + stored, &crc, 4);
        pos += stored + 4;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char path[64];
    if (size < SG_FRAME_PREAMBLE) return 0;
    uint8_t *fixed = malloc(size);
    if (!fixed) return 0;
    memcpy(fixed, data, size);
    fix_checksums(fixed, size);
    int fd = sg_fuzz_file(fixed, size, path);
    free(fixed);
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
