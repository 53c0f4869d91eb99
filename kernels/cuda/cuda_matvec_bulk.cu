/* The bulk matvec (round 5 of issue 8): y_k = x W_k^T for MLX affine q4/q8 weights, n == 1,
 * the same launches as the warp kernel (cuda_matvec.cu: up to three weights that share x, the
 * residual add or the SwiGLU as epilogue), fed by the copy engine instead of by loads.
 *
 * Why: the warp kernel holds its next tile in registers, ~50 KB in flight an SM, and Nsight
 * showed its warps waiting on memory (long scoreboard) at 62-64% of DRAM peak on gate/up, where
 * bench_cuda's read-only ceiling reached 90-94%. Here a block of W warps (8, or 4 or 2 for
 * small matrices, so that they spread over every SM) owns a ring of 2-8 stages in shared
 * memory, ~220 KB an SM in all. A tile is W row pairs of one weight: 2W consecutive rows, or W
 * rows of gate with the same W rows of up for the SwiGLU. Its codes, scales and biases are
 * contiguous spans, one cp.async.bulk each, that complete on the stage's mbarrier; thread 0
 * issues them. Warp w sums pair w of a tile over its lanes, as the warp kernel at R = 2 (the
 * packed 16-bit fixed-point x, chunk_dot: both kernels compute the same integers), so every x
 * load serves two rows. After a block barrier (every warp done with the stage) thread 0 refills
 * it with the tile `stages` ahead. Blocks are persistent: block b takes tiles b, b + grid, ...
 * Weights depend on no kernel, so the first `stages` tiles are requested before the kernel
 * waits for its predecessor (programmatic dependent launch), and the pack before the matvec
 * lets it launch early (pdl_order in cuda_matvec.cu): a block that gets an SM while the
 * kernels before it still drain starts streaming at once.
 * Measured alternatives (bench/RESULTS.md, CUDA round 5): 256 threads sharing a tile's rows
 * (up to 8 threads a chunk-column, cross-warp sums, one or two chunks a thread a tile) reached
 * 32-51% of copy bandwidth on q/o, gate/up and down; every warp with its own ring of row-pair
 * segments (no block barrier, six small copies a 4.6 KB unit) 46-66%.
 * Taken where a tile's rows fit two stages (up to ~4096 columns at 4 bits; down_proj's long
 * rows stay with the warp kernel) and the spans are 16-byte multiples (the copy engine's unit:
 * not 896 columns at group 64 with 16-bit scales, 28 bytes a row), on sm_90 and later. */
#include <cuda_runtime.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_device.h"
#include "kernels/cuda/cuda_internal.h"
#include "kernels/cuda/cuda_mv_common.h"

#define MVB_MAX_WARPS 8
#define MVB_MAX_STAGES 8
#define MVB_HEAD (MVB_MAX_STAGES * 16) /* bytes before the stages: barriers, counters */
#define MVB_SM_SMEM (224 << 10)       /* shared memory an SM the blocks of a launch share */
#define MVB_SM_WARPS 16               /* warps an SM: 2 blocks of 8 warps, 4 of 4 or 8 of 2 */

struct mvb_args {
    mvw_part p[CUDA_MV_MAX_PARTS]; /* batch0: the part's first tile */
    const int4 *xq;
    const float2 *xm;
    float *add_to;
    int n_parts, cols, group, epi;
    int tr;            /* rows of a weight a tile: 2 a warp, or 1 a warp of gate and 1 of up */
    int n_tiles, stages;
    int row_bytes, sb; /* bytes a row of codes; of its scales (as many of its biases) */
    int slot_bytes;    /* bytes a weight's rows take in a stage: tr (row_bytes + 2 sb) */
    int stage_bytes;   /* slot_bytes, twice for the SwiGLU */
};

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define MVB_DEVICE 1
#endif

__device__ __forceinline__ uint32_t smem_addr(const void *p) { return (uint32_t)__cvta_generic_to_shared(p); }

#ifdef MVB_DEVICE
__device__ __forceinline__ void mbar_init(uint64_t *b, unsigned count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(smem_addr(b)), "r"(count) : "memory");
}
/* the initialized barriers, visible to the copy engine (the async proxy) */
__device__ __forceinline__ void mbar_fence_init() {
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
}
/* the stage's one arrival, and the bytes its copies will bring */
__device__ __forceinline__ void mbar_expect(uint64_t *b, unsigned bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(smem_addr(b)), "r"(bytes) : "memory");
}
__device__ __forceinline__ void bulk_load(void *dst, const void *src, unsigned bytes, uint64_t *b) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 ::"r"(smem_addr(dst)), "l"(src), "r"(bytes), "r"(smem_addr(b))
                 : "memory");
}
__device__ __forceinline__ void mbar_wait(uint64_t *b, unsigned parity) {
    uint32_t done;
    do {
        asm volatile("{\n.reg .pred p;\nmbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\nselp.u32 %0, 1, 0, p;\n}"
                     : "=r"(done)
                     : "r"(smem_addr(b)), "r"(parity)
                     : "memory");
    } while (!done);
}
#endif

__device__ __forceinline__ float st_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float st_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float st_f(float v) { return v; }

/* tile t: weight k (gate and up: 0 and 1), its first row, and its rows */
__device__ __forceinline__ void tile_of(const mvb_args &a, int t, int &k, int &row0, int &n) {
    k = 0;
    if (a.epi != CUDA_EPI_SWIGLU) {
        if (a.n_parts > 1 && t >= a.p[1].batch0) k = 1;
        if (a.n_parts > 2 && t >= a.p[2].batch0) k = 2;
    }
    row0 = (t - a.p[k].batch0) * a.tr;
    n = min(a.tr, a.p[k].rows - row0);
}

#ifdef MVB_DEVICE
/* one thread: the copies of tile t into a stage (three spans a weight: codes, scales, biases) */
__device__ __forceinline__ void issue_tile(const mvb_args &a, int t, unsigned char *stage, uint64_t *bar) {
    int k, row0, n;
    tile_of(a, t, k, row0, n);
    int parts = a.epi == CUDA_EPI_SWIGLU ? 2 : 1;
    unsigned wb = (unsigned)n * (unsigned)a.row_bytes, sbb = (unsigned)n * (unsigned)a.sb;
    mbar_expect(bar, (unsigned)parts * (wb + 2 * sbb));
    for (int j = 0; j < parts; j++) {
        const mvw_part &p = a.p[k + j];
        unsigned char *d = stage + j * a.slot_bytes;
        bulk_load(d, (const unsigned char *)p.W + (size_t)row0 * a.row_bytes, wb, bar);
        bulk_load(d + a.tr * a.row_bytes, (const unsigned char *)p.S + (size_t)row0 * a.sb, sbb, bar);
        bulk_load(d + a.tr * (a.row_bytes + a.sb), (const unsigned char *)p.B + (size_t)row0 * a.sb, sbb, bar);
    }
}
#endif

__device__ __forceinline__ float obias_at(const mvw_part &p, int row) {
    return p.obias ? cu_load_float(p.obias, p.obias_dtype, row) : 0.0f;
}

/* lane 0: a warp's two sums (tile rows ra, rb of n) into the outputs, with the epilogue */
__device__ __forceinline__ void mvb_out(const mvb_args &a, int k, int row0, int n, int ra, int rb, float A, float B) {
    if (a.epi == CUDA_EPI_SWIGLU) { /* ra == rb: a row of gate and the same row of up */
        if (ra >= n) return;
        int r = row0 + ra;
        float g = A + obias_at(a.p[0], r), u = B + obias_at(a.p[1], r);
        a.p[1].y[r] = u;
        a.p[0].y[r] = g / (1.0f + expf(-g)) * u;
        return;
    }
    const mvw_part &p = a.p[k];
    if (ra < n) {
        float v = A + obias_at(p, row0 + ra);
        p.y[row0 + ra] = v;
        if (a.epi == CUDA_EPI_ADD) a.add_to[row0 + ra] += v;
    }
    if (rb < n) {
        float v = B + obias_at(p, row0 + rb);
        p.y[row0 + rb] = v;
        if (a.epi == CUDA_EPI_ADD) a.add_to[row0 + rb] += v;
    }
}

/* Blocks of W warps take tiles of W row pairs (block b: tiles b, b + grid, ...); warp w sums
 * pair w of each, its lanes over the row's chunks. */
/* a chunk of the warp's two rows: codes from the stage, x as loaded */
template <int BITS, typename ST>
__device__ __forceinline__ void mvb_chunk(const unsigned char *wa, const unsigned char *wb, const ST *sa, const ST *ba,
                                          const ST *sb, const ST *bb, int c, int g,
                                          const int4 (&q)[xpack<BITS>::NI], float2 m, float &A, float &B) {
    uint4 va = *(const uint4 *)(wa + (size_t)c * 16), vb = *(const uint4 *)(wb + (size_t)c * 16);
    A = fmaf((float)chunk_dot<BITS>(va, q), st_f(sa[g]) * m.x, fmaf(st_f(ba[g]), m.y, A));
    B = fmaf((float)chunk_dot<BITS>(vb, q), st_f(sb[g]) * m.x, fmaf(st_f(bb[g]), m.y, B));
}

template <int BITS, typename ST, int VAR>
__global__ void __launch_bounds__(MVB_MAX_WARPS * 32, VAR == 2 ? 1 : 2) mv_bulk_kernel(const __grid_constant__ mvb_args a) {
#ifdef MVB_DEVICE
    extern __shared__ __align__(128) unsigned char sm[];
    uint64_t *bar = (uint64_t *)sm;
    unsigned *done = (unsigned *)(sm + 8 * MVB_MAX_STAGES); /* warps done with a stage's tile */
    unsigned char *stages = sm + MVB_HEAD;
    const int tid = threadIdx.x, G = gridDim.x, b = blockIdx.x, W = blockDim.x >> 5;
    const int mine = a.n_tiles > b ? (a.n_tiles - 1 - b) / G + 1 : 0;
    if (tid == 0) {
        for (int s = 0; s < a.stages; s++) {
            mbar_init(&bar[s], 1);
            done[s] = 0;
        }
        mbar_fence_init();
        /* weights only: before the wait */
        for (int i = 0; i < mine && i < a.stages; i++) issue_tile(a, b + i * G, stages + (size_t)i * a.stage_bytes, &bar[i]);
    }
    __syncthreads(); /* the barriers are initialized */
    pdl_wait();      /* the packed x is complete */
    pdl_trigger();

    constexpr int PC = xpack<BITS>::PC, NI = xpack<BITS>::NI;
    const int chunks = a.cols / PC, cpg = a.group / PC, gpr = a.cols / a.group;
    const int cpg_shift = (cpg & (cpg - 1)) ? -1 : __ffs(cpg) - 1;
    const int lane = tid & 31, w = tid >> 5;
    const bool swiglu = a.epi == CUDA_EPI_SWIGLU;
    /* the warp's rows in a tile: rows 2w and 2w + 1, or row w of gate and of up */
    const int ra = swiglu ? w : 2 * w, rb = swiglu ? w : 2 * w + 1, slot_b = swiglu ? a.slot_bytes : 0;
    const int sc_off = a.tr * a.row_bytes, bi_off = a.tr * (a.row_bytes + a.sb);
    /* VAR 2: the lane's x (chunks lane + 32 u, up to 128 chunks a row) once, in registers, with
     * the groups of those chunks and whether they exist (kept out of the tile loop) */
    int4 xr[VAR == 2 ? 4 : 1][NI];
    float2 xmr[VAR == 2 ? 4 : 1];
    int gu[VAR == 2 ? 4 : 1];
    unsigned okm = 0;
    if constexpr (VAR == 2) {
#pragma unroll
        for (int u = 0; u < 4; u++) {
            int c = lane + 32 * u;
            bool ok = c < chunks;
            okm |= ok ? 1u << u : 0u;
            gu[u] = cpg_shift >= 0 ? c >> cpg_shift : c / cpg;
#pragma unroll
            for (int j = 0; j < NI; j++) xr[u][j] = ok ? __ldg(a.xq + xpack<BITS>::pos(c, j)) : make_int4(0, 0, 0, 0);
            xmr[u] = ok ? __ldg(a.xm + c) : make_float2(0.0f, 0.0f);
        }
    }
    for (int i = 0; i < mine; i++) {
        const int s = i % a.stages, t = b + i * G;
        unsigned char *st = stages + (size_t)s * a.stage_bytes;
        mbar_wait(&bar[s], (unsigned)(i / a.stages) & 1u);
        const unsigned char *wa = st + ra * a.row_bytes, *wb = st + slot_b + rb * a.row_bytes;
        const ST *sa = (const ST *)(st + sc_off) + ra * gpr, *ba = (const ST *)(st + bi_off) + ra * gpr;
        const ST *sb = (const ST *)(st + slot_b + sc_off) + rb * gpr, *bb = (const ST *)(st + slot_b + bi_off) + rb * gpr;
        float A = 0.0f, B = 0.0f;
        if constexpr (VAR == 3) { /* benchmark only: the copies without the sums */
            A = (float)wa[lane];
            B = (float)wb[lane];
        } else if constexpr (VAR == 2) {
#pragma unroll
            for (int u = 0; u < 4; u++)
                if (okm >> u & 1u) mvb_chunk<BITS, ST>(wa, wb, sa, ba, sb, bb, lane + 32 * u, gu[u], xr[u], xmr[u], A, B);
        } else { /* x from L1 */
#pragma unroll 2
            for (int c = lane; c < chunks; c += 32) {
                int4 q[NI];
#pragma unroll
                for (int j = 0; j < NI; j++) q[j] = __ldg(a.xq + xpack<BITS>::pos(c, j));
                mvb_chunk<BITS, ST>(wa, wb, sa, ba, sb, bb, c, cpg_shift >= 0 ? c >> cpg_shift : c / cpg, q,
                                    __ldg(a.xm + c), A, B);
            }
        }
        A = warp_sum(A);
        B = warp_sum(B);
        /* the last warp done with stage s refills it; the others go on to their next tile */
        __syncwarp();
        if (lane == 0) {
            __threadfence_block(); /* this warp's reads of the stage come first */
            if (atomicAdd(&done[s], 1u) == (unsigned)(W - 1)) {
                done[s] = 0;
                if (i + a.stages < mine) issue_tile(a, t + a.stages * G, st, &bar[s]);
            }
        }
        if (lane == 0) {
            int k, row0, n;
            tile_of(a, t, k, row0, n);
            mvb_out(a, k, row0, n, ra, rb, A, B);
        }
    }
#else
    __trap(); /* mv_bulk_takes refuses devices before sm_90 */
#endif
}

/* ---- host side ---- */

static int dev_sms, dev_major, dev_smem_sm;

static void dev_facts(void) {
    if (dev_sms) return;
    int dev = 0;
    cudaGetDevice(&dev);
    if (cudaDeviceGetAttribute(&dev_major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&dev_smem_sm, cudaDevAttrMaxSharedMemoryPerMultiprocessor, dev) != cudaSuccess ||
        cudaDeviceGetAttribute(&dev_sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess || dev_sms <= 0) {
        cudaGetLastError();
        dev_major = 0;
        dev_sms = 1;
    }
}

/* shared memory an SM, as the launches count it (1 KB a block is the system's) */
static int sm_smem(void) { return dev_smem_sm < MVB_SM_SMEM ? dev_smem_sm : MVB_SM_SMEM; }

static int tiles_at(const mvb_in *in, int tr) {
    if (in->epi == CUDA_EPI_SWIGLU) return (in->p[0].rows + tr - 1) / tr;
    int t = 0;
    for (int k = 0; k < in->n_parts; k++) t += (in->p[k].rows + tr - 1) / tr;
    return t;
}

/* the launch's geometry (0) and warps a block (*warps), or -1 where the bulk kernel does not
 * take it */
static int plan(const mvb_in *in, mvb_args *a, int *warps) {
    dev_facts();
    if (dev_major < 9 || (in->bits != 4 && in->bits != 8) || in->n_parts < 1 || in->n_parts > CUDA_MV_MAX_PARTS)
        return -1;
    bool swiglu = in->epi == CUDA_EPI_SWIGLU;
    if (swiglu && (in->n_parts != 2 || in->p[0].rows != in->p[1].rows)) return -1;
    int pc = in->bits == 4 ? 32 : 16, ss = in->sdtype == BK_F32 ? 4 : 2;
    if (in->group <= 0 || in->cols <= 0 || in->cols % in->group || in->group % pc) return -1;
    int row_bytes = in->cols / 8 * in->bits, sb = in->cols / in->group * ss;
    /* the copy engine moves 16-byte multiples between 16-byte aligned addresses */
    if (row_bytes % 16 || sb % 16) return -1;
    for (int k = 0; k < in->n_parts; k++) {
        const mvw_part &p = in->p[k];
        if (p.rows <= 0 || ((uintptr_t)p.W & 15) || ((uintptr_t)p.S & 15) || ((uintptr_t)p.B & 15)) return -1;
    }
    int parts = swiglu ? 2 : 1;
    long per_row = row_bytes + 2L * sb;
    /* warps a block: 8 where every block gets 4 tiles or more, else fewer, so that small
     * matrices spread over all SMs in small tiles; 16 warps an SM share its shared memory */
    int W = 0, stages = 0;
    static int force_w = -1, cap_st = -1;
    if (force_w < 0) {
        const char *e = getenv("STRATA_CUDA_BULK_W"), *f = getenv("STRATA_CUDA_BULK_STAGES");
        force_w = e ? atoi(e) : 0;
        cap_st = f ? atoi(f) : 0;
    }
    for (int w = MVB_MAX_WARPS; w >= 2; w >>= 1) {
        if (force_w && w != force_w) continue;
        int tr = swiglu ? w : 2 * w, blocks = MVB_SM_WARPS / w * dev_sms;
        long stage = parts * tr * per_row, budget = (long)sm_smem() * w / MVB_SM_WARPS - 1024;
        int n = (int)((budget - MVB_HEAD) / stage);
        if (n > MVB_MAX_STAGES) n = MVB_MAX_STAGES;
        if (cap_st >= 2 && n > cap_st) n = cap_st;
        if (n < 2) continue;
        W = w;
        stages = n;
        if (tiles_at(in, tr) >= 4 * blocks) break;
    }
    if (!W) return -1;
    int tr = swiglu ? W : 2 * W;
    memset(a, 0, sizeof *a);
    memcpy(a->p, in->p, sizeof a->p);
    int t0 = 0;
    for (int k = 0; k < in->n_parts; k++) {
        a->p[k].batch0 = swiglu ? 0 : t0;
        t0 += (in->p[k].rows + tr - 1) / tr;
    }
    a->xq = in->xq;
    a->xm = in->xm;
    a->add_to = in->add_to;
    a->n_parts = in->n_parts;
    a->cols = in->cols;
    a->group = in->group;
    a->epi = in->epi;
    a->tr = tr;
    a->n_tiles = tiles_at(in, tr);
    a->stages = stages;
    a->row_bytes = row_bytes;
    a->sb = sb;
    a->slot_bytes = (int)(tr * per_row);
    a->stage_bytes = parts * a->slot_bytes;
    *warps = W;
    return 0;
}

bool mv_bulk_takes(const mvb_in *in) {
    mvb_args a;
    int w;
    return plan(in, &a, &w) == 0;
}

/* the kernel's variant for rows of `chunks` chunks: x in registers up to 128 chunks (4 a lane),
 * else x from L1; cuda_bulk_variant_set (bench_cuda) or STRATA_CUDA_BULK_VAR force one */
static int bulk_forced = -1;

extern "C" void cuda_bulk_variant_set(int v) { bulk_forced = v >= 1 && v <= 3 ? v : 0; }

static int bulk_var(int chunks) {
    if (bulk_forced < 0) {
        const char *e = getenv("STRATA_CUDA_BULK_VAR");
        bulk_forced = e && *e >= '1' && *e <= '3' && !e[1] ? *e - '0' : 0;
    }
    int v = bulk_forced ? bulk_forced : 2;
    return v == 2 && chunks > 128 ? 1 : v;
}

template <int BITS, typename ST, int VAR> static void launch_bulk_v(cudaStream_t s, const mvb_args &a, int warps) {
    auto kernel = mv_bulk_kernel<BITS, ST, VAR>;
    static bool sized;
    if (!sized) { /* above 48 KB of dynamic shared memory only on request */
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, sm_smem() / 2 - 1024);
        sized = true;
    }
    size_t smem = MVB_HEAD + (size_t)a.stages * (size_t)a.stage_bytes;
    long grid = (long)(MVB_SM_WARPS / warps) * dev_sms;
    if (grid > a.n_tiles) grid = a.n_tiles;
    cu_launch(s, dim3((unsigned)grid), dim3(32 * warps), smem, kernel, a);
}

template <int BITS, typename ST> static void launch_bulk(cudaStream_t s, const mvb_args &a, int warps) {
    int v = bulk_var(a.cols / xpack<BITS>::PC);
    if (v == 3) launch_bulk_v<BITS, ST, 3>(s, a, warps);
    else if (v == 2) launch_bulk_v<BITS, ST, 2>(s, a, warps);
    else launch_bulk_v<BITS, ST, 1>(s, a, warps);
}

void mv_bulk_launch(cudaStream_t s, const mvb_in *in) {
    mvb_args a;
    int w;
    if (plan(in, &a, &w)) return; /* the caller asked mv_bulk_takes first */
    if (in->bits == 4) {
        if (in->sdtype == BK_F16) launch_bulk<4, __half>(s, a, w);
        else if (in->sdtype == BK_BF16) launch_bulk<4, __nv_bfloat16>(s, a, w);
        else launch_bulk<4, float>(s, a, w);
    } else {
        if (in->sdtype == BK_F16) launch_bulk<8, __half>(s, a, w);
        else if (in->sdtype == BK_BF16) launch_bulk<8, __nv_bfloat16>(s, a, w);
        else launch_bulk<8, float>(s, a, w);
    }
}
