/* The portable level: plain C over the same integer scheme as the SIMD levels (cpu_kern.h), so
 * every level computes the same sums. It is what a CPU without AVX2 gets, and on aarch64 the
 * compiler's auto-vectorisation of these loops. */
#include <math.h>
#include <string.h>

#include "kernels/cpu/cpu_kern.h"

/* Shared with the SIMD levels' quantizers: one block of 32 values -> codes, scale and sum.
 * Rounding is the default mode (nearest even), as cvtps2dq does, so all levels agree. */
static void quant_block(const float *x, int planes, int8_t *hi, int8_t *lo, float *d, float *sum) {
    float amax = 0.0f, s = 0.0f;
    for (int i = 0; i < 32; i++) {
        float v = fabsf(x[i]);
        amax = v > amax ? v : amax;
        s += x[i];
    }
    float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
    for (int i = 0; i < 32; i++) {
        float v = x[i] * inv, h = nearbyintf(v);
        hi[i] = (int8_t)h;
        if (planes == 2) {
            float r = nearbyintf((v - h) * 256.0f); /* |v - h| <= 1/2: only an exact half clamps */
            lo[i] = (int8_t)(r > 127.0f ? 127.0f : r < -127.0f ? -127.0f : r);
        }
    }
    *d = planes == 2 ? amax / (127.0f * 256.0f) : amax / 127.0f;
    *sum = s;
}

void cpu_quant_portable(const float *x, cpu_qact *a, int t0, int t1) {
    int K = a->cols, nb = K / 32;
    int8_t hb[32], lb[32];
    for (int t = t0; t < t1; t++) {
        const float *xt = x + (size_t)t * K;
        int8_t *h = a->hi + (size_t)t * K, *l = a->lo ? a->lo + (size_t)t * K : NULL;
        for (int b = 0; b < nb; b++) {
            quant_block(xt + 32 * b, a->planes, hb, lb, &a->d[(size_t)t * nb + b], &a->bsum[(size_t)t * nb + b]);
            for (int i = 0; i < 32; i++) {
                /* 4-bit layout: evens in the first half, odds in the second */
                int at = a->bits == 4 ? (i & 1) * (K / 2) + 16 * b + i / 2 : 32 * b + i;
                h[at] = hb[i];
                if (l) l[at] = lb[i];
            }
        }
    }
}

/* integer dot of one block: codes of 32 weights against 32 activation codes */
static int32_t block_dot(const uint8_t *wb, const int8_t *x, int K, int bits) {
    int32_t acc = 0;
    if (bits == 4) {
        for (int i = 0; i < 16; i++) acc += (wb[i] & 15) * x[i] + (wb[i] >> 4) * x[K / 2 + i];
    } else {
        for (int i = 0; i < 32; i++) acc += wb[i] * x[i];
    }
    return acc;
}

static void qmm_scalar(const bk_weight *w, const cpu_qact *a, float *y, int r0, int r1, int t0, int t1) {
    int K = w->cols, G = w->group_size, nb = K / 32, ng = K / G, bpg = G / 32;
    size_t row_bytes = (size_t)K * w->bits / 8, blk_bytes = (size_t)(32 * w->bits / 8);
    for (int r = r0; r < r1; r++) {
        const uint8_t *wr = (const uint8_t *)w->w->data + (size_t)r * row_bytes;
        for (int t = t0; t < t1; t++) {
            const float *d = a->d + (size_t)t * nb, *bs = a->bsum + (size_t)t * nb;
            const int8_t *xh = a->hi + (size_t)t * K, *xl = a->lo ? a->lo + (size_t)t * K : NULL;
            float acc = 0.0f, bacc = 0.0f;
            for (int g = 0; g < ng; g++) {
                float gacc = 0.0f, gsum = 0.0f;
                for (int b = g * bpg; b < (g + 1) * bpg; b++) {
                    int off = w->bits == 4 ? 16 * b : 32 * b;
                    int32_t v = block_dot(wr + b * blk_bytes, xh + off, K, w->bits);
                    if (xl) v = v * 256 + block_dot(wr + b * blk_bytes, xl + off, K, w->bits);
                    gacc += d[b] * (float)v;
                    gsum += bs[b];
                }
                size_t gi = (size_t)r * ng + g;
                acc += bk_load_float(w->scales->data, w->sdtype, gi) * gacc;
                bacc += bk_load_float(w->biases->data, w->sdtype, gi) * gsum;
            }
            y[(size_t)t * w->rows + r] = acc + bacc;
        }
    }
}

static void dmm_scalar(const bk_weight *w, const float *x, float *y, int r0, int r1, int t0, int t1) {
    int K = w->cols;
    for (int r = r0; r < r1; r++)
        for (int t = t0; t < t1; t++) {
            const float *xt = x + (size_t)t * K;
            float acc = 0.0f;
            if (w->wdtype == BK_F32) {
                const float *wr = (const float *)w->w->data + (size_t)r * K;
                for (int c = 0; c < K; c++) acc += wr[c] * xt[c];
            } else {
                const uint16_t *wr = (const uint16_t *)w->w->data + (size_t)r * K;
                if (w->wdtype == BK_BF16)
                    for (int c = 0; c < K; c++) acc += bk_bf16_to_f32(wr[c]) * xt[c];
                else
                    for (int c = 0; c < K; c++) acc += bk_f16_to_f32(wr[c]) * xt[c];
            }
            y[(size_t)t * w->rows + r] = acc;
        }
}

static float dot_scalar(const float *a, const float *b, int n) {
    float s = 0.0f;
    for (int i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void axpy_scalar(float *y, float a, const float *x, int n) {
    for (int i = 0; i < n; i++) y[i] += a * x[i];
}

void cpu_swiglu_portable(float *g, const float *u, int n) {
    for (int i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

const cpu_kernels cpu_kern_scalar = {
    .name = "scalar",
    .quant = cpu_quant_portable,
    .qmm = qmm_scalar,
    .dmm = dmm_scalar,
    .dot = dot_scalar,
    .axpy = axpy_scalar,
    .swiglu = cpu_swiglu_portable,
};
