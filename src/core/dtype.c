#include "dtype.h"

#include <math.h>
#include <string.h>

#include "sg_error.h"

static const struct {
    const char *name;
    int64_t block_values; /* values per storage block */
    int64_t block_bytes;
} dtype_info[SG_DT_COUNT] = {
    [SG_DT_F32] = {"F32", 1, 4},       [SG_DT_F16] = {"F16", 1, 2},
    [SG_DT_BF16] = {"BF16", 1, 2},     [SG_DT_F64] = {"F64", 1, 8},
    [SG_DT_Q8_0] = {"Q8_0", 32, 34},   [SG_DT_Q4_0] = {"Q4_0", 32, 18},
    [SG_DT_Q4_1] = {"Q4_1", 32, 20},
};

const char *sg_dtype_name(sg_dtype dt)
{
    return (unsigned)dt < SG_DT_COUNT ? dtype_info[dt].name : "?";
}

int64_t sg_dtype_bytes(sg_dtype dt, int64_t n)
{
    if ((unsigned)dt >= SG_DT_COUNT || n < 0 || n % dtype_info[dt].block_values)
        return -1;
    int64_t blocks = n / dtype_info[dt].block_values;
    if (blocks > INT64_MAX / dtype_info[dt].block_bytes)
        return -1;
    return blocks * dtype_info[dt].block_bytes;
}

float sg_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        /* zero or subnormal: value = mant * 2^-24 */
        float f = ldexpf((float)mant, -24);
        memcpy(&bits, &f, 4);
        bits |= sign;
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 112) << 23) | (mant << 13);
    }
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

uint16_t sg_f32_to_f16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    uint16_t sign = (x >> 16) & 0x8000;
    float a = fabsf(f);
    if (isnan(f))
        return sign | 0x7e00;
    if (a >= 65520.0f)
        return sign | 0x7c00;
    if (a < 6.103515625e-05f) {
        /* subnormal half: units of 2^-24, rounded to nearest even */
        return sign | (uint16_t)nearbyintf(a * 16777216.0f);
    }
    uint32_t ax;
    memcpy(&ax, &a, 4);
    uint32_t exp = (ax >> 23) - 112, mant = ax & 0x7fffff;
    uint32_t h = (exp << 10) | (mant >> 13);
    uint32_t rest = mant & 0x1fff;
    if (rest > 0x1000 || (rest == 0x1000 && (h & 1)))
        h++; /* may carry into the exponent, which is the right result */
    return sign | (uint16_t)h;
}

float sg_bf16_to_f32(uint16_t h)
{
    uint32_t bits = (uint32_t)h << 16;
    float out;
    memcpy(&out, &bits, 4);
    return out;
}

uint16_t sg_f32_to_bf16(float f)
{
    uint32_t x;
    memcpy(&x, &f, 4);
    if (isnan(f))
        return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

static uint16_t load_u16(const unsigned char *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static void store_u16(unsigned char *p, uint16_t v) { p[0] = v & 0xff; p[1] = v >> 8; }

int sg_to_f32(sg_dtype dt, const void *src, float *dst, int64_t n)
{
    const unsigned char *p = src;
    if (sg_dtype_bytes(dt, n) < 0)
        return sg_fail(SG_EARG, "%s: %lld values is not a whole number of blocks",
                       sg_dtype_name(dt), (long long)n);
    switch (dt) {
    case SG_DT_F32:
        memcpy(dst, src, (size_t)n * 4);
        return 0;
    case SG_DT_F64:
        for (int64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            dst[i] = (float)d;
        }
        return 0;
    case SG_DT_F16:
        for (int64_t i = 0; i < n; i++)
            dst[i] = sg_f16_to_f32(load_u16(p + 2 * i));
        return 0;
    case SG_DT_BF16:
        /* inline: a call per element kept this at ~1 GB/s, the loader's bottleneck */
        for (int64_t i = 0; i < n; i++) {
            uint32_t bits = (uint32_t)load_u16(p + 2 * i) << 16;
            memcpy(dst + i, &bits, 4);
        }
        return 0;
    case SG_DT_Q8_0:
        for (int64_t b = 0; b < n / 32; b++, p += 34) {
            float d = sg_f16_to_f32(load_u16(p));
            for (int j = 0; j < 32; j++)
                dst[32 * b + j] = d * (float)(int8_t)p[2 + j];
        }
        return 0;
    case SG_DT_Q4_0:
        for (int64_t b = 0; b < n / 32; b++, p += 18) {
            float d = sg_f16_to_f32(load_u16(p));
            for (int j = 0; j < 16; j++) {
                dst[32 * b + j] = d * (float)((p[2 + j] & 0x0f) - 8);
                dst[32 * b + j + 16] = d * (float)((p[2 + j] >> 4) - 8);
            }
        }
        return 0;
    case SG_DT_Q4_1:
        for (int64_t b = 0; b < n / 32; b++, p += 20) {
            float d = sg_f16_to_f32(load_u16(p)), m = sg_f16_to_f32(load_u16(p + 2));
            for (int j = 0; j < 16; j++) {
                dst[32 * b + j] = d * (float)(p[4 + j] & 0x0f) + m;
                dst[32 * b + j + 16] = d * (float)(p[4 + j] >> 4) + m;
            }
        }
        return 0;
    default:
        return sg_fail(SG_EUNSUPPORTED, "dtype %d cannot be converted", (int)dt);
    }
}

int sg_from_f32(sg_dtype dt, const float *src, void *dst, int64_t n)
{
    unsigned char *p = dst;
    if (sg_dtype_bytes(dt, n) < 0)
        return sg_fail(SG_EARG, "%s: %lld values is not a whole number of blocks",
                       sg_dtype_name(dt), (long long)n);
    switch (dt) {
    case SG_DT_F32:
        memcpy(dst, src, (size_t)n * 4);
        return 0;
    case SG_DT_F64:
        for (int64_t i = 0; i < n; i++) {
            double d = src[i];
            memcpy(p + 8 * i, &d, 8);
        }
        return 0;
    case SG_DT_F16:
        for (int64_t i = 0; i < n; i++)
            store_u16(p + 2 * i, sg_f32_to_f16(src[i]));
        return 0;
    case SG_DT_BF16:
        for (int64_t i = 0; i < n; i++)
            store_u16(p + 2 * i, sg_f32_to_bf16(src[i]));
        return 0;
    case SG_DT_Q8_0:
        for (int64_t b = 0; b < n / 32; b++, p += 34) {
            const float *x = src + 32 * b;
            float amax = 0;
            for (int j = 0; j < 32; j++)
                amax = fmaxf(amax, fabsf(x[j]));
            float d = amax / 127.0f, id = d ? 1.0f / d : 0.0f;
            store_u16(p, sg_f32_to_f16(d));
            for (int j = 0; j < 32; j++)
                p[2 + j] = (unsigned char)(int8_t)roundf(x[j] * id);
        }
        return 0;
    case SG_DT_Q4_0:
        for (int64_t b = 0; b < n / 32; b++, p += 18) {
            const float *x = src + 32 * b;
            float amax = 0, max = 0;
            for (int j = 0; j < 32; j++)
                if (fabsf(x[j]) > amax) {
                    amax = fabsf(x[j]);
                    max = x[j];
                }
            float d = max / -8.0f, id = d ? 1.0f / d : 0.0f;
            store_u16(p, sg_f32_to_f16(d));
            for (int j = 0; j < 16; j++) {
                int lo = (int)(x[j] * id + 8.5f), hi = (int)(x[j + 16] * id + 8.5f);
                lo = lo > 15 ? 15 : lo;
                hi = hi > 15 ? 15 : hi;
                p[2 + j] = (unsigned char)(lo | (hi << 4));
            }
        }
        return 0;
    case SG_DT_Q4_1:
        for (int64_t b = 0; b < n / 32; b++, p += 20) {
            const float *x = src + 32 * b;
            float lo_v = x[0], hi_v = x[0];
            for (int j = 1; j < 32; j++) {
                lo_v = fminf(lo_v, x[j]);
                hi_v = fmaxf(hi_v, x[j]);
            }
            float d = (hi_v - lo_v) / 15.0f, id = d ? 1.0f / d : 0.0f;
            store_u16(p, sg_f32_to_f16(d));
            store_u16(p + 2, sg_f32_to_f16(lo_v));
            for (int j = 0; j < 16; j++) {
                int lo = (int)((x[j] - lo_v) * id + 0.5f);
                int hi = (int)((x[j + 16] - lo_v) * id + 0.5f);
                lo = lo > 15 ? 15 : lo;
                hi = hi > 15 ? 15 : hi;
                p[4 + j] = (unsigned char)(lo | (hi << 4));
            }
        }
        return 0;
    default:
        return sg_fail(SG_EUNSUPPORTED, "dtype %d cannot be written", (int)dt);
    }
}
