/* Random inputs and the error metric of the kernel tests (test_backend_ops, test_msl): a
 * xorshift64 stream (op_rng; a test may reseed it), uniform values that are never exactly zero,
 * and the worst-output relative error max|a - r| / max|r| (a NaN anywhere wins). */
#ifndef STRATA_OP_INPUTS_H
#define STRATA_OP_INPUTS_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

static uint64_t op_rng = 0x9e3779b97f4a7c15ull;

static inline uint64_t next(void) {
    op_rng ^= op_rng << 13;
    op_rng ^= op_rng >> 7;
    op_rng ^= op_rng << 17;
    return op_rng;
}

/* uniform in [lo, hi), never exactly zero */
static inline float uni(float lo, float hi) {
    float v = lo + (hi - lo) * (float)((next() >> 40) + 1) / (float)(1ull << 24);
    return v == 0.0f ? 1e-3f : v;
}

static inline void fill(float *x, size_t n, float amp) {
    for (size_t i = 0; i < n; i++) x[i] = uni(-amp, amp);
}

static inline double rel_err(const float *a, const float *r, size_t n) {
    double md = 0.0, mr = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - r[i]);
        if (!(d <= md)) md = d; /* NaN wins */
        if (fabs(r[i]) > mr) mr = fabs(r[i]);
    }
    return mr > 0.0 ? md / mr : md;
}

#endif
