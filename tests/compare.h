/* Comparing a result with a reference in tests. */
#ifndef SG_TEST_COMPARE_H
#define SG_TEST_COMPARE_H

#include <math.h>
#include <stdint.h>

/* max |a − b| / max |b| over n floats; infinite when a has a NaN. */
static inline double test_rel_diff(const float *a, const float *b, int64_t n)
{
    double e = 0, s = 1e-30;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        s = fmax(s, fabs((double)b[i]));
    }
    return isnan(e) ? INFINITY : e / s;
}

#endif
