/* The one interface every compute backend fills (cpu reference, cpu fast path, metal, cuda).
 *
 * The forward pass in common/ is written once against these verbs. Activations are always f32
 * and live in backend-owned buffers (bk_buf); weights are wrapped from the mmap'd checkpoint
 * (zero-copy where the backend can, uploaded otherwise).
 *
 * Ops are enqueued: a backend may run them asynchronously in order. buf_read() and sync() wait.
 * Host arrays passed to an op (token ids) are consumed before the call returns.
 *
 * Threading: one backend object is used by one thread at a time.
 *
 * Numerical contract (what the cpu reference computes; every backend is tested against it):
 *   matmul     y[t, r] = sum_c x[t, c] * W[r, c] (+ bias[r])      f32 accumulation
 *              quantized W (MLX affine): W[r, c] = scale[r, c/g] * q[r, c] + bias[r, c/g]
 *              q packed in uint32 words [rows, cols*bits/32], element 0 in the lowest bits
 *   embed      out[t, :] = W[ids[t], :] (dequantized row)
 *   rmsnorm    out[t, i] = x[t, i] / sqrt(mean_i(x[t, :]^2) + eps) * w[i]
 *   rope       rotate-half (GPT-NeoX / HF) convention on each head of x[t]:
 *              for j < half: a = x[j], b = x[j+half], ang = (pos0 + t) * inv_freq[j]
 *              x[j] = a cos - b sin;  x[j+half] = b cos + a sin
 *   attention  causal GQA: query t (position pos0 + t) of head h attends to cache rows
 *              0 .. pos0 + t of kv head h / (n_heads / n_kv_heads), scale 1/sqrt(head_dim);
 *              the cache rows as the backend keeps them (kv_dtype: f32, or f16-rounded)
 *   swiglu     gate[i] = gate[i] / (1 + exp(-gate[i])) * up[i]
 *   add        x[i] += y[i]
 */
#ifndef STRATA_BACKEND_H
#define STRATA_BACKEND_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef enum {
    BK_F32 = 0,
    BK_F16,
    BK_BF16,
    BK_U32,
    BK_I32,
    BK_U8,
} bk_dtype;

size_t bk_dtype_size(bk_dtype t);
const char *bk_dtype_name(bk_dtype t);

typedef struct bk_buf bk_buf; /* backend-owned memory; layout known only to its backend */
typedef struct backend backend;

/* A float vector stored in a weight file (norm weight, q/k/v bias): f32, f16 or bf16. */
typedef struct {
    bk_buf *data;
    bk_dtype dtype;
    int n;
} bk_vec;

/* A linear layer's weight, [rows = out features, cols = in features].
 * bits == 0: dense, `w` holds rows*cols values of `wdtype` (f32/f16/bf16).
 * bits == 4 or 8: MLX affine quantized; `w` holds uint32 [rows, cols*bits/32], `scales` and
 * `biases` hold [rows, cols/group_size] values of `sdtype` (f16/bf16/f32).
 * `bias` (optional, data == NULL when absent) is the layer's additive output bias. */
typedef struct {
    bk_buf *w, *scales, *biases;
    bk_dtype wdtype, sdtype;
    int rows, cols;
    int bits, group_size;
    bk_vec bias;
} bk_weight;

typedef struct {
    const char *name;
    void (*destroy)(backend *be);

    /* Memory. buf_alloc returns zeroed memory or NULL. buf_wrap makes a weight buffer from host
     * memory that outlives it (the mmap): zero-copy where possible. */
    bk_buf *(*buf_alloc)(backend *be, size_t bytes);
    bk_buf *(*buf_wrap)(backend *be, const void *host, size_t bytes);
    void (*buf_free)(backend *be, bk_buf *buf);
    void (*buf_write)(backend *be, bk_buf *dst, size_t off_bytes, const void *src, size_t bytes);
    void (*buf_read)(backend *be, const bk_buf *src, size_t off_bytes, void *dst, size_t bytes);
    void (*copy)(backend *be, const bk_buf *src, size_t src_off_bytes, bk_buf *dst,
                 size_t dst_off_bytes, size_t bytes);

    /* y[n, w->rows] = x[n, w->cols] * W^T (+ bias) */
    void (*matmul)(backend *be, const bk_weight *w, const bk_buf *x, bk_buf *y, int n);
    /* out[n, w->cols] = rows ids[0..n) of W (ids are host memory, 0 <= id < w->rows) */
    void (*embed)(backend *be, const bk_weight *w, const int32_t *ids, int n, bk_buf *out);
    /* out[n, dim] = rmsnorm(x[n, dim]) * weight; out may equal x */
    void (*rmsnorm)(backend *be, const bk_buf *x, const bk_vec *weight, bk_buf *out, int n,
                    int dim, float eps);
    /* in place on x[n, n_heads * head_dim]; inv_freq holds head_dim/2 f32 */
    void (*rope)(backend *be, bk_buf *x, int n, int n_heads, int head_dim, int pos0,
                 const bk_buf *inv_freq);
    /* out[n, n_heads*head_dim] from q[n, n_heads*head_dim] and the caches k, v
     * [>= pos0+n rows, n_kv_heads*head_dim] in kv_dtype, already holding rows 0 .. pos0+n-1 */
    void (*attention)(backend *be, const bk_buf *q, const bk_buf *k_cache,
                      const bk_buf *v_cache, bk_buf *out, int n, int pos0, int n_heads,
                      int n_kv_heads, int head_dim);
    /* gate[i] = silu(gate[i]) * up[i], i < n_elems */
    void (*swiglu)(backend *be, bk_buf *gate, const bk_buf *up, int n_elems);
    /* x[i] += y[i], i < n_elems */
    void (*add)(backend *be, bk_buf *x, const bk_buf *y, int n_elems);

    void (*sync)(backend *be);

    /* KV caches in f16 (both optional; NULL: caches are f32 rows written with copy).
     * kv_dtype: the element type of the caches attention reads for this head configuration,
     * BK_F32 or BK_F16 (half the bytes a token's attention reads); the caller allocates rows of
     * n_kv_heads * head_dim elements of it. kv_store: cache rows [row0, row0 + n) from the f32
     * rows src[n, row_elems], rounded to f16 (for caches whose kv_dtype is BK_F16). */
    bk_dtype (*kv_dtype)(backend *be, int n_heads, int n_kv_heads, int head_dim);
    void (*kv_store)(backend *be, const bk_buf *src, bk_buf *cache, int row0, int n, int row_elems);
} backend_ops;

struct backend {
    const backend_ops *ops;
    void *ctx;
};

/* Backends by name: "cpu" (fast path where the CPU has one), "cpu-ref" (plain reference),
 * "metal", "cuda". Unknown or unavailable names fail with a message saying why. */
backend *backend_new(const char *name, int n_threads, strata_err *err);
void backend_destroy(backend **be);

/* The reference backend: plain loops, the oracle for every other backend. */
backend *backend_cpu_ref_new(void);

/* Host-side helpers shared by backends and tests. */
float bk_f16_to_f32(uint16_t h);
uint16_t bk_f32_to_f16(float f);
float bk_bf16_to_f32(uint16_t h);
uint16_t bk_f32_to_bf16(float f); /* round to nearest even */
/* value i of a float vector of dtype f32/f16/bf16 */
float bk_load_float(const void *p, bk_dtype t, size_t i);

#endif
