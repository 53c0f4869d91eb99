/* Reductions across the 8 lanes of an AVX2 vector, shared by the AVX2 levels' files (q_avx2.c,
 * q4_pack_avx2.c, f32_avx2.c). */
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

#endif
