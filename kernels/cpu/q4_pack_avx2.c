/* The AVX2 level's kernel over repacked 4-bit weights (cpu_q4pack, cpu_kern.h): the layout the
 * AVX-512 VNNI kernel reads (q4_pack_avx512.c), each 64-byte vector of 16 rows taken as two halves
 * of 8 rows (dword lane r: row r of the half, four columns). AVX2 has no dpbusd: pmaddubsw
 * multiplies the codes (0..15, the high nibbles shifted down) by four activation codes broadcast
 * to every dword lane, into int16 pairs of at most 2 * 15 * 128 = 3840; four vectors' pairs are
 * summed in int16 (at most 30720) before pmaddwd widens them to int32. The activations are
 * cpu_q4p_quant's (two int8 planes a weight group, x ~ d (256 hi + lo)), so that
 *   y = sum_g s_g d_g (256 H_g + L_g) + b_g X_g     (H, L: the code sums against each plane)
 * Until this kernel the AVX2 level read the checkpoint layout (q_avx2.c), a row at a time with
 * scalar scale loads: 4.1-4.5 GB/s a thread at the 7b shapes (bench/RESULTS.md, CPU round 13). */
#if defined(__x86_64__)
#include <immintrin.h>

#include "kernels/cpu/cpu_kern.h"

#define T256 __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))
#define TILE_MAX 4     /* tokens a tile */
#define PF_AHEAD 2048 /* bytes the one-stream reads prefetch ahead (decode and short batches) */

/* ---- activations: cpu_q4p_quant's numbers in AVX2 ---- */

/* 32 int32 (four vectors in order) to 32 int8, saturating; the packs interleave by 128-bit lane,
 * the dword permute restores the order */
INLINE T256 __m256i codes32(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

INLINE T256 float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

INLINE T256 float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

/* per group of a->block columns: d = amax / (127 256), bsum = the float sum, hi = round(s), lo =
 * round((s - hi) 256) for s = x 127 / amax (rounding: cvtps2dq's nearest even; lo = +-128
 * saturates, 1/256 of a step) */
void T256 cpu_q4p_quant_avx2(const float *x, cpu_qact *a, int t0, int t1) {
    const int K = a->cols, G = a->block, ng = K / G;
    const __m256 sign = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff)), k256 = _mm256_set1_ps(256.0f);
    for (int t = t0; t < t1; t++)
        for (int g = 0; g < ng; g++) {
            const float *xg = x + (size_t)t * K + (size_t)g * G;
            __m256 m = _mm256_setzero_ps(), s = _mm256_setzero_ps();
            for (int i = 0; i < G; i += 8) {
                __m256 v = _mm256_loadu_ps(xg + i);
                m = _mm256_max_ps(m, _mm256_and_ps(v, sign));
                s = _mm256_add_ps(s, v);
            }
            const float amax = hmax8(m);
            const __m256 inv = _mm256_set1_ps(amax > 0.0f ? 127.0f / amax : 0.0f);
            a->d[(size_t)t * ng + g] = amax / (127.0f * 256.0f);
            a->bsum[(size_t)t * ng + g] = hsum8(s);
            int8_t *hi = a->hi + (size_t)t * K + (size_t)g * G, *lo = a->lo + (size_t)t * K + (size_t)g * G;
            for (int i = 0; i < G; i += 32) {
                __m256i h[4], l[4];
                for (int k = 0; k < 4; k++) {
                    __m256 v = _mm256_mul_ps(_mm256_loadu_ps(xg + i + 8 * k), inv);
                    h[k] = _mm256_cvtps_epi32(v);
                    l[k] = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_sub_ps(v, _mm256_cvtepi32_ps(h[k])), k256));
                }
                _mm256_storeu_si256((__m256i *)(hi + i), codes32(h[0], h[1], h[2], h[3]));
                _mm256_storeu_si256((__m256i *)(lo + i), codes32(l[0], l[1], l[2], l[3]));
            }
        }
}

/* ---- weights ---- */

/* the 8 scales (which = 0) or biases (1) of rows 8 half .. 8 half + 7 of a scale line, as f32 */
INLINE T256 __m256 line8(const uint8_t *line, bk_dtype st, int which, int half) {
    if (st == BK_F32) return _mm256_load_ps((const float *)line + 16 * which + 8 * half);
    __m128i h = _mm_load_si128((const __m128i *)(line + 32 * which + 16 * half));
    if (st == BK_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

INLINE T256 __m256i bcast4(const int8_t *p) {
    int v;
    __builtin_memcpy(&v, p, 4);
    return _mm256_set1_epi32(v);
}

/* rows_left (may be <= 0 or >= 8) of 8 floats to y */
INLINE T256 void store8(float *y, int rows_left, __m256 v) {
    if (rows_left >= 8) _mm256_storeu_ps(y, v);
    else if (rows_left > 0)
        _mm256_maskstore_ps(y, _mm256_cmpgt_epi32(_mm256_set1_epi32(rows_left), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), v);
}

/* T tokens from t, one block of 16 rows at p: y rows 16 b .. (rows_left of them) */
INLINE T256 void block_T(const cpu_q4pack *pk, const uint8_t *p, const cpu_qact *a, int t, float *y, int rows_left,
                         const bk_dtype st, const int T, const int pf) {
    const int K = pk->cols, G = pk->group, ng = K / G, lines = G / 8;
    const __m256i m0f = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    __m256 acc[TILE_MAX][2];
    for (int j = 0; j < T; j++) acc[j][0] = acc[j][1] = _mm256_setzero_ps();
    for (int g = 0; g < ng; g++, p += pk->group_bytes) {
        if (pf)
            for (int c = 0; c <= lines; c++) _mm_prefetch((const char *)p + 64 * c + PF_AHEAD, _MM_HINT_T0);
        const uint8_t *line = p + (size_t)G * 8;
        for (int h = 0; h < 2; h++) {
            __m256i sh[TILE_MAX], sl[TILE_MAX]; /* int32 sums against the hi and lo planes */
            for (int j = 0; j < T; j++) sh[j] = sl[j] = _mm256_setzero_si256();
            for (int c0 = 0; c0 < lines; c0 += 4) {
                __m256i ph[TILE_MAX], pl[TILE_MAX]; /* int16 pairs of up to four vectors */
                for (int j = 0; j < T; j++) ph[j] = pl[j] = _mm256_setzero_si256();
                for (int c = c0; c < c0 + 4 && c < lines; c++) {
                    const __m256i v = _mm256_load_si256((const __m256i *)(p + 64 * c + 32 * h));
                    const __m256i wl = _mm256_and_si256(v, m0f), wh = _mm256_and_si256(_mm256_srli_epi16(v, 4), m0f);
                    for (int j = 0; j < T; j++) {
                        const int8_t *xh = a->hi + (size_t)(t + j) * K + (size_t)g * G + 8 * c;
                        const int8_t *xl = a->lo + (size_t)(t + j) * K + (size_t)g * G + 8 * c;
                        ph[j] = _mm256_add_epi16(ph[j], _mm256_add_epi16(_mm256_maddubs_epi16(wl, bcast4(xh)),
                                                                         _mm256_maddubs_epi16(wh, bcast4(xh + 4))));
                        pl[j] = _mm256_add_epi16(pl[j], _mm256_add_epi16(_mm256_maddubs_epi16(wl, bcast4(xl)),
                                                                         _mm256_maddubs_epi16(wh, bcast4(xl + 4))));
                    }
                }
                for (int j = 0; j < T; j++) {
                    sh[j] = _mm256_add_epi32(sh[j], _mm256_madd_epi16(ph[j], ones));
                    sl[j] = _mm256_add_epi32(sl[j], _mm256_madd_epi16(pl[j], ones));
                }
            }
            const __m256 sc = line8(line, st, 0, h), bi = line8(line, st, 1, h);
            for (int j = 0; j < T; j++) {
                const size_t ti = (size_t)(t + j) * ng + g;
                const __m256 tot = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_slli_epi32(sh[j], 8), sl[j]));
                acc[j][h] = _mm256_fmadd_ps(tot, _mm256_mul_ps(sc, _mm256_set1_ps(a->d[ti])), acc[j][h]);
                acc[j][h] = _mm256_fmadd_ps(bi, _mm256_set1_ps(a->bsum[ti]), acc[j][h]);
            }
        }
    }
    for (int j = 0; j < T; j++) {
        store8(y + (size_t)j * pk->rows, rows_left, acc[j][0]);
        store8(y + (size_t)j * pk->rows + 8, rows_left - 8, acc[j][1]);
    }
}

/* one token, one block: both halves of each vector against the same four broadcasts */
INLINE T256 void block_1(const cpu_q4pack *pk, const uint8_t *p, const cpu_qact *a, int t, float *y, int rows_left,
                         const bk_dtype st) {
    const int K = pk->cols, G = pk->group, ng = K / G, lines = G / 8;
    const __m256i m0f = _mm256_set1_epi8(0x0f), ones = _mm256_set1_epi16(1);
    const int8_t *xh = a->hi + (size_t)t * K, *xl = a->lo + (size_t)t * K;
    __m256 acc0 = _mm256_setzero_ps(), acc1 = acc0;
    for (int g = 0; g < ng; g++, p += pk->group_bytes, xh += G, xl += G) {
        for (int c = 0; c <= lines; c++) _mm_prefetch((const char *)p + 64 * c + PF_AHEAD, _MM_HINT_T0);
        __m256i sh0 = _mm256_setzero_si256(), sl0 = sh0, sh1 = sh0, sl1 = sh0;
        for (int c0 = 0; c0 < lines; c0 += 4) {
            __m256i ph0 = _mm256_setzero_si256(), pl0 = ph0, ph1 = ph0, pl1 = ph0;
            for (int c = c0; c < c0 + 4 && c < lines; c++) {
                const __m256i v0 = _mm256_load_si256((const __m256i *)(p + 64 * c));
                const __m256i v1 = _mm256_load_si256((const __m256i *)(p + 64 * c + 32));
                const __m256i wl0 = _mm256_and_si256(v0, m0f), wh0 = _mm256_and_si256(_mm256_srli_epi16(v0, 4), m0f);
                const __m256i wl1 = _mm256_and_si256(v1, m0f), wh1 = _mm256_and_si256(_mm256_srli_epi16(v1, 4), m0f);
                const __m256i ha = bcast4(xh + 8 * c), hb = bcast4(xh + 8 * c + 4);
                const __m256i la = bcast4(xl + 8 * c), lb = bcast4(xl + 8 * c + 4);
                ph0 = _mm256_add_epi16(ph0, _mm256_add_epi16(_mm256_maddubs_epi16(wl0, ha), _mm256_maddubs_epi16(wh0, hb)));
                ph1 = _mm256_add_epi16(ph1, _mm256_add_epi16(_mm256_maddubs_epi16(wl1, ha), _mm256_maddubs_epi16(wh1, hb)));
                pl0 = _mm256_add_epi16(pl0, _mm256_add_epi16(_mm256_maddubs_epi16(wl0, la), _mm256_maddubs_epi16(wh0, lb)));
                pl1 = _mm256_add_epi16(pl1, _mm256_add_epi16(_mm256_maddubs_epi16(wl1, la), _mm256_maddubs_epi16(wh1, lb)));
            }
            sh0 = _mm256_add_epi32(sh0, _mm256_madd_epi16(ph0, ones));
            sh1 = _mm256_add_epi32(sh1, _mm256_madd_epi16(ph1, ones));
            sl0 = _mm256_add_epi32(sl0, _mm256_madd_epi16(pl0, ones));
            sl1 = _mm256_add_epi32(sl1, _mm256_madd_epi16(pl1, ones));
        }
        const uint8_t *line = p + (size_t)G * 8;
        const __m256 dg = _mm256_set1_ps(a->d[(size_t)t * ng + g]), xg = _mm256_set1_ps(a->bsum[(size_t)t * ng + g]);
        const __m256 tot0 = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_slli_epi32(sh0, 8), sl0));
        const __m256 tot1 = _mm256_cvtepi32_ps(_mm256_add_epi32(_mm256_slli_epi32(sh1, 8), sl1));
        acc0 = _mm256_fmadd_ps(tot0, _mm256_mul_ps(line8(line, st, 0, 0), dg), acc0);
        acc0 = _mm256_fmadd_ps(line8(line, st, 1, 0), xg, acc0);
        acc1 = _mm256_fmadd_ps(tot1, _mm256_mul_ps(line8(line, st, 0, 1), dg), acc1);
        acc1 = _mm256_fmadd_ps(line8(line, st, 1, 1), xg, acc1);
    }
    store8(y, rows_left, acc0);
    store8(y + 8, rows_left - 8, acc1);
}

/* one token over blocks [b0, b1): one stream */
INLINE T256 void one_token(const cpu_q4pack *pk, const cpu_qact *a, float *y, int b0, int b1, int t, const bk_dtype st) {
    float *yt = y + (size_t)t * pk->rows;
    for (int b = b0; b < b1; b++)
        block_1(pk, pk->data + (size_t)b * pk->block_bytes, a, t, yt + (size_t)b * 16, pk->rows - 16 * b, st);
}

CPU_Q4P_WALK(T256, cpu_q4p_qmm_avx2, one_token, block_1, block_T)
#endif
