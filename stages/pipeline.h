/* The per-model schedule of SliceGPT, written once (DESIGN.md, "The
 * pipeline"):
 *
 *   embeddings   capture the embedded calibration tokens, PCA -> Q0,
 *                project them (block 0's inputs), rotate and cut the table
 *   each block l readers of the input rotated by Q_prev and cut;
 *                run the attention half, capture the residual, PCA -> Q_mid
 *                (sequential blocks): attention output and MLP readers
 *                rotated and cut; run the MLP half, capture the output;
 *                PCA -> Q_out: the output's writers rotated and cut; the
 *                output projected on Q_out is block l+1's input
 *   head         the head's reader rotated by the last Q
 *
 * Two transports drive it. `run` computes everything in one process: a
 * captured chunk goes into a covariance, a signal's axes are its
 * eigenvectors, and the finished parts go to the writer. The stage
 * filters split it over processes: capture runs the blocks (capture = 1)
 * and gets the axes back from eig through the store; slice rotates the
 * weights (slice = 1) by the axes it reads from its input stream. The
 * schedule does not know which: it calls the transport's functions, in
 * this order, and the bytes written are the same either way.
 *
 * The block being sliced is in backend memory (backend.h): the transport's
 * block() puts it there, and the pipeline brings it back, sliced, for
 * put_block(). */
#ifndef SG_STAGE_PIPELINE_H
#define SG_STAGE_PIPELINE_H

#include <stdint.h>

#include "backend.h"
#include "progress.h"
#include "model.h"
#include "capture.h"
#include "rotate_slice.h"

enum { SG_STAGE_LOAD, SG_STAGE_FOLD, SG_STAGE_CAPTURE, SG_STAGE_COV, SG_STAGE_EIG,
       SG_STAGE_ROTATE, SG_STAGE_WRITE, SG_N_STAGES };
extern const char *const sg_stage_names[SG_N_STAGES];

typedef struct sg_pipeline sg_pipeline;

/* Where the pipeline's inputs come from and where its results go. Every
 * function returns 0 or a negative code with a message (sg_error.h). */
typedef struct {
    /* The sliced widths (sg_slice_plan), asked for once, first. */
    int (*widths)(sg_pipeline *p, sg_model_config *sliced);
    /* The embeddings, loaded and folded (host memory). */
    int (*embeddings)(sg_pipeline *p, sg_model *m);
    /* Block l, loaded and folded, in the backend's memory. */
    int (*block)(sg_pipeline *p, int64_t l, sg_block *b);
    /* Block l is half done (its first capture is over): a transport that
     * prepares block l+1 meanwhile may queue its upload now. May be NULL. */
    int (*halfway)(sg_pipeline *p, int64_t l);
    /* The final norm and head as the model has them, loaded, not folded
     * (host memory): how they fold depends on the plan. */
    int (*head)(sg_pipeline *p, sg_model *m);
    /* The principal axes of a signal ("embeddings" layer -1,
     * "attention_output", "block_output"), into both copies of q. With
     * capture on, every chunk of the signal went to the capture sink
     * (p->cap.sink) first. */
    int (*axes)(sg_pipeline *p, const char *signal, int64_t layer, sg_rotation *q);
    /* The finished parts, in model order (slice on): embeddings and head
     * on the host, block l on the host. */
    int (*put_embeddings)(sg_pipeline *p, sg_model *m);
    int (*put_block)(sg_pipeline *p, int64_t l, sg_block *b);
    int (*put_head)(sg_pipeline *p, sg_model *m);
    /* The embeddings (l = -1) or block l are done and handed to put_*: q
     * is the rotation of their output, the next block's input rotation,
     * and with capture the store holds that block's inputs. A transport
     * that can resume records the point here (resume.h). May be NULL. */
    int (*checkpoint)(sg_pipeline *p, int64_t l, const sg_rotation *q);
} sg_pipeline_io;

struct sg_pipeline {
    const sg_pipeline_io *io;
    void *ctx;                  /* the transport's */
    const sg_model_config *orig;/* the model as read */
    sg_backend *be;             /* where the arithmetic runs */
    int capture;                /* run the blocks on calibration activations */
    int slice;                  /* rotate and cut the weights, hand them to put_* */
    sg_capture cap;             /* with capture: chunks, buffers, store, sink */
    sg_progress *progress;      /* phase, block i/N, stage, rate, ETA (NULL: none) */
    const char *phase;          /* its name: "slice", "capture" */
    /* Resume (resume.h): 1 = the embeddings and blocks before resume_at
     * are done; resume_q (D, D) is block resume_at's input rotation (NULL:
     * the identity, nothing rotated) and,
     * with capture, the store holds its inputs ("input"). */
    int resume;
    int64_t resume_at;
    const double *resume_q;
    /* With capture and slice: the MLP statistics for the blocks whose
     * hidden width the plan cuts (--method nystrom); NULL: none may be */
    sg_ffn_stats *ffn;
    /* set by sg_pipeline_run */
    sg_model_config sliced;     /* from io->widths */
    double seconds[SG_N_STAGES];
    double clock;
};

/* Runs the schedule (rotations allocated on p->be). */
int sg_pipeline_run(sg_pipeline *p);

/* Charges the time since the last tick to stage (SG_STAGE_*); transports
 * call it for what they do inside their functions (load vs fold). */
void sg_pipeline_tick(sg_pipeline *p, int stage);

#endif
