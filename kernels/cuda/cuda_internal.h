/* What the CUDA backend's translation units share: the device buffer, the launchers of the
 * kernels (each enqueues on the backend's one stream and never synchronizes), and the matvec
 * tuning hook the benchmark sweeps. Host code only sees C types here, so bench/bench_cuda.c
 * can include it too. */
#ifndef STRATA_CUDA_INTERNAL_H
#define STRATA_CUDA_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "kernels/backend.h" /* a C header: C linkage for err_set and the bk_ helpers too */

/* A device allocation (plain cudaMalloc: never managed memory). */
struct bk_buf {
    void *d;
    size_t size;
};

/* The stream every op of this backend is enqueued on (a cudaStream_t), for the benchmark's
 * events and graph capture. */
void *cuda_backend_stream(backend *be);

/* Quantized matvec (n == 1) kernels and launch shape. variant: CUDA_MV_REGS (next batch
 * prefetched in registers) or CUDA_MV_ASYNC (batches prefetched by cp.async into shared
 * memory); rows_per_block rows a batch (1, 2, 4 or 8) share a barrier and the block's x
 * registers; blocks_per_sm caps the grid (0: as many as fit). 0 means "the default" for each.
 * Returns -1 for values out of range. The benchmark sweeps these; nothing else calls it. */
#define CUDA_MV_REGS 1
#define CUDA_MV_ASYNC 2
int cuda_matvec_tune(int variant, int rows_per_block, int blocks_per_sm);
/* The shape the default heuristic picks for a [rows, cols] matvec at `bits`. */
void cuda_matvec_pick(int rows, int cols, int bits, int *rows_per_block, int *blocks_per_sm);

/* ---- launchers (in the kernels' .cu files); `stream` is a cudaStream_t ---- */

/* y[n, rows] = x[n, cols] W^T (+ bias): matvec kernels for n == 1 where the layout allows,
 * the tiled kernel otherwise. Returns nonzero if no kernel handles the weight. */
int cuda_launch_matmul(void *stream, const bk_weight *w, const float *x, float *y, int n);
void cuda_launch_embed(void *stream, const bk_weight *w, const int32_t *ids_dev, int n, float *out);
void cuda_launch_rmsnorm(void *stream, const float *x, const void *w, bk_dtype wdtype, float *out, int n,
                         int dim, float eps);
void cuda_launch_rope(void *stream, float *x, int n, int n_heads, int head_dim, int pos0, const float *inv_freq);
void cuda_launch_attention(void *stream, const float *q, const float *k, const float *v, float *out, int n,
                           int pos0, int n_heads, int n_kv_heads, int head_dim);
void cuda_launch_swiglu(void *stream, float *gate, const float *up, int n);
void cuda_launch_add(void *stream, float *x, const float *y, int n);

/* largest head_dim the attention kernel takes */
#define CUDA_MAX_HEAD_DIM 256

#ifdef __cplusplus
}
#endif

#endif
