/* The inner kernels of the fast cpu backend, one table per instruction-set level.
 *
 * Quantized matmul runs on integers: each token's activations are quantized per block of 32
 * (the smallest MLX group, so a weight group always covers whole blocks) to int8 with a scale
 * d = max|x| / 127. Weights stay as the checkpoint stores them (unsigned 4- or 8-bit codes), so
 * a block's dot product sum(q * xi) is one u8 x s8 integer dot (vpdpbusd, pmaddubsw, sdot).
 *   y[r] = sum_g s_g * sum_{b in g} d_b * sum_{c in b} q_c xi_c  +  sum_g bias_g * sum_{c in g} x_c
 * The second term uses the exact float sums of x, so only the q*x part sees quantization.
 * With `planes == 2` a second int8 plane holds the rounding residual (x/d - hi) * 256, giving
 * ~16-bit activations: sum(q * (hi*256 + lo)) / 256, at twice the integer dot work. One plane
 * alone errs by ~0.5% of max|y| (measured in tests/test_backend_ops.c), which is outside the
 * contract's 1e-3, so two planes is the default.
 *
 * Layout of a quantized token row of K values (K % 32 == 0):
 *   8-bit weights: plane[c] = the code of x[c] (natural order).
 *   4-bit weights: a byte of a packed row holds elements 2i (low nibble) and 2i+1 (high
 *   nibble), so the codes are split: plane[0 .. K/2) = even elements, plane[K/2 .. K) = odd
 *   elements, each in order. Then the low nibbles of weight bytes [i, i+n) pair with
 *   plane[i .. i+n) and the high nibbles with plane[K/2 + i ..], for any n: no shuffles. */
#ifndef STRATA_CPU_KERN_H
#define STRATA_CPU_KERN_H

#include <stdint.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_buf.h"
#include "kernels/cpu/threadpool.h"

/* layouts of quantized activations: planar (above, every level), the AVX-512 4-bit chunks
 * (q4_avx512.c) or natural order per weight group (q4_pack_avx512.c, for repacked weights);
 * a level's quant picks the layout and its qmm reads it */
enum { CPU_QACT_PLANAR = 0, CPU_QACT_CHUNK128 = 1, CPU_QACT_NATURAL = 2, CPU_QACT_AMX = 3 };
/* CPU_QACT_AMX (q4_amx.c): natural order, one scale a token (d[t]), rows rounded up to a multiple
 * of 32 tokens (zeros past n), bsum holding the group sums as bf16 planes; cpu_amx_act_bytes and
 * cpu_amx_act_init lay it out */

typedef struct {
    int n, cols, bits, planes, layout;
    int block;        /* elements a scale covers: 32, or the weight group for CPU_QACT_NATURAL */
    int8_t *hi, *lo;  /* [n, cols] each, contiguous; lo is NULL when planes == 1 */
    float *d;         /* [n, cols/block] block scales */
    float *bsum;      /* [n, cols/block] exact float sums of each block */
} cpu_qact;

/* A 4-bit weight repacked for the VNNI broadcast kernel (q4_repack.c builds it at the first
 * matmul that sees the weight; the bk_buf of the codes owns it). Rows in blocks of 16, each
 * block one contiguous stream of ng = cols/group groups; a group is
 *   group/8 vectors of 64 bytes: dword lane r (row r of the block), byte j holds
 *       low nibble q[r][8c + j], high nibble q[r][8c + 4 + j]   (c = the vector in the group)
 *   then a scale line: the block's 16 scales then its 16 biases, in sdtype (f16/bf16: 64 bytes;
 *       f32: 128 bytes)
 * so that `v & 0x0f` is 16 rows x columns 8c..8c+3 and `v & 0xf0` 16 rows x 8c+4..8c+7 (times
 * 16), each meeting 4 activations in natural order with one broadcast. Rows past the last are
 * zero codes with zero scales and biases. */
typedef struct cpu_q4pack {
    int rows, cols, group, n_blocks;
    bk_dtype sdtype;
    size_t group_bytes, block_bytes, bytes;
    const void *src_w, *src_s, *src_b; /* what it was built from */
    unsigned writes_w, writes_s, writes_b; /* and those buffers' write counts then */
    uint8_t *data;                      /* 64-byte aligned, n_blocks * block_bytes */
    /* learned by cpu_fast.c (prefetch_next): per worker thread, the first bytes of its rows in the
     * decode job that came after this weight's last time; addresses only, never read (that weight
     * may be gone) */
    tp_prefetch next[TP_PF_MAX];
} cpu_q4pack;

/* a pack for w (data not yet filled), or NULL when w does not fit the layout or memory is out */
cpu_q4pack *cpu_q4pack_new(const bk_weight *w);
/* fills row blocks [b0, b1) from w's codes, scales and biases */
void cpu_q4pack_fill(cpu_q4pack *p, const bk_weight *w, int b0, int b1);
void cpu_q4pack_free(cpu_q4pack *p);
/* row r of the weight, dequantized (embed of tied embeddings: the checkpoint's pages of a packed
 * weight were handed back, and a row read from the pack faults nothing in) */
void cpu_q4pack_row(const cpu_q4pack *p, int r, float *out);
/* hands the checkpoint pages of w's codes, scales and biases back to the kernel once packed */
void cpu_q4pack_release_source(const bk_weight *w);
/* whether p was built from this weight description and its buffers are unchanged since */
int cpu_q4pack_matches(const cpu_q4pack *p, const bk_weight *w);

typedef struct {
    const char *name;
    /* quantizes token rows [t0, t1) of x[n, a->cols] into a (layout per a->bits) */
    void (*quant)(const float *x, cpu_qact *a, int t0, int t1);
    /* y[t, r] = sum_c W[r, c] x[t, c] for r in [r0, r1), t in [t0, t1), no output bias.
     * qmm: quantized W with the activations of a; dmm: dense f32/f16/bf16 W with f32 x. */
    void (*qmm)(const bk_weight *w, const cpu_qact *a, float *y, int r0, int r1, int t0, int t1);
    void (*dmm)(const bk_weight *w, const float *x, float *y, int r0, int r1, int t0, int t1);
    /* attention helpers: dot product, and y += a * x */
    float (*dot)(const float *a, const float *b, int n);
    void (*axpy)(float *y, float a, const float *x, int n);
    /* NULL, or the attention of `group` query heads that share one kv head, over cache rows
     * 0 .. len-1: q and out hold the group's heads contiguously ([group, hd]); k and v point at
     * the kv head's slice of row 0, rows `kv_stride` elements apart, f32 or (kv16) f16
     * (kv16 only on levels with to_f16, which take both); s is scratch of group * len
     * floats. Only called when hd % 16 == 0, hd <= 256 and group <= 16. ml NULL: out is the
     * attention; else rows 0 .. len-1 are one slice of the cache (decode splits a head's rows
     * across threads): out[i] = sum_p exp(s_ip - m_i) v_p unnormalised, ml[2i] = m_i (the slice's
     * max score of head i), ml[2i+1] = sum_p exp(s_ip - m_i); cpu_fast.c merges the slices. */
    void (*attn)(const float *q, const void *k, const void *v, size_t kv_stride, int kv16, int len, int group, int hd,
                 float scale, float *s, float *out, float *ml);
    /* NULL, or prefill attention of `tb` consecutive tokens against one kv head: token i's `group`
     * query heads at q + i * q_stride ([group, hd]), attending to cache rows 0 .. len0 + i - 1 (k, v
     * as for attn); out like q. s: scratch of attn_blk_scratch(tb, group, len0, hd) floats. Only
     * called when hd % 16 == 0 and tb * group <= 256. */
    void (*attn_blk)(const float *q, size_t q_stride, int tb, int len0, const void *k, const void *v, size_t kv_stride,
                     int kv16, int group, int hd, float scale, float *s, float *out);
    /* NULL, or y[i] = x[i] rounded to f16 (nearest even), i < n: KV cache rows */
    void (*to_f16)(const float *x, uint16_t *y, size_t n);
    /* g[i] = silu(g[i]) * u[i] */
    void (*swiglu)(float *g, const float *u, int n);
    /* NULL, or rmsnorm of token rows [t0, t1) of x[., dim] into out (may equal x), weight w of
     * dtype wt (f32/f16/bf16); the reference converted w element by element, 2.5 us a decode row
     * of 896 and 50 calls a token */
    void (*rmsnorm)(const float *x, const void *w, bk_dtype wt, float *out, int t0, int t1, int dim, float eps);
    /* NULL, or whether the level quantizes for this weight shape in CPU_QACT_CHUNK128 */
    int (*chunk_ok)(int bits, int cols, int group_size, int planes);
    /* NULL, or the repacked 4-bit path: whether w takes it, the CPU_QACT_NATURAL quantizer
     * (a->block = the weight group), and y[t, r] for row blocks [b0, b1) of p, tokens [t0, t1),
     * no output bias (y rows `rows` floats apart) */
    int (*pk_ok)(const bk_weight *w, int planes);
    void (*pk_quant)(const float *x, cpu_qact *a, int t0, int t1);
    void (*pk_qmm)(const cpu_q4pack *p, const cpu_qact *a, float *y, int b0, int b1, int t0, int t1);
    /* 1: the level's other paths are AVX-512, so prefill matmuls may take the AMX tile unit
     * (q4_amx.c) where the CPU has it */
    int amx;
} cpu_kernels;

#ifndef ATTN_PF
#define ATTN_PF 48 /* decode attention: K/V cache rows prefetched ahead (q_avx512.c attn_nv) */
#endif

/* floats of attn_blk's scratch: the scores of every query over the rows (rounded up to 16), then
 * two transposed blocks of 16 K rows */
static inline size_t attn_blk_scratch(int tb, int group, int len0, int hd) {
    return (size_t)tb * (size_t)group * (size_t)((len0 + tb - 1 + 15) & ~15) + 32 * (size_t)hd;
}

/* the exact float sum of token t's activations over weight group g (group size G) on the planar
 * layout: its blocks' bsum, for the bias term sum_g bias_g * sum_{c in g} x_c */
static inline float cpu_group_xsum(const cpu_qact *a, int t, int g, int G) {
    const float *bs = a->bsum + (size_t)t * (size_t)(a->cols / 32) + (size_t)g * (size_t)(G / 32);
    float s = 0.0f;
    for (int k = 0; k < G / 32; k++) s += bs[k];
    return s;
}

/* The planar qmm of a level built on a tile kernel `tile(w, a, y, r, t, R, T, bits, planes)` (rows
 * [r, r + R), tokens [t, t + T), R <= 4, T <= 2, the last three constants): defines the static
 * `name(w, a, y, r0, r1, t0, t1)` of cpu_kernels.qmm, which walks 4-row x 2-token tiles, then single
 * rows and tokens, in one copy per bit width and plane count (attr: the level's target attribute) */
#define CPU_QMM_TILED(attr, name, tile, bits, planes)                                                                      \
    static attr void name##_##bits##_##planes(const bk_weight *w, const cpu_qact *a, float *y, int r0, int r1, int t0,  \
                                              int t1) {                                                                 \
        int t = t0;                                                                                                     \
        for (; t + 2 <= t1; t += 2) {                                                                                   \
            int r = r0;                                                                                                 \
            for (; r + 4 <= r1; r += 4) tile(w, a, y, r, t, 4, 2, bits, planes);                                       \
            for (; r < r1; r++) tile(w, a, y, r, t, 1, 2, bits, planes);                                               \
        }                                                                                                               \
        for (; t < t1; t++) {                                                                                           \
            int r = r0;                                                                                                 \
            for (; r + 4 <= r1; r += 4) tile(w, a, y, r, t, 4, 1, bits, planes);                                       \
            for (; r < r1; r++) tile(w, a, y, r, t, 1, 1, bits, planes);                                               \
        }                                                                                                               \
    }
#define CPU_QMM_LEVEL(attr, name, tile)                                                                                 \
    CPU_QMM_TILED(attr, name, tile, 4, 1)                                                                               \
    CPU_QMM_TILED(attr, name, tile, 4, 2)                                                                               \
    CPU_QMM_TILED(attr, name, tile, 8, 1)                                                                               \
    CPU_QMM_TILED(attr, name, tile, 8, 2)                                                                               \
    static void name(const bk_weight *w, const cpu_qact *a, float *y, int r0, int r1, int t0, int t1) {                 \
        if (w->bits == 4) (a->planes == 2 ? name##_4_2 : name##_4_1)(w, a, y, r0, r1, t0, t1);                        \
        else (a->planes == 2 ? name##_8_2 : name##_8_1)(w, a, y, r0, r1, t0, t1);                                     \
    }

extern const cpu_kernels cpu_kern_scalar;
/* the portable quantizer and swiglu, reused by levels without their own */
void cpu_quant_portable(const float *x, cpu_qact *a, int t0, int t1);
void cpu_swiglu_portable(float *g, const float *u, int n);
#if defined(__x86_64__)
/* the AVX-512 4-bit chunk path (q4_avx512.c): whether a weight shape takes it, and its ops */
int cpu_q4c_ok(int bits, int cols, int group_size, int planes);
void cpu_q4c_quant(const float *x, cpu_qact *a, int t0, int t1);
void cpu_q4c_qmm(const bk_weight *w, const cpu_qact *a, float *y, int r0, int r1, int t0, int t1);
/* the AVX-512 VNNI path over repacked 4-bit weights (q4_pack_avx512.c). One token reads row
 * blocks as two streams at once: in a run of 2R blocks of its range, blocks b + i and b + R + i
 * together (i < R), R = cpu_q4p_pair_run(block bytes) so that the streams are CPU_Q4P_PAIR_SPAN
 * bytes apart or more; where a range has fewer than 2R blocks left, adjacent pairs of blocks of
 * CPU_Q4P_PAIR_MIN bytes and more, else single blocks (bench/RESULTS.md, CPU round 12). Decode
 * claims whole runs where a thread's share holds one, whole pairs else (cpu_fast.c group_now). */
#ifndef CPU_Q4P_PAIR_MIN
#define CPU_Q4P_PAIR_MIN ((size_t)20 << 10)
#endif
#ifndef CPU_Q4P_PAIR_SPAN
#define CPU_Q4P_PAIR_SPAN ((size_t)40 << 10)
#endif
static inline int cpu_q4p_pair_run(size_t block_bytes) {
    size_t r = (CPU_Q4P_PAIR_SPAN + block_bytes - 1) / (block_bytes ? block_bytes : 1);
    return r > 8 ? 8 : r < 1 ? 1 : (int)r;
}
int cpu_q4p_ok(const bk_weight *w, int planes);
/* The walk of a level's kernel over repacked 4-bit weights (q4_pack_avx512.c, q4_pack_avx2.c),
 * row blocks [b0, b1) x tokens [t0, t1), generated per level as `name` (switching on the scale
 * dtype) from its block functions: one_token(pk, a, y, b0, b1, t, st) one token's blocks,
 * block_1(pk, p, a, t, yb, rows_left, st) one token of the block at p, block_T(pk, p, a, t, yb,
 * rows_left, st, T, pf) T = 2..4 tokens of it (pf: prefetch ahead in the block), block_2T(the same)
 * T = 1..4 tokens of the blocks at p and after it (rows_left > 16). Blocks go in adjacent pairs, a
 * last odd one alone. Short batches (up to 8 tokens) read each pair once from memory, their token
 * tiles meeting it in cache; longer ones (prefill) keep the task's few blocks in cache while the
 * token tiles stream past. Tiles of CPU_Q4P_TILE tokens; 5 - 7 tokens as two near-equal tiles
 * rather than 4 and a short one. */
#define CPU_Q4P_TILE 4 /* tokens a tile at most (block_T's T) */
static inline int cpu_q4p_tile_of(int rem) {
    return rem >= 2 * CPU_Q4P_TILE || rem == CPU_Q4P_TILE ? CPU_Q4P_TILE : rem > CPU_Q4P_TILE ? (rem + 1) / 2 : rem;
}
#define CPU_Q4P_WALK(...) CPU_Q4P_WALK_(__VA_ARGS__) /* the arguments expanded first: they may be macros */
#define CPU_Q4P_WALK_(attr, name, one_token, block_1, block_T, block_2T)                                                \
    static inline __attribute__((always_inline)) attr void name##_tile(const cpu_q4pack *pk, const cpu_qact *a, float *y, \
                                                                       int b, int t, int T, const bk_dtype st,           \
                                                                       const int pf, const int two) {                    \
        const uint8_t *p = pk->data + (size_t)b * pk->block_bytes;                                                      \
        float *yb = y + (size_t)t * pk->rows + (size_t)b * 16;                                                          \
        const int rows_left = pk->rows - 16 * b;                                                                        \
        if (two) switch (T) {                                                                                           \
            case 4: block_2T(pk, p, a, t, yb, rows_left, st, 4, pf); break;                                             \
            case 3: block_2T(pk, p, a, t, yb, rows_left, st, 3, pf); break;                                             \
            case 2: block_2T(pk, p, a, t, yb, rows_left, st, 2, pf); break;                                             \
            default: block_2T(pk, p, a, t, yb, rows_left, st, 1, pf); break;                                            \
            }                                                                                                           \
        else switch (T) {                                                                                               \
            case 4: block_T(pk, p, a, t, yb, rows_left, st, 4, pf); break;                                              \
            case 3: block_T(pk, p, a, t, yb, rows_left, st, 3, pf); break;                                              \
            case 2: block_T(pk, p, a, t, yb, rows_left, st, 2, pf); break;                                              \
            default: block_1(pk, p, a, t, yb, rows_left, st); break;                                                    \
            }                                                                                                           \
    }                                                                                                                   \
    static inline __attribute__((always_inline)) attr void name##_st(const cpu_q4pack *pk, const cpu_qact *a, float *y, \
                                                                     int b0, int b1, int t0, int t1, const bk_dtype st) { \
        if (t1 - t0 <= 2 * CPU_Q4P_TILE) {                                                                              \
            if (t1 - t0 == 1) {                                                                                         \
                one_token(pk, a, y, b0, b1, t0, st);                                                                    \
                return;                                                                                                 \
            }                                                                                                           \
            for (int b = b0, two; b < b1; b += 1 + two) {                                                               \
                two = b + 1 < b1;                                                                                       \
                for (int t = t0, T; t < t1; t += T) {                                                                   \
                    T = cpu_q4p_tile_of(t1 - t);                                                                        \
                    name##_tile(pk, a, y, b, t, T, st, 1, two);                                                         \
                }                                                                                                       \
            }                                                                                                           \
        } else {                                                                                                        \
            for (int t = t0, T; t < t1; t += T) {                                                                       \
                T = cpu_q4p_tile_of(t1 - t);                                                                            \
                for (int b = b0, two; b < b1; b += 1 + two) {                                                           \
                    two = b + 1 < b1;                                                                                   \
                    name##_tile(pk, a, y, b, t, T, st, 0, two);                                                         \
                }                                                                                                       \
            }                                                                                                           \
        }                                                                                                               \
    }                                                                                                                   \
    void attr name(const cpu_q4pack *pk, const cpu_qact *a, float *y, int b0, int b1, int t0, int t1) {                 \
        switch (pk->sdtype) {                                                                                           \
        case BK_F16: name##_st(pk, a, y, b0, b1, t0, t1, BK_F16); break;                                                \
        case BK_BF16: name##_st(pk, a, y, b0, b1, t0, t1, BK_BF16); break;                                              \
        default: name##_st(pk, a, y, b0, b1, t0, t1, BK_F32); break;                                                    \
        }                                                                                                               \
    }
void cpu_q4p_quant(const float *x, cpu_qact *a, int t0, int t1);
void cpu_q4p_qmm(const cpu_q4pack *p, const cpu_qact *a, float *y, int b0, int b1, int t0, int t1);
/* the same repacked weights and activation numbers on AVX2 (q4_pack_avx2.c: pmaddubsw, one block
 * stream, no pairs) */
void cpu_q4p_quant_avx2(const float *x, cpu_qact *a, int t0, int t1);
void cpu_q4p_qmm_avx2(const cpu_q4pack *p, const cpu_qact *a, float *y, int b0, int b1, int t0, int t1);
/* and with AVX-VNNI (vpdpbusd on 256 bits): the avx2-vnni level */
void cpu_q4p_qmm_vnni(const cpu_q4pack *p, const cpu_qact *a, float *y, int b0, int b1, int t0, int t1);
/* the AVX2 levels' float ops (f32_avx2.c): attn, attn_blk, to_f16, rmsnorm and swiglu of cpu_kernels */
void cpu_attn_avx2(const float *q, const void *k, const void *v, size_t ks, int kv16, int len, int group, int hd, float scale,
                   float *s, float *out, float *ml);
void cpu_attn_blk_avx2(const float *q, size_t qs, int tb, int len0, const void *k, const void *v, size_t ks, int kv16,
                       int group, int hd, float scale, float *s, float *out);
void cpu_to_f16_avx2(const float *x, uint16_t *y, size_t n);
void cpu_rmsnorm_avx2(const float *x, const void *w, bk_dtype wt, float *out, int t0, int t1, int dim, float eps);
void cpu_swiglu_avx2(float *g, const float *u, int n);
extern const cpu_kernels cpu_kern_avx2;
extern const cpu_kernels cpu_kern_avx2_vnni;
extern const cpu_kernels cpu_kern_avx512;
#endif
#if defined(__aarch64__)
/* the NEON levels (q_neon_impl.h): base NEON, and with the ARMv8.2 dot product */
extern const cpu_kernels cpu_kern_neon;
extern const cpu_kernels cpu_kern_neon_dot;
#endif
/* AMX prefill over repacked 4-bit weights of groups 64 and 128 with at most 32 AMX_BIAS_STEPS
 * groups a row (q4_amx.c; stubs where the platform has none): whether this CPU and OS run it
 * (AMX-INT8 and AMX-BF16; asks the kernel for the tile state once), the bytes and layout of
 * CPU_QACT_AMX activations for n tokens, their quantizer (token rows [t0, t1) of the padded
 * rows; rows >= a->n are zeroed; a->n, cols and block set), and y[t, r] for up to AMX_BLOCKS row
 * blocks [b0, b1) and AMX_TOKENS tokens [t0, t1), t0 a multiple of 16, no output bias. */
#define AMX_BLOCKS 16 /* a task's most: 256 rows (the backend takes fewer where that leaves the threads too few tasks) */
#define AMX_TOKENS 256
#define AMX_BIAS_STEPS 10
size_t cpu_amx_act_bytes(int n, int cols, int group);
void cpu_amx_act_init(cpu_qact *a, void *mem, int n, int cols, int group);
/* a calling thread's scratch (weight tiles, scales, the call's float output: ~720 KB, 64-byte
 * aligned), one for each thread that calls cpu_amx_qmm at the same time */
typedef struct cpu_amx_scr cpu_amx_scr;
size_t cpu_amx_scratch_bytes(void);
int cpu_amx_available(void);
void cpu_amx_quant(const float *x, cpu_qact *a, int t0, int t1);
void cpu_amx_qmm(cpu_amx_scr *s, const cpu_q4pack *p, const cpu_qact *a, float *y, int b0, int b1, int t0, int t1);

#endif
