/* Stage "plan": the sliced widths, and what a run holds. */
#include "plan.h"

#include <math.h>
#include <string.h>

#include "fold.h"
#include "sg_error.h"
#include "forward.h"
#include "forward_ops.h"
#include "cpu_kernels.h"

int64_t sg_sliced_dim(int64_t D, double sparsity, int64_t round_interval)
{
    int64_t d = (int64_t)floor((1.0 - sparsity) * D / round_interval) * round_interval;
    if (d < round_interval)
        d = round_interval;
    return d > D ? D : d;
}

int sg_slice_plan_check(int64_t D, double sparsity, int64_t round_interval)
{
    int64_t d = sg_sliced_dim(D, sparsity, round_interval);
    if (sparsity > 0 && d >= D)
        return sg_fail(SG_EARG,
                       "sparsity %.2f with --round-interval %lld leaves d = %lld of D = %lld: "
                       "nothing would be sliced; give a smaller --round-interval",
                       sparsity, (long long)round_interval, (long long)d, (long long)D);
    return 0;
}

int64_t sg_slice_plan(const sg_model_config *orig, double sparsity, int64_t round_interval,
                      int slice_head, sg_model_config *c)
{
    int64_t D = orig->dim, d = sg_sliced_dim(D, sparsity, round_interval);
    *c = sg_fold_config(orig);
    c->embed_dim = d;
    for (int64_t l = 0; l < c->n_layers; l++) {
        c->d_in[l] = d;
        c->d_mid[l] = d;
        c->d_out[l] = d;
    }
    if (!slice_head)
        c->d_out[c->n_layers - 1] = D;
    if (c->parallel_block)
        for (int64_t l = 0; l < c->n_layers; l++)
            c->d_mid[l] = c->d_out[l];
    c->head_in_dim = c->d_out[c->n_layers - 1];
    return d;
}

void sg_slice_work_config(const sg_model_config *sliced, int64_t l, int64_t d_mid,
                          sg_model_config *work)
{
    *work = *sliced;
    work->d_mid[l] = d_mid;
    work->d_out[l] = sliced->dim;
}

int64_t sg_model_param_count(const sg_model_config *c)
{
    int64_t n = c->vocab_size * c->embed_dim;
    if (c->rope == SG_ROPE_NONE)
        n += (c->max_positions + c->pos_offset) * c->embed_dim;
    for (int64_t l = 0; l < c->n_layers; l++)
        n += sg_block_param_count(c, l);
    if (!c->sliced)
        n += c->head_in_dim * (c->norm == SG_NORM_LAYER ? 2 : 1);
    if (!c->tied_embeddings)
        n += c->vocab_size * c->head_in_dim;
    if (c->lm_head_bias)
        n += c->vocab_size;
    return n;
}

void sg_slice_memory_estimate(const sg_model_config *c, int64_t block_raw_bytes,
                              int64_t chunk_tokens, int64_t max_seq, sg_slice_memory *m)
{
    int64_t D = c->dim, f32 = sizeof(float), f64 = sizeof(double);
    memset(m, 0, sizeof *m);
    /* the block being sliced (float32) and, while it is, the next one's
     * raw bytes in flight plus the current one's being served */
    m->block_f32 = sg_block_param_count(c, 0) * f32 + D * (D + D) * f32; /* + shortcuts */
    m->block_raw = 2 * block_raw_bytes;
    m->chunk_buffers = 3 * chunk_tokens * D * f32;
    m->forward_scratch = sg_forward_scratch_bytes(c, max_seq, chunk_tokens);
    m->covariance = D * D * f64 + SG_COV_CHUNK * D * f64 + 3 * D * D * f64; /* H, chunk, dsyevd work */
    m->rotations = 3 * D * D * f64;
    int64_t pos = c->rope == SG_ROPE_NONE ? (c->max_positions + c->pos_offset) * D : 0;
    m->globals = (2 * c->vocab_size * D + pos) * f32; /* embeddings + untied head copy */
    m->total = m->block_raw + m->block_f32 + m->chunk_buffers + m->forward_scratch +
               m->covariance + m->rotations + m->globals;
}

