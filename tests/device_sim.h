/* A pretend GPU for tests on machines without one: the CPU backend's
 * arithmetic behind a table that says its memory is not the host's
 * (host_memory 0), so callers take the device path (uploads, downloads,
 * weights copied per block, forward composed of ops as on CUDA), and
 * that checks every pointer it is given: a backend pointer must lie in
 * one of its own allocations, a host pointer must not. A mix-up, which on
 * a real GPU is an illegal address, is an error here with a message.
 * Uploads from its page-locked host memory (host_alloc) are asynchronous
 * on a GPU: their source must not change or be freed before the next
 * download or synchronize; and upload_async's destination must not be
 * read or released before await_uploads. The pretend device checks those
 * too. */
#ifndef SG_TEST_DEVICE_SIM_H
#define SG_TEST_DEVICE_SIM_H

#include "backend.h"

/* cap: bytes it may hand out at once, as --gpu-mem (0: no limit) */
sg_backend *device_sim_new(size_t cap);
/* pointer mix-ups seen so far (each also failed its op) */
int device_sim_violations(const sg_backend *be);

/* Allocations made so far; and fault injection: allocation number n
 * (counting from the next one, 1-based) fails as if out of memory
 * (0: none). */
long device_sim_allocations(const sg_backend *be);
void device_sim_fail_at(sg_backend *be, long n);

#endif
