/* SG_HOST_DEVICE marks a static inline function that both the CPU code
 * and the CUDA kernels call, so that one formula serves both backends
 * (nvcc compiles it for each side; a C compiler sees a plain inline). */
#ifndef SG_HOST_DEVICE_H
#define SG_HOST_DEVICE_H

#ifdef __CUDACC__
#define SG_HOST_DEVICE __host__ __device__
#else
#define SG_HOST_DEVICE
#endif

#endif
