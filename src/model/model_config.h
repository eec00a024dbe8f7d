/* One description of a transformer for every file format (config.json,
 * GGUF metadata, llama2.c header) and every architecture we handle.
 *
 * Tensors are named canonically, GGUF style, whatever the file calls them:
 *   token_embd.weight (vocab, D)        position_embd.weight (P, D)  [OPT]
 *   blk.N.attn_norm.{weight,bias} (D)   blk.N.ffn_norm.{weight,bias} (D)
 *   blk.N.attn_q.{weight,bias} (n_heads*head_dim, D)
 *   blk.N.attn_k/attn_v.{weight,bias} (n_kv_heads*head_dim, D)
 *   blk.N.attn_output.{weight,bias} (D, n_heads*head_dim)
 *   blk.N.ffn_gate/ffn_up.{weight,bias} (F, D)   blk.N.ffn_down.{weight,bias} (D, F)
 *   output_norm.{weight,bias} (D)       output.weight (vocab, D)  [untied]
 * Sliced models add blk.N.attn_shortcut.weight (d_in, d_mid) and
 * blk.N.mlp_shortcut.weight (d_mid, d_out), and every D above becomes the
 * layer's own width. All matrices are row-major [out][in]: y = x W^T. */
#ifndef SG_MODEL_CONFIG_H
#define SG_MODEL_CONFIG_H

#include <stdint.h>

#define SG_MAX_LAYERS 512

typedef enum { SG_ARCH_LLAMA, SG_ARCH_OPT, SG_ARCH_PHI } sg_arch;
typedef enum { SG_NORM_RMS, SG_NORM_LAYER } sg_norm_kind;
typedef enum { SG_ACT_SILU, SG_ACT_RELU, SG_ACT_GELU_TANH, SG_ACT_GELU } sg_act;

/* How rotary embedding pairs coordinates inside a head:
 *   SG_ROPE_HALF:  (i, i + rope_dim/2)  Hugging Face "rotate_half"
 *   SG_ROPE_PAIRS: (2i, 2i + 1)         llama2.c, GGUF llama
 *   SG_ROPE_NONE:  learned absolute positions instead (OPT). */
typedef enum { SG_ROPE_NONE, SG_ROPE_HALF, SG_ROPE_PAIRS } sg_rope_layout;
typedef enum { SG_ROPE_SCALE_NONE, SG_ROPE_SCALE_LINEAR, SG_ROPE_SCALE_LLAMA3 } sg_rope_scaling;

typedef struct {
    sg_arch arch;
    int64_t dim;           /* D: residual width of the original model */
    int64_t n_layers;
    int64_t n_heads, n_kv_heads, head_dim;
    int64_t ffn_dim;       /* F */
    int64_t vocab_size;
    int64_t max_positions; /* context length; rows of position_embd minus pos_offset */
    int gated_mlp;         /* SwiGLU-style gate * up; else act(up) */
    sg_act act;
    sg_norm_kind norm;
    double norm_eps;
    sg_rope_layout rope;
    double rope_theta;
    int64_t rope_dim;      /* rotary coordinates per head (== head_dim unless partial) */
    sg_rope_scaling rope_scaling;
    double rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int64_t rope_original_max_positions;
    /* Per-frequency divisors (GGUF rope_freqs.weight, Llama-3 style), used
     * instead of rope_scaling when n_rope_freq_factors > 0. */
    int64_t n_rope_freq_factors;
    float rope_freq_factors[512];
    int64_t pos_offset;    /* OPT: row pos + 2 of position_embd is position pos */
    int tied_embeddings;   /* no output.weight: logits use token_embd */
    int qkv_bias, o_bias, mlp_bias, lm_head_bias;
    int parallel_block;    /* Phi-2: attention and MLP read the same normed input */
    int32_t bos_id, eos_id;

    /* SliceGPT. When sliced, norms are scale-free RMSNorms that still divide
     * by the original D (norm_dim), and each layer has its own widths. */
    int sliced;
    int64_t norm_dim;      /* D the norms divide by (== dim) */
    int64_t embed_dim;     /* width written by the embeddings (d_0) */
    int64_t d_in[SG_MAX_LAYERS], d_mid[SG_MAX_LAYERS], d_out[SG_MAX_LAYERS];
    int64_t head_in_dim;   /* width the final norm and lm_head read */
    /* 1: block l's output keeps its mid basis (--shared-basis): d_out = d_mid,
     * the MLP shortcut is the identity and is not stored */
    uint8_t shared_basis[SG_MAX_LAYERS];
    /* MLP hidden width of block l where --method nystrom pruned it; 0:
     * ffn_dim. Read it with sg_layer_ffn. */
    int64_t d_ffn[SG_MAX_LAYERS];
    /* 1: the residual stream is neither rotated nor cut (--method nystrom):
     * every width is D, every basis the original one, no shortcut exists */
    int residual_kept;
} sg_model_config;

/* Block l's MLP hidden width. */
static inline int64_t sg_layer_ffn(const sg_model_config *c, int64_t l)
{
    return l >= 0 && l < SG_MAX_LAYERS && c->d_ffn[l] > 0 ? c->d_ffn[l] : c->ffn_dim;
}

/* Fills the SliceGPT fields for an unsliced model (every width == dim). */
void sg_config_set_unsliced(sg_model_config *cfg);

/* Checks internal consistency (positive sizes, heads divide, layer count
 * bounded). source names the file for the message. Returns 0 or SG_EFORMAT. */
int sg_config_validate(const sg_model_config *cfg, const char *source);

const char *sg_arch_name(sg_arch arch);

#endif
