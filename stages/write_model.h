/* Stage "write": the sliced model as a Hugging Face directory, streamed one
 * block at a time.
 *
 * OUT.tmp/ receives model-00000-of-NNNNN.safetensors (embeddings), one
 * shard per block, a last shard with the final norm and head, then
 * model.safetensors.index.json, config.json (with a "slicegpt" section
 * giving every width) and the tokenizer. Only when everything is written
 * and synced is OUT.tmp renamed to OUT, so a crash or a full disk never
 * leaves a directory that looks like a finished model. */
#ifndef SG_STAGE_WRITE_MODEL_H
#define SG_STAGE_WRITE_MODEL_H

#include "dtype.h"
#include "model.h"
#include "tokenizer.h"

typedef struct sg_model_writer sg_model_writer;

/* Fails (one line) if out exists, a dangling symbolic link included; a
 * check to make before any work. "dir/" means dir. */
int sg_model_writer_check_out(const char *out);

/* Fails if out exists, or if OUT.tmp exists and is not a killed run's of
 * this program, or another run holds it (OUT.tmp is locked while written).
 * Only files the writer itself makes are ever removed. dtype: F32, F16 or BF16 for every tensor. */
int sg_model_writer_open(const char *out, const sg_model_config *final_cfg, sg_dtype dtype,
                         sg_model_writer **w);
/* As sg_model_writer_open, but a killed run's OUT.tmp is taken as it is
 * (locked, nothing removed), for the caller to continue (resume.h) or
 * clear. */
int sg_model_writer_open_keep(const char *out, const sg_model_config *final_cfg, sg_dtype dtype,
                              sg_model_writer **w);
/* OUT.tmp, where the writer writes. */
const char *sg_model_writer_dir(const sg_model_writer *w);
/* Removes every file a killed run of ours left in OUT.tmp. */
void sg_model_writer_clear(sg_model_writer *w);
/* The shards written so far: the index's weight map (JSON, malloc'd) and
 * the next shard's number; sg_model_writer_continue takes them back, in a
 * later process, to go on after those shards. */
int sg_model_writer_progress(const sg_model_writer *w, char **weight_map, int *next_shard);
int sg_model_writer_continue(sg_model_writer *w, const char *weight_map, int next_shard);
/* Unlocks OUT.tmp and frees w, leaving every file in place (a resume
 * refused: the job it belongs to may still be resumed). */
void sg_model_writer_release(sg_model_writer *w);
/* token_embd (+ position_embd) of the sliced model. */
int sg_model_writer_embeddings(sg_model_writer *w, const sg_model *m);
/* b's q/k rows may be reordered in place (to the HF RoPE layout). */
int sg_model_writer_block(sg_model_writer *w, int64_t l, sg_block *b);
/* final norm (if any) and head. */
int sg_model_writer_head(sg_model_writer *w, const sg_model *m);
/* Index, config, tokenizer (copied from tokenizer_src if it is a file,
 * else written from tok as tokenizer.json), then the rename. Frees w. */
int sg_model_writer_finish(sg_model_writer *w, double sparsity, const char *tokenizer_src,
                           const sg_tokenizer *tok);
/* Removes OUT.tmp and frees w. */
void sg_model_writer_abort(sg_model_writer *w);

#endif
