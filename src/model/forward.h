/* The forward pass, one block over a whole batch at a time.
 *
 * A batch is a set of sequences packed back to back with no padding:
 * sequence s holds tokens [offsets[s], offsets[s+1]) and its positions start
 * at 0. Activations are row-major (tokens, width) float32. Attention never
 * crosses a sequence boundary, so nothing needs masking and no padded
 * position ever enters a statistic. */
#ifndef SG_FORWARD_H
#define SG_FORWARD_H

#include <math.h>
#include <stdint.h>

#include "host_device.h"
#include "model.h"

typedef struct {
    int64_t n_seq;
    const int64_t *offsets; /* n_seq + 1 entries, offsets[0] == 0 */
    /* NULL, or per sequence the earlier sequence it continues (-1: none):
     * a shared prefix run once. A child's positions start after its
     * parent's tokens and its attention sees them all; a parent has no
     * parent, and its children follow it with nothing else between. */
    const int64_t *parent;
} sg_seqs;

static inline int64_t sg_seqs_tokens(const sg_seqs *s) { return s->offsets[s->n_seq]; }

/* The tokens before sequence q's first one: its parent's, or none. */
static inline int64_t sg_seqs_prefix(const sg_seqs *s, int64_t q)
{
    int64_t p = s->parent ? s->parent[q] : -1;
    return p >= 0 ? s->offsets[p + 1] - s->offsets[p] : 0;
}

/* The end of the family that starts at s0: s0 and the children after it. */
static inline int64_t sg_seqs_family_end(const sg_seqs *s, int64_t s0)
{
    int64_t e = s0 + 1;
    while (e < s->n_seq && s->parent && s->parent[e] >= 0)
        e++;
    return e;
}

/* Work goes over groups of whole sequences (whole families). The longest
 * sequence with its prefix (at least 1); the group size for about `target`
 * tokens: at least the largest family, at most the whole batch. */
int64_t sg_seqs_longest(const sg_seqs *s);
int64_t sg_seqs_group_cap(const sg_seqs *s, int64_t target);

/* The end s1 of the largest group of whole families from s0 that holds
 * at most cap tokens (one family, whatever its length, at least). */
static inline int64_t sg_seqs_group_end(const sg_seqs *s, int64_t s0, int64_t cap)
{
    int64_t s1 = sg_seqs_family_end(s, s0);
    while (s1 < s->n_seq) {
        int64_t e = sg_seqs_family_end(s, s1);
        if (s->offsets[e] - s->offsets[s0] > cap)
            break;
        s1 = e;
    }
    return s1;
}

/* Sequences [s0, s1) as a batch of their own, positions from 0: local
 * receives their offsets (s1 - s0 + 1 entries). Only for batches without
 * shared prefixes (parent NULL). */
static inline sg_seqs sg_seqs_sub(const sg_seqs *s, int64_t s0, int64_t s1, int64_t *local)
{
    for (int64_t q = s0; q <= s1; q++)
        local[q - s0] = s->offsets[q] - s->offsets[s0];
    return (sg_seqs){s1 - s0, local, NULL};
}

/* X (tokens, embed_dim) = token_embd[ids] (+ position_embd[pos + offset]). */
int sg_embed(const sg_model *m, const int32_t *ids, const sg_seqs *seqs, float *x);

/* Runs block l: x_in (tokens, d_in) -> x_out (tokens, d_out). If mid is not
 * NULL it receives the residual stream after attention (tokens, d_mid);
 * parallel blocks have none and leave it untouched. With x_out NULL only
 * the attention half runs (sequential blocks): what calibration needs
 * before the MLP input is rotated. x_out may equal x_in when d_in == d_out. */
int sg_block_forward(const sg_model_config *cfg, const sg_block *b, const float *x_in,
                     float *x_out, float *mid, const sg_seqs *seqs);

/* The MLP half of a sequential block alone: mid (tokens, d_mid) ->
 * x_out (tokens, d_out) = mid·S_mlp + MLP(norm(mid)). Token-wise, so it
 * needs no sequence layout. */
int sg_block_forward_mlp(const sg_model_config *cfg, const sg_block *b, const float *mid,
                         float *x_out, int64_t tokens);

/* Final norm, head and log-softmax over x (tokens, head_in_dim): adds
 * -log p(targets[t]) for every t with targets[t] >= 0 to *nll and counts
 * them in *count; row_nll (tokens; may be NULL) also receives each such
 * row's own term. If logits is not NULL, every token's logits are copied
 * there ((tokens, vocab); for tests). */
int sg_head_nll(const sg_model *m, const float *x, const int32_t *targets, int64_t tokens,
                double *nll, int64_t *count, double *row_nll, float *logits);

/* Adds -log softmax(logits row i)[targets[i]] for the n rows (V wide)
 * whose target is >= 0 to *nll, counting them in *count, and stores it in
 * row_nll[i] when row_nll is not NULL. */
void sg_logits_nll(const float *logits, int64_t n, int64_t V, const int32_t *targets,
                   double *nll, int64_t *count, double *row_nll);

/* Peak scratch bytes sg_block_forward allocates for a batch of tokens
 * whose sequences have at most max_len tokens (the plan command and the
 * memory-bound test use it). */
int64_t sg_forward_scratch_bytes(const sg_model_config *cfg, int64_t max_len, int64_t tokens);

/* Causal grouped-query attention for one sequence of n tokens: q (n,
 * nh*hd), k and v (n, nkv*hd), out (n, nh*hd); query head h reads key/value
 * head h / (nh / nkv). scratch holds sg_attention_scratch_floats() floats.
 * The CPU backend's attention op is this function. */
void sg_attention_causal(int64_t nh, int64_t nkv, int64_t hd, const float *q, const float *k,
                         const float *v, float *out, int64_t n, float *scratch);
int64_t sg_attention_scratch_floats(int64_t nh, int64_t nkv, int64_t hd, int64_t n);

/* The MLP nonlinearities, shared by the forward pass and both backends. */
SG_HOST_DEVICE static inline float sg_activation(sg_act act, float x)
{
    switch (act) {
    case SG_ACT_SILU: return x / (1.0f + expf(-x));
    case SG_ACT_RELU: return x > 0 ? x : 0;
    case SG_ACT_GELU_TANH:
        return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
    case SG_ACT_GELU: return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    }
    return x;
}

/* The model's rotary inverse frequencies, scaling applied: out (rope_dim / 2). */
void sg_rope_inv_freq(const sg_model_config *cfg, double *out);

/* Normalizes each row of x (rows, d) in place: RMS over norm_dim (the
 * original D, even when d < D after slicing), or LayerNorm; then scale w
 * and bias b where not NULL. */
void sg_norm_rows(const sg_model_config *cfg, float *x, int64_t rows, int64_t d, const float *w,
                  const float *b);

#endif
