/* An independent float64 forward pass, written as plain loops straight
 * from the architectures' definitions, to check the fast path against. */
#ifndef SG_TEST_REF_FORWARD_H
#define SG_TEST_REF_FORWARD_H

#include <stdint.h>

#include "model.h"

/* logits (n, vocab) for one sequence ids[0..n). */
void ref_logits(const sg_model *m, const sg_block *blocks, const int32_t *ids, int64_t n,
                double *logits);

#endif
