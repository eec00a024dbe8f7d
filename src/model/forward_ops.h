/* The block forward pass written once against a backend's operations
 * (backend.h), for backends whose memory is not the host's.
 *
 * forward.c is the CPU pass: tiled, threaded, the reference the tests
 * hold to float64. A GPU cannot call it, so this file composes the same
 * steps from the backend's ops (norm_rows, sgemm, rope, attention,
 * activation, add) in the same order; the CUDA backend's block_forward is
 * sg_block_forward_ops. The CPU backend's block_forward is forward.c
 * itself, but this composition also runs on the CPU backend's ops over
 * host memory, which is how tests/test_forward_ops.c checks it against
 * forward.c where no GPU is; with a GPU that test also holds the CUDA
 * backend's block_forward to forward.c, and tests/test_backend.c compares
 * the CUDA ops one by one with the CPU's. */
#ifndef SG_FORWARD_OPS_H
#define SG_FORWARD_OPS_H

#include <stdint.h>

#include "backend.h"
#include "forward.h"

#ifdef __cplusplus
extern "C" {
#endif

/* sg_block_forward's contract, with b's tensors and x_in, x_out, mid in
 * backend memory (seqs stays on the host). */
int sg_block_forward_ops(sg_backend *be, const sg_model_config *cfg, const sg_block *b,
                         const float *x_in, float *x_out, float *mid, const sg_seqs *seqs);
/* sg_block_forward_mlp's contract, the same way. */
int sg_block_forward_mlp_ops(sg_backend *be, const sg_model_config *cfg, const sg_block *b,
                             const float *mid, float *x_out, int64_t tokens);

/* hidden (tokens, d_ffn) = the MLP's hidden units, act(norm(x)·W_upᵀ + b)
 * (times the gate where there is one), before the down projection: x is
 * the MLP's input (tokens, d_mid), or in a parallel block the block's
 * input (tokens, d_in). All in backend memory. */
int sg_block_mlp_hidden_ops(sg_backend *be, const sg_model_config *cfg, const sg_block *b,
                            const float *x, int64_t tokens, float *hidden);

/* x_out (tokens, d_out) = mid·S_mlp + hidden·W_downᵀ + b_down: the MLP
 * half of a sequential block from hidden units already computed, hidden
 * (tokens, d_ffn) as sg_block_mlp_hidden_ops gives them; mid (tokens,
 * d_mid) the MLP's input. All in backend memory. */
int sg_block_mlp_down_ops(sg_backend *be, const sg_block *b, const float *hidden,
                          const float *mid, int64_t tokens, float *x_out);

/* dev = host's tensors copied into backend memory (shapes from host's
 * widths and cfg). On a host-memory backend dev aliases host: nothing is
 * copied, so the CPU path holds one block, as the memory bound says. */
int sg_block_to_backend(sg_backend *be, const sg_model_config *cfg, const sg_block *host,
                        sg_block *dev);
/* The same with upload_async: the copies overlap the work already
 * queued. Call await_uploads before dev is used, and keep host as it is
 * until the next synchronize after that (pin it first with
 * sg_block_pin, or a GPU copies synchronously). */
int sg_block_to_backend_async(sg_backend *be, const sg_model_config *cfg, const sg_block *host,
                              sg_block *dev);

/* Moves b's tensors into one buffer of the backend's page-locked host
 * memory, *arena (host_free it; the tensors are not to be freed one by
 * one), so that they can be uploaded while the device works. */
int sg_block_pin(sg_backend *be, const sg_model_config *cfg, sg_block *b, void **arena);

/* host = dev's tensors brought back into new host buffers, at dev's
 * widths (the block once sliced); the inverse of sg_block_to_backend. On
 * a host-memory backend host aliases dev. */
int sg_block_from_backend(sg_backend *be, const sg_model_config *cfg, const sg_block *dev,
                          sg_block *host);

/* Releases what sg_block_to_backend allocated (nothing on the CPU). */
void sg_block_backend_release(sg_backend *be, sg_block *dev);

/* A block the caller owns in backend memory (on a host-memory backend:
 * the host buffers it was loaded into) goes: released, or freed. */
void sg_block_drop(sg_backend *be, sg_block *b);

/* b, in backend memory, brought to the host in place (new host buffers,
 * the backend's released); nothing to do on a host-memory backend. */
int sg_block_to_host(sg_backend *be, const sg_model_config *cfg, sg_block *b);

#ifdef __cplusplus
}
#endif

#endif
