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

/* layouts of quantized activations: planar (above, every level) or the AVX-512 4-bit chunks
 * (q4_avx512.c); a level's quant picks the layout and its qmm reads it */
enum { CPU_QACT_PLANAR = 0, CPU_QACT_CHUNK128 = 1 };

typedef struct {
    int n, cols, bits, planes, layout;
    int8_t *hi, *lo;  /* [n, cols] each, contiguous; lo is NULL when planes == 1 */
    float *d;         /* [n, cols/32] block scales */
    float *bsum;      /* [n, cols/32] exact float sums of each block */
} cpu_qact;

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
     * the kv head's slice of row 0, rows `kv_stride` floats apart; s is scratch of group * len
     * floats. Only called when hd % 16 == 0, hd <= 256 and group <= 16. */
    void (*attn)(const float *q, const float *k, const float *v, size_t kv_stride, int len, int group, int hd,
                 float scale, float *s, float *out);
    /* g[i] = silu(g[i]) * u[i] */
    void (*swiglu)(float *g, const float *u, int n);
    /* NULL, or whether the level quantizes for this weight shape in CPU_QACT_CHUNK128 */
    int (*chunk_ok)(int bits, int cols, int group_size, int planes);
} cpu_kernels;

extern const cpu_kernels cpu_kern_scalar;
/* the portable quantizer and swiglu, reused by levels without their own */
void cpu_quant_portable(const float *x, cpu_qact *a, int t0, int t1);
void cpu_swiglu_portable(float *g, const float *u, int n);
#if defined(__x86_64__)
/* the AVX-512 4-bit chunk path (q4_avx512.c): whether a weight shape takes it, and its ops */
int cpu_q4c_ok(int bits, int cols, int group_size, int planes);
void cpu_q4c_quant(const float *x, cpu_qact *a, int t0, int t1);
void cpu_q4c_qmm(const bk_weight *w, const cpu_qact *a, float *y, int r0, int r1, int t0, int t1);
extern const cpu_kernels cpu_kern_avx2;
extern const cpu_kernels cpu_kern_avx512;
#endif

#endif
