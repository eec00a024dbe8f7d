/* A model in memory, one block at a time: the global tensors (embeddings,
 * final norm, head) stay resident; blocks are loaded, used and freed in
 * turn, so memory holds one block whatever the depth.
 *
 * Widths: d_in is the residual width entering block l, d_mid after its
 * attention, d_out after its MLP (all == D for an unsliced model). */
#ifndef SG_MODEL_H
#define SG_MODEL_H

#include <stdint.h>

#include "model_config.h"
#include "model_files.h"

typedef struct {
    int64_t d_in, d_mid, d_out;
    int64_t d_ffn;                    /* F of this block (sg_layer_ffn) */
    float *attn_norm_w, *attn_norm_b; /* (d_in); NULL: scale 1 / no bias */
    float *wq, *bq;                   /* (n_heads*head_dim, d_in), (n_heads*head_dim) */
    float *wk, *bk;                   /* (n_kv_heads*head_dim, d_in) */
    float *wv, *bv;                   /* (n_kv_heads*head_dim, d_in) */
    float *wo, *bo;                   /* (d_mid, n_heads*head_dim), (d_mid) */
    float *attn_shortcut;             /* (d_in, d_mid); NULL: identity (d_in == d_mid) */
    float *ffn_norm_w, *ffn_norm_b;   /* (d_mid); unused by parallel blocks */
    float *w_gate;                    /* (d_ffn, d_mid); NULL unless gated MLP */
    float *w_up, *b_up;               /* (d_ffn, d_mid), (d_ffn) */
    float *w_down, *b_down;           /* (d_out, d_ffn), (d_out) */
    float *mlp_shortcut;              /* (d_mid, d_out); NULL: identity */
} sg_block;

typedef struct {
    sg_model_config cfg;
    float *tok_embd;                  /* (vocab, embed_dim) */
    float *pos_embd;                  /* (max_positions + pos_offset, embed_dim) or NULL */
    float *out_norm_w, *out_norm_b;   /* (head_in_dim) or NULL */
    float *lm_head;                   /* (vocab, head_in_dim); aliases tok_embd when tied */
    float *lm_head_b;                 /* (vocab) or NULL */
} sg_model;

/* Loads the global tensors. */
int sg_model_load(sg_model_files *files, sg_model *m);
void sg_model_free(sg_model *m);

/* b's widths (d_in, d_mid, d_out, d_ffn) as cfg gives them for block l;
 * its tensors are left as they are. */
void sg_block_widths(const sg_model_config *cfg, int64_t l, sg_block *b);

/* Loads block l's tensors (shapes from cfg's per-layer widths). */
int sg_block_load(sg_model_files *files, const sg_model_config *cfg, int64_t l, sg_block *b);
void sg_block_free(sg_block *b);

/* Allocates a zero block with the shapes cfg gives layer l (tests, synthesis). */
int sg_block_alloc(const sg_model_config *cfg, int64_t l, sg_block *b);

/* Calls fn once per tensor block l has (as cfg describes it), with the
 * canonical name, the address of its pointer in b and its shape (cols 0 for
 * vectors); pointers that are NULL are visited too when the tensor is
 * required. Used by writers, tests and the generator. Stops at the first
 * non-zero return and passes it on. */
typedef int (*sg_block_visitor)(const char *name, float **tensor, int64_t rows, int64_t cols,
                                void *ctx);
int sg_block_visit(const sg_model_config *cfg, int64_t l, sg_block *b, sg_block_visitor fn,
                   void *ctx);

/* Parameter count of block l as cfg describes it, shortcuts included. */
int64_t sg_block_param_count(const sg_model_config *cfg, int64_t l);

#endif
