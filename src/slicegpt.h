/* libslicegpt: the library behind the slicegpt-stream program, in one
 * header (as zstd's programs include zstd.h). The program's files include
 * this and their own cli headers, nothing else of the library.
 *
 * The library, by folder (each folder's .am fragment owns its files and
 * its tests):
 *   core/      errors (sg_fail, sg_strerror), dtypes, whole-file reads,
 *              EINTR-safe read/write loops, progress lines (to a stream
 *              the program hands over), library versions
 *   formats/   safetensors, HF config.json and tensor names, GGUF, llama2.c,
 *              synthetic models
 *   tokenize/  tokenizers, calibration samples and evaluation windows
 *   io/        block-at-a-time model reading (io_uring), the activation store
 *   model/     the model in memory, the forward pass, perplexity
 *   backend/   the backend table and the CPU backend (kernels/: CUDA)
 *   stream/    the stage stream format (slicegpt-stream(5))
 *   tasks/     zero-shot multiple-choice tasks: request files, tokenization,
 *              scoring by the streamed forward, accuracy
 *   ../stages/ the method: one file per stage, the schedule, the fused run
 *
 * Every function returns 0 or a negative code with a one-line message
 * (sg_last_error()); none prints or exits. */
#ifndef SG_SLICEGPT_H
#define SG_SLICEGPT_H

#include "sg_error.h"
#include "dtype.h"
#include "read_file.h"
#include "progress.h"
#include "versions.h"

#include "gguf.h"
#include "hf_config.h"
#include "hf_save.h"

#include "text.h"
#include "tokenizer.h"

#include "act_store.h"
#include "model_files.h"

#include "evaluate.h"
#include "forward.h"
#include "model.h"
#include "model_config.h"

#include "backend.h"
#include "blas_check.h"

#include "frame.h"
#include "stream_model.h"
#include "stream_records.h"
#include "stream_store.h"

#include "jsonl_reader.h"
#include "task_eval.h"
#include "task_score.h"
#include "task_set.h"

#include "stages.h"
#include "slicer.h"

#endif
