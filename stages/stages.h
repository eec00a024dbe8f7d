/* The method: one header per stage (DESIGN.md, "The pipeline"), and the
 * schedule that runs them. The drivers (the fused run, the filters, plan)
 * include this. */
#ifndef SG_STAGES_H
#define SG_STAGES_H

#include "capture.h"
#include "covariance.h"
#include "eigensolve.h"
#include "fold.h"
#include "load.h"
#include "pipeline.h"
#include "plan.h"
#include "schedule.h"
#include "rotate_slice.h"
#include "write_model.h"
#include "export_gguf.h"

#endif
