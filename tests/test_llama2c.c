/* llama2.c checkpoints: stories260K's header and tensors, its conversion to
 * a Hugging Face directory that reloads with the right shapes and with q/k
 * rows moved from pair-wise to rotate_half order, and clean refusals of
 * truncated or padded files. */
#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "hf_config.h"
#include "llama2c.h"
#include "safetensors.h"
#include "sg_error.h"
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

static int remove_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw)
{
    return remove(path);
}

/* A copy of the first n bytes of src, plus extra zero bytes. */
static void copy_prefix(const char *src, const char *dst, long n, long extra)
{
    FILE *in = fopen(src, "rb"), *out = fopen(dst, "wb");
    for (long i = 0; i < n; i++)
        fputc(fgetc(in), out);
    for (long i = 0; i < extra; i++)
        fputc(0, out);
    fclose(in);
    fclose(out);
}

int main(void)
{
    const char *bin = tap_data_path("stories260K/stories260K.bin");
    const char *tok = tap_data_path("stories260K/tok512.bin");
    const char *dir = tap_tmpdir();

    sg_llama2c_model *m;
    int rc = sg_llama2c_load(bin, &m);
    tap_ok(rc == 0, "stories260K.bin loads%s", why(rc));
    if (rc)
        return tap_done();
    const int32_t want[7] = {64, 172, 5, 8, 4, 512, 512};
    tap_ok(!memcmp(m->header, want, sizeof want), "header 64 172 5 8 4 512 512");
    const sg_model_config *c = &m->cfg;
    tap_ok(c->arch == SG_ARCH_LLAMA && c->dim == 64 && c->ffn_dim == 172 && c->n_layers == 5 &&
               c->n_heads == 8 && c->n_kv_heads == 4 && c->head_dim == 8 &&
               c->vocab_size == 512 && c->max_positions == 512,
           "config sizes (head_dim 8, 2 query heads per kv head)");
    tap_ok(c->rope == SG_ROPE_PAIRS && c->rope_theta == 10000 && c->rope_dim == 8 &&
               c->norm == SG_NORM_RMS && c->norm_eps == 1e-5 && c->tied_embeddings &&
               c->gated_mlp && c->act == SG_ACT_SILU,
           "pair-wise RoPE, RMSNorm 1e-5, SwiGLU, shared classifier");
    tap_ok(m->n_tensors == 2 + 9 * 5 && !sg_llama2c_find(m, "output.weight"),
           "47 canonical tensors, no output.weight");
    const sg_named_tensor *wk = sg_llama2c_find(m, "blk.4.attn_k.weight");
    const sg_named_tensor *w2 = sg_llama2c_find(m, "blk.0.ffn_down.weight");
    tap_ok(wk && wk->shape[0] == 32 && wk->shape[1] == 64 && w2 && w2->shape[0] == 64 &&
               w2->shape[1] == 172,
           "attn_k (32, 64) and ffn_down (64, 172)");

    /* the rest of the file as stored: the final norm is the last 64 floats
     * before the RoPE tables (512 * 4 * 2 floats) */
    FILE *f = fopen(bin, "rb");
    float norm[64];
    int ok = f && fseek(f, -(long)(4 * (64 + 512 * 8)), SEEK_END) == 0 &&
             fread(norm, 4, 64, f) == 64;
    const sg_named_tensor *on = sg_llama2c_find(m, "output_norm.weight");
    tap_ok(ok && on && !memcmp(on->data, norm, sizeof norm),
           "output_norm.weight is read from where the layout puts it");

    /* convert, reload as a Hugging Face llama */
    char out[512];
    snprintf(out, sizeof out, "%s/hf", dir);
    rc = sg_llama2c_to_hf(bin, out, tok);
    tap_ok(rc == 0, "converted to a HF directory%s", why(rc));
    sg_model_config hc;
    rc = sg_hf_config_load(out, &hc);
    tap_ok(rc == 0 && hc.rope == SG_ROPE_HALF && hc.dim == 64 && hc.n_kv_heads == 4 &&
               hc.ffn_dim == 172 && hc.tied_embeddings && hc.norm_eps == 1e-5 &&
               hc.rope_theta == 10000 && hc.max_positions == 512,
           "config.json reloads as rotate_half llama%s", why(rc));
    sg_safetensors *st;
    rc = sg_safetensors_open(out, &st);
    tap_ok(rc == 0 && sg_safetensors_count(st) == 47, "model.safetensors has 47 tensors%s",
           why(rc));
    if (rc)
        return tap_done();
    const sg_st_tensor *q = sg_safetensors_find(st, "model.layers.2.self_attn.q_proj.weight");
    const sg_st_tensor *k = sg_safetensors_find(st, "model.layers.2.self_attn.k_proj.weight");
    const sg_st_tensor *g = sg_safetensors_find(st, "model.layers.2.mlp.gate_proj.weight");
    tap_ok(q && q->shape[0] == 64 && q->shape[1] == 64 && k && k->shape[0] == 32 &&
               g && g->shape[0] == 172 && g->shape[1] == 64 &&
               !sg_safetensors_find(st, "lm_head.weight"),
           "HF names and shapes (q 64x64, k 32x64, gate 172x64; tied, no lm_head)");

    /* export.py's permutation: within head h, original row 2i + j is HF row
     * j * 4 + i (head_dim 8). Check every row of q and k of layer 2. */
    static float hq[64 * 64], hk[32 * 64];
    const float *oq = sg_llama2c_find(m, "blk.2.attn_q.weight")->data;
    const float *ok_ = sg_llama2c_find(m, "blk.2.attn_k.weight")->data;
    int same = sg_safetensors_read_f32(st, q, hq) == 0 && sg_safetensors_read_f32(st, k, hk) == 0;
    for (int h = 0; h < 8; h++)
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 2; j++) {
                same &= !memcmp(hq + (h * 8 + j * 4 + i) * 64, oq + (h * 8 + 2 * i + j) * 64,
                                64 * sizeof(float));
                if (h < 4)
                    same &= !memcmp(hk + (h * 8 + j * 4 + i) * 64,
                                    ok_ + (h * 8 + 2 * i + j) * 64, 64 * sizeof(float));
            }
    tap_ok(same, "q/k rows: pair (2i, 2i+1) of each head became (i, i + 4)");
    static float hv[32 * 64];
    const sg_st_tensor *v = sg_safetensors_find(st, "model.layers.2.self_attn.v_proj.weight");
    tap_ok(v && sg_safetensors_read_f32(st, v, hv) == 0 &&
               !memcmp(hv, sg_llama2c_find(m, "blk.2.attn_v.weight")->data, sizeof hv),
           "v rows are not permuted");
    sg_safetensors_close(st);

    char tok_copy[600];
    snprintf(tok_copy, sizeof tok_copy, "%s/tokenizer.bin", out);
    struct stat s1, s2;
    tap_ok(stat(tok_copy, &s1) == 0 && stat(tok, &s2) == 0 && s1.st_size == s2.st_size,
           "tokenizer.bin copied");
    sg_llama2c_free(m);

    /* damaged checkpoints */
    char bad[512];
    snprintf(bad, sizeof bad, "%s/truncated.bin", dir);
    copy_prefix(bin, bad, 1056540 - 4, 0);
    sg_clear_error();
    rc = sg_llama2c_load(bad, &m);
    tap_ok(rc == SG_EFORMAT && !m && strstr(sg_last_error(), bad) &&
               strstr(sg_last_error(), "truncated"),
           "truncated file refused: %s", sg_last_error());
    copy_prefix(bin, bad, 1056540, 8);
    rc = sg_llama2c_load(bad, &m);
    tap_ok(rc == SG_EFORMAT && strstr(sg_last_error(), bad), "oversized file refused: %s",
           sg_last_error());
    copy_prefix(bin, bad, 20, 0);
    rc = sg_llama2c_load(bad, &m);
    tap_ok(rc == SG_EFORMAT && strstr(sg_last_error(), bad), "20-byte file refused: %s",
           sg_last_error());
    snprintf(out, sizeof out, "%s/hf2", dir);
    rc = sg_llama2c_to_hf(bad, out, NULL);
    snprintf(tok_copy, sizeof tok_copy, "%s/config.json", out);
    tap_ok(rc == SG_EFORMAT && access(tok_copy, F_OK) != 0,
           "a failed conversion leaves no config.json");
    nftw(dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    return tap_done();
}
