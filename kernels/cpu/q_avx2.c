/* The AVX2 level (with FMA and F16C): pmaddubsw multiplies unsigned weight codes by signed
 * activation codes into int16 pairs, pmaddwd adds the pairs into int32 lanes. A pair of 4-bit
 * products stays under 2 * 15 * 128, far from int16 saturation; 8-bit codes up to 255 would
 * saturate, so they are recentred to q - 128 and multiplied sign-magnitude (|q-128| <= 128,
 * |x| <= 127: a pair <= 32512), with 128 * sum(x) added back. */
#if defined(__x86_64__)
#include <immintrin.h>

#include "kernels/cpu/avx2_lanes.h"
#include "kernels/cpu/cpu_kern.h"

#define T256 __attribute__((target("avx2,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))

INLINE T256 __m256i dot_u4(__m256i w, __m256i x) {
    return _mm256_madd_epi16(_mm256_maddubs_epi16(w, x), _mm256_set1_epi16(1));
}

/* w holds codes - 128 as signed bytes */
INLINE T256 __m256i dot_s8(__m256i w, __m256i x) {
    __m256i p = _mm256_maddubs_epi16(_mm256_sign_epi8(w, w), _mm256_sign_epi8(x, w));
    __m256i s = _mm256_maddubs_epi16(_mm256_set1_epi8(1), x);
    return _mm256_add_epi32(_mm256_madd_epi16(p, _mm256_set1_epi16(1)),
                            _mm256_slli_epi32(_mm256_madd_epi16(s, _mm256_set1_epi16(1)), 7));
}

INLINE T256 float scale_at(const void *p, bk_dtype t, size_t i) {
    if (t == BK_F32) return ((const float *)p)[i];
    uint16_t h = ((const uint16_t *)p)[i];
    if (t == BK_F16) return _cvtsh_ss(h);
    return bk_bf16_to_f32(h);
}

/* 16 or 32 bytes from p, zero-extended to 32 */
INLINE T256 __m256i load_part(const void *p, int bytes) {
    if (bytes == 32) return _mm256_loadu_si256((const __m256i *)p);
    return _mm256_inserti128_si256(_mm256_setzero_si256(), _mm_loadu_si128((const __m128i *)p), 0);
}

/* A chunk is 32 weight bytes: 64 elements (2 blocks) at 4 bits, 32 (1 block) at 8 bits.
 * At 4 bits lane j covers word j, block j/4; at 8 bits the chunk is one block. */
INLINE T256 void qtile(const bk_weight *w, const cpu_qact *a, float *y, int r, int t, const int R,
                       const int T, const int bits, const int planes) {
    const int K = w->cols, G = w->group_size, nb = K / 32, ng = K / G;
    const size_t row_bytes = (size_t)K * bits / 8;
    const __m256i m0f = _mm256_set1_epi8(0x0f), flip = _mm256_set1_epi8((char)0x80);
    __m256 acc[4][2];
    float bacc[4][2] = {{0}};
    for (int i = 0; i < R; i++)
        for (int j = 0; j < T; j++) acc[i][j] = _mm256_setzero_ps();
    const int bpc = bits == 4 ? 2 : 1;
    for (int b = 0; b < nb; b += bpc) {
        int nblk = nb - b < bpc ? nb - b : bpc;
        int bytes = nblk * 32 * bits / 8;
        size_t woff = (size_t)b * 32 * bits / 8;
        __m256i wl[4], wh[4];
        __m256 sl[4];
        for (int i = 0; i < R; i++) {
            const uint8_t *wr = (const uint8_t *)w->w->data + (size_t)(r + i) * row_bytes + woff;
            _mm_prefetch((const char *)(wr + 2048), _MM_HINT_T0); /* as the AVX-512 level: rows interleave */
            __m256i wv = load_part(wr, bytes);
            size_t gi = (size_t)(r + i) * ng;
            if (bits == 4) {
                wl[i] = _mm256_and_si256(wv, m0f);
                wh[i] = _mm256_and_si256(_mm256_srli_epi16(wv, 4), m0f);
                /* lanes 0-3 block b, lanes 4-7 block b+1 */
                float s0 = scale_at(w->scales->data, w->sdtype, gi + (size_t)b * 32 / G);
                float s1 = nblk == 2 ? scale_at(w->scales->data, w->sdtype, gi + (size_t)(b + 1) * 32 / G) : 0.0f;
                sl[i] = _mm256_setr_ps(s0, s0, s0, s0, s1, s1, s1, s1);
            } else {
                wl[i] = _mm256_xor_si256(wv, flip);
                sl[i] = _mm256_set1_ps(scale_at(w->scales->data, w->sdtype, gi + (size_t)b * 32 / G));
            }
        }
        for (int j = 0; j < T; j++) {
            size_t tb = (size_t)(t + j) * nb + b;
            const int8_t *xh = a->hi + (size_t)(t + j) * K, *xl = planes == 2 ? a->lo + (size_t)(t + j) * K : NULL;
            __m256 dl;
            if (bits == 4) {
                float d0 = a->d[tb], d1 = nblk == 2 ? a->d[tb + 1] : 0.0f;
                dl = _mm256_setr_ps(d0, d0, d0, d0, d1, d1, d1, d1);
            } else {
                dl = _mm256_set1_ps(a->d[tb]);
            }
            size_t xoff = bits == 4 ? (size_t)16 * b : (size_t)32 * b;
            for (int i = 0; i < R; i++) {
                __m256i ia, ib = _mm256_setzero_si256();
                if (bits == 4) {
                    ia = _mm256_add_epi32(dot_u4(wl[i], load_part(xh + xoff, bytes)), dot_u4(wh[i], load_part(xh + K / 2 + xoff, bytes)));
                    if (planes == 2)
                        ib = _mm256_add_epi32(dot_u4(wl[i], load_part(xl + xoff, bytes)), dot_u4(wh[i], load_part(xl + K / 2 + xoff, bytes)));
                } else {
                    ia = dot_s8(wl[i], load_part(xh + xoff, 32));
                    if (planes == 2) ib = dot_s8(wl[i], load_part(xl + xoff, 32));
                }
                if (planes == 2) ia = _mm256_add_epi32(_mm256_slli_epi32(ia, 8), ib);
                acc[i][j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(ia), _mm256_mul_ps(sl[i], dl), acc[i][j]);
            }
        }
    }
    /* bias term from the exact block sums */
    for (int i = 0; i < R; i++)
        for (int g = 0; g < ng; g++) {
            float bias = scale_at(w->biases->data, w->sdtype, (size_t)(r + i) * ng + g);
            for (int j = 0; j < T; j++) bacc[i][j] += bias * cpu_group_xsum(a, t + j, g, G);
        }
    for (int j = 0; j < T; j++)
        for (int i = 0; i < R; i++) y[(size_t)(t + j) * w->rows + r + i] = hsum8(acc[i][j]) + bacc[i][j];
}

CPU_QMM_LEVEL(T256, qmm_avx2, qtile)

/* 8 weights from element i, as f32; n < 8 reads only n */
INLINE T256 __m256 load_w8(const void *p, bk_dtype t, size_t i, int n) {
    if (n < 8) {
        float tmp[8] = {0};
        for (int k = 0; k < n; k++) tmp[k] = bk_load_float(p, t, i + (size_t)k);
        return _mm256_loadu_ps(tmp);
    }
    if (t == BK_F32) return _mm256_loadu_ps((const float *)p + i);
    __m128i h = _mm_loadu_si128((const __m128i *)((const uint16_t *)p + i));
    if (t == BK_F16) return _mm256_cvtph_ps(h);
    return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}

static T256 void dmm_avx2(const bk_weight *w, const float *x, float *y, int r0, int r1, int t0, int t1) {
    const int K = w->cols;
    for (int r = r0; r < r1; r++)
        for (int t = t0; t < t1; t++) {
            __m256 acc = _mm256_setzero_ps();
            for (int c = 0; c < K; c += 8) {
                int n = K - c < 8 ? K - c : 8;
                acc = _mm256_fmadd_ps(load_w8(w->w->data, w->wdtype, (size_t)r * K + c, n), load8_part(x + (size_t)t * K + c, n, 0.0f), acc);
            }
            y[(size_t)t * w->rows + r] = hsum8(acc);
        }
}

static T256 float dot_avx2(const float *a, const float *b, int n) {
    __m256 acc = _mm256_setzero_ps();
    int i = 0;
    for (; i + 8 <= n; i += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc);
    float s = hsum8(acc);
    for (; i < n; i++) s += a[i] * b[i];
    return s;
}

static T256 void axpy_avx2(float *y, float a, const float *x, int n) {
    __m256 av = _mm256_set1_ps(a);
    int i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(av, _mm256_loadu_ps(x + i), _mm256_loadu_ps(y + i)));
    for (; i < n; i++) y[i] += a * x[i];
}

/* the ops both AVX2 levels share */
#define AVX2_OPS                                                                                                        \
    .quant = cpu_quant_portable, .qmm = qmm_avx2, .dmm = dmm_avx2, .dot = dot_avx2, .axpy = axpy_avx2,                  \
    .attn = cpu_attn_avx2, .attn_blk = cpu_attn_blk_avx2, .to_f16 = cpu_to_f16_avx2, .swiglu = cpu_swiglu_avx2,          \
    .rmsnorm = cpu_rmsnorm_avx2, .pk_ok = cpu_q4p_ok, .pk_quant = cpu_q4p_quant_avx2

const cpu_kernels cpu_kern_avx2 = {.name = "avx2", AVX2_OPS, .pk_qmm = cpu_q4p_qmm_avx2};
/* with AVX-VNNI: the repacked 4-bit kernel on vpdpbusd (q4_pack_avx2.c) */
const cpu_kernels cpu_kern_avx2_vnni = {.name = "avx2-vnni", AVX2_OPS, .pk_qmm = cpu_q4p_qmm_vnni};
#endif
