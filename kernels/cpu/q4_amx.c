/* Prefill on AMX: repacked 4-bit weights (cpu_q4pack) times bf16 activations on the tile unit
 * (TDPBF16PS: 16 x 16 fp32 += 16 x 32 bf16 . 32 x 16 bf16), on CPUs that have AMX-BF16 and a
 * kernel that grants the tile state (Linux 5.16+, arch_prctl ARCH_REQ_XCOMP_PERM).
 *
 * Numbers. A weight is w = s q + b per group (q = 0..15). The tile unit multiplies bf16 exactly
 * into fp32 sums, so the codes go in as the bf16 value 128 + q (bits 0x4300 | q: one byte
 * permute from the pack, no conversion), and the activations as two bf16 planes, x = hi + lo
 * (hi = bf16(x), lo = bf16(x - hi): ~16 significant bits; one plane alone errs ~2e-3 of a dot,
 * outside the contract's 1e-3, as one int8 plane does: cpu_kern.h). Per group g and token t:
 *   y += s_g . C + (b_g - 128 s_g) . X_t,g     C = sum_{c in g} (128 + q_c) x_c,  X = sum_{c in g} x_c
 * C of a group is one tile sum, so the epilogue scales it once per group.
 *
 * A call covers up to AMX_BLOCKS row blocks (64 rows) and AMX_TOKENS tokens, in chunks of KC
 * columns: the chunk's codes are expanded to bf16 tiles in thread-local scratch (1 KB a tile,
 * 16 rows x 32 columns, pairs of columns in a dword as the instruction wants them), then every
 * pair of 16-token tiles meets every pair of 16-row tiles: 4 accumulator tiles, 2 activation
 * tiles, 2 weight tiles = the 8 tile registers. Partial sums wait in a float tile of the call
 * (acc) across chunks. Token rows are read up to the next multiple of 32 (the quantizer pads
 * them with zeros). */
#include "kernels/cpu/cpu_kern.h"

#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define TAMX __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512vbmi,avx512bf16,f16c,fma")))
#define INLINE static inline __attribute__((always_inline))
#define KC 512 /* columns a chunk: a multiple of every group (32, 64, 128) */

/* the tile instructions, with memory clobbers (gcc 12's own macros have none, so the compiler
 * may move the scratch's stores and loads across them) */
#define TCFG(cfg) __asm__ volatile("ldtilecfg %0" ::"m"(*(cfg)) : "memory")
#define TREL() __asm__ volatile("tilerelease" ::: "memory")
#define TZERO(t) __asm__ volatile("tilezero %%tmm" #t ::: "memory")
#define TLOAD(t, p, stride) __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(p), "r"((long)(stride)) : "memory")
#define TSTORE(t, p, stride) __asm__ volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(p), "r"((long)(stride)) : "memory")
#define TDP(d, a, b) __asm__ volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #d ::: "memory")

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
    unsigned a, b, c, d, a1, b1, c1, d1;
    state = 0;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d) || !__get_cpuid_count(7, 1, &a1, &b1, &c1, &d1)) return 0;
    int amx = (d >> 24 & 1) && (d >> 22 & 1); /* AMX-TILE, AMX-BF16 */
    int vbmi = c >> 1 & 1, bf16 = a1 >> 5 & 1; /* AVX512_VBMI, AVX512_BF16 */
    __builtin_cpu_init();
    if (!amx || !vbmi || !bf16 || !__builtin_cpu_supports("avx512bw") || !__builtin_cpu_supports("avx512vl")) return 0;
    unsigned lo, hi;
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo >> 17 & 3) != 3) return 0; /* the OS does not save tile state */
    state = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    return state;
}

/* ---- activations: two bf16 planes and the group sums ---- */

INLINE TAMX __m256i bf16_of(__m512 v) { return (__m256i)_mm512_cvtneps_pbh(v); }
INLINE TAMX __m512 f32_of(__m256i h) { return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)); }

/* the first bf16 of token tile tt, column step ks, plane pl (0 hi, 1 lo): 16 rows x 32 */
INLINE uint16_t *act_tile(const cpu_qact *a, int tt, int ks, int pl) {
    return (uint16_t *)a->hi + (((size_t)tt * (size_t)(a->cols / 32) + (size_t)ks) * 2 + (size_t)pl) * 512;
}

void TAMX cpu_amx_quant(const float *x, cpu_qact *a, int t0, int t1) {
    const int K = a->cols, G = a->block, ng = K / G;
    for (int t = t0; t < t1; t++) {
        float *gs = a->bsum + (size_t)t * ng;
        const int tt = t / 16, r = t % 16;
        if (t >= a->n) { /* padding rows of the last pair of tiles */
            for (int ks = 0; ks < K / 32; ks++) {
                memset(act_tile(a, tt, ks, 0) + 32 * r, 0, 64);
                memset(act_tile(a, tt, ks, 1) + 32 * r, 0, 64);
            }
            memset(gs, 0, (size_t)ng * sizeof *gs);
            continue;
        }
        const float *xt = x + (size_t)t * K;
        for (int g = 0; g < ng; g++) {
            __m512 s = _mm512_setzero_ps();
            for (int c = g * G; c < (g + 1) * G; c += 16) {
                __m512 v = _mm512_loadu_ps(xt + c);
                __m256i vh = bf16_of(v);
                int off = 32 * r + c % 32;
                _mm256_storeu_si256((__m256i *)(act_tile(a, tt, c / 32, 0) + off), vh);
                _mm256_storeu_si256((__m256i *)(act_tile(a, tt, c / 32, 1) + off), bf16_of(_mm512_sub_ps(v, f32_of(vh))));
                s = _mm512_add_ps(s, v);
            }
            gs[g] = _mm512_reduce_add_ps(s);
        }
    }
}

/* ---- weights: a chunk of the pack to bf16 tiles ---- */

static _Thread_local struct {
    uint16_t b[AMX_BLOCKS][KC / 32][16 * 32]; /* [row block][32-column step]: one tile each */
    float s[AMX_BLOCKS][KC / 32][16];         /* per group of the chunk: scales */
    float bias[AMX_BLOCKS][KC / 32][16];      /* and b - 128 s */
    float acc[AMX_TOKENS][AMX_BLOCKS * 16];   /* the call's output, [token][row] */
    float c[4][16 * 16];                      /* accumulator tiles on their way to acc */
} __attribute__((aligned(64))) scr;

/* the 16 scales (which = 0) or biases (which = 1) of a scale line, as f32 */
INLINE TAMX __m512 line16(const uint8_t *p, bk_dtype st, int which) {
    if (st == BK_F32) return _mm512_loadu_ps((const float *)p + 16 * which);
    __m256i h = _mm256_loadu_si256((const __m256i *)(p + 32 * which));
    if (st == BK_F16) return _mm512_cvtph_ps(h);
    return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}

/* A pack vector holds 16 rows x 8 columns: dword r = row r, byte j = columns j (low nibble) and
 * 4 + j (high nibble). A weight tile row holds one pair of columns for the 16 rows: dword r =
 * (bf16 of column 2p, of 2p + 1). permutex2var picks each code byte and 0x43 above it. */
INLINE TAMX void expand_block(const cpu_q4pack *pk, int blk, int g0, int ngc, int slot) {
    const int G = pk->group;
    const uint8_t *src = pk->data + (size_t)blk * pk->block_bytes + (size_t)g0 * pk->group_bytes;
    const __m512i m0f = _mm512_set1_epi8(0x0f), top = _mm512_set1_epi8(0x43);
    __m512i i0, i2; /* out byte 4r + 2i <- code byte 4r + j0 + i; out byte 4r + 2i + 1 <- 0x43 */
    {
        uint8_t x0[64], x2[64];
        for (int r = 0; r < 16; r++)
            for (int i = 0; i < 2; i++) {
                x0[4 * r + 2 * i] = (uint8_t)(4 * r + i), x2[4 * r + 2 * i] = (uint8_t)(4 * r + 2 + i);
                x0[4 * r + 2 * i + 1] = x2[4 * r + 2 * i + 1] = 64;
            }
        i0 = _mm512_loadu_si512(x0);
        i2 = _mm512_loadu_si512(x2);
    }
    for (int g = 0; g < ngc; g++, src += pk->group_bytes) {
        for (int c = 0; c < G / 8; c++) {
            __m512i v = _mm512_load_si512(src + 64 * c);
            __m512i lo = _mm512_and_si512(v, m0f), hi = _mm512_and_si512(_mm512_srli_epi16(v, 4), m0f);
            int k = g * G + 8 * c; /* column within the chunk: tile k / 32, pair rows (k % 32) / 2 .. + 3 */
            uint16_t *t = scr.b[slot][k / 32] + (k % 32) / 2 * 32;
            _mm512_store_si512(t, _mm512_permutex2var_epi8(lo, i0, top));
            _mm512_store_si512(t + 32, _mm512_permutex2var_epi8(lo, i2, top));
            _mm512_store_si512(t + 64, _mm512_permutex2var_epi8(hi, i0, top));
            _mm512_store_si512(t + 96, _mm512_permutex2var_epi8(hi, i2, top));
        }
        const uint8_t *line = src + (size_t)G * 8;
        __m512 s = line16(line, pk->sdtype, 0), b = line16(line, pk->sdtype, 1);
        _mm512_store_ps(scr.s[slot][g], s);
        _mm512_store_ps(scr.bias[slot][g], _mm512_fnmadd_ps(s, _mm512_set1_ps(128.0f), b));
    }
}

/* acc rows of 16 tokens, 16 rows (tile c of scr) += s C + X bias, X of group g */
INLINE TAMX void epilogue(const float *c, float *acc, __m512 s, __m512 b, const float *gsum, int ng) {
    for (int r = 0; r < 16; r++, acc += AMX_BLOCKS * 16) {
        __m512 v = _mm512_fmadd_ps(_mm512_load_ps(c + 16 * r), s, _mm512_loadu_ps(acc));
        _mm512_storeu_ps(acc, _mm512_fmadd_ps(_mm512_set1_ps(gsum[(size_t)r * ng]), b, v));
    }
}

/* the tile sums of one weight group (`steps` column steps from chunk step ks) for token tiles tt,
 * tt + 1 and the weight tiles of blocks f (and f + 1 when two) of the chunk, into scr.c[0..3]:
 * c[0], c[1] = tokens of tt, tt + 1 against f; c[2], c[3] against f + 1 */
INLINE void group_tiles(const cpu_qact *a, int tt, int ks0, int ks, int steps, int f, int two) {
    const size_t next = (size_t)(a->cols / 32) * 1024; /* from a token tile to the next */
    TZERO(0);
    TZERO(1);
    if (two) {
        TZERO(2);
        TZERO(3);
    }
    for (int s = ks; s < ks + steps; s++) {
        const uint16_t *ah = act_tile(a, tt, ks0 + s, 0), *al = ah + 512;
        TLOAD(6, scr.b[f][s], 64);
        TLOAD(4, ah, 64);
        TLOAD(5, ah + next, 64);
        TDP(0, 4, 6);
        TDP(1, 5, 6);
        if (two) {
            TLOAD(7, scr.b[f + 1][s], 64);
            TDP(2, 4, 7);
            TDP(3, 5, 7);
        }
        TLOAD(4, al, 64); /* the lo plane against the same weight tiles */
        TLOAD(5, al + next, 64);
        TDP(0, 4, 6);
        TDP(1, 5, 6);
        if (two) {
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
    const int K = pk->cols, G = pk->group, ng = K / G, nb = b1 - b0, steps = G / 32;
    const int tpad = (t1 - t0 + 31) & ~31; /* whole pairs of token tiles: the quantizer zeroed the rest */
    tile_cfg cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.palette = 1;
    for (int i = 0; i < 8; i++) cfg.colsb[i] = 64, cfg.rows[i] = 16;
    TCFG(&cfg);
    memset(scr.acc, 0, sizeof scr.acc);
    for (int k0 = 0; k0 < K; k0 += KC) {
        const int kc = K - k0 < KC ? K - k0 : KC, g0 = k0 / G, ngc = kc / G;
        for (int i = 0; i < nb; i++) expand_block(pk, b0 + i, g0, ngc, i);
        for (int g = 0; g < ngc; g++) { /* a group's tiles (24 KB) stay in L1 while they meet */
            for (int tp = 0; tp < tpad; tp += 32) {
                const float *gs = a->bsum + (size_t)(t0 + tp) * ng + g0 + g;
                for (int f = 0; f < nb; f += 2) {
                    const int two = f + 1 < nb;
                    group_tiles(a, (t0 + tp) / 16, k0 / 32, g * steps, steps, f, two);
                    for (int i = 0; i < 2 + 2 * two; i++) { /* tile i: tokens 16 (i & 1), rows of block f + i / 2 */
                        const int fb = f + i / 2;
                        epilogue(scr.c[i], &scr.acc[tp + 16 * (i & 1)][16 * fb], _mm512_load_ps(scr.s[fb][g]),
                                 _mm512_load_ps(scr.bias[fb][g]), gs + (size_t)16 * (i & 1) * ng, ng);
                    }
                }
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
