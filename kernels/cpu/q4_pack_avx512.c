/* The AVX-512 VNNI kernel over repacked 4-bit weights (cpu_q4pack, cpu_kern.h): 16 rows a
 * vector, activations broadcast in natural order.
 *
 * Activations (CPU_QACT_NATURAL): token t, group g of the weight (a->block = group elements)
 * has one scale d = max|x| / (127 * 256) and two int8 planes in natural order, x ~ d * (256 hi +
 * lo) (~16-bit activations, needed for the contract's 1e-3; see cpu_kern.h). bsum holds the
 * exact float sum of each group for the bias term.
 *
 * Per 64 weight bytes v (16 rows x 8 columns 8c..8c+7) and token:
 *   wl = v & 0x0f (columns 8c..8c+3), wh = v & 0xf0 (columns 8c+4..8c+7, times 16)
 *   A_h += dpbusd(wl, bcst hi[8c..8c+3])   B_h += dpbusd(wh, bcst hi[8c+4..8c+7])
 *   A_l, B_l the same with the lo plane
 * and once per group: y += float(256 (16 A_h + B_h) + 16 A_l + B_l) * (scale * d / 16)
 *                           + bias * sum_{c in g} x_c
 * int32 cannot overflow: |16 A + B| <= 16 * 15 * 128 * group <= 3.9e6 for group 128, times 257.
 * That is 2 splits + 4 dpbusd per 64 bytes and token, where q4_avx512.c spends ~12 ops.
 *
 * Tiles: one token uses 8 accumulators (even and odd vectors apart): vpdpbusd has a latency of
 * 4 cycles at 2 a cycle on Zen 5 (measured), so fewer than 8 chains would bound throughput.
 * Two or more tokens (short batches, prefill) go through two blocks at once (block_2T), each
 * activation broadcast feeding both: on an Intel Ice Lake Xeon a broadcast from memory issues at
 * one a cycle, half the dpbusd rate, and the one-block tile (block_T, now only a last odd block)
 * ran at that bound, ~140 GFLOP/s a core against ~215 for the pair (CPU round 14). The dpbusd
 * count per 64 bytes and token is the same at every tile size: short batches and prefill are
 * compute-bound (~300 GFLOP/s a core on Zen 5, ~70% of its dpbusd peak, measured with block_T). */
#if defined(__x86_64__)
#include <immintrin.h>
#include <string.h>

#include "kernels/cpu/cpu_kern.h"
#include "kernels/cpu/q4_line.h"

#define T512 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vnni,fma,f16c")))
#define INLINE static inline __attribute__((always_inline))

/* software prefetch distances on the block stream, in bytes (alternating runs, 7b shapes from
 * DRAM, 2026-11-23). Short batches (2-8 tokens): without it n = 4 read 19 GB/s, 4 KB ahead into
 * L1 29-33 GB/s; 8 or 16 KB into L2 were no better. One token: on AMD Zen 5 16 KB ahead into L2
 * read 10-30% more than hardware prefetch alone (down 3584 x 18944 most: 1 thread 1.1-1.8 ms
 * against 1.9-2.5 ms), 64 KB less; 4 KB into L1 was in between. On an Intel Xeon with AMX
 * (2026-12-06, 1 thread from DRAM, 3 runs) 16 KB read 13.5-14.6 GB/s at the 7b shapes and 3 KB
 * 14.5-15.4 (q/o), 15.0-15.9 (gate), 16.5-17.8 (down); 2.5-3.5 KB alike, 2 KB, 4 KB and 5 KB and
 * more worse: the distance is the vendor's (pf1_bytes). Q4P_PREFETCH1 fixes it at build time.
 * The prefetches run with the code vectors, group/8 lines a group, and so stepped over each
 * group's scale line (1 line in 9 at G = 64) until 2026-12-06; prefetching it too (Intel AMX VM,
 * same binary alternating, 7b shapes from DRAM, 2 runs each): 1 thread q/o 15.7-16.2 -> 16.3-16.4
 * GB/s, lm_head 15.9-16.0 -> 16.2-16.3; 2 threads q/o 29.7-30.4 -> 30.5-31.1, lm_head 31.6-31.8 ->
 * 32.6-32.7, k/v 26.6-26.9 -> 27.4-27.5. */
#ifndef Q4P_PREFETCH
#define Q4P_PREFETCH 4096
#endif

static int pf1_bytes(void) {
#ifdef Q4P_PREFETCH1
    return Q4P_PREFETCH1;
#else
    static int v; /* set once; every thread computes the same value */
    if (!v) {
        __builtin_cpu_init();
        v = __builtin_cpu_is("intel") ? 3072 : 16384;
    }
    return v;
#endif
}
/* at most this many tokens: one tile (4 x 4 int32 accumulators + 4 float sums in registers) */
#define TILE_MAX CPU_Q4P_TILE

int cpu_q4p_ok(const bk_weight *w, int planes) {
    int G = w->group_size;
    return w->bits == 4 && planes == 2 && (G == 32 || G == 64 || G == 128) && w->cols % G == 0 && w->rows > 0 &&
           (w->sdtype == BK_F16 || w->sdtype == BK_BF16 || w->sdtype == BK_F32);
}

/* ---- activations ---- */

/* the int8 codes of 64 floats (four vectors) in order: packs saturate as vpmovsdb does, and the
 * permute undoes their lane interleave (dword 4k + s of the packs is dword 4s + k of the codes) */
INLINE T512 __m512i codes64(__m512i a, __m512i b, __m512i c, __m512i d) {
    const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
    __m512i p = _mm512_packs_epi16(_mm512_packs_epi32(a, b), _mm512_packs_epi32(c, d));
    return _mm512_permutexvar_epi32(order, p);
}

/* hi = round(s), lo = round((s - hi) 256) for s = x * inv; the rounding is cvtps2dq's (nearest
 * even, the default mode) */
INLINE T512 void split16(__m512 s, __m512i *hi, __m512i *lo) {
    *hi = _mm512_cvtps_epi32(s);
    *lo = _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_sub_ps(s, _mm512_cvtepi32_ps(*hi)), _mm512_set1_ps(256.0f)));
}

/* Per group: scale d = amax / (127 256), bsum = the exact float sum; codes in two planes. A run
 * of QUANT_RUN elements at a time: its groups' scales, then its codes 64 at a time (a group of 32
 * shares a run of 64 with the next; the 1/scale comes per vector of 16). Decode quantizes once a
 * matmul job, on the caller while the workers wait: 3584 columns took 0.84 us with per-vector
 * vpmovsdb stores, 0.61 us so (one thread, in L1, 2026-12-06). */
#define QUANT_RUN 1024 /* a multiple of every group (32, 64, 128: cpu_q4p_ok) */
void T512 cpu_q4p_quant(const float *x, cpu_qact *a, int t0, int t1) {
    const int K = a->cols, G = a->block, ng = K / G;
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    float inv[QUANT_RUN / 16];
    for (int t = t0; t < t1; t++)
        for (int c0 = 0; c0 < K; c0 += QUANT_RUN) {
            const int n = K - c0 < QUANT_RUN ? K - c0 : QUANT_RUN;
            const float *xc = x + (size_t)t * K + c0;
            for (int e = 0; e < n; e += G) {
                __m512 m = _mm512_setzero_ps(), s = _mm512_setzero_ps();
                for (int i = 0; i < G; i += 16) {
                    __m512 v = _mm512_loadu_ps(xc + e + i);
                    m = _mm512_max_ps(m, _mm512_and_ps(v, sign));
                    s = _mm512_add_ps(s, v);
                }
                float amax = _mm512_reduce_max_ps(m), iv = amax > 0.0f ? 127.0f / amax : 0.0f;
                const size_t gi = (size_t)t * ng + (size_t)(c0 + e) / G;
                a->d[gi] = amax / (127.0f * 256.0f);
                a->bsum[gi] = _mm512_reduce_add_ps(s);
                for (int i = 0; i < G; i += 16) inv[(e + i) / 16] = iv;
            }
            int8_t *hi = a->hi + (size_t)t * K + c0, *lo = a->lo + (size_t)t * K + c0;
            int i = 0;
            for (; i + 64 <= n; i += 64) {
                __m512i h[4], l[4];
                for (int k = 0; k < 4; k++)
                    split16(_mm512_mul_ps(_mm512_loadu_ps(xc + i + 16 * k), _mm512_set1_ps(inv[i / 16 + k])), &h[k], &l[k]);
                _mm512_storeu_si512(hi + i, codes64(h[0], h[1], h[2], h[3]));
                _mm512_storeu_si512(lo + i, codes64(l[0], l[1], l[2], l[3])); /* +-128 saturates: 1/256 of a step */
            }
            for (; i < n; i += 16) { /* a run of a multiple of 32, not of 64 */
                __m512i h, l;
                split16(_mm512_mul_ps(_mm512_loadu_ps(xc + i), _mm512_set1_ps(inv[i / 16])), &h, &l);
                _mm_storeu_si128((__m128i *)(hi + i), _mm512_cvtsepi32_epi8(h));
                _mm_storeu_si128((__m128i *)(lo + i), _mm512_cvtsepi32_epi8(l));
            }
        }
}

/* ---- weights ---- */

/* acc += dpbusd(w, four activation codes at p broadcast to every lane). Inline asm because gcc
 * 12 keeps a separate vpbroadcastd and copies accumulators around the loop; the embedded
 * {1to16} broadcast makes it one instruction with a memory operand. */
typedef struct {
    int8_t b[4];
} codes4;
#define DPB(acc, w, p) __asm__("vpdpbusd %2%{1to16%}, %1, %0" : "+v"(acc) : "v"(w), "m"(*(const codes4 *)(p)))

/* one token: two code vectors split into nibbles, v0 meeting the activations at column offset o0
 * into the accumulators ah0, bh0, al0, bl0 and v1 at o1 into ah1 .. bl1 (names of the calling
 * scope, as are xh, xl and the masks m0f, mf0) */
#define SPLIT_DPB8(v0, v1, o0, o1)                                                                     \
    do {                                                                                               \
        const __m512i v0_ = (v0), v1_ = (v1);                                                          \
        const __m512i wl0 = _mm512_and_si512(v0_, m0f), wh0 = _mm512_and_si512(v0_, mf0);              \
        const __m512i wl1 = _mm512_and_si512(v1_, m0f), wh1 = _mm512_and_si512(v1_, mf0);              \
        DPB(ah0, wl0, xh + (o0));                                                                      \
        DPB(bh0, wh0, xh + (o0) + 4);                                                                  \
        DPB(al0, wl0, xl + (o0));                                                                      \
        DPB(bl0, wh0, xl + (o0) + 4);                                                                  \
        DPB(ah1, wl1, xh + (o1));                                                                      \
        DPB(bh1, wh1, xh + (o1) + 4);                                                                  \
        DPB(al1, wl1, xl + (o1));                                                                      \
        DPB(bl1, wh1, xl + (o1) + 4);                                                                  \
    } while (0)


INLINE T512 void store16(float *y, int rows_left, __m512 v) {
    if (rows_left >= 16) _mm512_storeu_ps(y, v);
    else _mm512_mask_storeu_ps(y, (__mmask16)((1u << rows_left) - 1), v);
}

/* one token, one block of 16 rows: y[0..16) */
INLINE T512 void block_1(const cpu_q4pack *pk, const uint8_t *p, const cpu_qact *a, int t, float *y, int rows_left,
                         const bk_dtype st) {
    const int K = pk->cols, G = pk->group, ng = K / G;
    const size_t codes = (size_t)G * 8;
    const __m512i m0f = _mm512_set1_epi8(0x0f), mf0 = _mm512_set1_epi8((char)0xf0);
    const int8_t *xh = a->hi + (size_t)t * K, *xl = a->lo + (size_t)t * K;
    const float *d = a->d + (size_t)t * ng, *gs = a->bsum + (size_t)t * ng;
    const int pf1 = pf1_bytes();
    __m512 acc = _mm512_setzero_ps();
    for (int g = 0; g < ng; g++, p += pk->group_bytes, xh += G, xl += G) {
        __m512i ah0 = _mm512_setzero_si512(), bh0 = ah0, al0 = ah0, bl0 = ah0, ah1 = ah0, bh1 = ah0, al1 = ah0, bl1 = ah0;
        for (int c = 0; c < G / 8; c += 2) {
            if (pf1) {
                _mm_prefetch((const char *)p + 64 * c + pf1, _MM_HINT_T1);
                _mm_prefetch((const char *)p + 64 * c + 64 + pf1, _MM_HINT_T1);
            }
            SPLIT_DPB8(_mm512_load_si512(p + 64 * c), _mm512_load_si512(p + 64 * c + 64), 8 * c, 8 * c + 8);
        }
        __m512i h = _mm512_add_epi32(_mm512_slli_epi32(_mm512_add_epi32(ah0, ah1), 4), _mm512_add_epi32(bh0, bh1));
        __m512i l = _mm512_add_epi32(_mm512_slli_epi32(_mm512_add_epi32(al0, al1), 4), _mm512_add_epi32(bl0, bl1));
        __m512 tot = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(h, 8), l));
        const uint8_t *line = p + codes;
        if (pf1) { /* the scale line: the code prefetches above step over it (see Q4P_PREFETCH) */
            _mm_prefetch((const char *)line + pf1, _MM_HINT_T1);
            if (st == BK_F32) _mm_prefetch((const char *)line + 64 + pf1, _MM_HINT_T1);
        }
        acc = _mm512_fmadd_ps(tot, _mm512_mul_ps(q4_line16(line, st, 0), _mm512_set1_ps(d[g] * 0.0625f)), acc);
        acc = _mm512_fmadd_ps(q4_line16(line, st, 1), _mm512_set1_ps(gs[g]), acc);
    }
    store16(y, rows_left, acc);
}

/* one token, blocks b (at p) and b + R of 16 rows (y[0..16) and y[16 R..16 R + 16)): two weight
 * streams at once, each activation broadcast feeding both */
INLINE T512 void block_2(const cpu_q4pack *pk, const uint8_t *p, const cpu_qact *a, int t, float *y, int rows_left,
                         const bk_dtype st, const int R) {
    const int K = pk->cols, G = pk->group, ng = K / G;
    const size_t codes = (size_t)G * 8, bb = pk->block_bytes * (size_t)R;
    const __m512i m0f = _mm512_set1_epi8(0x0f), mf0 = _mm512_set1_epi8((char)0xf0);
    const int8_t *xh = a->hi + (size_t)t * K, *xl = a->lo + (size_t)t * K;
    const float *d = a->d + (size_t)t * ng, *gs = a->bsum + (size_t)t * ng;
    const int pf1 = pf1_bytes();
    const uint8_t *q = p + bb;
    __m512 acc0 = _mm512_setzero_ps(), acc1 = acc0;
    for (int g = 0; g < ng; g++, p += pk->group_bytes, q += pk->group_bytes, xh += G, xl += G) {
        __m512i ah0 = _mm512_setzero_si512(), bh0 = ah0, al0 = ah0, bl0 = ah0, ah1 = ah0, bh1 = ah0, al1 = ah0, bl1 = ah0;
        for (int c = 0; c < G / 8; c++) {
            if (pf1) {
                _mm_prefetch((const char *)p + 64 * c + pf1, _MM_HINT_T1);
                _mm_prefetch((const char *)q + 64 * c + pf1, _MM_HINT_T1);
            }
            SPLIT_DPB8(_mm512_load_si512(p + 64 * c), _mm512_load_si512(q + 64 * c), 8 * c, 8 * c);
        }
        const __m512 dg = _mm512_set1_ps(d[g] * 0.0625f), sg = _mm512_set1_ps(gs[g]);
        __m512i h = _mm512_add_epi32(_mm512_slli_epi32(ah0, 4), bh0), l = _mm512_add_epi32(_mm512_slli_epi32(al0, 4), bl0);
        __m512 tot = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(h, 8), l));
        const uint8_t *line = p + codes;
        if (pf1) {
            _mm_prefetch((const char *)line + pf1, _MM_HINT_T1);
            _mm_prefetch((const char *)line + bb + pf1, _MM_HINT_T1);
            if (st == BK_F32) {
                _mm_prefetch((const char *)line + 64 + pf1, _MM_HINT_T1);
                _mm_prefetch((const char *)line + bb + 64 + pf1, _MM_HINT_T1);
            }
        }
        acc0 = _mm512_fmadd_ps(tot, _mm512_mul_ps(q4_line16(line, st, 0), dg), acc0);
        acc0 = _mm512_fmadd_ps(q4_line16(line, st, 1), sg, acc0);
        h = _mm512_add_epi32(_mm512_slli_epi32(ah1, 4), bh1), l = _mm512_add_epi32(_mm512_slli_epi32(al1, 4), bl1);
        tot = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(h, 8), l));
        acc1 = _mm512_fmadd_ps(tot, _mm512_mul_ps(q4_line16(line + bb, st, 0), dg), acc1);
        acc1 = _mm512_fmadd_ps(q4_line16(line + bb, st, 1), sg, acc1);
    }
    store16(y, rows_left, acc0);
    store16(y + 16 * R, rows_left - 16 * R, acc1);
}

/* T tokens (2..4), one block of 16 rows: every split vector feeds 4 T dpbusd */
INLINE T512 void block_T(const cpu_q4pack *pk, const uint8_t *p, const cpu_qact *a, int t, float *y, int rows_left,
                         const bk_dtype st, const int T, const int pf) {
    const int K = pk->cols, G = pk->group, ng = K / G;
    const size_t codes = (size_t)G * 8;
    const __m512i m0f = _mm512_set1_epi8(0x0f), mf0 = _mm512_set1_epi8((char)0xf0);
    __m512 acc[TILE_MAX];
    for (int j = 0; j < T; j++) acc[j] = _mm512_setzero_ps();
    for (int g = 0; g < ng; g++, p += pk->group_bytes) {
        __m512i ah[TILE_MAX], bh[TILE_MAX], al[TILE_MAX], bl[TILE_MAX];
        for (int j = 0; j < T; j++) ah[j] = bh[j] = al[j] = bl[j] = _mm512_setzero_si512();
        for (int c = 0; c < G / 8; c++) {
            if (pf) _mm_prefetch((const char *)p + 64 * c + Q4P_PREFETCH, _MM_HINT_T0);
            __m512i v = _mm512_load_si512(p + 64 * c);
            __m512i wl = _mm512_and_si512(v, m0f), wh = _mm512_and_si512(v, mf0);
            for (int j = 0; j < T; j++) {
                const int8_t *xh = a->hi + (size_t)(t + j) * K + (size_t)g * G + 8 * c;
                const int8_t *xl = a->lo + (size_t)(t + j) * K + (size_t)g * G + 8 * c;
                DPB(ah[j], wl, xh);
                DPB(bh[j], wh, xh + 4);
                DPB(al[j], wl, xl);
                DPB(bl[j], wh, xl + 4);
            }
        }
        const uint8_t *line = p + codes;
        if (pf) {
            _mm_prefetch((const char *)line + Q4P_PREFETCH, _MM_HINT_T0);
            if (st == BK_F32) _mm_prefetch((const char *)line + 64 + Q4P_PREFETCH, _MM_HINT_T0);
        }
        const __m512 sc = q4_line16(line, st, 0), bi = q4_line16(line, st, 1);
        for (int j = 0; j < T; j++) {
            __m512i h = _mm512_add_epi32(_mm512_slli_epi32(ah[j], 4), bh[j]);
            __m512i l = _mm512_add_epi32(_mm512_slli_epi32(al[j], 4), bl[j]);
            __m512 tot = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(h, 8), l));
            const size_t ti = (size_t)(t + j) * ng + g;
            acc[j] = _mm512_fmadd_ps(tot, _mm512_mul_ps(sc, _mm512_set1_ps(a->d[ti] * 0.0625f)), acc[j]);
            acc[j] = _mm512_fmadd_ps(bi, _mm512_set1_ps(a->bsum[ti]), acc[j]);
        }
    }
    for (int j = 0; j < T; j++) store16(y + (size_t)j * pk->rows, rows_left, acc[j]);
}

/* acc += dpbusd(w, x): x a register (a broadcast that feeds more than one dpbusd) */
#define DPBR(acc, w, x) __asm__("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(w), "v"(x))

INLINE T512 __m512i bcst4(const int8_t *p) {
    int32_t v;
    memcpy(&v, p, 4);
    return _mm512_set1_epi32(v);
}

/* T tokens (1..4), two adjacent blocks of 16 rows (y[0..16) and y[16..32)). A broadcast of four
 * activation codes from memory issues at one a cycle here (Intel Xeon, Ice Lake, 2026-12-07: a
 * loop of dpbusd each with its own {1to16} operand ran 2.7-3.0 G/s a core, with register operands
 * 5.1-5.4, with each broadcast feeding two 4.1-5.3), so each feeds both blocks. The low nibbles
 * are shifted up (16 w, like the high ones: wl = (v << 4) & 0xf0), so that a plane's columns 8c..
 * 8c+3 and 8c+4..8c+7 add into one accumulator: 2 a block and token, and the epilogue adds two.
 * int32: |sum| <= 240 * 128 * group <= 3.9e6 for group 128, times 257 for the two planes. */
INLINE T512 void block_2T(const cpu_q4pack *pk, const uint8_t *p, const cpu_qact *a, int t, float *y, int rows_left,
                          const bk_dtype st, const int T, const int pf) {
    const int K = pk->cols, G = pk->group, ng = K / G;
    const size_t codes = (size_t)G * 8, bb = pk->block_bytes;
    const __m512i mf0 = _mm512_set1_epi8((char)0xf0);
    __m512 acc0[TILE_MAX], acc1[TILE_MAX];
    for (int j = 0; j < T; j++) acc0[j] = acc1[j] = _mm512_setzero_ps();
    for (int g = 0; g < ng; g++, p += pk->group_bytes) {
        __m512i h0[TILE_MAX], l0[TILE_MAX], h1[TILE_MAX], l1[TILE_MAX];
        for (int j = 0; j < T; j++) h0[j] = l0[j] = h1[j] = l1[j] = _mm512_setzero_si512();
        const int8_t *xh = a->hi + (size_t)t * K + (size_t)g * G, *xl = a->lo + (size_t)t * K + (size_t)g * G;
        for (int c = 0; c < G / 8; c++) {
            if (pf) {
                _mm_prefetch((const char *)p + 64 * c + Q4P_PREFETCH, _MM_HINT_T0);
                _mm_prefetch((const char *)p + bb + 64 * c + Q4P_PREFETCH, _MM_HINT_T0);
            }
            const __m512i v0 = _mm512_load_si512(p + 64 * c), v1 = _mm512_load_si512(p + bb + 64 * c);
            const __m512i wl0 = _mm512_and_si512(_mm512_slli_epi16(v0, 4), mf0), wh0 = _mm512_and_si512(v0, mf0);
            const __m512i wl1 = _mm512_and_si512(_mm512_slli_epi16(v1, 4), mf0), wh1 = _mm512_and_si512(v1, mf0);
            for (int j = 0; j < T; j++) {
                const int8_t *ph = xh + (size_t)j * K + 8 * c, *pl = xl + (size_t)j * K + 8 * c;
                __m512i x = bcst4(ph);
                DPBR(h0[j], wl0, x);
                DPBR(h1[j], wl1, x);
                x = bcst4(ph + 4);
                DPBR(h0[j], wh0, x);
                DPBR(h1[j], wh1, x);
                x = bcst4(pl);
                DPBR(l0[j], wl0, x);
                DPBR(l1[j], wl1, x);
                x = bcst4(pl + 4);
                DPBR(l0[j], wh0, x);
                DPBR(l1[j], wh1, x);
            }
        }
        const uint8_t *line = p + codes;
        if (pf) {
            _mm_prefetch((const char *)line + Q4P_PREFETCH, _MM_HINT_T0);
            _mm_prefetch((const char *)line + bb + Q4P_PREFETCH, _MM_HINT_T0);
            if (st == BK_F32) {
                _mm_prefetch((const char *)line + 64 + Q4P_PREFETCH, _MM_HINT_T0);
                _mm_prefetch((const char *)line + bb + 64 + Q4P_PREFETCH, _MM_HINT_T0);
            }
        }
        const __m512 sc0 = q4_line16(line, st, 0), bi0 = q4_line16(line, st, 1);
        const __m512 sc1 = q4_line16(line + bb, st, 0), bi1 = q4_line16(line + bb, st, 1);
        for (int j = 0; j < T; j++) {
            const size_t ti = (size_t)(t + j) * ng + g;
            const __m512 dg = _mm512_set1_ps(a->d[ti] * 0.0625f), sg = _mm512_set1_ps(a->bsum[ti]);
            __m512 tot = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(h0[j], 8), l0[j]));
            acc0[j] = _mm512_fmadd_ps(tot, _mm512_mul_ps(sc0, dg), acc0[j]);
            acc0[j] = _mm512_fmadd_ps(bi0, sg, acc0[j]);
            tot = _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(h1[j], 8), l1[j]));
            acc1[j] = _mm512_fmadd_ps(tot, _mm512_mul_ps(sc1, dg), acc1[j]);
            acc1[j] = _mm512_fmadd_ps(bi1, sg, acc1[j]);
        }
    }
    for (int j = 0; j < T; j++) {
        store16(y + (size_t)j * pk->rows, rows_left, acc0[j]);
        store16(y + (size_t)j * pk->rows + 16, rows_left - 16, acc1[j]);
    }
}

/* one token over blocks [b0, b1): two streams (cpu_kern.h cpu_q4p_pair_run) */
INLINE T512 void one_token(const cpu_q4pack *pk, const cpu_qact *a, float *y, int b0, int b1, int t, const bk_dtype st) {
    const int R = cpu_q4p_pair_run(pk->block_bytes);
    const size_t bb = pk->block_bytes;
    float *yt = y + (size_t)t * pk->rows;
    int b = b0;
    for (; b + 2 * R <= b1; b += 2 * R)
        for (int i = 0; i < R; i++)
            block_2(pk, pk->data + (size_t)(b + i) * bb, a, t, yt + (size_t)(b + i) * 16, pk->rows - 16 * (b + i), st, R);
    if (bb >= CPU_Q4P_PAIR_MIN)
        for (; b + 1 < b1; b += 2) block_2(pk, pk->data + (size_t)b * bb, a, t, yt + (size_t)b * 16, pk->rows - 16 * b, st, 1);
    for (; b < b1; b++) block_1(pk, pk->data + (size_t)b * bb, a, t, yt + (size_t)b * 16, pk->rows - 16 * b, st);
}

CPU_Q4P_WALK(T512, cpu_q4p_qmm, one_token, block_1, block_T, block_2T)
#endif
