/* Prefill on AMX: repacked 4-bit weights (cpu_q4pack) times int8 activations on the tile unit
 * (TDPBSUD: 16 x 16 int32 += 16 x 64 s8 . 64 x 16 u8), on CPUs that have AMX-INT8 and AMX-BF16
 * and a kernel that grants the tile state (Linux 5.16+, arch_prctl ARCH_REQ_XCOMP_PERM).
 *
 * Numbers. Token t has one scale d = max|x| / (127 * 256) and two int8 planes, x ~ d (256 hi +
 * lo) (~16-bit activations, as the VNNI kernel's, but one scale a token: per group, the epilogue
 * would need one more multiply a row, and it is what bounds this path); a weight is s q + b
 * (q = 0..15). A group's codes meet each plane in one tile sum (64 columns a tile: groups of 64
 * and 128), so
 *   y = d sum_g s_g (256 C_hi + C_lo)  +  sum_g b_g X_g     C = sum_{c in g} q_c plane_c
 * int32 cannot overflow: |C| <= 15 * 127 * 128 = 243840, times 257. The bias term runs on the
 * tile unit too, in bf16 (TDPBF16PS): X_g = sum_{c in g} x_c (exact float sums) and the biases
 * as two bf16 planes each (hi + lo: f16 and bf16 biases exactly), three products (hi.hi, lo.hi,
 * hi.lo) a 32-group step, once a call, so the per-group epilogue is one multiply-add a row.
 *
 * The codes need no conversion: a pack vector (16 rows x 8 columns, dword r = row r, byte j =
 * column j in the low nibble and 4 + j in the high) masked to its low nibbles is exactly one row
 * of a weight tile (dword r = columns 4i..4i+3 of row r) and its high nibbles the next.
 *
 * A call covers up to AMX_BLOCKS row blocks (256 rows) and AMX_TOKENS tokens, in chunks of KC
 * columns: the chunk's tiles are unpacked into the thread's scratch, then, a 16-token tile at a
 * time and group by group, the token tile (its two planes held in tiles 4 and 5) meets every
 * 16-row weight tile (6 or 7) into a pair of accumulator tiles (hi, lo: 0/1 or 2/3 in turn, so
 * that one pair's stores overlap the other's sums: halves). The epilogue of each group scales the
 * sums into the token tile's rows of a float output of the call (acc; 16 KB a token tile, so they
 * stay in L1 over the chunk's groups); the first group writes them, the bias pass writes y. Token
 * rows are read up to the next multiple of 16 (the quantizer pads them with zeros). The
 * activations are stored as the tiles they are loaded as (tile_at). Figures: bench/RESULTS.md, CPU
 * rounds 8 and 13. */
#include "kernels/cpu/cpu_kern.h"

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "kernels/cpu/q4_line.h"

#define TAMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,f16c,fma")))
#define INLINE static inline __attribute__((always_inline))
#define KC 512 /* columns a chunk: a multiple of every group the path takes (64, 128) */

/* the tile instructions, with memory clobbers (gcc 12's own macros have none, so the compiler
 * may move the scratch's stores and loads across them) */
#define TCFG(cfg) __asm__ volatile("ldtilecfg %0" ::"m"(*(cfg)) : "memory")
#define TREL() __asm__ volatile("tilerelease" ::: "memory")
#define TZERO(t) __asm__ volatile("tilezero %%tmm" #t ::: "memory")
#define TLOAD(t, p, stride) __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(p), "r"((long)(stride)) : "memory")
#define TSTORE(t, p, stride) __asm__ volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(p), "r"((long)(stride)) : "memory")
#define TDP(d, a, b) __asm__ volatile("tdpbsud %%tmm" #b ", %%tmm" #a ", %%tmm" #d ::: "memory")
#define TDPBF(d, a, b) __asm__ volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #d ::: "memory")

typedef struct {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} tile_cfg;

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

int cpu_amx_available(void) {
    static int state = -1; /* the answer once asked: the permission is the process's */
    if (state >= 0) return state;
    unsigned a, b, c, d;
    state = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
    int amx = (d >> 24 & 1) && (d >> 25 & 1) && (d >> 22 & 1); /* AMX-TILE, AMX-INT8, AMX-BF16 */
    __builtin_cpu_init();
    if (!amx || !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vl")) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo >> 17 & 3) != 3) return 0; /* the OS does not save tile state */
    state = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    return state;
}

/* ---- activations: int8 planes with a scale a token, bf16 planes of the group sums ---- */

/* CPU_QACT_AMX in one block of memory: the codes (tile_at; lo = NULL); d [rows]; bsum holds the group sums
 * as bf16, hi plane then lo plane, [rows, xs] each (xs = groups rounded up to 32, zeros past) */
static int amx_xs(int cols, int group) { return (cols / group + 31) & ~31; }

size_t cpu_amx_act_bytes(int n, int cols, int group) {
    size_t rows = (size_t)((n + 31) & ~31);
    return rows * (size_t)cols * 2 + rows * sizeof(float) + rows * (size_t)amx_xs(cols, group) * 4 + 64;
}

void cpu_amx_act_init(cpu_qact *a, void *mem, int n, int cols, int group) {
    size_t rows = (size_t)((n + 31) & ~31);
    float *f = mem;
    a->d = f;
    a->bsum = f + rows;
    a->hi = (int8_t *)(f + rows + rows * (size_t)amx_xs(cols, group));
    a->lo = NULL;
}

/* the codes are stored as the tiles they are loaded as: [token tile][64-column step][hi, lo][16
 * rows x 64], so that a tile is 1 KB in a row; the hi code of token t, column c (the lo code 1 KB on) */
INLINE int8_t *tile_at(const cpu_qact *a, int t, int c) {
    return a->hi + (((size_t)(t / 16) * (size_t)(a->cols / 64) + (size_t)(c / 64)) * 2048 + (size_t)(t % 16) * 64 + (size_t)(c % 64));
}

INLINE TAMX uint16_t bf16_hi(float v, float *rest) { /* the top 16 bits, and what they leave */
    uint32_t u;
    memcpy(&u, &v, 4);
    u &= 0xffff0000u;
    float h;
    memcpy(&h, &u, 4);
    *rest = v - h;
    return (uint16_t)(u >> 16);
}

void TAMX cpu_amx_quant(const float *x, cpu_qact *a, int t0, int t1) {
    const int K = a->cols, G = a->block, ng = K / G, xs = amx_xs(K, G);
    const size_t rows = (size_t)((a->n + 31) & ~31);
    uint16_t *xh = (uint16_t *)a->bsum, *xl = xh + rows * (size_t)xs;
    const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
    for (int t = t0; t < t1; t++) {
        uint16_t *sh = xh + (size_t)t * xs, *sl = xl + (size_t)t * xs;
        memset(sh, 0, (size_t)xs * 2);
        memset(sl, 0, (size_t)xs * 2);
        if (t >= a->n) { /* padding rows of the last tiles */
            for (int c = 0; c < K; c += 64) memset(tile_at(a, t, c), 0, 64), memset(tile_at(a, t, c) + 1024, 0, 64);
            a->d[t] = 0.0f;
            continue;
        }
        const float *xt = x + (size_t)t * K;
        __m512 m = _mm512_setzero_ps();
        for (int c = 0; c < K; c += 16) m = _mm512_max_ps(m, _mm512_and_ps(_mm512_loadu_ps(xt + c), sign));
        float amax = _mm512_reduce_max_ps(m), inv = amax > 0.0f ? 127.0f * 256.0f / amax : 0.0f;
        a->d[t] = amax / (127.0f * 256.0f);
        /* Y = round(x / d), |Y| <= 32512, split exactly as 256 hi + lo: hi = (Y + 128) >> 8 in
         * [-127, 127], lo = Y - 256 hi in [-128, 127]; 64 columns at a time in 16-bit lanes (the
         * packs interleave the four vectors by 128-bit lane; one dword permute restores them) */
        const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
        const __m512 vinv = _mm512_set1_ps(inv);
        for (int g = 0; g < ng; g++) {
            __m512 sum = _mm512_setzero_ps();
            for (int c = g * G; c < (g + 1) * G; c += 64) {
                __m512 v0 = _mm512_loadu_ps(xt + c), v1 = _mm512_loadu_ps(xt + c + 16);
                __m512 v2 = _mm512_loadu_ps(xt + c + 32), v3 = _mm512_loadu_ps(xt + c + 48);
                sum = _mm512_add_ps(_mm512_add_ps(sum, _mm512_add_ps(v0, v1)), _mm512_add_ps(v2, v3));
                __m512i ya = _mm512_packs_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v0, vinv)), _mm512_cvtps_epi32(_mm512_mul_ps(v1, vinv)));
                __m512i yb = _mm512_packs_epi32(_mm512_cvtps_epi32(_mm512_mul_ps(v2, vinv)), _mm512_cvtps_epi32(_mm512_mul_ps(v3, vinv)));
                __m512i ha = _mm512_srai_epi16(_mm512_add_epi16(ya, _mm512_set1_epi16(128)), 8);
                __m512i hb = _mm512_srai_epi16(_mm512_add_epi16(yb, _mm512_set1_epi16(128)), 8);
                __m512i la = _mm512_sub_epi16(ya, _mm512_slli_epi16(ha, 8)), lb = _mm512_sub_epi16(yb, _mm512_slli_epi16(hb, 8));
                int8_t *th = tile_at(a, t, c);
                _mm512_storeu_si512(th, _mm512_permutexvar_epi32(order, _mm512_packs_epi16(ha, hb)));
                _mm512_storeu_si512(th + 1024, _mm512_permutexvar_epi32(order, _mm512_packs_epi16(la, lb)));
            }
            float rest, rest2;
            sh[g] = bf16_hi(_mm512_reduce_add_ps(sum), &rest);
            sl[g] = bf16_hi(rest, &rest2); /* truncated: 2^-16 of the sum */
        }
    }
}

/* ---- weights: a chunk of the pack to u8 tiles ---- */

/* a thread's scratch (cpu_amx_scratch_bytes; the backend keeps one per pool thread) */
struct cpu_amx_scr {
    uint8_t b[AMX_BLOCKS][KC / 64][16 * 64]; /* [row block][64-column step]: one tile each */
    float s[AMX_BLOCKS][KC / 64][16];        /* per group of the chunk: scales */
    uint16_t bb[AMX_BLOCKS][AMX_BIAS_STEPS][2][16 * 32]; /* biases as bf16 tiles: [block][32 groups][hi, lo] */
    float acc[AMX_TOKENS][AMX_BLOCKS * 16];  /* the call's output, [token][row] */
    int32_t c[4][16 * 16];                   /* accumulator tiles on their way to acc */
};

size_t cpu_amx_scratch_bytes(void) { return sizeof(cpu_amx_scr); }


INLINE TAMX void expand_block(cpu_amx_scr *S, const cpu_q4pack *pk, int blk, int g0, int ngc, int slot) {
    const int G = pk->group;
    const uint8_t *src = pk->data + (size_t)blk * pk->block_bytes + (size_t)g0 * pk->group_bytes;
    const __m512i m0f = _mm512_set1_epi8(0x0f);
    for (int g = 0; g < ngc; g++, src += pk->group_bytes) {
        for (int c = 0; c < G / 8; c++) {
            __m512i v = _mm512_load_si512(src + 64 * c);
            int k = g * G + 8 * c; /* column within the chunk: tile k / 64, rows (k % 64) / 4 and + 1 */
            uint8_t *t = S->b[slot][k / 64] + (k % 64) / 4 * 64;
            _mm512_store_si512(t, _mm512_and_si512(v, m0f));
            _mm512_store_si512(t + 64, _mm512_and_si512(_mm512_srli_epi16(v, 4), m0f));
        }
        const uint8_t *line = src + (size_t)G * 8;
        _mm512_store_ps(S->s[slot][g], q4_line16(line, pk->sdtype, 0));
    }
}

/* acc rows of 16 tokens, 16 rows += s (256 hi + lo); = at the first group of a call */
INLINE TAMX void epilogue(const int32_t *hi, const int32_t *lo, float *acc, __m512 s, int first) {
#define ROW(r) _mm512_cvtepi32_ps(_mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(hi + 16 * (r)), 8), _mm512_load_si512(lo + 16 * (r))))
    if (first)
        for (int r = 0; r < 16; r++, acc += AMX_BLOCKS * 16) _mm512_storeu_ps(acc, _mm512_mul_ps(ROW(r), s));
    else
        for (int r = 0; r < 16; r++, acc += AMX_BLOCKS * 16) _mm512_storeu_ps(acc, _mm512_fmadd_ps(ROW(r), s, _mm512_loadu_ps(acc)));
#undef ROW
}

/* the biases of block blk as bf16 tiles: tile row p, dword r = (group 2p, 2p + 1) of row r, each
 * split into hi (the top 16 bits) and lo (the rest, exact for f16 and bf16 biases); zeros past the
 * last group */
INLINE TAMX void expand_bias(cpu_amx_scr *S, const cpu_q4pack *pk, int blk, int slot) {
    const int ng = pk->cols / pk->group, xs = amx_xs(pk->cols, pk->group);
    const uint8_t *line = pk->data + (size_t)blk * pk->block_bytes + (size_t)pk->group * 8;
    const __m512i top = _mm512_set1_epi32((int)0xffff0000u);
    for (int g = 0; g < xs; g += 2) {
        __m512 v0 = g < ng ? q4_line16(line + (size_t)g * pk->group_bytes, pk->sdtype, 1) : _mm512_setzero_ps();
        __m512 v1 = g + 1 < ng ? q4_line16(line + (size_t)(g + 1) * pk->group_bytes, pk->sdtype, 1) : _mm512_setzero_ps();
        __m512i h0 = _mm512_and_si512(_mm512_castps_si512(v0), top), h1 = _mm512_and_si512(_mm512_castps_si512(v1), top);
        __m512i l0 = _mm512_castps_si512(_mm512_sub_ps(v0, _mm512_castsi512_ps(h0)));
        __m512i l1 = _mm512_castps_si512(_mm512_sub_ps(v1, _mm512_castsi512_ps(h1)));
        uint16_t *th = S->bb[slot][g / 32][0] + (g % 32) / 2 * 32, *tl = S->bb[slot][g / 32][1] + (g % 32) / 2 * 32;
        _mm512_store_si512(th, _mm512_or_si512(_mm512_srli_epi32(h0, 16), h1));
        _mm512_store_si512(tl, _mm512_ternarylogic_epi32(_mm512_srli_epi32(l0, 16), l1, top, 0xf8)); /* a | (b & c) */
    }
}

/* the tile sums of one weight group (`steps` 64-column steps from chunk step ks) for the 16 tokens
 * at ah / al (tile_at) and the weight tiles of blocks f (and f + 1 when two), left in
 * tiles 0..3: 0, 1 = hi, lo against f; 2, 3 = hi, lo against f + 1 (groups of several steps;
 * one step: halves) */
INLINE void group_tiles(cpu_amx_scr *S, const int8_t *ah, const int8_t *al, int ks, int steps, int f, int two) {
    TZERO(0);
    TZERO(1);
    if (two) {
        TZERO(2);
        TZERO(3);
    }
    for (int s = 0; s < steps; s++) {
        TLOAD(4, ah + 2048 * s, 64); /* the step's 64 columns */
        TLOAD(5, al + 2048 * s, 64);
        TLOAD(6, S->b[f][ks + s], 64);
        TDP(0, 4, 6);
        TDP(1, 5, 6);
        if (two) {
            TLOAD(7, S->b[f + 1][ks + s], 64);
            TDP(2, 4, 7);
            TDP(3, 5, 7);
        }
    }
    TSTORE(0, S->c[0], 64);
    TSTORE(1, S->c[1], 64);
    if (two) {
        TSTORE(2, S->c[2], 64);
        TSTORE(3, S->c[3], 64);
    }
}

/* store the accumulator pair of half item j (tiles 0, 1 when j is even, 2, 3 when odd) and scale
 * it into acc: weight block f, tokens tt, group g of the chunk */
INLINE TAMX void finish_half(cpu_amx_scr *S, int j, int f, int tt, int g, int first) {
    int32_t *hi = S->c[2 * (j & 1)], *lo = S->c[2 * (j & 1) + 1];
    if (j & 1) {
        TSTORE(2, hi, 64);
        TSTORE(3, lo, 64);
    } else {
        TSTORE(0, hi, 64);
        TSTORE(1, lo, 64);
    }
    epilogue(hi, lo, &S->acc[tt][16 * f], _mm512_load_ps(S->s[f][g]), first);
}

/* Groups of one 64-column step: half items (one weight tile against the token tile's two planes)
 * with the accumulator pairs (0, 1) and (2, 3) and weight tiles 6 and 7 in turn, each half's
 * stores issued behind the next half's sums, so that the two overlap (tile sums and stores only,
 * in L1: 85 cycles an item of two halves stored after both, 58 interleaved; 2026-12-06). The
 * activation tiles 4 (hi) and 5 (lo) are loaded once a token tile and group. */
INLINE TAMX void halves(cpu_amx_scr *S, const cpu_qact *a, int t0, int k0, int ngc, int tpad, int nb, int G) {
    int j = 0, pf = 0, ptt = 0, pg = 0, first = k0 == 0; /* the half item before; first: acc not yet written */
    for (int tt = 0; tt < tpad; tt += 16)
        for (int g = 0; g < ngc; g++) {
            const int8_t *ah = tile_at(a, t0 + tt, k0 + g * G);
            TLOAD(4, ah, 64);
            TLOAD(5, ah + 1024, 64);
            for (int f = 0; f < nb; f++, j++) {
                if (j & 1) {
                    TZERO(2);
                    TZERO(3);
                    TLOAD(7, S->b[f][g], 64);
                    TDP(2, 4, 7);
                    TDP(3, 5, 7);
                } else {
                    TZERO(0);
                    TZERO(1);
                    TLOAD(6, S->b[f][g], 64);
                    TDP(0, 4, 6);
                    TDP(1, 5, 6);
                }
                if (j > 0) finish_half(S, j - 1, pf, ptt, pg, first && pg == 0);
                pf = f, ptt = tt, pg = g;
            }
        }
    if (j > 0) finish_half(S, j - 1, pf, ptt, pg, first && pg == 0);
}

void TAMX cpu_amx_qmm(cpu_amx_scr *S, const cpu_q4pack *pk, const cpu_qact *a, float *y, int b0, int b1, int t0, int t1) {
    const int K = pk->cols, G = pk->group, nb = b1 - b0, steps = G / 64, xs = amx_xs(K, G), ny = pk->rows;
    const int tpad = (t1 - t0 + 15) & ~15; /* whole token tiles: the quantizer zeroed the rest */
    const size_t rows = (size_t)((a->n + 31) & ~31);
    const uint16_t *xh = (const uint16_t *)a->bsum, *xl = xh + rows * (size_t)xs;
    tile_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) cfg.colsb[i] = 64, cfg.rows[i] = 16;
    TCFG(&cfg);
    /* acc = sum_g s_g (256 C_hi + C_lo), chunk by chunk */
    for (int k0 = 0; k0 < K; k0 += KC) {
        const int kc = K - k0 < KC ? K - k0 : KC, g0 = k0 / G, ngc = kc / G;
        for (int i = 0; i < nb; i++) expand_block(S, pk, b0 + i, g0, ngc, i);
        if (steps == 1) {
            halves(S, a, t0, k0, ngc, tpad, nb, G);
            continue;
        }
        for (int tt = 0; tt < tpad; tt += 16)
            for (int g = 0; g < ngc; g++) {
                const int8_t *ah = tile_at(a, t0 + tt, k0 + g * G), *al = ah + 1024;
                for (int f = 0; f < nb; f += 2) {
                    const int two = f + 1 < nb;
                    group_tiles(S, ah, al, g * steps, steps, f, two);
                    for (int i = 0; i < 1 + two; i++)
                        epilogue(S->c[2 * i], S->c[2 * i + 1], &S->acc[tt][16 * (f + i)], _mm512_load_ps(S->s[f + i][g]),
                                 k0 == 0 && g == 0);
                }
            }
    }
    /* y = d acc + sum_g b_g X_g, the second on the tile unit in bf16 */
    for (int i = 0; i < nb; i++) expand_bias(S, pk, b0 + i, i);
    for (int tt = 0; tt < tpad; tt += 16)
        for (int f = 0; f < nb; f += 2) {
            const int two = f + 1 < nb;
            TZERO(0);
            TZERO(2);
            for (int bs = 0; bs < xs / 32; bs++) {
                TLOAD(4, xh + (size_t)(t0 + tt) * xs + 32 * bs, xs * 2);
                TLOAD(5, xl + (size_t)(t0 + tt) * xs + 32 * bs, xs * 2);
                for (int i = 0; i < 1 + two; i++) {
                    TLOAD(6, S->bb[f + i][bs][0], 64);
                    TLOAD(7, S->bb[f + i][bs][1], 64);
                    if (i == 0) {
                        TDPBF(0, 4, 6);
                        TDPBF(0, 5, 6);
                        TDPBF(0, 4, 7);
                    } else {
                        TDPBF(2, 4, 6);
                        TDPBF(2, 5, 6);
                        TDPBF(2, 4, 7);
                    }
                }
            }
            TSTORE(0, S->c[0], 64);
            TSTORE(2, S->c[2], 64);
            for (int i = 0; i < 1 + two; i++) { /* straight into y: the call's rows and tokens only */
                const int col = b0 * 16 + 16 * (f + i), left = ny - col;
                const __mmask16 m = left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
                for (int r = 0; r < 16 && t0 + tt + r < t1; r++) {
                    __m512 cb = _mm512_load_ps((const float *)S->c[2 * i] + 16 * r);
                    __m512 v = _mm512_fmadd_ps(_mm512_loadu_ps(&S->acc[tt + r][16 * (f + i)]), _mm512_set1_ps(a->d[t0 + tt + r]), cb);
                    _mm512_mask_storeu_ps(y + (size_t)(t0 + tt + r) * ny + col, m, v);
                }
            }
        }
    TREL();
}

#else /* no AMX on this platform */
int cpu_amx_available(void) { return 0; }
size_t cpu_amx_act_bytes(int n, int cols, int group) {
    (void)n, (void)cols, (void)group;
    return 0;
}
void cpu_amx_act_init(cpu_qact *a, void *mem, int n, int cols, int group) {
    (void)a, (void)mem, (void)n, (void)cols, (void)group;
}
void cpu_amx_quant(const float *x, cpu_qact *a, int t0, int t1) {
    (void)x, (void)a, (void)t0, (void)t1;
}
size_t cpu_amx_scratch_bytes(void) { return 0; }
void cpu_amx_qmm(cpu_amx_scr *S, const cpu_q4pack *pk, const cpu_qact *a, float *y, int b0, int b1, int t0, int t1) {
    (void)S, (void)pk, (void)a, (void)y, (void)b0, (void)b1, (void)t0, (void)t1;
}
#endif
