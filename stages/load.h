/* Stage "load": the global tensors of the original model, read one part
 * at a time (a block is read by sg_block_load, model_files.h). */
#ifndef SG_STAGE_LOAD_H
#define SG_STAGE_LOAD_H

#include "model.h"
#include "model_files.h"

/* token_embd (+ position_embd) of the original model, nothing else: m->cfg
 * is the original config marked untied, so folding leaves any head alone. */
int sg_slice_embeddings_load(sg_model_files *files, sg_model *m);

/* The final norm and the head: output.weight, or token_embd.weight when
 * tied (then m->tok_embd holds it and m->lm_head aliases it). */
int sg_slice_head_load(sg_model_files *files, sg_model *m);
/* The final norm's scale alone, *w (D). */
int sg_slice_final_norm_load(sg_model_files *files, float **w);

#endif
