/* The AVX-512 4-bit path for rows of K % 128 == 0 and groups of 32, 64 or 128 (every shape of
 * the supported models): activations in chunks of 128 with one scale each, and a weight loop
 * that spends ~13 vector ops per 64 weight bytes (the planar layout of q_avx512.c spent ~17).
 *
 * Chunk layout (cpu_qact.layout == CPU_QACT_CHUNK128): token t, chunk c (elements 128c ..
 * 128c+127) holds 256 bytes at hi + (t * K/128 + c) * 256:
 *   [  0,  64) hi codes of the even elements 128c + 2i     [ 64, 128) hi codes of the odd ones
 *   [128, 192) lo codes of the even elements               [192, 256) lo codes of the odd ones
 * so the 64 weight bytes of a row's chunk meet their activations in four aligned loads: the low
 * nibble of byte i is element 2i, the high nibble element 2i+1, and vpdpbusd lane j adds the
 * bytes 4j .. 4j+3, i.e. elements 8j .. 8j+7 of the chunk. d[t * K/128 + c] is the chunk's scale
 * (x ~ d * (256 hi + lo)); bsum keeps the exact float sum of every 32 elements, as the planar
 * layout does, for the bias term.
 *
 * Per chunk and row: acc += float(256 * dot(q, hi) + dot(q, lo)) * (scale of the lane's group * d)
 * where the lane's group scale comes from one permute of 16 group scales converted once per 16
 * groups (for a single token the chunk scales d are folded into those 16 once, saving the
 * multiply per chunk). The bias term sum_g bias_g * sum_{c in g} x_c runs once per 16 groups.
 * Tiles are 4 rows x 1-4 tokens: a short batch (2-8 tokens, speculative verify) runs in tiles of
 * 2-4 tokens, each weight byte split once a tile. */
#if defined(__x86_64__)
#include <immintrin.h>

#include "kernels/cpu/cpu_kern.h"

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c,gfni")))
#define INLINE static inline __attribute__((always_inline))

/* software prefetch distance on each weight row stream; the hardware prefetcher stops at 4 KB
 * page boundaries and a few row streams at once outrun it */
#ifndef Q4_PREFETCH
#define Q4_PREFETCH 1024
#endif
#ifndef Q4_HINT
#define Q4_HINT _MM_HINT_T0
#endif
#ifndef Q4_ROWS
#define Q4_ROWS 4
#endif
#define MAX_GROUPS 2048 /* K / 32 for K <= 65536: the stack buffer of group sums */

int cpu_q4c_ok(int bits, int cols, int group_size, int planes) {
    return bits == 4 && planes == 2 && cols % 128 == 0 && cols <= 32 * MAX_GROUPS &&
           (group_size == 32 || group_size == 64 || group_size == 128);
}

/* ---- activations ---- */

void T512 cpu_q4c_quant(const float *x, cpu_qact *a, int t0, int t1) {
    const int K = a->cols, nc = K / 128, nb = K / 32;
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    for (int t = t0; t < t1; t++) {
        const float *xt = x + (size_t)t * K;
        for (int c = 0; c < nc; c++) {
            const float *xc = xt + 128 * c;
            int8_t *q = a->hi + ((size_t)t * nc + c) * 256;
            __m512 v[8], m = _mm512_setzero_ps();
            for (int i = 0; i < 8; i++) {
                v[i] = _mm512_loadu_ps(xc + 16 * i);
                m = _mm512_max_ps(m, _mm512_and_ps(v[i], sign));
            }
            for (int b = 0; b < 4; b++) a->bsum[(size_t)t * nb + 4 * c + b] = _mm512_reduce_add_ps(_mm512_add_ps(v[2 * b], v[2 * b + 1]));
            float amax = _mm512_reduce_max_ps(m), inv = amax > 0.0f ? 127.0f / amax : 0.0f;
            a->d[(size_t)t * nc + c] = amax / (127.0f * 256.0f);
            for (int p = 0; p < 4; p++) { /* pairs of vectors: 32 elements, 16 even and 16 odd */
                __m512 s0 = _mm512_mul_ps(v[2 * p], _mm512_set1_ps(inv)), s1 = _mm512_mul_ps(v[2 * p + 1], _mm512_set1_ps(inv));
                __m512 r0 = _mm512_roundscale_ps(s0, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                __m512 r1 = _mm512_roundscale_ps(s1, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
                __m512i h0 = _mm512_cvtps_epi32(r0), h1 = _mm512_cvtps_epi32(r1);
                __m512i l0 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(s0, r0), _mm512_set1_ps(256.0f)));
                __m512i l1 = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(s1, r1), _mm512_set1_ps(256.0f)));
                _mm_storeu_si128((__m128i *)(q + 16 * p), _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(h0, even, h1)));
                _mm_storeu_si128((__m128i *)(q + 64 + 16 * p), _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(h0, odd, h1)));
                _mm_storeu_si128((__m128i *)(q + 128 + 16 * p), _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(l0, even, l1)));
                _mm_storeu_si128((__m128i *)(q + 192 + 16 * p), _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(l0, odd, l1)));
            }
        }
    }
}

/* ---- weights ---- */

/* up to 16 values of a scale/bias array from index i (n of them), as f32 lanes */
INLINE T512 __m512 load16(const void *p, bk_dtype t, size_t i, __mmask16 m) {
    if (t == BK_F32) return _mm512_maskz_loadu_ps(m, (const float *)p + i);
    __m256i h = _mm256_maskz_loadu_epi16(m, (const uint16_t *)p + i);
    if (t == BK_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* group sums of token t's activations, from the 32-element sums */
static void group_sums(const cpu_qact *a, int t, int G, float *gs) {
    const int nb = a->cols / 32, bpg = G / 32;
    const float *bs = a->bsum + (size_t)t * nb;
    for (int g = 0; g < nb / bpg; g++) {
        float s = 0.0f;
        for (int b = 0; b < bpg; b++) s += bs[g * bpg + b];
        gs[g] = s;
    }
}

/* R rows x T tokens; every weight byte is loaded and split once per tile */
INLINE T512 void tile(const bk_weight *w, const cpu_qact *a, float *y, const float *gs, const float *gd, int r, int t,
                      const int R, const int T) {
    const int K = w->cols, G = w->group_size, ng = K / G, nc = K / 128, cps = G / 8; /* chunks a span of 16 groups */
    const size_t row_bytes = (size_t)K / 2;
    const __m512i m0f = _mm512_set1_epi8(0x0f), zero = _mm512_setzero_si512();
    /* lane j of chunk cl of a span reads group cl * 128/G + 8j/G of the span */
    const __m512i lane_group = _mm512_srli_epi32(_mm512_mullo_epi32(_mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0), _mm512_set1_epi32(8)),
                                                 G == 32 ? 5 : G == 64 ? 6 : 7);
    const __m512i step = _mm512_set1_epi32(128 / G);
    const uint8_t *wr[4];
    __m512 acc[4][4];
    for (int i = 0; i < R; i++) wr[i] = (const uint8_t *)w->w->data + (size_t)(r + i) * row_bytes;
    for (int i = 0; i < R; i++)
        for (int j = 0; j < T; j++) acc[i][j] = _mm512_setzero_ps();
    for (int g0 = 0; g0 < ng; g0 += 16) {
        const int ngs = ng - g0 < 16 ? ng - g0 : 16;
        const __mmask16 gm = (__mmask16)((1u << ngs) - 1);
        __m512 sv[4];
        for (int i = 0; i < R; i++) {
            size_t gi = (size_t)(r + i) * ng + g0;
            sv[i] = load16(w->scales->data, w->sdtype, gi, gm);
            /* one token: the chunk scales fold into the group scales once per span, not per chunk */
            if (T == 1) sv[i] = _mm512_mul_ps(sv[i], _mm512_maskz_loadu_ps(gm, gd + g0));
            __m512 bv = load16(w->biases->data, w->sdtype, gi, gm);
            for (int j = 0; j < T; j++) acc[i][j] = _mm512_fmadd_ps(bv, _mm512_maskz_loadu_ps(gm, gs + (size_t)j * MAX_GROUPS + g0), acc[i][j]);
        }
        const int c0 = g0 * G / 128, c1 = c0 + cps < nc ? c0 + cps : nc;
        __m512i idx = lane_group;
        for (int c = c0; c < c1; c++, idx = _mm512_add_epi32(idx, step)) {
            __m512i wl[4], wh[4];
            __m512 sl[4];
            /* past its row's end a stream prefetches the same row of the next tile */
            const size_t pf = 64 * (size_t)c + Q4_PREFETCH + (64 * (size_t)c + Q4_PREFETCH >= row_bytes ? (size_t)(R - 1) * row_bytes : 0);
            for (int i = 0; i < R; i++) {
                if (Q4_PREFETCH) _mm_prefetch((const char *)(wr[i] + pf), Q4_HINT);
                __m512i wv = _mm512_loadu_si512(wr[i] + 64 * (size_t)c);
                wl[i] = _mm512_and_si512(wv, m0f);
#ifdef Q4_GFNI
                wh[i] = _mm512_gf2p8affine_epi64_epi8(wv, _mm512_set1_epi64(0x1020408000000000ll), 0);
#else
                wh[i] = _mm512_and_si512(_mm512_srli_epi16(wv, 4), m0f);
#endif
                sl[i] = _mm512_permutexvar_ps(idx, sv[i]);
            }
            for (int j = 0; j < T; j++) {
                const int8_t *q = a->hi + ((size_t)(t + j) * nc + c) * 256;
                const __m512i he = _mm512_loadu_si512(q), ho = _mm512_loadu_si512(q + 64);
                const __m512i le = _mm512_loadu_si512(q + 128), lo = _mm512_loadu_si512(q + 192);
                const __m512 d = _mm512_set1_ps(a->d[(size_t)(t + j) * nc + c]);
                for (int i = 0; i < R; i++) {
                    __m512i ia = _mm512_dpbusd_epi32(zero, wl[i], he);
                    ia = _mm512_dpbusd_epi32(ia, wh[i], ho);
                    ia = _mm512_slli_epi32(ia, 8);
                    ia = _mm512_dpbusd_epi32(ia, wl[i], le);
                    ia = _mm512_dpbusd_epi32(ia, wh[i], lo);
                    acc[i][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(ia), T == 1 ? sl[i] : _mm512_mul_ps(sl[i], d), acc[i][j]);
                }
            }
        }
    }
    for (int j = 0; j < T; j++)
        for (int i = 0; i < R; i++) y[(size_t)(t + j) * w->rows + r + i] = _mm512_reduce_add_ps(acc[i][j]);
}

/* rows [r0, r1) of tokens [t, t + T): the tile shape as a constant so that each one compiles to
 * its own register allocation */
#define ROWS_OF(T)                                                                       \
    do {                                                                                 \
        int r = r0;                                                                      \
        for (; r + Q4_ROWS <= r1; r += Q4_ROWS) tile(w, a, y, gs, gd, r, t, Q4_ROWS, T); \
        for (; r < r1; r++) tile(w, a, y, gs, gd, r, t, 1, T);                           \
    } while (0)

void T512 cpu_q4c_qmm(const bk_weight *w, const cpu_qact *a, float *y, int r0, int r1, int t0, int t1) {
    float gs[4 * MAX_GROUPS], gd[MAX_GROUPS];
    const int G = w->group_size, nc = w->cols / 128;
    for (int t = t0; t < t1;) {
        /* tokens 4 at a time; a short batch (speculative verify: 2 - 8 tokens) in tiles of 2 or 3
         * rather than single tokens, so each weight byte is split once for as many tokens as fit */
        int rem = t1 - t, T = rem >= 8 || rem == 4 ? 4 : rem > 4 ? (rem + 1) / 2 : rem;
        for (int j = 0; j < T; j++) group_sums(a, t + j, w->group_size, gs + (size_t)j * MAX_GROUPS);
        if (T == 1) /* the chunk scale of every group's chunk */
            for (int g = 0; g < w->cols / G; g++) gd[g] = a->d[(size_t)t * nc + g * G / 128];
        switch (T) {
        case 4: ROWS_OF(4); break;
        case 3: ROWS_OF(3); break;
        case 2: ROWS_OF(2); break;
        default: ROWS_OF(1); break;
        }
        t += T;
    }
}
#endif
