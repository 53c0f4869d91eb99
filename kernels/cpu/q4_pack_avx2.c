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

#include "kernels/cpu/avx2_lanes.h"
#include "kernels/cpu/cpu_kern.h"

#define T256 __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))
#define TILE_MAX CPU_Q4P_TILE
#define PF_AHEAD 2048 /* bytes the one-stream reads prefetch ahead (decode and short batches) */

/* ---- activations: cpu_q4p_quant's numbers in AVX2 ---- */

/* 32 int32 (four vectors in order) to 32 int8, saturating; the packs interleave by 128-bit lane,
 * the dword permute restores the order */
INLINE T256 __m256i codes32(__m256i a, __m256i b, __m256i c, __m256i d) {
    __m256i p = _mm256_packs_epi16(_mm256_packs_epi32(a, b), _mm256_packs_epi32(c, d));
    return _mm256_permutevar8x32_epi32(p, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
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

/* the AVX2 copy: pmaddubsw into int16 pairs of four vectors (at most 30720), pmaddwd to int32 */
#define Q4P2_ATTR T256
#define Q4P2_NAME(x) x##_avx2
#define PAIR(acc, wl, wh, xa, xb) \
    _mm256_add_epi16((acc), _mm256_add_epi16(_mm256_maddubs_epi16((wl), (xa)), _mm256_maddubs_epi16((wh), (xb))))
#define WIDEN(s, acc) _mm256_add_epi32((s), _mm256_madd_epi16((acc), _mm256_set1_epi16(1)))
#include "kernels/cpu/q4_pack_avx2_impl.h"
#undef Q4P2_ATTR
#undef Q4P2_NAME
#undef PAIR
#undef WIDEN

/* the AVX-VNNI copy (Intel client CPUs from Alder Lake: AVX-VNNI on 256 bits, no AVX-512):
 * vpdpbusd straight into int32 */
#define Q4P2_ATTR __attribute__((target("avx2,fma,f16c,avxvnni")))
#define Q4P2_NAME(x) x##_vnni
#define PAIR(acc, wl, wh, xa, xb) _mm256_dpbusd_avx_epi32(_mm256_dpbusd_avx_epi32((acc), (wl), (xa)), (wh), (xb))
#define WIDEN(s, acc) _mm256_add_epi32((s), (acc))
#include "kernels/cpu/q4_pack_avx2_impl.h"
#undef Q4P2_ATTR
#undef Q4P2_NAME
#undef PAIR
#undef WIDEN
#endif
