/* A scale line of a repacked 4-bit weight (cpu_q4pack, cpu_kern.h): the 16 scales (which = 0) or
 * biases (which = 1) of a group of a 16-row block, as f32. Shared by the AVX-512 kernels that read
 * the pack (q4_pack_avx512.c, q4_amx.c); the line is 64-byte aligned. */
#ifndef STRATA_Q4_LINE_H
#define STRATA_Q4_LINE_H

#include <immintrin.h>
#include <stdint.h>

#include "kernels/backend.h"

static inline __attribute__((always_inline, target("avx512f,f16c"))) __m512 q4_line16(const uint8_t *p, bk_dtype st,
                                                                                      int which) {
    if (st == BK_F32) return _mm512_load_ps((const float *)p + 16 * which);
    __m256i h = _mm256_load_si256((const __m256i *)(p + 32 * which));
    if (st == BK_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

#endif
