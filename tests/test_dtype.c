/* dtype conversions: half/bfloat16 rounding and the GGML block formats,
 * checked against blocks computed by hand. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "dtype.h"
#include "tap.h"

int main(void)
{
    tap_ok(sg_f16_to_f32(0x3c00) == 1.0f, "f16 0x3c00 is 1.0");
    tap_ok(sg_f16_to_f32(0xc000) == -2.0f, "f16 0xc000 is -2.0");
    tap_ok(sg_f16_to_f32(0x0001) == ldexpf(1, -24), "f16 smallest subnormal");
    tap_ok(sg_f32_to_f16(65504.0f) == 0x7bff, "f16 max finite round trip");
    tap_ok(sg_f32_to_f16(1.0f + ldexpf(1, -11)) == 0x3c00, "f16 ties round to even");
    tap_ok(sg_bf16_to_f32(0x3f80) == 1.0f, "bf16 0x3f80 is 1.0");
    tap_ok(sg_f32_to_bf16(1.00390625f) == 0x3f80, "bf16 ties round to even");

    /* Q8_0 block by hand: d = 0.5 (f16 0x3800), q = -3, 0, 1, ... */
    unsigned char q8[34] = {0x00, 0x38};
    for (int j = 0; j < 32; j++)
        q8[2 + j] = (unsigned char)(int8_t)(j - 3);
    float out[32];
    sg_to_f32(SG_DT_Q8_0, q8, out, 32);
    tap_ok(out[0] == -1.5f && out[3] == 0.0f && out[31] == 14.0f, "Q8_0 block by hand");

    /* Q4_0: d = 2 (0x4000); byte j = low nibble 1, high nibble 15 -> -14, 14 */
    unsigned char q40[18] = {0x00, 0x40};
    memset(q40 + 2, 0xf1, 16);
    sg_to_f32(SG_DT_Q4_0, q40, out, 32);
    tap_ok(out[0] == -14.0f && out[15] == -14.0f && out[16] == 14.0f,
           "Q4_0 block by hand (low nibbles first, then high)");

    /* Q4_1: d = 0.25 (0x3400), m = -1 (0xbc00); nibbles 4 (low), 8 (high) */
    unsigned char q41[20] = {0x00, 0x34, 0x00, 0xbc};
    memset(q41 + 4, 0x84, 16);
    sg_to_f32(SG_DT_Q4_1, q41, out, 32);
    tap_ok(out[0] == 0.0f && out[16] == 1.0f, "Q4_1 block by hand");

    /* quantize -> dequantize stays within half a step */
    float x[64], y[64];
    for (int i = 0; i < 64; i++)
        x[i] = sinf(0.37f * i) * 3.0f;
    unsigned char buf[128];
    const sg_dtype types[] = {SG_DT_Q8_0, SG_DT_Q4_0, SG_DT_Q4_1, SG_DT_F16, SG_DT_BF16};
    /* Q4_0 clamps q at 15, so values of the sign opposite to the largest one
     * can be off by a whole step (GGML's behaviour, kept). */
    const float tol[] = {3.0f / 127, 3.0f / 8 + 1e-3f, 6.0f / 15 * 0.5f + 1e-3f, 2e-3f,
                         2e-2f};
    for (int t = 0; t < 5; t++) {
        sg_from_f32(types[t], x, buf, 64);
        sg_to_f32(types[t], buf, y, 64);
        float err = 0;
        for (int i = 0; i < 64; i++)
            err = fmaxf(err, fabsf(x[i] - y[i]));
        tap_ok(err <= tol[t], "%s round trip error %.4g <= %.4g", sg_dtype_name(types[t]),
               err, tol[t]);
    }
    tap_ok(sg_dtype_bytes(SG_DT_Q4_1, 33) < 0, "partial block rejected");
    return tap_done();
}
