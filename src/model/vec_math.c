#include "vec_math.h"

#include <math.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SG_HAVE_AVX2_PATH 1
#endif

/* Cephes expf: exp(x) = 2^n · exp(r), n = round(x·log2 e), r = x - n·ln 2
 * (ln 2 in two parts so r is exact), exp(r) by a degree-7 polynomial. */
#define EXP_HI 88.3762626647949f
#define EXP_LO -88.3762626647949f
#define LOG2E 1.44269504088896341f
#define LN2_HI 0.693359375f
#define LN2_LO -2.12194440e-4f
#define P0 1.9875691500e-4f
#define P1 1.3981999507e-3f
#define P2 8.3334519073e-3f
#define P3 4.1665795894e-2f
#define P4 1.6666665459e-1f
#define P5 5.0000001201e-1f

static inline float exp_scalar(float x)
{
    x = x > EXP_HI ? EXP_HI : x < EXP_LO ? EXP_LO : x;
    float n = floorf(x * LOG2E + 0.5f);
    float r = x - n * LN2_HI - n * LN2_LO;
    float y = ((((P0 * r + P1) * r + P2) * r + P3) * r + P4) * r + P5;
    y = y * r * r + r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof scale);
    return y * scale;
}

#ifdef SG_HAVE_AVX2_PATH
#define AVX2 __attribute__((target("avx2,fma")))

AVX2 static inline __m256 exp_avx2(__m256 x)
{
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(EXP_LO)), _mm256_set1_ps(EXP_HI));
    __m256 n = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(LOG2E), _mm256_set1_ps(0.5f)));
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
    __m256 y = _mm256_set1_ps(P0);
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(P1));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(P2));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(P3));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(P4));
    y = _mm256_fmadd_ps(y, r, _mm256_set1_ps(P5));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)),
                                  23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

AVX2 static inline float hmax_avx2(__m256 v)
{
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    m = _mm_max_ss(m, _mm_movehdup_ps(m));
    return _mm_cvtss_f32(m);
}

AVX2 static inline float hsum_avx2(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* the largest of x[0..n) */
AVX2 static float max_avx2(const float *x, int64_t n)
{
    int64_t i = 0;
    __m256 vmax = _mm256_set1_ps(-INFINITY);
    for (; i + 8 <= n; i += 8)
        vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + i));
    float max = hmax_avx2(vmax);
    for (; i < n; i++)
        max = x[i] > max ? x[i] : max;
    return max;
}

AVX2 static void softmax_avx2(float *x, int64_t n, int64_t total)
{
    int64_t i;
    float max = max_avx2(x, n);
    __m256 vsum = _mm256_setzero_ps(), vm = _mm256_set1_ps(max);
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    float sum = hsum_avx2(vsum);
    for (; i < n; i++) {
        x[i] = exp_scalar(x[i] - max);
        sum += x[i];
    }
    __m256 vinv = _mm256_set1_ps(1.0f / sum);
    for (i = 0; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
    for (; i < n; i++)
        x[i] *= 1.0f / sum;
    memset(x + n, 0, (total - n) * sizeof(float));
}

AVX2 static void silu_mul_avx2(float *up, const float *gate, int64_t n)
{
    const float *g = gate ? gate : up;
    __m256 one = _mm256_set1_ps(1.0f);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(g + i);
        __m256 s = _mm256_div_ps(v, _mm256_add_ps(one, exp_avx2(_mm256_sub_ps(_mm256_setzero_ps(), v))));
        _mm256_storeu_ps(up + i, gate ? _mm256_mul_ps(_mm256_loadu_ps(up + i), s) : s);
    }
    for (; i < n; i++) {
        float s = g[i] / (1.0f + exp_scalar(-g[i]));
        up[i] = gate ? up[i] * s : s;
    }
}

AVX2 static double logsumexp_avx2(const float *row, int64_t n)
{
    int64_t i;
    float max = max_avx2(row, n);
    __m256 vm = _mm256_set1_ps(max);
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = exp_avx2(_mm256_sub_ps(_mm256_loadu_ps(row + i), vm));
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(e)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(e, 1)));
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, _mm256_add_pd(s0, s1));
    double sum = lanes[0] + lanes[1] + lanes[2] + lanes[3];
    for (; i < n; i++)
        sum += exp_scalar(row[i] - max);
    return log(sum) + max;
}
#endif

static int use_avx2(void)
{
#ifdef SG_HAVE_AVX2_PATH
    static int have = -1; /* idempotent: a race only computes it twice */
    if (have < 0)
        have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return have;
#else
    return 0;
#endif
}

void sg_softmax_row(float *x, int64_t n, int64_t total)
{
#ifdef SG_HAVE_AVX2_PATH
    if (use_avx2()) {
        softmax_avx2(x, n, total);
        return;
    }
#endif
    float max = x[0], sum = 0;
    for (int64_t j = 1; j < n; j++)
        max = x[j] > max ? x[j] : max;
    for (int64_t j = 0; j < n; j++) {
        x[j] = exp_scalar(x[j] - max);
        sum += x[j];
    }
    float inv = 1.0f / sum;
    for (int64_t j = 0; j < n; j++)
        x[j] *= inv;
    memset(x + n, 0, (total - n) * sizeof(float));
}

void sg_silu_mul(float *up, const float *gate, int64_t n)
{
#ifdef SG_HAVE_AVX2_PATH
    if (use_avx2()) {
        silu_mul_avx2(up, gate, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) {
        float g = gate ? gate[i] : up[i], s = g / (1.0f + exp_scalar(-g));
        up[i] = gate ? up[i] * s : s;
    }
}

double sg_logsumexp(const float *row, int64_t n)
{
#ifdef SG_HAVE_AVX2_PATH
    if (use_avx2())
        return logsumexp_avx2(row, n);
#endif
    float max = row[0];
    for (int64_t j = 1; j < n; j++)
        max = row[j] > max ? row[j] : max;
    double sum = 0;
    for (int64_t j = 0; j < n; j++)
        sum += exp_scalar(row[j] - max);
    return log(sum) + max;
}
