/* safetensors: the writer's files read back exactly (F32, F16, BF16, F64,
 * one file and sharded with an index), synthetic HF directories read back
 * as generated, and every kind of malformed file is refused with a clean
 * code and a message naming the file (and the tensor where there is one). */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include "hf_config.h"
#include "safetensors.h"
#include "sg_error.h"
#include "synth_model.h"
#include "tap.h"

/* The last error, for a check's description when rc says one happened. */
static const char *why(int rc)
{
    static char buf[1100];
    if (!rc)
        return "";
    snprintf(buf, sizeof buf, " (%s)", sg_last_error());
    return buf;
}

static const char *dir;

static const char *path_in(const char *name)
{
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 512, "%s/%s", dir, name);
    return p;
}

static int exists(const char *path) { return access(path, F_OK) == 0; }

/* A crafted file: u64 header length, the header text, then data_len zero bytes. */
static const char *craft(const char *name, const char *header, size_t data_len)
{
    const char *path = path_in(name);
    FILE *f = fopen(path, "wb");
    uint64_t n = strlen(header);
    fwrite(&n, 8, 1, f);
    fputs(header, f);
    for (size_t i = 0; i < data_len; i++)
        fputc(0, f);
    fclose(f);
    return path;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

/* Opening path must fail with code, and the message name the file and the
 * tensor (if given). */
static void expect_refused(const char *path, int code, const char *tensor, const char *what)
{
    sg_safetensors *st = NULL;
    sg_clear_error();
    int rc = sg_safetensors_open(path, &st);
    const char *msg = sg_last_error();
    tap_ok(rc == code && !st && strstr(msg, path) && (!tensor || strstr(msg, tensor)),
           "%s refused (%s): %s", what, sg_strerror(rc), msg);
    sg_safetensors_close(st);
}

static void test_round_trip(void)
{
    float a[6] = {1, -2, 3.5f, 1e-3f, 65504, -0.0f}, b[5], c[8], d[3] = {1.0f / 3, 2, 3};
    for (int i = 0; i < 5; i++)
        b[i] = 0.1f * (float)i - 0.3f;
    for (int i = 0; i < 8; i++)
        c[i] = sinf((float)i) * 100;
    const char *path = path_in("rt.safetensors");
    sg_st_writer *w;
    int rc = sg_st_writer_open(path, &w);
    rc = rc ? rc : sg_st_writer_declare(w, "a", SG_DT_F32, 2, (int64_t[]){2, 3});
    rc = rc ? rc : sg_st_writer_declare(w, "b", SG_DT_F16, 1, (int64_t[]){5});
    rc = rc ? rc : sg_st_writer_declare(w, "c", SG_DT_BF16, 3, (int64_t[]){4, 1, 2});
    rc = rc ? rc : sg_st_writer_declare(w, "d", SG_DT_F64, 1, (int64_t[]){3});
    tap_ok(rc == 0, "declare four tensors");
    tap_ok(sg_st_writer_write(w, "b", b) == SG_EARG, "writing out of order is refused");
    rc = sg_st_writer_write(w, "a", a);
    rc = rc ? rc : sg_st_writer_write(w, "b", b);
    rc = rc ? rc : sg_st_writer_write(w, "c", c);
    rc = rc ? rc : sg_st_writer_write(w, "d", d);
    tap_ok(rc == 0 && exists(path_in("rt.safetensors.tmp")) && !exists(path),
           "data goes to the temp file until finish");
    tap_ok(sg_st_writer_finish(w) == 0 && exists(path) && !exists(path_in("rt.safetensors.tmp")),
           "finish renames the temp file");

    /* the header: 8-aligned, space padded, with the pt metadata */
    FILE *f = fopen(path, "rb");
    uint64_t hlen;
    char header[1024] = {0};
    if (fread(&hlen, 8, 1, f) != 1 || hlen >= sizeof header || fread(header, 1, hlen, f) != hlen)
        hlen = 1;
    fclose(f);
    tap_ok(hlen % 8 == 0 && strstr(header, "\"__metadata__\":{\"format\":\"pt\"}"),
           "header length %llu is a multiple of 8 and has format pt",
           (unsigned long long)hlen);

    sg_safetensors *st;
    rc = sg_safetensors_open(path, &st);
    tap_ok(rc == 0 && sg_safetensors_count(st) == 4, "reopen: 4 tensors");
    if (rc)
        return;
    const sg_st_tensor *ta = sg_safetensors_find(st, "a"), *tb = sg_safetensors_find(st, "b");
    const sg_st_tensor *tc = sg_safetensors_find(st, "c"), *td = sg_safetensors_find(st, "d");
    tap_ok(ta && tb && tc && td && !sg_safetensors_find(st, "e"), "find by name");
    tap_ok(ta->dtype == SG_DT_F32 && ta->ndim == 2 && ta->shape[0] == 2 && ta->shape[1] == 3 &&
               tc->dtype == SG_DT_BF16 && tc->ndim == 3 && tc->shape[2] == 2 && tc->numel == 8,
           "dtypes and shapes survive");
    float out[8];
    int same = sg_safetensors_read_f32(st, ta, out) == 0 && !memcmp(out, a, sizeof a);
    tap_ok(same, "F32 values are exact");
    same = sg_safetensors_read_f32(st, tb, out) == 0;
    for (int i = 0; i < 5; i++)
        same &= out[i] == sg_f16_to_f32(sg_f32_to_f16(b[i]));
    tap_ok(same, "F16 values are float32 rounded to half");
    same = sg_safetensors_read_f32(st, tc, out) == 0;
    for (int i = 0; i < 8; i++)
        same &= out[i] == sg_bf16_to_f32(sg_f32_to_bf16(c[i]));
    tap_ok(same, "BF16 values are float32 rounded to bfloat16");
    tap_ok(sg_safetensors_read_f32(st, td, out) == 0 && out[0] == d[0] && out[2] == 3,
           "F64 values read back");
    sg_safetensors_close(st);
}

/* A write that fails (here: the file size limit, as ENOSPC would) leaves
 * nothing under either name. */
static void test_write_failure(void)
{
    const char *path = path_in("big.safetensors");
    struct rlimit old, small;
    getrlimit(RLIMIT_FSIZE, &old);
    small = old;
    small.rlim_cur = 4096;
    signal(SIGXFSZ, SIG_IGN);
    setrlimit(RLIMIT_FSIZE, &small);
    static float big[10000];
    sg_st_writer *w;
    int rc = sg_st_writer_open(path, &w);
    rc = rc ? rc : sg_st_writer_declare(w, "big", SG_DT_F32, 1, (int64_t[]){10000});
    rc = rc ? rc : sg_st_writer_write(w, "big", big);
    tap_ok(rc == -EFBIG && strstr(sg_last_error(), "big"), "write past the limit fails: %s",
           sg_last_error());
    tap_ok(sg_st_writer_finish(w) == rc, "finish reports the same failure");
    setrlimit(RLIMIT_FSIZE, &old);
    tap_ok(!exists(path) && !exists(path_in("big.safetensors.tmp")),
           "no file left under the final or the temp name");
}

static void write_shard(const char *name, const char *t1, const char *t2, float base)
{
    float v[4] = {base, base + 1, base + 2, base + 3};
    sg_st_writer *w;
    sg_st_writer_open(path_in(name), &w);
    sg_st_writer_declare(w, t1, SG_DT_F32, 2, (int64_t[]){2, 2});
    if (t2)
        sg_st_writer_declare(w, t2, SG_DT_F16, 1, (int64_t[]){4});
    sg_st_writer_write(w, t1, v);
    if (t2)
        sg_st_writer_write(w, t2, v);
    sg_st_writer_finish(w);
}

static void test_sharded(void)
{
    char sub[512];
    snprintf(sub, sizeof sub, "%s/sharded", dir);
    mkdir(sub, 0755);
    write_shard("sharded/s1.safetensors", "x", "y", 10);
    write_shard("sharded/s2.safetensors", "z", NULL, 20);
    write_text(path_in("sharded/model.safetensors.index.json"),
               "{\"metadata\": {\"total_size\": 56}, \"weight_map\": {\"x\": \"s1.safetensors\", "
               "\"y\": \"s1.safetensors\", \"z\": \"s2.safetensors\"}}");
    sg_safetensors *st;
    int rc = sg_safetensors_open(sub, &st);
    tap_ok(rc == 0, "open a sharded directory%s", why(rc));
    if (rc)
        return;
    const sg_st_tensor *z = sg_safetensors_find(st, "z");
    float out[4];
    tap_ok(sg_safetensors_count(st) == 3 && z &&
               strstr(sg_safetensors_file_path(st, z->file), "s2.safetensors") &&
               sg_safetensors_read_f32(st, z, out) == 0 && out[3] == 23,
           "tensors of both shards, each read from its own file");
    sg_safetensors_close(st);

    /* a tensor in both shards */
    write_shard("sharded/s2.safetensors", "z", "x", 20);
    expect_refused(sub, SG_EFORMAT, "x", "duplicate name across shards");
    /* the index names a tensor its shard lacks */
    write_shard("sharded/s2.safetensors", "z", NULL, 20);
    write_text(path_in("sharded/model.safetensors.index.json"),
               "{\"weight_map\": {\"x\": \"s1.safetensors\", \"y\": \"s1.safetensors\", "
               "\"z\": \"s2.safetensors\", \"w\": \"s2.safetensors\"}}");
    expect_refused(sub, SG_EMISSING, "w", "tensor in the index missing from its shard");
    /* a shard holds a tensor the index does not list */
    write_text(path_in("sharded/model.safetensors.index.json"),
               "{\"weight_map\": {\"x\": \"s1.safetensors\", \"z\": \"s2.safetensors\"}}");
    expect_refused(sub, SG_EFORMAT, "y", "tensor in a shard but not in the index");
    write_text(path_in("sharded/model.safetensors.index.json"),
               "{\"weight_map\": {\"x\": \"../s1.safetensors\"}}");
    expect_refused(sub, SG_EFORMAT, "x", "shard path outside the directory");
    write_text(path_in("sharded/model.safetensors.index.json"),
               "{\"weight_map\": {\"x\": \"s1.safetensors\", \"y\": \"s1.safetensors\", "
               "\"z\": \"gone.safetensors\"}}");
    expect_refused(sub, SG_EMISSING, "gone.safetensors", "missing shard file");
}

/* A synthetic llama written as 3 BF16 shards reads back as generated. */
static void test_synth_hf(void)
{
    sg_model_config cfg, back;
    int rc = sg_synth_config(SG_ARCH_LLAMA, 64, 2, 4, 2, 0, 96, 128, &cfg);
    const char *out = path_in("synth");
    rc = rc ? rc : sg_synth_save_hf(out, &cfg, 42, SG_DT_BF16, 3);
    tap_ok(rc == 0, "synthetic llama written as 3 bf16 shards%s", why(rc));
    tap_ok(exists(path_in("synth/model-00003-of-00003.safetensors")) &&
               exists(path_in("synth/model.safetensors.index.json")) &&
               sg_hf_config_load(out, &back) == 0 && back.n_kv_heads == 2 &&
               back.ffn_dim == 96,
           "shards, index and config.json are there");
    sg_safetensors *st;
    rc = sg_safetensors_open(out, &st);
    tap_ok(rc == 0 && sg_safetensors_count(st) == 2 + 2 * 9 + 1, "21 tensors%s", why(rc));
    if (rc)
        return;
    const sg_st_tensor *t = sg_safetensors_find(st, "model.layers.1.mlp.down_proj.weight");
    sg_named_tensor desc = {"blk.1.ffn_down.weight", 2, {64, 96}, NULL};
    static float got[64 * 96], want[64 * 96];
    int same = t && t->dtype == SG_DT_BF16 && t->shape[0] == 64 && t->shape[1] == 96 &&
               sg_safetensors_read_f32(st, t, got) == 0 && sg_synth_fill(42, &desc, want) == 0;
    double sum2 = 0;
    for (int i = 0; same && i < 64 * 96; i++) {
        same &= got[i] == sg_bf16_to_f32(sg_f32_to_bf16(want[i]));
        sum2 += (double)want[i] * want[i];
    }
    tap_ok(same, "down_proj is the generator's values rounded to bf16");
    double std = sqrt(sum2 / (64 * 96));
    tap_ok(fabs(std - 1 / sqrt(96.0)) < 0.01, "weights have std 1/sqrt(fan_in): %.4f", std);
    int sharded = 0;
    for (int i = 0; i < sg_safetensors_count(st); i++)
        sharded |= 1 << sg_safetensors_at(st, i)->file;
    tap_ok(sharded == 7, "every shard holds tensors");
    sg_safetensors_close(st);

    /* same seed, single F32 file: same values; another seed: different */
    sg_named_tensor *m1, *m2;
    int n1, n2;
    sg_synth_model(&cfg, 42, &m1, &n1);
    sg_synth_model(&cfg, 43, &m2, &n2);
    tap_ok(n1 == 21 && !strcmp(m1[20].name, "output.weight") &&
               memcmp(m1[1].data, m2[1].data, 64 * sizeof(float)) != 0,
           "in-memory model lists the same tensors; seeds differ");
    int k = -1;
    for (int i = 0; i < n1; i++)
        if (!strcmp(m1[i].name, "blk.1.ffn_down.weight"))
            k = i;
    tap_ok(k >= 0 && !memcmp(m1[k].data, want, sizeof want),
           "a tensor's values depend only on seed and name");
    sg_synth_free(m1, n1);
    sg_synth_free(m2, n2);
}

static void test_bad_files(void)
{
    const char *p = path_in("short.safetensors");
    write_text(p, "abcde");
    expect_refused(p, SG_EFORMAT, NULL, "5-byte file");

    p = path_in("huge.safetensors");
    FILE *f = fopen(p, "wb");
    uint64_t n = (uint64_t)1 << 40;
    fwrite(&n, 8, 1, f);
    fputs("{}", f);
    fclose(f);
    expect_refused(p, SG_EFORMAT, NULL, "header length past the end of the file");

    /* a sparse 200 MB file whose header length claims 150 MB */
    p = path_in("sparse.safetensors");
    f = fopen(p, "wb");
    n = (uint64_t)150 << 20;
    fwrite(&n, 8, 1, f);
    fclose(f);
    if (truncate(p, (off_t)200 << 20) == 0)
        expect_refused(p, SG_EFORMAT, NULL, "header length over 100 MB");
    unlink(p);

    p = craft("notjson.safetensors", "{\"a\": {\"dtype\": ", 0);
    expect_refused(p, SG_EFORMAT, NULL, "header not JSON");
    p = craft("array.safetensors", "[1, 2, 3]", 0);
    expect_refused(p, SG_EFORMAT, NULL, "header a JSON array");
    p = craft("overlap.safetensors",
              "{\"first\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [0, 16]},"
              " \"second\": {\"dtype\": \"F32\", \"shape\": [4], \"data_offsets\": [8, 24]}}",
              24);
    expect_refused(p, SG_EFORMAT, "second", "overlapping tensors");
    p = craft("span.safetensors",
              "{\"w\": {\"dtype\": \"F32\", \"shape\": [3], \"data_offsets\": [0, 16]}}", 16);
    expect_refused(p, SG_EFORMAT, "w", "byte span != shape x dtype size");
    p = craft("i64.safetensors",
              "{\"ids\": {\"dtype\": \"I64\", \"shape\": [2], \"data_offsets\": [0, 16]}}", 16);
    expect_refused(p, SG_EUNSUPPORTED, "ids", "I64 tensor");
    p = craft("q9.safetensors",
              "{\"w\": {\"dtype\": \"Q9\", \"shape\": [2], \"data_offsets\": [0, 16]}}", 16);
    expect_refused(p, SG_EFORMAT, "w", "unknown dtype string");
    p = craft("outside.safetensors",
              "{\"w\": {\"dtype\": \"F32\", \"shape\": [250], \"data_offsets\": [0, 1000]}}",
              16);
    expect_refused(p, SG_EFORMAT, "w", "offsets past the end of the file");
    p = craft("backwards.safetensors",
              "{\"w\": {\"dtype\": \"F32\", \"shape\": [0], \"data_offsets\": [8, 4]}}", 16);
    expect_refused(p, SG_EFORMAT, "w", "end before begin");
    p = craft("negshape.safetensors",
              "{\"w\": {\"dtype\": \"F32\", \"shape\": [-4], \"data_offsets\": [0, 16]}}", 16);
    expect_refused(p, SG_EFORMAT, "w", "negative dimension");
    p = craft("5d.safetensors",
              "{\"w\": {\"dtype\": \"F32\", \"shape\": [1,1,1,1,4], \"data_offsets\": [0, 16]}}",
              16);
    expect_refused(p, SG_EUNSUPPORTED, "w", "five dimensions");
    p = craft("dup.safetensors",
              "{\"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [0, 8]},"
              " \"w\": {\"dtype\": \"F32\", \"shape\": [2], \"data_offsets\": [8, 16]}}",
              16);
    expect_refused(p, SG_EFORMAT, "w", "a name used twice in one header");
    expect_refused(path_in("absent.safetensors"), SG_EMISSING, NULL, "missing file");
    expect_refused(dir, SG_EMISSING, NULL, "directory without a model");

    p = craft("ok.safetensors",
              "{\"__metadata__\": {\"format\": \"pt\"}, \"empty\": {\"dtype\": \"F16\", "
              "\"shape\": [0, 3], \"data_offsets\": [0, 0]}, \"v\": {\"dtype\": \"F32\", "
              "\"shape\": [], \"data_offsets\": [0, 4]}}    ",
              4);
    sg_safetensors *st;
    int rc = sg_safetensors_open(p, &st);
    tap_ok(rc == 0 && sg_safetensors_count(st) == 2 &&
               sg_safetensors_find(st, "v")->numel == 1,
           "padding, metadata, empty and scalar tensors are fine%s", why(rc));
    sg_safetensors_close(st);
}

/* Absent shared data skips these checks, not the whole program: the
 * other checks have already run. */
static void test_tinyopt(void)
{
    const char *path = tap_data_find("tinyopt-250K/tinyopt-250K.safetensors");
    if (!path) {
        tap_skip("tinyopt-250K", "shared data not present");
        return;
    }
    sg_safetensors *st;
    int rc = sg_safetensors_open(path, &st);
    tap_ok(rc == 0 && sg_safetensors_count(st) == 68, "tinyopt-250K opens, 68 tensors%s",
           why(rc));
    if (rc)
        return;
    const sg_st_tensor *t = sg_safetensors_find(st, "model.decoder.embed_positions.weight");
    tap_ok(t && t->dtype == SG_DT_F32 && t->ndim == 2 && t->shape[0] == 258 &&
               t->shape[1] == 64,
           "embed_positions is F32 (258, 64)");
    /* the reader's values are the file's bytes at the header's offset */
    static float got[258 * 64], raw[258 * 64];
    FILE *f = fopen(path, "rb");
    int ok = f && fseek(f, (long)t->offset, SEEK_SET) == 0 &&
             fread(raw, 4, 258 * 64, f) == 258 * 64 && sg_safetensors_read_f32(st, t, got) == 0 &&
             !memcmp(got, raw, sizeof raw);
    if (f)
        fclose(f);
    tap_ok(ok && t->offset == 8 + 7264 + 131072, "read_f32 returns the bytes at offset %llu",
           (unsigned long long)t->offset);
    sg_safetensors_close(st);
}

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    return remove(path);
}

int main(void)
{
    dir = tap_tmpdir();
    test_round_trip();
    test_write_failure();
    test_sharded();
    test_synth_hf();
    test_bad_files();
    test_tinyopt();
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return tap_done();
}
