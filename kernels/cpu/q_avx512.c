/* The AVX-512 level (F, BW, VL, DQ and VNNI): vpdpbusd multiplies 64 unsigned weight codes by 64
 * signed activation codes and adds each group of four products into one of 16 int32 lanes.
 * Compiled with per-function target attributes so that the binary still runs on any x86-64;
 * cpu_fast.c calls in only after __builtin_cpu_supports says yes. */
#if defined(__x86_64__)
#include <immintrin.h>
#include <math.h>

#include "kernels/cpu/cpu_kern.h"

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))
/* software prefetch distance on each weight row: four interleaved row streams outrun the
 * hardware prefetcher; 2 KB ahead doubled single-thread matvec speed from DRAM (5 -> 11+ GB/s
 * on the 7b gate matrix, measured) */
#define PREFETCH_BYTES 2048

/* up to 16 values of a scale/bias array from index i (n of them, n <= 16), as f32 lanes */
INLINE T512 __m512 load_sb(const void *p, bk_dtype t, size_t i, int n) {
    __mmask16 m = (__mmask16)((1u << n) - 1);
    if (t == BK_F32) return _mm512_maskz_loadu_ps(m, (const float *)p + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i);
    if (t == BK_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* lane j -> j * num / den, the group or block a lane's elements fall in */
INLINE T512 __m512i lane_index(int num, int den) {
    int idx[16];
    for (int j = 0; j < 16; j++) idx[j] = j * num / den;
    return _mm512_loadu_si512(idx);
}

/* ---- activations ---- */

static T512 void quant_avx512(const float *x, cpu_qact *a, int t0, int t1) {
    if (a->layout == CPU_QACT_CHUNK128) { cpu_q4c_quant(x, a, t0, t1); return; }
    int K = a->cols, nb = K / 32;
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int t = t0; t < t1; t++) {
        const float *xt = x + (size_t)t * K;
        int8_t *h = a->hi + (size_t)t * K, *l = a->lo ? a->lo + (size_t)t * K : NULL;
        for (int b = 0; b < nb; b++) {
            __m512 v0 = _mm512_loadu_ps(xt + 32 * b), v1 = _mm512_loadu_ps(xt + 32 * b + 16);
            float amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_and_ps(v0, sign), _mm512_and_ps(v1, sign)));
            float inv = amax > 0.0f ? 127.0f / amax : 0.0f;
            a->d[(size_t)t * nb + b] = a->planes == 2 ? amax / (127.0f * 256.0f) : amax / 127.0f;
            a->bsum[(size_t)t * nb + b] = _mm512_reduce_add_ps(_mm512_add_ps(v0, v1));
            __m512 s0 = _mm512_mul_ps(v0, _mm512_set1_ps(inv)), s1 = _mm512_mul_ps(v1, _mm512_set1_ps(inv));
            __m512 r0 = _mm512_roundscale_ps(s0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m512 r1 = _mm512_roundscale_ps(s1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
            __m512i q[2][2] = {{_mm512_cvtps_epi32(r0), _mm512_cvtps_epi32(r1)}, {_mm512_setzero_si512(), _mm512_setzero_si512()}};
            if (l) {
                __m512 c = _mm512_set1_ps(256.0f);
                q[1][0] = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(s0, r0), c));
                q[1][1] = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(s1, r1), c));
            }
            for (int p = 0; p < (l ? 2 : 1); p++) {
                int8_t *dst = p ? l : h;
                if (a->bits == 4) {
                    _mm_storeu_si128((__m128i *)(dst + 16 * b), _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(q[p][0], even, q[p][1])));
                    _mm_storeu_si128((__m128i *)(dst + K / 2 + 16 * b), _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(q[p][0], odd, q[p][1])));
                } else {
                    _mm_storeu_si128((__m128i *)(dst + 32 * b), _mm512_cvtsepi32_epi8(q[p][0]));
                    _mm_storeu_si128((__m128i *)(dst + 32 * b + 16), _mm512_cvtsepi32_epi8(q[p][1]));
                }
            }
        }
    }
}

/* ---- quantized tiles: R rows x T tokens, every weight byte loaded once per tile ---- */

/* A chunk is 64 weight bytes: 128 elements (4 blocks) at 4 bits, 64 (2 blocks) at 8 bits.
 * Lane j of the int32 dot covers elements [j*E, (j+1)*E), E = 8 or 4. */
INLINE T512 void qtile(const bk_weight *w, const cpu_qact *a, float *y, int r, int t, const int R,
                       const int T, const int bits, const int planes, __m512i sidx, __m512i didx, __m512i bidx) {
    const int K = w->cols, G = w->group_size, nb = K / 32, ng = K / G;
    const int bpc = bits == 4 ? 4 : 2; /* blocks a chunk */
    const size_t row_bytes = (size_t)K * bits / 8;
    const __m512i m0f = _mm512_set1_epi8(0x0f), zero = _mm512_setzero_si512();
    const uint8_t *wr[4];
    const int8_t *xh[4], *xl[4];
    const float *dd[4], *bs[4];
    __m512 acc[4][4];
    for (int i = 0; i < R; i++) wr[i] = (const uint8_t *)w->w->data + (size_t)(r + i) * row_bytes;
    for (int j = 0; j < T; j++) {
        xh[j] = a->hi + (size_t)(t + j) * K;
        xl[j] = planes == 2 ? a->lo + (size_t)(t + j) * K : NULL;
        dd[j] = a->d + (size_t)(t + j) * nb;
        bs[j] = a->bsum + (size_t)(t + j) * nb;
        for (int i = 0; i < R; i++) acc[i][j] = _mm512_setzero_ps();
    }
    for (int b = 0; b < nb; b += bpc) {
        int nblk = nb - b < bpc ? nb - b : bpc;
        int bytes = nblk * 32 * bits / 8, ngc = (nblk * 32 + G - 1) / G;
        __mmask64 m = bytes == 64 ? ~(__mmask64)0 : (((__mmask64)1 << bytes) - 1);
        size_t woff = (size_t)b * 32 * bits / 8, g0 = (size_t)b * 32 / G;
        __m512i wl[4], wh[4];
        __m512 sl[4];
        for (int i = 0; i < R; i++) {
            _mm_prefetch((const char *)(wr[i] + woff + PREFETCH_BYTES), _MM_HINT_T0);
            __m512i wv = _mm512_maskz_loadu_epi8(m, wr[i] + woff);
            if (bits == 4) {
                wl[i] = _mm512_and_si512(wv, m0f);
                wh[i] = _mm512_and_si512(_mm512_srli_epi16(wv, 4), m0f);
            } else {
                wl[i] = wv;
            }
            sl[i] = _mm512_permutexvar_ps(sidx, load_sb(w->scales->data, w->sdtype, (size_t)(r + i) * ng + g0, ngc));
        }
        for (int j = 0; j < T; j++) {
            __m512 dl = _mm512_permutexvar_ps(didx, _mm512_maskz_loadu_ps((__mmask16)((1u << nblk) - 1), dd[j] + b));
            const size_t xoff = bits == 4 ? (size_t)16 * b : (size_t)32 * b;
            __m512i xe = _mm512_maskz_loadu_epi8(m, xh[j] + xoff), xo = zero, le = zero, lo = zero;
            if (bits == 4) xo = _mm512_maskz_loadu_epi8(m, xh[j] + K / 2 + xoff);
            if (planes == 2) {
                le = _mm512_maskz_loadu_epi8(m, xl[j] + xoff);
                if (bits == 4) lo = _mm512_maskz_loadu_epi8(m, xl[j] + K / 2 + xoff);
            }
            for (int i = 0; i < R; i++) {
                __m512i ia = _mm512_dpbusd_epi32(zero, wl[i], xe);
                if (bits == 4) ia = _mm512_dpbusd_epi32(ia, wh[i], xo);
                if (planes == 2) {
                    __m512i ib = _mm512_dpbusd_epi32(zero, wl[i], le);
                    if (bits == 4) ib = _mm512_dpbusd_epi32(ib, wh[i], lo);
                    ia = _mm512_add_epi32(_mm512_slli_epi32(ia, 8), ib);
                }
                acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia), _mm512_mul_ps(sl[i], dl), acc[i][j]);
            }
        }
    }
    /* the bias term: sum over blocks of bias(group of block) * block sum of x */
    for (int b = 0; b < nb; b += 16) {
        int nblk = nb - b < 16 ? nb - b : 16, ngc = (nblk * 32 + G - 1) / G;
        size_t g0 = (size_t)b * 32 / G;
        __m512 bl[4];
        for (int i = 0; i < R; i++)
            bl[i] = _mm512_permutexvar_ps(bidx, load_sb(w->biases->data, w->sdtype, (size_t)(r + i) * ng + g0, ngc));
        for (int j = 0; j < T; j++) {
            __m512 s = _mm512_maskz_loadu_ps((__mmask16)((1u << nblk) - 1), bs[j] + b);
            for (int i = 0; i < R; i++) acc[i][j] = _mm512_fmadd_ps(bl[i], s, acc[i][j]);
        }
    }
    for (int j = 0; j < T; j++)
        for (int i = 0; i < R; i++) y[(size_t)(t + j) * w->rows + r + i] = _mm512_reduce_add_ps(acc[i][j]);
}

#define QTILE_ALL(bits, planes)                                                          \
    static T512 void qmm_##bits##_##planes(const bk_weight *w, const cpu_qact *a, float *y, int r0, \
                                           int r1, int t0, int t1) {                    \
        const int E = bits == 4 ? 8 : 4; /* elements a lane */                          \
        const __m512i si = lane_index(E, w->group_size), di = lane_index(E, 32);         \
        const __m512i bi = lane_index(32, w->group_size);                                \
        int t = t0;                                                                      \
        for (; t + 4 <= t1; t += 4) {                                                    \
            int r = r0;                                                                  \
            for (; r + 4 <= r1; r += 4) qtile(w, a, y, r, t, 4, 4, bits, planes, si, di, bi);       \
            for (; r < r1; r++) qtile(w, a, y, r, t, 1, 4, bits, planes, si, di, bi);               \
        }                                                                                \
        for (; t < t1; t++) {                                                            \
            int r = r0;                                                                  \
            for (; r + 4 <= r1; r += 4) qtile(w, a, y, r, t, 4, 1, bits, planes, si, di, bi);       \
            for (; r < r1; r++) qtile(w, a, y, r, t, 1, 1, bits, planes, si, di, bi);               \
        }                                                                                \
    }
QTILE_ALL(4, 1)
QTILE_ALL(4, 2)
QTILE_ALL(8, 1)
QTILE_ALL(8, 2)

static void qmm_avx512(const bk_weight *w, const cpu_qact *a, float *y, int r0, int r1, int t0, int t1) {
    if (a->layout == CPU_QACT_CHUNK128) { cpu_q4c_qmm(w, a, y, r0, r1, t0, t1); return; }
    if (w->bits == 4) (a->planes == 2 ? qmm_4_2 : qmm_4_1)(w, a, y, r0, r1, t0, t1);
    else (a->planes == 2 ? qmm_8_2 : qmm_8_1)(w, a, y, r0, r1, t0, t1);
}

/* ---- dense weights ---- */

INLINE T512 __m512 load_w16(const void *p, bk_dtype t, size_t i, __mmask16 m) {
    if (t == BK_F32) return _mm512_maskz_loadu_ps(m, (const float *)p + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i);
    if (t == BK_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INLINE T512 void dtile(const bk_weight *w, const float *x, float *y, int r, int t, const int R, const int T) {
    const int K = w->cols;
    __m512 acc[4][4];
    for (int i = 0; i < R; i++)
        for (int j = 0; j < T; j++) acc[i][j] = _mm512_setzero_ps();
    for (int c = 0; c < K; c += 16) {
        __mmask16 m = K - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (K - c)) - 1);
        __m512 wv[4];
        for (int i = 0; i < R; i++) wv[i] = load_w16(w->w->data, w->wdtype, (size_t)(r + i) * K + c, m);
        for (int j = 0; j < T; j++) {
            __m512 xv = _mm512_maskz_loadu_ps(m, x + (size_t)(t + j) * K + c);
            for (int i = 0; i < R; i++) acc[i][j] = _mm512_fmadd_ps(wv[i], xv, acc[i][j]);
        }
    }
    for (int j = 0; j < T; j++)
        for (int i = 0; i < R; i++) y[(size_t)(t + j) * w->rows + r + i] = _mm512_reduce_add_ps(acc[i][j]);
}

static T512 void dmm_avx512(const bk_weight *w, const float *x, float *y, int r0, int r1, int t0, int t1) {
    int t = t0;
    for (; t + 4 <= t1; t += 4) {
        int r = r0;
        for (; r + 4 <= r1; r += 4) dtile(w, x, y, r, t, 4, 4);
        for (; r < r1; r++) dtile(w, x, y, r, t, 1, 4);
    }
    for (; t < t1; t++) {
        int r = r0;
        for (; r + 4 <= r1; r += 4) dtile(w, x, y, r, t, 4, 1);
        for (; r < r1; r++) dtile(w, x, y, r, t, 1, 1);
    }
}

/* ---- attention and ffn helpers ---- */

static T512 float dot_avx512(const float *a, const float *b, int n) {
    __m512 acc = _mm512_setzero_ps();
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc);
    }
    return _mm512_reduce_add_ps(acc);
}

static T512 void axpy_avx512(float *y, float a, const float *x, int n) {
    __m512 av = _mm512_set1_ps(a);
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(av, _mm512_maskz_loadu_ps(m, x + i), _mm512_maskz_loadu_ps(m, y + i)));
    }
}

/* exp(x) for x <= 0 .. moderate: 2^k * p(f), Cody-Waite reduction and a degree-6 polynomial,
 * ~1 ulp on the range silu needs; below -87 it flushes to 0 as expf underflows */
INLINE T512 __m512 exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(88.0f)), _mm512_set1_ps(-87.0f));
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504f)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 f = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693145751953125f), x);
    f = _mm512_fnmadd_ps(k, _mm512_set1_ps(1.428606765330187e-06f), f);
    __m512 p = _mm512_set1_ps(1.0f / 720);
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 120));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 24));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f / 6));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, k);
}

/* the reference's rmsnorm: sum of squares (16 lanes, then reduced), then x * inv * w per element */
static T512 void rmsnorm_avx512(const float *x, const void *w, bk_dtype wt, float *out, int t0, int t1, int dim, float eps) {
    for (int t = t0; t < t1; t++) {
        const float *xt = x + (size_t)t * dim;
        float *ot = out + (size_t)t * dim;
        __m512 ss = _mm512_setzero_ps();
        for (int i = 0; i < dim; i += 16) {
            __mmask16 m = dim - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (dim - i)) - 1);
            __m512 v = _mm512_maskz_loadu_ps(m, xt + i);
            ss = _mm512_fmadd_ps(v, v, ss);
        }
        __m512 inv = _mm512_set1_ps(1.0f / sqrtf(_mm512_reduce_add_ps(ss) / (float)dim + eps));
        for (int i = 0; i < dim; i += 16) {
            __mmask16 m = dim - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (dim - i)) - 1);
            __m512 wv;
            if (wt == BK_F32) wv = _mm512_maskz_loadu_ps(m, (const float *)w + i);
            else if (wt == BK_F16) wv = _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i));
            else wv = _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, (const uint16_t *)w + i)), 16));
            _mm512_mask_storeu_ps(ot + i, m, _mm512_mul_ps(_mm512_mul_ps(_mm512_maskz_loadu_ps(m, xt + i), inv), wv));
        }
    }
}

static T512 void swiglu_avx512(float *g, const float *u, int n) {
    for (int i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 gv = _mm512_maskz_loadu_ps(m, g + i), uv = _mm512_maskz_loadu_ps(m, u + i);
        __m512 e = exp512(_mm512_sub_ps(_mm512_setzero_ps(), gv));
        __m512 s = _mm512_div_ps(gv, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
        _mm512_mask_storeu_ps(g + i, m, _mm512_mul_ps(s, uv));
    }
}

/* One kv head's GQA group at once: every K and V row is loaded once for all `group` query heads
 * (the per-(head, position) dot/axpy calls loaded it once a head and stored the output row at
 * every position); the output accumulates in registers, 16 dims at a time. NV = hd / 16 is a
 * constant in the common head sizes: with a variable count gcc copied each K row to the stack
 * through a memcpy call (10% of a decode token at 2k positions, perf) and kept the V sums in
 * memory. The cache rows come from DRAM (every layer's cache is read once a token) at a stride
 * the hardware prefetcher does not run ahead of: software prefetch ATTN_PF rows ahead. F16: the
 * caches hold f16 (cpu_fast.c kv_f16); a block of 16 K rows is widened once into kf for all the
 * group's heads, V rows as they are loaded. */
/* 16 cache elements from element i of a K or V cache: f32, or f16 (F16) widened */
INLINE T512 __m512 kv_ld(const void *p, size_t i, const int F16) {
    return F16 ? _mm512_cvtph_ps(_mm256_loadu_si256((const __m256i *)((const uint16_t *)p + i)))
               : _mm512_loadu_ps((const float *)p + i);
}

/* prefetches the n elements of a cache from element i */
INLINE void kv_pf(const void *p, size_t i, int n, const int F16) {
    const char *b = (const char *)p + i * (F16 ? 2 : 4);
    for (int o = 0; o < n * (F16 ? 2 : 4); o += 64) _mm_prefetch(b + o, _MM_HINT_T0);
}

/* lane j of the result = the sum of a[j]'s 16 lanes: a transpose by unpacks and lane shuffles,
 * 45 ops where 16 reductions cost ~150. Scoring 16 rows a head at once (attn_nv) also has their 64
 * lines in flight together: decode attention from DRAM 47-49 -> 35-42 us at the 0.5b shape (544
 * rows, 2 threads), the same in L3 (2026-11-23) */
INLINE T512 __m512 sum16(const __m512 a[16]) {
    __m512 v[8], w[4];
    for (int i = 0; i < 8; i++) /* per 128-bit lane: a0+a2, b0+b2, a1+a3, b1+b3 */
        v[i] = _mm512_add_ps(_mm512_unpacklo_ps(a[2 * i], a[2 * i + 1]), _mm512_unpackhi_ps(a[2 * i], a[2 * i + 1]));
    for (int i = 0; i < 4; i++) { /* per 128-bit lane: the lane's sums of 4 vectors */
        __m512d x = _mm512_castps_pd(v[2 * i]), y = _mm512_castps_pd(v[2 * i + 1]);
        w[i] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(x, y)), _mm512_castpd_ps(_mm512_unpackhi_pd(x, y)));
    }
    __m512 x = _mm512_add_ps(_mm512_shuffle_f32x4(w[0], w[1], _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_f32x4(w[0], w[1], _MM_SHUFFLE(3, 1, 3, 1)));
    __m512 y = _mm512_add_ps(_mm512_shuffle_f32x4(w[2], w[3], _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_f32x4(w[2], w[3], _MM_SHUFFLE(3, 1, 3, 1)));
    return _mm512_add_ps(_mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(2, 0, 2, 0)), _mm512_shuffle_f32x4(x, y, _MM_SHUFFLE(3, 1, 3, 1)));
}

INLINE T512 void attn_nv(const float *q, const void *k, const void *v, size_t ks, int len, int group, const int NV,
                         const int F16, float scale, float *s, float *out, float *ml) {
    const int hd = 16 * NV;
    int p0 = 0;
    float kf[16 * 256]; /* F16: a block of 16 K rows widened once for all the group's heads */
    for (; p0 + 16 <= len; p0 += 16) { /* scores of 16 positions a head at once (sum16) */
        for (int r = 0; r < 16; r++) kv_pf(k, (size_t)(p0 + ATTN_PF + r) * ks, hd, F16);
        const float *kb = F16 ? kf : (const float *)k + (size_t)p0 * ks;
        const size_t kst = F16 ? (size_t)hd : ks;
        if (F16)
            for (int r = 0; r < 16; r++)
                for (int c = 0; c < NV; c++) _mm512_storeu_ps(kf + r * hd + 16 * c, kv_ld(k, (size_t)(p0 + r) * ks + 16 * c, 1));
        for (int i = 0; i < group; i++) {
            const float *qi = q + (size_t)i * hd;
            __m512 qv[16], acc[16];
            for (int c = 0; c < NV; c++) qv[c] = _mm512_loadu_ps(qi + 16 * c);
            for (int r = 0; r < 16; r++) {
                const float *kp = kb + (size_t)r * kst;
                __m512 a = _mm512_mul_ps(qv[0], _mm512_loadu_ps(kp));
                for (int c = 1; c < NV; c++) a = _mm512_fmadd_ps(qv[c], _mm512_loadu_ps(kp + 16 * c), a);
                acc[r] = a;
            }
            _mm512_storeu_ps(s + (size_t)i * len + p0, _mm512_mul_ps(sum16(acc), _mm512_set1_ps(scale)));
        }
    }
    for (int p = p0; p < len; p++) {
        __m512 kv[16];
        kv_pf(k, (size_t)(p + ATTN_PF) * ks, hd, F16);
        for (int c = 0; c < NV; c++) kv[c] = kv_ld(k, (size_t)p * ks + 16 * c, F16);
        for (int i = 0; i < group; i++) {
            const float *qi = q + (size_t)i * hd;
            __m512 acc = _mm512_mul_ps(_mm512_loadu_ps(qi), kv[0]);
            for (int c = 1; c < NV; c++) acc = _mm512_fmadd_ps(_mm512_loadu_ps(qi + 16 * c), kv[c], acc);
            s[(size_t)i * len + p] = _mm512_reduce_add_ps(acc) * scale;
        }
    }
    for (int i = 0; i < group; i++) { /* softmax, normalised here so that V needs no divide */
        float *si = s + (size_t)i * len;
        __m512 mv = _mm512_set1_ps(-INFINITY);
        for (int p = 0; p < len; p += 16) {
            __mmask16 m = len - p >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (len - p)) - 1);
            mv = _mm512_max_ps(mv, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), m, si + p));
        }
        __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(mv)), sum = _mm512_setzero_ps();
        for (int p = 0; p < len; p += 16) {
            __mmask16 m = len - p >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (len - p)) - 1);
            __m512 e = _mm512_maskz_mov_ps(m, exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, si + p), mx)));
            sum = _mm512_add_ps(sum, e);
            _mm512_mask_storeu_ps(si + p, m, e);
        }
        if (ml) { /* a slice of the rows: the caller merges the slices (cpu_kern.h) */
            ml[2 * i] = _mm512_cvtss_f32(mx);
            ml[2 * i + 1] = _mm512_reduce_add_ps(sum);
            continue;
        }
        __m512 inv = _mm512_set1_ps(1.0f / _mm512_reduce_add_ps(sum));
        for (int p = 0; p < len; p += 16) {
            __mmask16 m = len - p >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (len - p)) - 1);
            _mm512_mask_storeu_ps(si + p, m, _mm512_mul_ps(_mm512_maskz_loadu_ps(m, si + p), inv));
        }
    }
    /* V: heads in fours so that their sums stay in registers (NV x 4 accumulators) */
    for (int i0 = 0; i0 < group; i0 += 4) {
        const int gi = group - i0 < 4 ? group - i0 : 4;
        for (int c0 = 0; c0 < NV; c0 += 4) {
            const int nc = NV - c0 < 4 ? NV - c0 : 4;
            __m512 acc[4][4];
            for (int i = 0; i < 4; i++)
                for (int c = 0; c < 4; c++) acc[i][c] = _mm512_setzero_ps();
            for (int p = 0; p < len; p++) {
                const size_t vp = (size_t)p * ks + 16 * (size_t)c0;
                __m512 vv[4];
                kv_pf(v, vp + ATTN_PF * ks, 16 * nc, F16);
                for (int c = 0; c < 4; c++) vv[c] = c < nc ? kv_ld(v, vp + 16 * c, F16) : _mm512_setzero_ps();
                for (int i = 0; i < 4; i++) {
                    if (i >= gi) break;
                    __m512 sp = _mm512_set1_ps(s[(size_t)(i0 + i) * len + p]);
                    for (int c = 0; c < 4; c++)
                        if (c < nc) acc[i][c] = _mm512_fmadd_ps(sp, vv[c], acc[i][c]);
                }
            }
            for (int i = 0; i < gi; i++)
                for (int c = 0; c < nc; c++) _mm512_storeu_ps(out + (size_t)(i0 + i) * hd + 16 * (c0 + c), acc[i][c]);
        }
    }
}

/* 16 rows of 16 floats to their columns (r[j] = column j) */
INLINE T512 void transpose16(__m512 r[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
        __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
    }
    for (int h = 0; h < 2; h++)
        for (int j = 0; j < 4; j++) {
            t[8 * h + j] = _mm512_shuffle_f32x4(r[8 * h + j], r[8 * h + 4 + j], 0x88);
            t[8 * h + 4 + j] = _mm512_shuffle_f32x4(r[8 * h + j], r[8 * h + 4 + j], 0xdd);
        }
    for (int j = 0; j < 8; j++) {
        r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xdd);
    }
}

/* acc[j][c] = sum_p w[j L + p] v[p ks + 16 c], rows p < len: eight queries' weights against 32
 * dimensions of V, each row's two vectors loaded once for the eight (constant bounds: the 16 sums
 * stay in registers). A row feeds 16 FMAs for 128 bytes from L2, where four queries x 64
 * dimensions read 256: V from L2 bounded the pass (2026-12-06) */
INLINE T512 void pv82(const float *w, int L, const void *v, size_t vo, size_t ks, int len, __m512 acc[8][2], const int F16) {
    for (int j = 0; j < 8; j++) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
    for (int p = 0; p < len; p++) {
        const size_t vp = vo + (size_t)p * ks;
        __m512 v0 = kv_ld(v, vp, F16), v1 = kv_ld(v, vp + 16, F16);
        for (int j = 0; j < 8; j++) {
            __m512 sp = _mm512_set1_ps(w[(size_t)j * L + p]);
            acc[j][0] = _mm512_fmadd_ps(sp, v0, acc[j][0]);
            acc[j][1] = _mm512_fmadd_ps(sp, v1, acc[j][1]);
        }
    }
}

/* the same for nb <= 8 queries and nc <= 2 chunks of 16 dimensions (the remainders) */
INLINE T512 void pv_any(const float *w, int L, const void *v, size_t vo, size_t ks, int len, int nb, int nc, __m512 acc[8][2],
                        const int F16) {
    for (int j = 0; j < 8; j++) acc[j][0] = acc[j][1] = _mm512_setzero_ps();
    for (int p = 0; p < len; p++)
        for (int j = 0; j < nb; j++) {
            __m512 sp = _mm512_set1_ps(w[(size_t)j * L + p]);
            for (int c = 0; c < nc; c++) acc[j][c] = _mm512_fmadd_ps(sp, kv_ld(v, vo + (size_t)p * ks + 16 * c, F16), acc[j][c]);
        }
}

/* Prefill: `tb` tokens' query heads against one kv head (cpu_kern.h attn_blk). A block of 16 K
 * rows is transposed once (kt[d] = dimension d of the 16 rows) and meets every query with one
 * broadcast FMA a dimension, where attn_nv scores each token's heads apart and reduces every dot
 * across lanes (sum16); the rows are read once for all tb tokens. */
INLINE T512 void attn_blk_t(const float *q, size_t qs, int tb, int len0, const void *k, const void *v, size_t ks, int group,
                            int hd, float scale, float *s, float *out, const int F16) {
    const int nq = tb * group, lmax = len0 + tb - 1, L = (lmax + 15) & ~15, NV = hd / 16;
    float *kt = s + (size_t)nq * L; /* [hd][32] */
    for (int p0 = 0; p0 < lmax; p0 += 32) {
        const int two = p0 + 16 < lmax; /* a second block of rows: p0 + 16 < L */
        for (int h = 0; h <= two; h++) {
            const int rows = lmax - p0 - 16 * h < 16 ? lmax - p0 - 16 * h : 16;
            for (int c = 0; c < NV; c++) {
                __m512 r[16];
                for (int i = 0; i < 16; i++)
                    r[i] = i < rows ? kv_ld(k, (size_t)(p0 + 16 * h + i) * ks + 16 * c, F16) : _mm512_setzero_ps();
                transpose16(r);
                for (int i = 0; i < 16; i++) _mm512_storeu_ps(kt + (size_t)(16 * c + i) * 32 + 16 * h, r[i]);
            }
        }
        for (int q0 = 0; q0 < nq; q0 += 8) { /* eight queries a pass: eight FMA chains a block */
            const int nb = nq - q0 < 8 ? nq - q0 : 8;
            const float *qp[8];
            __m512 acc[8], acc2[8];
            for (int j = 0; j < 8; j++) {
                int qi = q0 + (j < nb ? j : 0);
                qp[j] = q + (size_t)(qi / group) * qs + (size_t)(qi % group) * hd;
                acc[j] = acc2[j] = _mm512_setzero_ps();
            }
            if (two)
                for (int d = 0; d < hd; d++) {
                    __m512 kd = _mm512_loadu_ps(kt + (size_t)d * 32), kd2 = _mm512_loadu_ps(kt + (size_t)d * 32 + 16);
                    for (int j = 0; j < 8; j++) {
                        const __m512 qd = _mm512_set1_ps(qp[j][d]);
                        acc[j] = _mm512_fmadd_ps(qd, kd, acc[j]);
                        acc2[j] = _mm512_fmadd_ps(qd, kd2, acc2[j]);
                    }
                }
            else
                for (int d = 0; d < hd; d++) {
                    __m512 kd = _mm512_loadu_ps(kt + (size_t)d * 32);
                    for (int j = 0; j < 8; j++) acc[j] = _mm512_fmadd_ps(_mm512_set1_ps(qp[j][d]), kd, acc[j]);
                }
            for (int j = 0; j < nb; j++) {
                const int qi = q0 + j, len = len0 + qi / group; /* rows >= len: this token's future */
                for (int h = 0; h <= two; h++) {
                    const int b = p0 + 16 * h;
                    __mmask16 m = len - b >= 16 ? (__mmask16)0xffff : len <= b ? 0 : (__mmask16)((1u << (len - b)) - 1);
                    _mm512_storeu_ps(s + (size_t)qi * L + b, _mm512_mask_blend_ps(m, _mm512_set1_ps(-INFINITY),
                                                                                  _mm512_mul_ps(h ? acc2[j] : acc[j], _mm512_set1_ps(scale))));
                }
            }
        }
    }
    float inv[256]; /* 1 / the softmax sum of each query (tb * group <= 256: cpu_kern.h) */
    for (int qi = 0; qi < nq; qi++) { /* softmax over the row's length; the masked scores become 0 */
        float *si = s + (size_t)qi * L;
        __m512 mv = _mm512_set1_ps(-INFINITY), sum = _mm512_setzero_ps();
        for (int p = 0; p < L; p += 16) mv = _mm512_max_ps(mv, _mm512_loadu_ps(si + p));
        __m512 mx = _mm512_set1_ps(_mm512_reduce_max_ps(mv));
        for (int p = 0; p < L; p += 16) {
            __m512 sv = _mm512_loadu_ps(si + p);
            __mmask16 live = _mm512_cmp_ps_mask(sv, _mm512_set1_ps(-INFINITY), _CMP_NEQ_OQ);
            __m512 e = _mm512_maskz_mov_ps(live, exp512(_mm512_sub_ps(sv, mx)));
            sum = _mm512_add_ps(sum, e);
            _mm512_storeu_ps(si + p, e);
        }
        inv[qi] = 1.0f / _mm512_reduce_add_ps(sum); /* applied to the output, not to every weight */
    }
    /* V: eight queries and 32 dimensions a pass, each row's part loaded once a pass */
    for (int q0 = 0; q0 < nq; q0 += 8) {
        const int nb = nq - q0 < 8 ? nq - q0 : 8;
        for (int c0 = 0; c0 < NV; c0 += 2) {
            const int nc = NV - c0 < 2 ? NV - c0 : 2;
            __m512 acc[8][2];
            if (nb == 8 && nc == 2) pv82(s + (size_t)q0 * L, L, v, 16 * (size_t)c0, ks, lmax, acc, F16);
            else pv_any(s + (size_t)q0 * L, L, v, 16 * (size_t)c0, ks, lmax, nb, nc, acc, F16);
            for (int j = 0; j < nb; j++) {
                const int qi = q0 + j;
                float *o = out + (size_t)(qi / group) * qs + (size_t)(qi % group) * hd + 16 * c0;
                for (int c = 0; c < nc; c++) _mm512_storeu_ps(o + 16 * c, _mm512_mul_ps(acc[j][c], _mm512_set1_ps(inv[qi])));
            }
        }
    }
}

static T512 void attn_blk_avx512(const float *q, size_t qs, int tb, int len0, const void *k, const void *v, size_t ks,
                                 int kv16, int group, int hd, float scale, float *s, float *out) {
    if (kv16) attn_blk_t(q, qs, tb, len0, k, v, ks, group, hd, scale, s, out, 1);
    else attn_blk_t(q, qs, tb, len0, k, v, ks, group, hd, scale, s, out, 0);
}

static T512 void attn_avx512(const float *q, const void *k, const void *v, size_t ks, int kv16, int len, int group, int hd,
                             float scale, float *s, float *out, float *ml) {
    switch (hd / 16 + 100 * !!kv16) {
    case 4: attn_nv(q, k, v, ks, len, group, 4, 0, scale, s, out, ml); break;
    case 8: attn_nv(q, k, v, ks, len, group, 8, 0, scale, s, out, ml); break;
    case 104: attn_nv(q, k, v, ks, len, group, 4, 1, scale, s, out, ml); break;
    case 108: attn_nv(q, k, v, ks, len, group, 8, 1, scale, s, out, ml); break;
    default:
        if (kv16) attn_nv(q, k, v, ks, len, group, hd / 16, 1, scale, s, out, ml);
        else attn_nv(q, k, v, ks, len, group, hd / 16, 0, scale, s, out, ml);
        break;
    }
}

/* KV cache rows to f16 (vcvtps2ph, nearest even) */
static T512 void to_f16_avx512(const float *x, uint16_t *y, size_t n) {
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256((__m256i *)(y + i), _mm512_cvtps_ph(_mm512_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm256_mask_storeu_epi16(y + i, m, _mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    }
}

const cpu_kernels cpu_kern_avx512 = {
    .name = "avx512",
    .quant = quant_avx512,
    .qmm = qmm_avx512,
    .dmm = dmm_avx512,
    .dot = dot_avx512,
    .axpy = axpy_avx512,
    .swiglu = swiglu_avx512,
    .attn = attn_avx512,
    .attn_blk = attn_blk_avx512,
    .to_f16 = to_f16_avx512,
    .rmsnorm = rmsnorm_avx512,
    .chunk_ok = cpu_q4c_ok,
    .pk_ok = cpu_q4p_ok,
    .pk_quant = cpu_q4p_quant,
    .amx = 1,
    .pk_qmm = cpu_q4p_qmm,
};
#endif
