/* Built instead of kernels/ when configure found no CUDA (or was told
 * --with-cuda=no): the CUDA backend never exists, so callers fall back to
 * the CPU backend without any #ifdef of their own. */
#include "backend.h"

#include "sg_error.h"

sg_backend *sg_backend_cuda_init(int device, size_t mem_cap_bytes)
{
    sg_fail(SG_EUNSUPPORTED, "built without CUDA (configure --with-cuda)");
    return NULL;
}

const sg_backend_ops *sg_backend_cuda_ops(void) { return NULL; }

const sg_eigh_prims *sg_eigh_prims_cuda(void) { return NULL; }
