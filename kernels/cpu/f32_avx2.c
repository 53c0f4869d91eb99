/* The AVX2 levels' float ops (avx2, avx2-vnni): decode attention over f32 KV caches, rmsnorm and
 * SwiGLU, 8 lanes a vector. The same algorithms as the AVX-512 level's (q_avx512.c): a kv head's
 * GQA group scored 8 cache rows at a time with one cross-lane reduction for the 8 (sum8), a
 * softmax normalised before V, V rows loaded once for two heads. Until round 14 (2026-12-07) these
 * levels took the generic paths: attention a dot and an axpy call per head and cache row, expf per
 * SwiGLU element. A 0.5b decode step at the avx2 level (Intel Ice Lake Xeon, 2 threads, 2 runs
 * each): attention 123-129 -> 53.5 us a layer, SwiGLU 16-17 -> 3 us, rmsnorm 3.3 -> 0.7-1.1 us;
 * decode 61-64 -> 69-70 tok/s. No f16 caches here: prefill has no attn_blk on these levels yet. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

#include "kernels/cpu/avx2_lanes.h"
#include "kernels/cpu/cpu_kern.h"

#define T256 __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))

/* exp(x) as exp512 (q_avx512.c): 2^k p(f), Cody-Waite reduction, a degree-6 polynomial; x clamped
 * to [-87, 88], so 2^k is a normal float built from its exponent bits */
INLINE T256 __m256 exp256(__m256 x) {
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.0f)), _mm256_set1_ps(-87.0f));
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 f = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693145751953125f), x);
    f = _mm256_fnmadd_ps(k, _mm256_set1_ps(1.428606765330187e-06f), f);
    __m256 p = _mm256_set1_ps(1.0f / 720);
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, f, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

/* lane j of the result = the sum of a[j]'s 8 lanes */
INLINE T256 __m256 sum8(const __m256 a[8]) {
    __m256 s0 = _mm256_hadd_ps(_mm256_hadd_ps(a[0], a[1]), _mm256_hadd_ps(a[2], a[3])); /* a0..a3, a 128-bit half each */
    __m256 s1 = _mm256_hadd_ps(_mm256_hadd_ps(a[4], a[5]), _mm256_hadd_ps(a[6], a[7]));
    return _mm256_add_ps(_mm256_permute2f128_ps(s0, s1, 0x20), _mm256_permute2f128_ps(s0, s1, 0x31));
}

/* lanes [0, n) of p, the rest `fill` */
INLINE T256 __m256 load_part(const float *p, int n, float fill) {
    float b[8];
    for (int i = 0; i < 8; i++) b[i] = i < n ? p[i] : fill;
    return _mm256_loadu_ps(b);
}

INLINE T256 void store_part(float *p, int n, __m256 v) {
    float b[8];
    _mm256_storeu_ps(b, v);
    for (int i = 0; i < n; i++) p[i] = b[i];
}

/* decode attention (cpu_kern.h attn) over f32 caches, NV = hd / 8 vectors a row */
INLINE T256 void attn8(const float *q, const float *k, const float *v, size_t ks, int len, int group, const int NV, float scale,
                       float *s, float *out, float *ml) {
    const int hd = 8 * NV;
    int p0 = 0;
    for (; p0 + 8 <= len; p0 += 8) { /* scores of 8 positions a head at once (sum8) */
        for (int r = 0; r < 8; r++)
            for (int o = 0; o < hd; o += 16) _mm_prefetch((const char *)(k + (size_t)(p0 + ATTN_PF + r) * ks + o), _MM_HINT_T0);
        const float *kb = k + (size_t)p0 * ks;
        for (int i = 0; i < group; i++) {
            const float *qi = q + (size_t)i * hd;
            __m256 acc[8];
            for (int r = 0; r < 8; r++) {
                const float *kp = kb + (size_t)r * ks;
                __m256 a = _mm256_mul_ps(_mm256_loadu_ps(qi), _mm256_loadu_ps(kp));
                for (int c = 1; c < NV; c++) a = _mm256_fmadd_ps(_mm256_loadu_ps(qi + 8 * c), _mm256_loadu_ps(kp + 8 * c), a);
                acc[r] = a;
            }
            _mm256_storeu_ps(s + (size_t)i * len + p0, _mm256_mul_ps(sum8(acc), _mm256_set1_ps(scale)));
        }
    }
    for (int p = p0; p < len; p++)
        for (int i = 0; i < group; i++) {
            const float *qi = q + (size_t)i * hd, *kp = k + (size_t)p * ks;
            __m256 a = _mm256_mul_ps(_mm256_loadu_ps(qi), _mm256_loadu_ps(kp));
            for (int c = 1; c < NV; c++) a = _mm256_fmadd_ps(_mm256_loadu_ps(qi + 8 * c), _mm256_loadu_ps(kp + 8 * c), a);
            s[(size_t)i * len + p] = hsum8(a) * scale;
        }
    for (int i = 0; i < group; i++) { /* softmax, normalised here so that V needs no divide */
        float *si = s + (size_t)i * len;
        __m256 mv = _mm256_set1_ps(-INFINITY);
        int p = 0;
        for (; p + 8 <= len; p += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(si + p));
        if (p < len) mv = _mm256_max_ps(mv, load_part(si + p, len - p, -INFINITY));
        const __m256 mx = _mm256_set1_ps(hmax8(mv));
        __m256 sum = _mm256_setzero_ps();
        for (p = 0; p + 8 <= len; p += 8) {
            __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(si + p), mx));
            sum = _mm256_add_ps(sum, e);
            _mm256_storeu_ps(si + p, e);
        }
        if (p < len) { /* the lanes past len are exp(-inf - max) = 0 before the clamp: zero them */
            __m256 e = exp256(_mm256_sub_ps(load_part(si + p, len - p, 0.0f), mx));
            e = _mm256_blendv_ps(e, _mm256_setzero_ps(), _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(len - p - 1))));
            sum = _mm256_add_ps(sum, e);
            store_part(si + p, len - p, e);
        }
        if (ml) { /* a slice of the rows: the caller merges the slices (cpu_kern.h) */
            ml[2 * i] = _mm256_cvtss_f32(mx);
            ml[2 * i + 1] = hsum8(sum);
            continue;
        }
        const __m256 inv = _mm256_set1_ps(1.0f / hsum8(sum));
        for (p = 0; p + 8 <= len; p += 8) _mm256_storeu_ps(si + p, _mm256_mul_ps(_mm256_loadu_ps(si + p), inv));
        for (; p < len; p++) si[p] *= _mm256_cvtss_f32(inv);
    }
    /* V: heads in twos and 32 dimensions a pass, so that the sums stay in registers */
    for (int i0 = 0; i0 < group; i0 += 2) {
        const int gi = group - i0 < 2 ? group - i0 : 2;
        for (int c0 = 0; c0 < NV; c0 += 4) {
            const int nc = NV - c0 < 4 ? NV - c0 : 4;
            __m256 acc[2][4];
            for (int i = 0; i < 2; i++)
                for (int c = 0; c < 4; c++) acc[i][c] = _mm256_setzero_ps();
            for (int p = 0; p < len; p++) {
                const float *vp = v + (size_t)p * ks + 8 * (size_t)c0;
                for (int o = 0; o < 8 * nc; o += 16) _mm_prefetch((const char *)(vp + ATTN_PF * ks + o), _MM_HINT_T0);
                __m256 vv[4];
                for (int c = 0; c < 4; c++) vv[c] = c < nc ? _mm256_loadu_ps(vp + 8 * c) : _mm256_setzero_ps();
                for (int i = 0; i < gi; i++) {
                    __m256 sp = _mm256_set1_ps(s[(size_t)(i0 + i) * len + p]);
                    for (int c = 0; c < 4; c++)
                        if (c < nc) acc[i][c] = _mm256_fmadd_ps(sp, vv[c], acc[i][c]);
                }
            }
            for (int i = 0; i < gi; i++)
                for (int c = 0; c < nc; c++) _mm256_storeu_ps(out + (size_t)(i0 + i) * hd + 8 * (c0 + c), acc[i][c]);
        }
    }
}

T256 void cpu_attn_avx2(const float *q, const void *k, const void *v, size_t ks, int kv16, int len, int group, int hd, float scale,
                        float *s, float *out, float *ml) {
    (void)kv16; /* f32 caches only: the level has no to_f16 (cpu_attn_f16_ok) */
    switch (hd) {
    case 64: attn8(q, k, v, ks, len, group, 8, scale, s, out, ml); break;
    case 128: attn8(q, k, v, ks, len, group, 16, scale, s, out, ml); break;
    default: attn8(q, k, v, ks, len, group, hd / 8, scale, s, out, ml); break;
    }
}

/* the reference's rmsnorm: sum of squares (8 lanes, then reduced), then x * inv * w per element */
T256 void cpu_rmsnorm_avx2(const float *x, const void *w, bk_dtype wt, float *out, int t0, int t1, int dim, float eps) {
    for (int t = t0; t < t1; t++) {
        const float *xt = x + (size_t)t * dim;
        float *ot = out + (size_t)t * dim;
        __m256 ss = _mm256_setzero_ps();
        int i = 0;
        for (; i + 8 <= dim; i += 8) ss = _mm256_fmadd_ps(_mm256_loadu_ps(xt + i), _mm256_loadu_ps(xt + i), ss);
        float sum = hsum8(ss);
        for (; i < dim; i++) sum += xt[i] * xt[i];
        const float inv = 1.0f / sqrtf(sum / (float)dim + eps);
        for (i = 0; i + 8 <= dim; i += 8) {
            __m256 wv;
            if (wt == BK_F32) wv = _mm256_loadu_ps((const float *)w + i);
            else if (wt == BK_F16) wv = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i)));
            else wv = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)w + i))), 16));
            _mm256_storeu_ps(ot + i, _mm256_mul_ps(_mm256_mul_ps(_mm256_loadu_ps(xt + i), _mm256_set1_ps(inv)), wv));
        }
        for (; i < dim; i++) ot[i] = xt[i] * inv * bk_load_float(w, wt, (size_t)i);
    }
}

T256 void cpu_swiglu_avx2(float *g, const float *u, int n) {
    int i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 gv = _mm256_loadu_ps(g + i);
        __m256 e = exp256(_mm256_sub_ps(_mm256_setzero_ps(), gv));
        _mm256_storeu_ps(g + i, _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(_mm256_set1_ps(1.0f), e)), _mm256_loadu_ps(u + i)));
    }
    for (; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}
#endif
