/* The AVX2 levels' float ops (avx2, avx2-vnni): attention over f32 or f16 KV caches (decode and
 * prefill blocks), their f16 rounding, rmsnorm and SwiGLU, 8 lanes a vector. The same algorithms
 * as the AVX-512 level's (q_avx512.c): in decode a kv head's GQA group scored 8 cache rows at a
 * time with one cross-lane reduction for the 8 (sum8), a softmax normalised before V, V rows loaded
 * once for two heads; in prefill 8 tokens' queries against transposed blocks of 8 K rows. Until
 * round 14 (2026-12-07) these levels took the generic paths: attention a dot and an axpy call per
 * head and cache row over f32 caches, expf per SwiGLU element. A 0.5b step at the avx2 level
 * (Intel Ice Lake Xeon, 2 threads, alternating runs): decode attention 123-129 -> 54 us a layer
 * (f32 caches) -> 37-40 us (f16), SwiGLU 16-17 -> 3 us, rmsnorm 3.3 -> 0.7-1.1 us, prefill
 * attention 19.5-24.3 -> 5.8-7.0 ms a layer of 512 tokens (the decode kernel per token) -> 4.2-4.5
 * (blocks); decode 61-64 -> 72-76 tok/s, prefill 139-167 -> 204-205 tok/s. */
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

/* 8 cache elements from element i of a K or V cache: f32, or f16 (F16) widened */
INLINE T256 __m256 kv_ld8(const void *p, size_t i, const int F16) {
    return F16 ? _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)p + i))) : _mm256_loadu_ps((const float *)p + i);
}

/* prefetches the n elements of a cache from element i */
INLINE void kv_pf8(const void *p, size_t i, int n, const int F16) {
    const char *b = (const char *)p + i * (F16 ? 2 : 4);
    for (int o = 0; o < n * (F16 ? 2 : 4); o += 64) _mm_prefetch(b + o, _MM_HINT_T0);
}

/* decode attention (cpu_kern.h attn), NV = hd / 8 vectors a row; F16: the caches hold f16, a
 * block of 8 K rows widened once into kf for all the group's heads */
INLINE T256 void attn8(const float *q, const void *k, const void *v, size_t ks, int len, int group, const int NV, const int F16,
                       float scale, float *s, float *out, float *ml) {
    const int hd = 8 * NV;
    float kf[8 * 256];
    int p0 = 0;
    for (; p0 + 8 <= len; p0 += 8) { /* scores of 8 positions a head at once (sum8) */
        for (int r = 0; r < 8; r++) kv_pf8(k, (size_t)(p0 + ATTN_PF + r) * ks, hd, F16);
        const float *kb = F16 ? kf : (const float *)k + (size_t)p0 * ks;
        const size_t kst = F16 ? (size_t)hd : ks;
        if (F16)
            for (int r = 0; r < 8; r++)
                for (int c = 0; c < NV; c++) _mm256_storeu_ps(kf + r * hd + 8 * c, kv_ld8(k, (size_t)(p0 + r) * ks + 8 * c, 1));
        for (int i = 0; i < group; i++) {
            const float *qi = q + (size_t)i * hd;
            __m256 acc[8];
            for (int r = 0; r < 8; r++) {
                const float *kp = kb + (size_t)r * kst;
                __m256 a = _mm256_mul_ps(_mm256_loadu_ps(qi), _mm256_loadu_ps(kp));
                for (int c = 1; c < NV; c++) a = _mm256_fmadd_ps(_mm256_loadu_ps(qi + 8 * c), _mm256_loadu_ps(kp + 8 * c), a);
                acc[r] = a;
            }
            _mm256_storeu_ps(s + (size_t)i * len + p0, _mm256_mul_ps(sum8(acc), _mm256_set1_ps(scale)));
        }
    }
    for (int p = p0; p < len; p++)
        for (int i = 0; i < group; i++) {
            const float *qi = q + (size_t)i * hd;
            __m256 a = _mm256_mul_ps(_mm256_loadu_ps(qi), kv_ld8(k, (size_t)p * ks, F16));
            for (int c = 1; c < NV; c++) a = _mm256_fmadd_ps(_mm256_loadu_ps(qi + 8 * c), kv_ld8(k, (size_t)p * ks + 8 * c, F16), a);
            s[(size_t)i * len + p] = hsum8(a) * scale;
        }
    for (int i = 0; i < group; i++) { /* softmax, normalised here so that V needs no divide */
        float *si = s + (size_t)i * len;
        __m256 mv = _mm256_set1_ps(-INFINITY);
        int p = 0;
        for (; p + 8 <= len; p += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(si + p));
        if (p < len) mv = _mm256_max_ps(mv, load8_part(si + p, len - p, -INFINITY));
        const __m256 mx = _mm256_set1_ps(hmax8(mv));
        __m256 sum = _mm256_setzero_ps();
        for (p = 0; p + 8 <= len; p += 8) {
            __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(si + p), mx));
            sum = _mm256_add_ps(sum, e);
            _mm256_storeu_ps(si + p, e);
        }
        if (p < len) { /* the lanes past len are exp(-inf - max) = 0 before the clamp: zero them */
            __m256 e = exp256(_mm256_sub_ps(load8_part(si + p, len - p, 0.0f), mx));
            e = _mm256_blendv_ps(e, _mm256_setzero_ps(), _mm256_castsi256_ps(_mm256_cmpgt_epi32(
                                                             _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32(len - p - 1))));
            sum = _mm256_add_ps(sum, e);
            store8(si + p, len - p, e);
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
                const size_t vp = (size_t)p * ks + 8 * (size_t)c0;
                kv_pf8(v, vp + ATTN_PF * ks, 8 * nc, F16);
                __m256 vv[4];
                for (int c = 0; c < 4; c++) vv[c] = c < nc ? kv_ld8(v, vp + 8 * c, F16) : _mm256_setzero_ps();
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
    switch (hd / 8 + 100 * !!kv16) {
    case 8: attn8(q, k, v, ks, len, group, 8, 0, scale, s, out, ml); break;
    case 16: attn8(q, k, v, ks, len, group, 16, 0, scale, s, out, ml); break;
    case 108: attn8(q, k, v, ks, len, group, 8, 1, scale, s, out, ml); break;
    case 116: attn8(q, k, v, ks, len, group, 16, 1, scale, s, out, ml); break;
    default:
        if (kv16) attn8(q, k, v, ks, len, group, hd / 8, 1, scale, s, out, ml);
        else attn8(q, k, v, ks, len, group, hd / 8, 0, scale, s, out, ml);
        break;
    }
}

/* 8 rows of 8 floats to their columns (r[j] = column j) */
INLINE T256 void transpose8(__m256 r[8]) {
    __m256 t[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int i = 0; i < 2; i++) {
        __m256d a = _mm256_castps_pd(t[4 * i]), b = _mm256_castps_pd(t[4 * i + 2]);
        __m256d c = _mm256_castps_pd(t[4 * i + 1]), d = _mm256_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm256_castpd_ps(_mm256_unpacklo_pd(a, b));
        r[4 * i + 1] = _mm256_castpd_ps(_mm256_unpackhi_pd(a, b));
        r[4 * i + 2] = _mm256_castpd_ps(_mm256_unpacklo_pd(c, d));
        r[4 * i + 3] = _mm256_castpd_ps(_mm256_unpackhi_pd(c, d));
    }
    for (int j = 0; j < 4; j++) {
        t[j] = _mm256_permute2f128_ps(r[j], r[4 + j], 0x20);
        t[4 + j] = _mm256_permute2f128_ps(r[j], r[4 + j], 0x31);
    }
    for (int j = 0; j < 8; j++) r[j] = t[j];
}

/* Prefill (cpu_kern.h attn_blk), as the AVX-512 level's attn_blk_t: a block of 8 K rows
 * transposed once (kt[d] = dimension d of the 8 rows) meets eight queries with one broadcast FMA a
 * dimension; softmax per query over its rows; V rows loaded once for four queries and 16
 * dimensions a pass. */
INLINE T256 void attn_blk8(const float *q, size_t qs, int tb, int len0, const void *k, const void *v, size_t ks, int group,
                           int hd, float scale, float *s, float *out, const int F16) {
    const int nq = tb * group, lmax = len0 + tb - 1, L = (lmax + 15) & ~15, L8 = (lmax + 7) & ~7, NV = hd / 8;
    float *kt = s + (size_t)nq * L; /* [hd][8] */
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    for (int p0 = 0; p0 < lmax; p0 += 8) {
        const int rows = lmax - p0 < 8 ? lmax - p0 : 8;
        for (int c = 0; c < NV; c++) {
            __m256 r[8];
            for (int i = 0; i < 8; i++) r[i] = i < rows ? kv_ld8(k, (size_t)(p0 + i) * ks + 8 * c, F16) : _mm256_setzero_ps();
            transpose8(r);
            for (int i = 0; i < 8; i++) _mm256_storeu_ps(kt + (size_t)(8 * c + i) * 8, r[i]);
        }
        for (int q0 = 0; q0 < nq; q0 += 8) { /* eight queries a pass: eight FMA chains */
            const int nb = nq - q0 < 8 ? nq - q0 : 8;
            const float *qp[8];
            __m256 acc[8];
            for (int j = 0; j < 8; j++) {
                int qi = q0 + (j < nb ? j : 0);
                qp[j] = q + (size_t)(qi / group) * qs + (size_t)(qi % group) * hd;
                acc[j] = _mm256_setzero_ps();
            }
            for (int d = 0; d < hd; d++) {
                __m256 kd = _mm256_loadu_ps(kt + (size_t)d * 8);
                for (int j = 0; j < 8; j++) acc[j] = _mm256_fmadd_ps(_mm256_broadcast_ss(qp[j] + d), kd, acc[j]);
            }
            for (int j = 0; j < 8; j++) { /* constant bounds keep acc in registers */
                if (j >= nb) break;
                const int qi = q0 + j, len = len0 + qi / group; /* rows >= len: this token's future */
                __m256 live = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(len - p0), lane));
                _mm256_storeu_ps(s + (size_t)qi * L + p0,
                                 _mm256_blendv_ps(_mm256_set1_ps(-INFINITY), _mm256_mul_ps(acc[j], _mm256_set1_ps(scale)), live));
            }
        }
    }
    float inv[256]; /* 1 / the softmax sum of each query (tb * group <= 256: cpu_kern.h) */
    for (int qi = 0; qi < nq; qi++) { /* softmax over the row's length; the masked scores become 0 */
        float *si = s + (size_t)qi * L;
        __m256 mv = _mm256_set1_ps(-INFINITY), sum = _mm256_setzero_ps();
        for (int p = 0; p < L8; p += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(si + p));
        const __m256 mx = _mm256_set1_ps(hmax8(mv));
        for (int p = 0; p < L8; p += 8) {
            __m256 sv = _mm256_loadu_ps(si + p);
            __m256 e = _mm256_and_ps(exp256(_mm256_sub_ps(sv, mx)), _mm256_cmp_ps(sv, _mm256_set1_ps(-INFINITY), _CMP_NEQ_OQ));
            sum = _mm256_add_ps(sum, e);
            _mm256_storeu_ps(si + p, e);
        }
        inv[qi] = 1.0f / hsum8(sum); /* applied to the output, not to every weight */
    }
    /* V: four queries and 16 dimensions a pass, each row's part loaded once a pass */
    for (int q0 = 0; q0 < nq; q0 += 4) {
        const int nb = nq - q0 < 4 ? nq - q0 : 4;
        for (int c0 = 0; c0 < NV; c0 += 2) {
            const int nc = NV - c0 < 2 ? NV - c0 : 2;
            __m256 acc[4][2];
            for (int j = 0; j < 4; j++) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
            for (int p = 0; p < lmax; p++) {
                const size_t vp = (size_t)p * ks + 8 * (size_t)c0;
                __m256 v0 = kv_ld8(v, vp, F16), v1 = nc > 1 ? kv_ld8(v, vp + 8, F16) : _mm256_setzero_ps();
                for (int j = 0; j < 4; j++) {
                    if (j >= nb) break;
                    __m256 sp = _mm256_broadcast_ss(s + (size_t)(q0 + j) * L + p);
                    acc[j][0] = _mm256_fmadd_ps(sp, v0, acc[j][0]);
                    acc[j][1] = _mm256_fmadd_ps(sp, v1, acc[j][1]);
                }
            }
            for (int j = 0; j < 4; j++) {
                if (j >= nb) break;
                const int qi = q0 + j;
                float *o = out + (size_t)(qi / group) * qs + (size_t)(qi % group) * hd + 8 * c0;
                for (int c = 0; c < 2; c++)
                    if (c < nc) _mm256_storeu_ps(o + 8 * c, _mm256_mul_ps(acc[j][c], _mm256_set1_ps(inv[qi])));
            }
        }
    }
}

T256 void cpu_attn_blk_avx2(const float *q, size_t qs, int tb, int len0, const void *k, const void *v, size_t ks, int kv16,
                            int group, int hd, float scale, float *s, float *out) {
    if (kv16) attn_blk8(q, qs, tb, len0, k, v, ks, group, hd, scale, s, out, 1);
    else attn_blk8(q, qs, tb, len0, k, v, ks, group, hd, scale, s, out, 0);
}

/* KV cache rows to f16 (vcvtps2ph, nearest even) */
T256 void cpu_to_f16_avx2(const float *x, uint16_t *y, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(y + i), _mm256_cvtps_ph(_mm256_loadu_ps(x + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; i++) y[i] = (uint16_t)_cvtss_sh(x[i], _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
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
