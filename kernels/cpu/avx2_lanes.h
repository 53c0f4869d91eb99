/* The lanes of an AVX2 vector of 8 floats: reductions across them and loads and stores of the
 * first n, shared by the AVX2 levels' files (q_avx2.c, q4_pack_avx2.c, f32_avx2.c). */
#ifndef STRATA_AVX2_LANES_H
#define STRATA_AVX2_LANES_H

#include <immintrin.h>

static inline __attribute__((always_inline, target("avx2"))) float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    return _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)));
}

static inline __attribute__((always_inline, target("avx2"))) float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_movehdup_ps(m)));
}

/* floats [0, n) of p (n <= 8), the other lanes `fill` */
static inline __attribute__((always_inline, target("avx2"))) __m256 load8_part(const float *p, int n, float fill) {
    if (n >= 8) return _mm256_loadu_ps(p);
    float b[8];
    for (int i = 0; i < 8; i++) b[i] = i < n ? p[i] : fill;
    return _mm256_loadu_ps(b);
}

/* lanes [0, n) of v to p (n may be <= 0 or >= 8) */
static inline __attribute__((always_inline, target("avx2"))) void store8(float *p, int n, __m256 v) {
    if (n >= 8) _mm256_storeu_ps(p, v);
    else if (n > 0) _mm256_maskstore_ps(p, _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)), v);
}

#endif
