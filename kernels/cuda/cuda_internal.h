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

/* Launches of deferred matvecs that are still queued go onto the stream now (the ops flush
 * them themselves; the benchmark calls this before it records an event). */
void cuda_backend_flush(backend *be);

/* Switches, default on; the environment's STRATA_CUDA_FUSE=0 and STRATA_CUDA_PDL=0 turn them
 * off, and the benchmark and tests flip them (-1 keeps a value).
 *   fuse: matvecs on the same x are deferred and share one launch (q/k/v; gate/up), and a
 *         following add (residual) or swiglu becomes that launch's epilogue;
 *   pdl:  kernels are launched with programmatic dependent launch (cuda_device.h). */
void cuda_features_set(int fuse, int pdl);
int cuda_feature_fuse(void);
int cuda_feature_pdl(void);
/* the pack of x before a warp matvec (STRATA_CUDA_PACK=0: round 2's thread-a-chunk kernels):
 * one thread per 8 elements, the chunk's lanes combine max and sum by shuffles, the RMSNorm
 * of a fused group in the same pass; set < 0 leaves the environment's choice */
void cuda_feature_pack_set(int on);
int cuda_feature_pack(void);
/* the bulk matvec (cuda_matvec_bulk.cu, STRATA_CUDA_BULK=0: off): where a group's rows, scales
 * and biases allow 16-byte bulk copies, tiles of rows stream into a ring of shared-memory
 * stages by the copy engine of each SM (cp.async.bulk), the first ones requested before the
 * kernel waits for its predecessor; the warp kernel otherwise and whenever rows_per_warp is
 * tuned. set < 0 leaves the environment's choice */
void cuda_feature_bulk_set(int on);
int cuda_feature_bulk(void);
/* the bulk kernel's variant (0: automatic): 1 x read from L1 a chunk at a time, 2 x held in
 * registers (rows of up to 128 chunks; 1 beyond), 3 the copies only, without the sums: WRONG
 * results, for bench_cuda's ceiling of the copy engine. STRATA_CUDA_BULK_VAR sets it too. */
void cuda_bulk_variant_set(int v);
/* (environment only, benchmarks) STRATA_CUDA_BULK_W=2|4|8 forces the warps a block of the bulk
 * kernel, STRATA_CUDA_BULK_STAGES=N caps its stages (default: 8 warps where every block gets 4
 * tiles or more, else fewer; as many stages as fit, at most 8) */
/* the benchmark's read ceiling: one launch that streams three device buffers (16-byte aligned
 * addresses and sizes; -1 otherwise), with the matvec's load instructions and nothing else;
 * early: it reads before it waits for the launch before it (as the bulk matvec requests its
 * first tiles), else after */
int cuda_bench_read3(void *stream, const void *const *bufs, const size_t *bytes, unsigned *sink, int early);

/* Quantized matvec (n == 1) kernels and launch shape. variant: CUDA_MV_REGS (next batch
 * prefetched in registers), CUDA_MV_ASYNC (batches prefetched by cp.async into shared
 * memory) or CUDA_MV_WARP (cuda_matvec.cu: warps own rows, x packed once a launch as
 * 16-bit fixed point, integer dot products); rows_per_block rows a batch (1, 2, 4 or 8; the warp
 * kernel: rows a warp, 1, 2 or 4); blocks_per_sm caps the grid (0: as many as fit). 0 means
 * "the default" for each. Returns -1 for values out of range. The benchmark and the tests
 * sweep these. */
#define CUDA_MV_REGS 1
#define CUDA_MV_ASYNC 2
#define CUDA_MV_WARP 3
int cuda_matvec_tune(int variant, int rows_per_block, int blocks_per_sm);
/* the tuned rows_per_block and blocks_per_sm (0: the defaults) */
void cuda_matvec_tuning(int *rows_per_block, int *blocks_per_sm);
/* the kernel a n == 1 matmul of this weight takes now (tuning, environment, default), 0 when
 * none of the three matvecs takes it */
int cuda_matvec_variant(const bk_weight *w);

/* ---- the warp matvec over several weights that share x (cuda_matvec.cu) ---- */
#define CUDA_EPI_NONE 0
#define CUDA_EPI_ADD 1    /* one part: also add_to[r] += y0[r] (the residual add) */
#define CUDA_EPI_SWIGLU 2 /* parts gate, up with equal rows: y1 = up, y0 = silu(gate) * up */
#define CUDA_MV_MAX_PARTS 3
typedef struct {
    const bk_weight *w[CUDA_MV_MAX_PARTS];
    float *y[CUDA_MV_MAX_PARTS];
    int n_parts, epilogue;
    float *add_to;
    /* where norm_x is set, the launch first computes x = rmsnorm(norm_x) * norm_w (one token,
     * norm_dim == the weights' cols; exactly as cuda_launch_rmsnorm) and packs it in the same
     * kernel, in place of the pack kernel */
    const float *norm_x;
    const void *norm_w;
    int norm_wdtype, norm_dim;
    float norm_eps;
} cuda_mv_group;
/* whether the warp matvec takes this weight, and whether two weights can share a launch */
int cuda_warp_takes(const bk_weight *w);
int cuda_warp_compatible(const bk_weight *a, const bk_weight *b);
/* y_k = x W_k^T (+ bias_k) for every part in one launch; rows_per_warp, blocks_per_sm: 0 for
 * the defaults. Returns nonzero (nothing launched) if the group does not fit the kernel. */
int cuda_launch_mv_group(void *stream, const cuda_mv_group *g, const float *x, int rows_per_warp,
                         int blocks_per_sm);
/* frees the stream's scratch buffer of the warp matvec (its packed x); the backend calls it
 * before it destroys the stream */
void cuda_matvec_release(void *stream);
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
/* ws/cnt (both or neither): the scratch of a one-token attention split over positions,
 * (2 + head_dim) floats a (head, split) and one zeroed counter a head; NULL: one block a
 * (head, token) */
void cuda_launch_attention(void *stream, const float *q, const float *k, const float *v, float *out, int n,
                           int pos0, int n_heads, int n_kv_heads, int head_dim, float *ws, unsigned *cnt);
#define CUDA_ATT_SPLIT_PER 32  /* positions a block of a split attention */
#define CUDA_ATT_MAX_SPLITS 64 /* blocks a head at most (longer contexts: more positions a block) */
/* splits of a one-token attention at pos0 (0: not split) and the positions a split (*per) */
int cuda_attention_splits(int n, int pos0, int *per);
/* STRATA_CUDA_ATTN=0: attention one block a head (no split); set < 0 leaves the environment's */
void cuda_feature_attn_split_set(int on);
int cuda_feature_attn_split(void);
void cuda_launch_swiglu(void *stream, float *gate, const float *up, int n);
void cuda_launch_add(void *stream, float *x, const float *y, int n);
/* The rotary step of a decoder layer in one launch: rope over q (nq heads) and k (nk heads,
 * 0: none) of n tokens, then, where kdst is set, the rotated k also to kdst, and where vdst is
 * set, vsrc to vdst (n * nk * head_dim floats each: the KV-cache appends). The backend
 * gathers these from consecutive rope/copy calls; the buffers must not overlap. */
typedef struct {
    float *q, *k, *kdst, *vdst;
    const float *vsrc, *inv_freq;
    int n, nq, nk, head_dim, pos0;
} cuda_rope_job;
void cuda_launch_rope_append(void *stream, const cuda_rope_job *j);
/* n bytes from src to dst (device pointers, spans that do not overlap), as a PDL kernel */
void cuda_launch_copy(void *stream, void *dst, const void *src, size_t n);

/* largest head_dim the attention kernel takes */
#define CUDA_MAX_HEAD_DIM 256

#ifdef __cplusplus
}
#endif

#endif
