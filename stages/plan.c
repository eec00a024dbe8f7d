/* Stage "plan": the sliced widths, and what a run holds. */
#include "plan.h"

#include <math.h>
#include <string.h>

#include "fold.h"
#include "prune_ffn.h"
#include "sg_error.h"
#include "forward.h"
#include "forward_ops.h"
#include "cpu_kernels.h"
#include "sg_error.h"

int64_t sg_sliced_dim(int64_t D, double sparsity, int64_t round_interval)
{
    int64_t d = (int64_t)floor((1.0 - sparsity) * D / round_interval) * round_interval;
    if (d < round_interval)
        d = round_interval;
    return d > D ? D : d;
}

void sg_plan_options_default(sg_plan_options *o)
{
    o->method = SG_METHOD_REFERENCE;
    o->sparsity = 0.25;
    o->round_interval = 8;
    o->slice_head = 0;
    o->embeddings = SG_EMBED_AUTO;
    o->target_size = 0;
    o->uniform = 0;
    o->shared_basis = 0;
}

const char *sg_width_method_name(sg_width_method m)
{
    return m == SG_METHOD_SPECTRUM ? "spectrum"
           : m == SG_METHOD_FILL   ? "fill"
           : m == SG_METHOD_NYSTROM ? "nystrom"
                                    : "reference";
}

const char *sg_embed_mode_name(sg_embed_mode m)
{
    return m == SG_EMBED_KEEP ? "keep" : m == SG_EMBED_SLICE ? "slice" : "auto";
}

/* Whether the embeddings stay as they are (see plan.h); refuses what
 * cannot be done exactly. */
static int embeddings_kept(const sg_model_config *orig, const sg_plan_options *o, int *kept)
{
    int can = orig->tied_embeddings && orig->norm == SG_NORM_RMS && !o->slice_head;
    if (o->uniform) {
        /* one basis: the table is rotated like every signal (a tied head
         * stays tied to it, sg_uniform_config) */
        *kept = 0;
        if (orig->norm != SG_NORM_RMS)
            return sg_fail(SG_EUNSUPPORTED,
                           "--rotation uniform: a LayerNorm model (OPT, Phi-2) folds into "
                           "RMSNorms with its centring moved into the weights, which its own "
                           "architecture cannot express; use the per-layer rotation");
        if (o->embeddings == SG_EMBED_KEEP)
            return sg_fail(SG_EARG, "--rotation uniform rotates the embeddings with the rest "
                                    "of the network: it cannot go with --embeddings keep");
        return 0;
    }
    *kept = o->embeddings == SG_EMBED_KEEP || (o->embeddings == SG_EMBED_AUTO && can);
    if (!*kept || can)
        return 0;
    if (!orig->tied_embeddings)
        return sg_fail(SG_EARG, "--embeddings keep: the model's head is not tied to its "
                                "embeddings (nothing to keep tied); use --embeddings slice");
    if (orig->norm != SG_NORM_RMS)
        return sg_fail(SG_EARG, "--embeddings keep: a LayerNorm model's embeddings must be "
                                "centred to fold its norms, which would change its tied head; "
                                "use --embeddings slice");
    return sg_fail(SG_EARG, "--embeddings keep leaves the last block's output in the original "
                            "basis: it cannot go with --slice-head");
}

/* The plan at width d. */
static void plan_at(const sg_model_config *orig, const sg_plan_options *o, int kept, int64_t d,
                    sg_model_config *c)
{
    int64_t D = orig->dim, L = orig->n_layers;
    *c = sg_fold_config(orig);
    c->embed_dim = d;
    for (int64_t l = 0; l < L; l++) {
        c->d_in[l] = d;
        c->d_mid[l] = d;
        c->d_out[l] = d;
    }
    if (!o->slice_head && !o->uniform)
        c->d_out[L - 1] = D;
    if (kept) {
        /* the table and the head stay as they were: block 0 reads, and
         * the last block writes, the original basis at full width */
        c->tied_embeddings = 1;
        c->embed_dim = D;
        c->d_in[0] = D;
    }
    if (c->parallel_block)
        for (int64_t l = 0; l < L; l++)
            c->d_mid[l] = c->d_out[l];
    c->head_in_dim = c->d_out[L - 1];
    memset(c->shared_basis, 0, sizeof c->shared_basis);
    for (int64_t l = 0; o->shared_basis && !c->parallel_block && l < L; l++)
        c->shared_basis[l] = c->d_out[l] == c->d_mid[l] && c->d_out[l] < D;
}

/* --method nystrom: every width D, no rotation, and the widest MLP
 * hidden width F' (F, or a multiple of r; the same in every block) whose stored
 * parameters are at most the budget: --target-size's, or the reference
 * plan's at the same sparsity. Returns D. */
static int64_t plan_nystrom(const sg_model_config *orig, const sg_plan_options *o, int kept,
                            sg_model_config *c)
{
    int64_t D = orig->dim, F = orig->ffn_dim, r = o->round_interval;
    if (o->uniform || o->slice_head)
        return sg_fail(SG_EARG, "--method nystrom keeps the residual stream whole: it cannot go "
                                "with %s", o->uniform ? "--rotation uniform" : "--slice-head");
    double budget = o->target_size * (double)sg_model_param_count(orig);
    if (!(o->target_size > 0)) {
        sg_plan_options ref = *o;
        ref.method = SG_METHOD_REFERENCE;
        sg_model_config rc;
        int64_t d = sg_slice_plan(orig, &ref, &rc);
        if (d < 0)
            return d;
        budget = (double)sg_model_param_count(&rc);
    }
    plan_at(orig, o, kept, D, c);
    c->residual_kept = 1;
    /* every unit if the budget allows (F need not be on the grid), else
     * the widest multiple of r */
    for (int64_t f = F; f >= r; f = f == F ? (F - 1) / r * r : f - r) {
        for (int64_t l = 0; l < orig->n_layers; l++)
            c->d_ffn[l] = f;
        /* counted as written: an RMSNorm model as its own architecture,
         * norm weights included (sg_nystrom_plain_config) */
        sg_model_config plain;
        int is_plain = sg_nystrom_plain_config(orig, c, &plain);
        if ((double)sg_model_param_count(is_plain ? &plain : c) <= budget)
            return D;
    }
    return sg_fail(SG_EARG, "--method nystrom: a budget of %.0f parameters does not cover what it "
                            "cannot cut (attention, embeddings, head) and MLPs %lld wide; this "
                            "model keeps its size outside its MLPs: use --method reference",
                   budget, (long long)r);
}

int64_t sg_slice_plan(const sg_model_config *orig, const sg_plan_options *o,
                      sg_model_config *c)
{
    int64_t D = orig->dim, r = o->round_interval;
    int kept, err = embeddings_kept(orig, o, &kept);
    if (err)
        return err;
    if (o->shared_basis && (o->uniform || o->method != SG_METHOD_REFERENCE || orig->parallel_block))
        return sg_fail(SG_EARG, "--shared-basis: %s",
                       o->uniform ? "a uniform rotation has one basis for the whole network already"
                       : orig->parallel_block ? "a parallel block (Phi-2) has no mid basis to share"
                                              : "not with --method spectrum (it sizes d_mid and d_out apart)");
    if (o->method == SG_METHOD_NYSTROM)
        return plan_nystrom(orig, o, kept, c);
    if (!(o->target_size > 0)) {
        int64_t d = sg_sliced_dim(D, o->sparsity, r);
        if (o->sparsity > 0 && d >= D)
            return sg_fail(SG_EARG, "sparsity %.2f with --round-interval %lld leaves d = %lld of "
                                    "D = %lld: nothing would be sliced; give a smaller "
                                    "--round-interval",
                           o->sparsity, (long long)r, (long long)d, (long long)D);
        plan_at(orig, o, kept, d, c);
        return d;
    }
    /* the widest d whose stored parameters fit: stored size grows with d */
    double budget = o->target_size * (double)sg_model_param_count(orig);
    for (int64_t d = D / r * r; d >= r; d -= r) {
        plan_at(orig, o, kept, d, c);
        /* a uniform rotation stores a plain model; counted with an untied
         * head, which it needs unless the final norm is a constant */
        sg_model_config plain;
        if (o->uniform)
            sg_uniform_config(orig, d, 0, &plain);
        if ((double)sg_model_param_count(o->uniform ? &plain : c) <= budget)
            return d;
    }
    return sg_fail(SG_EARG, "--target-size %g: even d = %lld stores more than %g of the dense "
                            "model's %lld parameters",
                   o->target_size, (long long)r, o->target_size,
                   (long long)sg_model_param_count(orig));
}

int sg_nystrom_plain_config(const sg_model_config *orig, const sg_model_config *sliced,
                            sg_model_config *plain)
{
    if (!sliced->residual_kept || orig->norm != SG_NORM_RMS)
        return 0;
    *plain = *orig;
    plain->ffn_dim = sg_layer_ffn(sliced, 0);
    sg_config_set_unsliced(plain);
    return 1;
}

double sg_plan_sparsity(const sg_plan_options *o, int64_t D, int64_t d)
{
    return o->target_size > 0 ? 1.0 - (double)d / (double)D : o->sparsity;
}

int sg_embeddings_kept(const sg_model_config *sliced)
{
    return sliced->sliced && sliced->tied_embeddings;
}

void sg_slice_work_config(const sg_model_config *sliced, int64_t l, int64_t d_mid,
                          sg_model_config *work)
{
    *work = *sliced;
    work->d_mid[l] = d_mid;
    work->d_out[l] = sliced->dim;
}

void sg_uniform_config(const sg_model_config *orig, int64_t d, int tied, sg_model_config *c)
{
    *c = *orig;
    c->dim = d;
    c->norm_eps = orig->norm_eps * (double)orig->dim / (double)d;
    c->tied_embeddings = tied;
    sg_config_set_unsliced(c);
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
    else if (sg_embeddings_kept(c))
        n += c->head_in_dim; /* the final norm keeps its scale beside the tied head */
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

void sg_slice_memory_nystrom(const sg_model_config *c, int64_t chunk_tokens, int host_memory,
                             sg_slice_memory *m)
{
    m->total -= m->covariance + m->rotations + m->ffn_stats;
    m->covariance = m->rotations = 0;
    m->ffn_stats = sg_ffn_stats_bytes(c->ffn_dim, c->dim, chunk_tokens, host_memory);
    m->total += m->ffn_stats;
}

