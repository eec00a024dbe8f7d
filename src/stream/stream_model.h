/* A model's parts as stream sections: the tensors between a block record
 * that begins a section and the one that ends it (slicegpt-stream(5)).
 *
 *   embeddings  token_embd.weight (V, embed_dim), position_embd.weight
 *   blk.<l>     the block's tensors as sg_block_visit names them
 *   head        output_norm.{weight,bias}, output.weight (V, head_in_dim)
 *               or, while still tied, token_embd.weight; output.bias
 *
 * Which tensors a block section holds and their shapes follow from the
 * config of the stream at that point: the original one before fold, the
 * folded one (every width D) until slice, the sliced one after. */
#ifndef SG_STREAM_MODEL_H
#define SG_STREAM_MODEL_H

#include "frame.h"
#include "model.h"
#include "stream_records.h"

/* A section being received. */
typedef struct {
    sg_rec_block sec;
    sg_block b;   /* block sections */
    sg_model m;   /* embeddings and head sections */
    int n;        /* tensors received */
    struct {
        float **field;
        int ndim, seen;
        int64_t shape[2];
        char name[128];
    } got[32];
} sg_section;

void sg_section_begin(sg_section *s, const sg_rec_block *sec);
/* Takes a tensor record into the section: its payload buffer from r (the
 * record's reader) when given, else a copy. SG_EFORMAT for a tensor that
 * does not belong in the section or comes twice. */
int sg_section_add(sg_section *s, const sg_record *rec, sg_frame_reader *r);
/* At the section's end: every tensor cfg requires is there, none it does
 * not know, every shape as cfg says. Block sections get their widths from
 * cfg; a tied head section gets lm_head aliasing tok_embd. */
int sg_section_check(sg_section *s, const sg_model_config *cfg);
void sg_section_free(sg_section *s);

/* Writes block l (shapes from cfg and b's widths) as a section. */
int sg_section_write_block(sg_frame_writer *w, const sg_model_config *cfg, int64_t l,
                           sg_block *b);
/* Writes m's global tensors that are present as an embeddings or head
 * section (a tied head as token_embd.weight); shapes from cfg. */
int sg_section_write_globals(sg_frame_writer *w, sg_section_kind kind, const sg_model *m,
                             const sg_model_config *cfg);

#endif
