/* Prefill on AMX: repacked 4-bit weights (cpu_q4pack) times int8 activations on the tile unit
 * (TDPBSUD: 16 x 16 int32 += 16 x 64 s8 . 64 x 16 u8), on CPUs that have AMX-INT8 and a kernel
 * that grants the tile state (Linux 5.16+, arch_prctl ARCH_REQ_XCOMP_PERM).
 *
 * Numbers: those of the VNNI kernel (q4_pack_avx512.c), whose quantizer this path shares. Token t,
 * group g: x ~ d (256 hi + lo), two int8 planes; a weight is s q + b (q = 0..15). A group's codes
 * meet each plane in one tile sum (64 columns a tile: groups of 64 and 128), so per group
 *   y += s d (256 C_hi + C_lo) + b X        C = sum_{c in g} q_c plane_c,  X = sum_{c in g} x_c
 * int32 cannot overflow: |C| <= 15 * 127 * 128 = 243840, times 257.
 *
 * The codes need no conversion: a pack vector (16 rows x 8 columns, dword r = row r, byte j =
 * column j in the low nibble and 4 + j in the high) masked to its low nibbles is exactly one row
 * of a weight tile (dword r = columns 4i..4i+3 of row r) and its high nibbles the next.
 *
 * A call covers up to AMX_BLOCKS row blocks (64 rows) and AMX_TOKENS tokens, in chunks of KC
 * columns: the chunk's tiles are unpacked into thread-local scratch, then every 16-token tile
 * (its two planes held in tile registers) meets every pair of 16-row tiles: 4 accumulator tiles
 * (hi and lo against each), 2 activation tiles, 2 weight tiles = the 8 tile registers. The
 * epilogue of each group scales the sums into a float tile of the call (acc). Token rows are read
 * up to the next multiple of 16 (the quantizer pads them with zeros). */
#include "kernels/cpu/cpu_kern.h"

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

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
    int amx = (d >> 24 & 1) && (d >> 25 & 1); /* AMX-TILE, AMX-INT8 */
    __builtin_cpu_init();
    if (!amx || !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vl")) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo >> 17 & 3) != 3) return 0; /* the OS does not save tile state */
    state = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    return state;
}

/* ---- activations: the VNNI kernel's, rows padded with zeros ---- */

void cpu_amx_quant(const float *x, cpu_qact *a, int t0, int t1) {
    const int K = a->cols, ng = K / a->block, e = t1 < a->n ? t1 : a->n;
    if (t0 < e) cpu_q4p_quant(x, a, t0, e);
    for (int t = t0 > a->n ? t0 : a->n; t < t1; t++) {
        memset(a->hi + (size_t)t * K, 0, (size_t)K);
        memset(a->lo + (size_t)t * K, 0, (size_t)K);
        memset(a->d + (size_t)t * ng, 0, (size_t)ng * sizeof(float));
        memset(a->bsum + (size_t)t * ng, 0, (size_t)ng * sizeof(float));
    }
}

/* ---- weights: a chunk of the pack to u8 tiles ---- */

static _Thread_local struct {
    uint8_t b[AMX_BLOCKS][KC / 64][16 * 64]; /* [row block][64-column step]: one tile each */
    float s[AMX_BLOCKS][KC / 64][16];        /* per group of the chunk: scales */
    float bias[AMX_BLOCKS][KC / 64][16];     /* and biases */
    float acc[AMX_TOKENS][AMX_BLOCKS * 16];  /* the call's output, [token][row] */
    int32_t c[4][16 * 16];                   /* accumulator tiles on their way to acc */
} __attribute__((aligned(64))) scr;

/* the 16 scales (which = 0) or biases (which = 1) of a scale line, as f32 */
INLINE TAMX __m512 line16(const uint8_t *p, bk_dtype st, int which) {
    if (st == BK_F32) return _mm512_loadu_ps((const float *)p + 16 * which);
    __m256i h = _mm256_loadu_si256((const __m256i *)(p + 32 * which));
    if (st == BK_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

INLINE TAMX void expand_block(const cpu_q4pack *pk, int blk, int g0, int ngc, int slot) {
    const int G = pk->group;
    const uint8_t *src = pk->data + (size_t)blk * pk->block_bytes + (size_t)g0 * pk->group_bytes;
    const __m512i m0f = _mm512_set1_epi8(0x0f);
    for (int g = 0; g < ngc; g++, src += pk->group_bytes) {
        for (int c = 0; c < G / 8; c++) {
            __m512i v = _mm512_load_si512(src + 64 * c);
            int k = g * G + 8 * c; /* column within the chunk: tile k / 64, rows (k % 64) / 4 and + 1 */
            uint8_t *t = scr.b[slot][k / 64] + (k % 64) / 4 * 64;
            _mm512_store_si512(t, _mm512_and_si512(v, m0f));
            _mm512_store_si512(t + 64, _mm512_and_si512(_mm512_srli_epi16(v, 4), m0f));
        }
        const uint8_t *line = src + (size_t)G * 8;
        _mm512_store_ps(scr.s[slot][g], line16(line, pk->sdtype, 0));
        _mm512_store_ps(scr.bias[slot][g], line16(line, pk->sdtype, 1));
    }
}

/* acc rows of 16 tokens, 16 rows += s d (256 hi + lo) + X b; d and X of the group, a token's
 * `ng` floats apart */
INLINE TAMX void epilogue(const int32_t *hi, const int32_t *lo, float *acc, __m512 s, __m512 b, const float *d,
                          const float *X, int ng) {
    for (int r = 0; r < 16; r++, acc += AMX_BLOCKS * 16) {
        __m512i c = _mm512_add_epi32(_mm512_slli_epi32(_mm512_load_si512(hi + 16 * r), 8), _mm512_load_si512(lo + 16 * r));
        __m512 v = _mm512_fmadd_ps(_mm512_cvtepi32_ps(c), _mm512_mul_ps(s, _mm512_set1_ps(d[(size_t)r * ng])),
                                   _mm512_loadu_ps(acc));
        _mm512_storeu_ps(acc, _mm512_fmadd_ps(_mm512_set1_ps(X[(size_t)r * ng]), b, v));
    }
}

/* the tile sums of one weight group (`steps` 64-column steps from chunk step ks) for the 16 tokens
 * at ah / al (rows K bytes apart) and the weight tiles of blocks f (and f + 1 when two), left in
 * tiles 0..3: 0, 1 = hi, lo against f; 2, 3 = hi, lo against f + 1. With one step the caller has
 * loaded the activation tiles 4 (hi) and 5 (lo) already (load_a). */
INLINE void group_tiles(const int8_t *ah, const int8_t *al, long K, int ks, int steps, int f, int two) {
    TZERO(0);
    TZERO(1);
    if (two) {
        TZERO(2);
        TZERO(3);
    }
    for (int s = 0; s < steps; s++) {
        if (steps > 1) {
            TLOAD(4, ah + 64 * s, K);
            TLOAD(5, al + 64 * s, K);
        }
        TLOAD(6, scr.b[f][ks + s], 64);
        TDP(0, 4, 6);
        TDP(1, 5, 6);
        if (two) {
            TLOAD(7, scr.b[f + 1][ks + s], 64);
            TDP(2, 4, 7);
            TDP(3, 5, 7);
        }
    }
    TSTORE(0, scr.c[0], 64);
    TSTORE(1, scr.c[1], 64);
    if (two) {
        TSTORE(2, scr.c[2], 64);
        TSTORE(3, scr.c[3], 64);
    }
}

void TAMX cpu_amx_qmm(const cpu_q4pack *pk, const cpu_qact *a, float *y, int b0, int b1, int t0, int t1) {
    const int K = pk->cols, G = pk->group, ng = K / G, nb = b1 - b0, steps = G / 64;
    const int tpad = (t1 - t0 + 15) & ~15; /* whole token tiles: the quantizer zeroed the rest */
    tile_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) cfg.colsb[i] = 64, cfg.rows[i] = 16;
    TCFG(&cfg);
    memset(scr.acc, 0, sizeof scr.acc);
    for (int k0 = 0; k0 < K; k0 += KC) {
        const int kc = K - k0 < KC ? K - k0 : KC, g0 = k0 / G, ngc = kc / G;
        for (int i = 0; i < nb; i++) expand_block(pk, b0 + i, g0, ngc, i);
        for (int g = 0; g < ngc; g++)
            for (int tt = 0; tt < tpad; tt += 16) {
                const size_t at = (size_t)(t0 + tt) * K + (size_t)(g0 + g) * G;
                const int8_t *ah = a->hi + at, *al = a->lo + at;
                const float *d = a->d + (size_t)(t0 + tt) * ng + g0 + g, *X = a->bsum + (size_t)(t0 + tt) * ng + g0 + g;
                if (steps == 1) { /* one load for every pair of weight tiles */
                    TLOAD(4, ah, K);
                    TLOAD(5, al, K);
                }
                for (int f = 0; f < nb; f += 2) {
                    const int two = f + 1 < nb;
                    group_tiles(ah, al, K, g * steps, steps, f, two);
                    for (int i = 0; i < 1 + two; i++)
                        epilogue(scr.c[2 * i], scr.c[2 * i + 1], &scr.acc[tt][16 * (f + i)], _mm512_load_ps(scr.s[f + i][g]),
                                 _mm512_load_ps(scr.bias[f + i][g]), d, X, ng);
                }
            }
    }
    TREL();
    const int rows = pk->rows, r0 = b0 * 16, nr = (rows - r0 < nb * 16 ? rows - r0 : nb * 16);
    for (int t = t0; t < t1; t++) memcpy(y + (size_t)t * rows + r0, scr.acc[t - t0], (size_t)nr * sizeof(float));
}

#else /* no AMX on this platform */
int cpu_amx_available(void) { return 0; }
void cpu_amx_quant(const float *x, cpu_qact *a, int t0, int t1) {
    (void)x, (void)a, (void)t0, (void)t1;
}
void cpu_amx_qmm(const cpu_q4pack *pk, const cpu_qact *a, float *y, int b0, int b1, int t0, int t1) {
    (void)pk, (void)a, (void)y, (void)b0, (void)b1, (void)t0, (void)t1;
}
#endif
