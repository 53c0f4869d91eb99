/* What the host and the MSL kernels agree on: the parameter structs passed with setBytes, the
 * dtype codes, and the dispatch geometry constants. Valid C (host, compile check), MSL (the
 * embedded source gets this file pasted in front) and C++ (the MSL-on-CPU harness).
 *
 * Only int and float fields: they have the same size and alignment in all three languages, so
 * a struct written by the host is read field for field by the kernel. */
#ifndef STRATA_MSL_PARAMS_H
#define STRATA_MSL_PARAMS_H

/* float vector dtypes, equal to bk_dtype's BK_F32, BK_F16, BK_BF16 (checked in metal_ops.c) */
#define MSL_F32 0
#define MSL_F16 1
#define MSL_BF16 2

/* qmv / dense matvec: each simdgroup owns MV_ROWS_PER_SIMD output rows, a threadgroup has
 * MV_SIMDS simdgroups; every lane walks K in chunks of MV_VALS_PER_LANE values, so one
 * 32-value chunk of a q4 row is one 16-byte load. */
#define MV_ROWS_PER_SIMD 4
#define MV_SIMDS 2
#define MV_ROWS_PER_TG (MV_ROWS_PER_SIMD * MV_SIMDS)
#define MV_VALS_PER_LANE 32

/* qmm (prefill): a threadgroup computes a QMM_BM tokens x QMM_BN rows tile of y, stepping K
 * by QMM_BK (= the smallest group size, so one tile column never straddles two groups). */
#define QMM_BM 32
#define QMM_BN 32
#define QMM_BK 32
#define QMM_THREADS 128
#define QMM_MIN_TOKENS 8 /* below this the matvec per token reads less than a tile wastes */

#define NORM_THREADS 256
#define ATTN_SIMDS 4
#define ATTN_THREADS (ATTN_SIMDS * 32)
#define ATTN_MAX_HEAD_DIM 256
#define EW_THREADS 256   /* elementwise ops: swiglu, add, rope, embed */

typedef struct {
    int rows, cols;     /* W is [rows, cols] */
    int group_size;     /* quantized only */
    int n;              /* tokens */
    int has_bias;       /* output bias present */
    int bias_dtype;     /* MSL_F32 / MSL_F16 / MSL_BF16 */
} msl_mm_params;

typedef struct {
    int cols, group_size, n;
    int dtype;          /* dense embedding only: the table's dtype */
} msl_embed_params;

typedef struct {
    int dim;
    float eps;
    int w_dtype;
} msl_norm_params;

typedef struct {
    int n, n_heads, head_dim, pos0;
} msl_rope_params;

typedef struct {
    int n, pos0, n_heads, n_kv_heads, head_dim;
    float scale;
} msl_attn_params;

typedef struct {
    int n;
} msl_ew_params;

#if defined(__METAL_VERSION__)
/* The thread-position arguments every kernel takes last. The harness (msl_shim.h) defines the
 * same names without attributes and passes them explicitly. Threadgroups are one-dimensional. */
#define MSL_THREAD_ARGS                                   \
    uint3 tg_pos [[threadgroup_position_in_grid]],        \
    uint t_idx [[thread_index_in_threadgroup]],           \
    uint simd_lane [[thread_index_in_simdgroup]],         \
    uint simd_id [[simdgroup_index_in_threadgroup]]
#endif

#endif
