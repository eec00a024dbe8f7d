/* Storage dtypes of model files and their conversion to float32.
 * Block-quantized types (GGML Q8_0, Q4_0, Q4_1) hold 32 values per block:
 *   Q8_0: f16 scale d, 32 x int8 q          -> x = d * q
 *   Q4_0: f16 scale d, 16 bytes of nibbles   -> x = d * (q - 8)
 *   Q4_1: f16 scale d, f16 min m, 16 bytes   -> x = d * q + m
 * Nibble layout (as GGML): byte j holds value j in its low nibble and value
 * j + 16 in its high nibble. */
#ifndef SG_DTYPE_H
#define SG_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    SG_DT_F32,
    SG_DT_F16,
    SG_DT_BF16,
    SG_DT_F64,
    SG_DT_Q8_0,
    SG_DT_Q4_0,
    SG_DT_Q4_1,
    SG_DT_COUNT
} sg_dtype;

#define SG_QBLOCK 32

/* Name as written in files and messages ("F32", "Q4_1"). */
const char *sg_dtype_name(sg_dtype dt);

/* Bytes for n values; -1 if n is not a whole number of blocks. */
int64_t sg_dtype_bytes(sg_dtype dt, int64_t n);

/* Converts n values of type dt at src to float32 at dst. n must be a whole
 * number of blocks for quantized types. Returns 0 or SG_EARG. */
int sg_to_f32(sg_dtype dt, const void *src, float *dst, int64_t n);

float sg_f16_to_f32(uint16_t h);
uint16_t sg_f32_to_f16(float f);   /* round to nearest even */
float sg_bf16_to_f32(uint16_t h);
uint16_t sg_f32_to_bf16(float f);  /* round to nearest even */

/* Quantizes n float32 values (whole blocks) the way GGML's reference
 * quantizers do; used by the synthetic model generator and tests. */
int sg_from_f32(sg_dtype dt, const float *src, void *dst, int64_t n);

#endif
