/* The fast cpu backend ("cpu"): integer-dot quantized matmul (cpu_kern.h) at the best SIMD level
 * the CPU has, picked at run time, and a thread pool that splits rows (matmul) or tokens and
 * heads (attention, norms) across the cores. Ops run on the caller's thread plus the pool as
 * they are issued, but decode matmuls of one input wait for the next other op (fast_ctx.pend).
 * STRATA_CPU_LEVEL=scalar|avx2|avx2-vnni|avx512|neon|neon-dot forces a level (the tests cover each one the machine
 * has); STRATA_CPU_PLANES=1 trades the second activation plane for speed outside the contract's
 * tolerance (see cpu_kern.h); STRATA_CPU_REPACK=0 keeps 4-bit weights in the checkpoint's layout
 * (the chunk path) instead of the repacked twin a level with `pk_qmm` builds at first use;
 * STRATA_CPU_FUSE=0 runs each at once; STRATA_CPU_AFFINE=0 deals decode matmul chunks in pool
 * order instead of by thread range with stealing (tp_run_ranges); STRATA_CPU_ATTN_SPLIT=0 keeps each kv head's
 * cache rows in one task (cpu_attn.c); STRATA_CPU_PREFETCH_NEXT=0 stops the workers' prefetch
 * of the next decode job (prefetch_next); STRATA_CPU_HUGE_BUFS=0 keeps buffers of 2 MB and more
 * (KV caches) in calloc'd 4 KB pages (fast_buf_alloc); STRATA_CPU_AMX=0 keeps prefill off the
 * AMX tile unit (q4_amx.c, used where the CPU and OS have AMX-INT8 and AMX-BF16); STRATA_CPU_PROFILE=1 prints wall time per
 * op kind (cpu_prof.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
#if defined(__aarch64__) && defined(__APPLE__)
#include <sys/sysctl.h>
#elif defined(__aarch64__) && defined(__linux__)
#include <asm/hwcap.h>
#include <sys/auxv.h>
#endif

#include "kernels/backend.h"
#include "kernels/cpu/cpu_attn.h"
#include "kernels/cpu/cpu_buf.h"
#include "kernels/cpu/cpu_fast.h"
#include "kernels/cpu/cpu_kern.h"
#include "kernels/cpu/cpu_prof.h"
#include "kernels/cpu/threadpool.h"

#define ROW_BLOCK 32 /* rows a task runs over all tokens at once in prefill: 14-60 KB of q4 */
#define SMALL_N 8    /* up to this many tokens (decode, speculative verify) a task is a run of rows */
#define PK_ROWS 16           /* rows of a repacked block (cpu_q4pack) */
#define PK_ROW_BLOCK 64      /* rows a prefill task of the repacked path runs over all tokens */
#define FUSE_MAX 4           /* matmuls of one input held back to run as one job */
#define DECODE_STEP ((size_t)16 << 10) /* about this much weight a claim of a decode job (mm_quads) */

typedef struct {
    tpool *pool;
    const cpu_kernels *k;
    int planes;
    int repack; /* 4-bit weights through the repacked twin where the level has a kernel for it */
    /* quantized activations of the last matmul input, reused while its buffer is unchanged
     * (q/k/v and gate/up read the same input) */
    cpu_qact act;
    void *act_mem;
    size_t act_cap;
    const void *act_src;
    cpu_attn attn; /* attention scratch and switches (cpu_attn.h) */
    int affine; /* decode matmul chunks and attention slices by thread range (tp_run_ranges) */
    int huge;   /* buffers of HUGE_BUF_MIN and more in huge pages (fast_buf_alloc) */
    int amx;    /* prefill matmuls on repacked weights on the tile unit (q4_amx.c) */
    int kv16;   /* KV caches in f16 where the level's attention takes them (fast_kv_dtype) */
    cpu_amx_scr **amx_scr; /* per pool thread, made at its first AMX task */
    /* a SwiGLU held back (with amx): the next matmul on the tile unit whose input is its gate
     * buffer applies it row by row while quantizing that input (the row is in L1 for both), a pass
     * over two 512 x 4864 buffers less a 0.5b prefill layer; any other op runs it first (op_begin) */
    struct {
        bk_buf *g;
        const bk_buf *u;
        int n;
    } glu;
    /* rope's cos and sin of a batch's positions, [n][cos half, sin half], kept for the next call
     * with the same positions and frequencies (every layer's q and k of a prefill) */
    struct {
        float *tab;
        size_t cap;
        const void *freq;
        unsigned writes;
        int pos0, n, half;
    } rope;
    /* prefetch_next: the key pack of the last decode matmul job; bytes a worker prefetches (0: off) */
    cpu_q4pack *pf_prev;
    int pf_bytes;
    /* repacked matmuls of one input (q/k/v, gate/up) held back until an op that is not one of
     * them, then run as one job: one quantization, one pool dispatch, one balanced split of all
     * their row blocks (fast_matmul). Ops are enqueued (backend.h), so holding them is allowed;
     * every other op starts with op_begin, which runs them first. STRATA_CPU_FUSE=0: off. */
    int fuse, n_pend;
    struct {
        bk_weight w; /* a copy: the caller's may be gone by the time it runs */
        const bk_buf *x;
        bk_buf *y;
        int n;
    } pend[FUSE_MAX];
} fast_ctx;

static fast_ctx *CTX(backend *be) { return be->ctx; }

static void flush_pending(fast_ctx *c);
static void matmul_run(fast_ctx *c, const bk_weight *w, const bk_buf *xb, bk_buf *yb, int n);
static void glu_flush(fast_ctx *c);
enum { EW_ADD, EW_GLU, EW_F16 };
static void ew_now(fast_ctx *c, int op, float *a, const float *b, uint16_t *h, size_t n);

/* every op but matmul starts here: held-back matmuls run first (this op may read their output or
 * write their input), and a write to `written` ends the reuse of activations quantized from it */
static void op_begin(backend *be, const void *written) {
    fast_ctx *c = CTX(be);
    if (c->n_pend) flush_pending(c);
    if (c->glu.g) glu_flush(c);
    if (written && c->act_src == written) c->act_src = NULL;
}

/* ---- memory: plain host buffers, as the reference ---- */

/* frees b's repacked twin, which prefetch_next must then no longer name */
static void free_pack(fast_ctx *c, bk_buf *b) {
    if (b->packed && c->pf_prev == b->packed) c->pf_prev = NULL;
    cpu_q4pack_free(b->packed);
    b->packed = NULL;
}

/* Buffers of 2 MB and more (a long context's KV cache: 2 MB a layer at the 0.5b shape and 4096
 * positions) get a mapping of their own on 2 MB boundaries with transparent huge pages asked for,
 * as the repacked weights (q4_repack.c; THP is "madvise" on common distributions): attention
 * reads every layer's cache once a token, a kv head's 256 bytes of every 512-byte row at the 0.5b
 * shape, and with 4 KB pages its stream meets a new page (a TLB miss; the hardware prefetcher
 * stops there) every 8 rows. Isolated decode attention from DRAM (0.5b shape, 4096-position
 * caches, 2026-11-23): 544 rows 2 threads 54-64 -> 45-50 us, 1 thread 59 -> 43 us, 2000 rows
 * 203-269 -> 166-197 us. Resident memory: a buffer's pages come 2 MB at a time, so up to 2 MB more
 * a buffer than it has touched. STRATA_CPU_HUGE_BUFS=0: off (calloc, as the reference). */
#define HUGE_BUF_MIN ((size_t)2 << 20)
#define HUGE_PAGE ((size_t)2 << 20)
#define BUF_MAPPED 2 /* bk_buf.owned of such a buffer */

static size_t huge_len(size_t bytes) { return (bytes + HUGE_PAGE - 1) & ~(HUGE_PAGE - 1); }

static bk_buf *fast_buf_alloc(backend *be, size_t bytes) {
    if (!CTX(be)->huge || bytes < HUGE_BUF_MIN) return cpu_buf_alloc(be, bytes);
    bk_buf *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    size_t len = huge_len(bytes);
    char *m = mmap(NULL, len + HUGE_PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) { free(b); return cpu_buf_alloc(be, bytes); }
    size_t head = (HUGE_PAGE - (uintptr_t)m % HUGE_PAGE) % HUGE_PAGE; /* trimmed to 2 MB boundaries */
    if (head) munmap(m, head);
    if (HUGE_PAGE - head) munmap(m + head + len, HUGE_PAGE - head);
#ifdef MADV_HUGEPAGE
    madvise(m + head, len, MADV_HUGEPAGE); /* advice only: no huge pages is still correct */
#endif
    b->data = m + head; /* zeros, as calloc's */
    b->size = bytes;
    b->owned = BUF_MAPPED;
    return b;
}

static void fast_buf_free(backend *be, bk_buf *b) {
    if (!b) return;
    op_begin(be, b->data); /* a held matmul may read or write it */
    free_pack(CTX(be), b);
    if (CTX(be)->rope.freq == b->data) CTX(be)->rope.freq = NULL; /* another buffer may come to the address */
    if (b->owned == BUF_MAPPED) munmap(b->data, huge_len(b->size)), b->owned = 0, b->data = NULL;
    cpu_buf_free(be, b);
}

static void fast_buf_write(backend *be, bk_buf *dst, size_t off, const void *src, size_t n) {
    op_begin(be, dst->data);
    dst->writes++;
    cpu_buf_write(be, dst, off, src, n);
}

static void fast_copy(backend *be, const bk_buf *src, size_t so, bk_buf *dst, size_t do_, size_t n) {
    op_begin(be, dst->data);
    dst->writes++;
    cpu_copy(be, src, so, dst, do_, n);
}

/* ---- matmul ---- */

typedef struct {
    fast_ctx *c;
    const bk_weight *w;
    const float *x;
    float *y;
    int n;
    const cpu_q4pack *pk; /* the repacked weight, or NULL */
    int amx;              /* on the tile unit (pk set, n > SMALL_N): row blocks a task (amx_blocks), else 0 */
    const float *glu_u;   /* NULL, or x is a held SwiGLU's gate: x = silu(x) * glu_u row by row first */
} mm_job;

/* token rows the AMX activations hold: whole 16-token tiles, and a multiple of 32 */
static int amx_rows(int n) { return (n + 31) & ~31; }

/* rows [r0, r1) of thread ith, in multiples of 4 so that tiles stay whole */
static void split_rows(int rows, int ith, int nth, int *r0, int *r1) {
    int quads = (rows + 3) / 4;
    *r0 = (int)((long)quads * ith / nth) * 4;
    *r1 = (int)((long)quads * (ith + 1) / nth) * 4;
    if (*r0 > rows) *r0 = rows;
    if (*r1 > rows) *r1 = rows;
}

/* y[t, r] += bias[r] for tokens [0, n), rows [r0, r1): the bias converted once a run of 64 rows */
static void add_bias(const bk_weight *w, float *y, int n, int r0, int r1) {
    if (!w->bias.data) return;
    for (int lo = r0; lo < r1; lo += 64) {
        float b[64];
        int m = r1 - lo < 64 ? r1 - lo : 64;
        for (int i = 0; i < m; i++) b[i] = bk_load_float(w->bias.data->data, w->bias.dtype, lo + i);
        for (int t = 0; t < n; t++) {
            float *yt = y + (size_t)t * w->rows + lo;
            for (int i = 0; i < m; i++) yt[i] += b[i];
        }
    }
}

static void quant_job(void *arg, int ith, int nth, int thread) {
    mm_job *j = arg;
    (void)thread;
    int n = j->amx ? amx_rows(j->n) : j->n, t0 = (int)((long)n * ith / nth), t1 = (int)((long)n * (ith + 1) / nth);
    if (j->glu_u) { /* the held SwiGLU, a row at a time just before the row is quantized */
        const int K = j->w->cols;
        for (int t = t0; t < t1 && t < j->n; t++) {
            j->c->k->swiglu((float *)j->x + (size_t)t * K, j->glu_u + (size_t)t * K, K);
            cpu_amx_quant(j->x, &j->c->act, t, t + 1);
        }
        if (t1 > j->n) cpu_amx_quant(j->x, &j->c->act, t0 > j->n ? t0 : j->n, t1);
        return;
    }
    if (t0 < t1) (j->amx ? cpu_amx_quant : j->pk ? j->c->k->pk_quant : j->c->k->quant)(j->x, &j->c->act, t0, t1);
}

/* anything the kernels do not cover (other bit widths, odd groups): element by element */
static void slow_job(void *arg, int task, int n_tasks, int thread) {
    mm_job *j = arg;
    const bk_weight *w = j->w;
    int r0, r1;
    (void)thread;
    split_rows(w->rows, task, n_tasks, &r0, &r1);
    for (int t = 0; t < j->n; t++)
        for (int r = r0; r < r1; r++) {
            float acc = 0.0f;
            for (int c = 0; c < w->cols; c++) acc += cpu_weight_at(w, r, c) * j->x[(size_t)t * w->cols + c];
            j->y[(size_t)t * w->rows + r] = acc;
        }
    add_bias(w, j->y, j->n, r0, r1);
}

/* ---- the repacked 4-bit path: row blocks of 16, one contiguous stream a task ---- */

typedef struct {
    cpu_q4pack *p;
    const bk_weight *w;
} pack_job;

static void pack_run(void *arg, int task, int n_tasks, int thread) {
    pack_job *j = arg;
    (void)thread;
    int b0 = (int)((long)j->p->n_blocks * task / n_tasks), b1 = (int)((long)j->p->n_blocks * (task + 1) / n_tasks);
    if (b0 < b1) cpu_q4pack_fill(j->p, j->w, b0, b1);
}

/* the weight's repacked twin, built at the first matmul that sees it (rebuilt when the buffer
 * is described differently or was written since); NULL: the old path */
static const cpu_q4pack *get_pack(fast_ctx *c, const bk_weight *w) {
    if (!c->repack || !c->k->pk_ok || !c->k->pk_ok(w, c->planes)) return NULL;
    bk_buf *b = w->w;
    if (b->packed && cpu_q4pack_matches(b->packed, w)) return b->packed;
    free_pack(c, b);
    cpu_q4pack *p = cpu_q4pack_new(w);
    if (!p) return NULL; /* out of memory: the checkpoint layout still works */
    pack_job j = {p, w};
    int nth = tp_threads(c->pool);
    double t0 = cpu_prof_begin();
    tp_run(c->pool, pack_run, &j, p->n_blocks < 4 * nth ? p->n_blocks : 4 * nth);
    b->packed = p;
    cpu_q4pack_release_source(w);
    cpu_prof_end(t0, "pack", w->rows, w->cols, 1);
    cpu_prof_skip(t0); /* not the matmul's time */
    return p;
}

/* Prefill: a task is ROW_BLOCK rows (PK_ROW_BLOCK repacked: units of 16-row blocks, rows on the
 * other paths), kept hot in cache across all tokens. */
static int mm_unit_rows(const mm_job *j) { return j->pk ? PK_ROWS : 1; }
static int mm_unit_count(const mm_job *j) { return j->pk ? j->pk->n_blocks : j->w->rows; }
static int mm_task_units(const mm_job *j) { return j->pk ? PK_ROW_BLOCK / PK_ROWS : ROW_BLOCK; }
static int mm_tasks(const mm_job *j) { return (mm_unit_count(j) + mm_task_units(j) - 1) / mm_task_units(j); }

/* units [u0, u1) of any kernel path (repacked 4-bit, quantized in the checkpoint layout, dense) */
static void mm_units(const mm_job *j, int u0, int u1) {
    const cpu_kernels *k = j->c->k;
    if (j->pk) k->pk_qmm(j->pk, &j->c->act, j->y, u0, u1, 0, j->n);
    else if (j->w->bits) k->qmm(j->w, &j->c->act, j->y, u0, u1, 0, j->n);
    else k->dmm(j->w, j->x, j->y, u0, u1, 0, j->n);
    int r1 = u1 * mm_unit_rows(j);
    add_bias(j->w, j->y, j->n, u0 * mm_unit_rows(j), r1 < j->w->rows ? r1 : j->w->rows);
}

static void mm_task(void *arg, int task, int n_tasks, int thread) {
    const mm_job *j = arg;
    int u0 = task * mm_task_units(j), u1 = u0 + mm_task_units(j);
    (void)n_tasks, (void)thread;
    mm_units(j, u0, u1 < mm_unit_count(j) ? u1 : mm_unit_count(j));
}

/* Decode and short batches (n <= SMALL_N): every row read once from memory, in runs of about
 * DECODE_STEP bytes by thread range (tp_run_ranges), each thread's one stream; here (the checkpoint
 * layout and dense weights) over quads of rows, so that tiles stay whole; repacked weights go as a
 * group job of one (group_now). */
static void mm_quads(void *arg, int q0, int q1, int thread) {
    const mm_job *j = arg;
    (void)thread;
    mm_units(j, 4 * q0, 4 * q1 < j->w->rows ? 4 * q1 : j->w->rows);
}

/* the units a decode claim takes, of unit_bytes each */
static int decode_step(size_t unit_bytes) {
    size_t st = DECODE_STEP / (unit_bytes ? unit_bytes : 1);
    return st < 1 ? 1 : st > (1 << 20) ? 1 << 20 : (int)st;
}

/* Between two decode matmul jobs the caller runs the small ops alone (norms, rope, the KV copies,
 * attention's setup) while a worker would spin; instead, after its last task, it prefetches the
 * start of its range of the next job, whose first rows would otherwise come in cold. The next
 * job is learned: each decode job records where every worker's range starts (tp_run_ranges) in the
 * previous job's key pack, and runs with its own key's record of what followed it last time (the
 * order of a decode step repeats). +1.4..+3.3% median token in 6 of 7 live A/B runs at the 0.5b
 * shape, 64 KB (2 threads, 2026-11-23); 128 KB the same, the caller's range too no better.
 * STRATA_CPU_PREFETCH_NEXT=0: off. */
#define PF_NEXT_BYTES (64 << 10)

/* a decode job over the joint block range of np packs (pack i owns blocks [start[i], start[i+1]),
 * by thread range): the prefetch ranges its workers get (NULL: none), learning as above */
static const tp_prefetch *prefetch_next(fast_ctx *c, const cpu_q4pack *const *pk, const int *start, int np) {
    int nth = tp_threads(c->pool);
    if (!c->pf_bytes || !c->affine || nth < 2 || nth > TP_RANGES_MAX || nth > TP_PF_MAX) return NULL;
    for (int w = 1; c->pf_prev && w < nth; w++) {
        int b = tp_range_start(start[np], w, nth), i = 0;
        while (i + 1 < np && b >= start[i + 1]) i++;
        size_t left = (size_t)(start[i + 1] - b) * pk[i]->block_bytes;
        c->pf_prev->next[w].at = (const char *)pk[i]->data + (size_t)(b - start[i]) * pk[i]->block_bytes;
        c->pf_prev->next[w].bytes = left < (size_t)c->pf_bytes ? left : (size_t)c->pf_bytes;
    }
    c->pf_prev = (cpu_q4pack *)pk[0];
    return c->pf_prev->next;
}

static int quant_ok(const bk_weight *w) {
    return (w->bits == 4 || w->bits == 8) && w->group_size >= 32 && w->group_size % 32 == 0 &&
           w->cols % w->group_size == 0;
}

/* the quantized activations of x for w in `layout` (scales every `block` elements): 1 when the
 * cached ones are still valid, -1 when they need quantizing, 0 when out of memory */
static int ensure_act(fast_ctx *c, const bk_buf *xb, int n, const bk_weight *w, int layout, int block) {
    cpu_qact *a = &c->act;
    int cols = w->cols, bits = w->bits;
    if (c->act_src == xb->data && a->n == n && a->cols == cols && a->bits == bits && a->layout == layout &&
        a->block == block)
        return 1;
    size_t codes = (size_t)n * cols, blocks = (size_t)n * (cols / 32);
    size_t need = layout == CPU_QACT_AMX ? cpu_amx_act_bytes(n, cols, block)
                                         : codes * (size_t)c->planes + 2 * blocks * sizeof(float) + 64;
    if (need > c->act_cap) {
        free(c->act_mem);
        c->act_mem = malloc(need);
        c->act_cap = c->act_mem ? need : 0;
        if (!c->act_mem) return 0;
    }
    float *f = c->act_mem;
    if (layout == CPU_QACT_AMX) {
        cpu_amx_act_init(a, f, n, cols, block);
    } else {
        a->d = f;
        a->bsum = f + blocks;
        a->hi = (int8_t *)(f + 2 * blocks);
        a->lo = c->planes == 2 ? a->hi + codes : NULL;
    }
    a->n = n;
    a->cols = cols;
    a->bits = bits;
    a->planes = c->planes;
    a->layout = layout;
    a->block = block;
    c->act_src = NULL;
    return -1; /* needs quantizing */
}

/* quantizes x (j->x, j->n tokens) into c->act for j->w unless it holds them already; 0: no memory */
static int quantize_x(fast_ctx *c, mm_job *j, const bk_buf *xb) {
    const bk_weight *w = j->w;
    int nth = tp_threads(c->pool);
    int layout = j->amx  ? CPU_QACT_AMX
                 : j->pk ? CPU_QACT_NATURAL
                 : c->k->chunk_ok && c->k->chunk_ok(w->bits, w->cols, w->group_size, c->planes) ? CPU_QACT_CHUNK128
                                                                                              : CPU_QACT_PLANAR;
    int st = ensure_act(c, xb, j->n, w, layout, j->pk ? w->group_size : 32);
    if (st < 0) {
        if (j->n >= 2 * nth) tp_run(c->pool, quant_job, j, 2 * nth);
        else quant_job(j, 0, 1, 0);
        c->act_src = xb->data;
    }
    return st != 0;
}

static void matmul_now(fast_ctx *c, const bk_weight *w, const bk_buf *xb, bk_buf *yb, int n) {
    double t0 = cpu_prof_begin(), skipped = cpu_prof_skipped();
    matmul_run(c, w, xb, yb, n);
    cpu_prof_end(t0 + (cpu_prof_skipped() - skipped), "matmul", w->rows, w->cols, n);
}

/* whether a matmul of n tokens goes to the tile unit, given that w is repacked */
static int amx_shape(const fast_ctx *c, const bk_weight *w, int n) {
    return c->amx && n > SMALL_N && w->group_size % 64 == 0 && w->cols / w->group_size <= 32 * AMX_BIAS_STEPS;
}

/* every pool thread's AMX scratch (~720 KB each), made at the first matmul that needs them; 0
 * when memory is out (that matmul takes the AVX-512 path) */
static int amx_scratch(fast_ctx *c) {
    for (int i = 0; i < tp_threads(c->pool); i++)
        if (!c->amx_scr[i] && !(c->amx_scr[i] = aligned_alloc(64, (cpu_amx_scratch_bytes() + 63) & ~(size_t)63))) return 0;
    return 1;
}

/* Row blocks a prefill task on the tile unit covers: AMX_BLOCKS, or half as many where that would
 * leave fewer than two tasks a thread. A token tile's activations are loaded once for all of a
 * task's blocks, and their reload waits for the tile unit to finish the sums that read them: 8
 * blocks rather than 4 (2 threads, 512 tokens, best of 60, alternating builds, 2026-12-06):
 * 4864 x 896 1151-1302 -> 1299-1413 GFLOP/s, 896 x 4864 1061-1072 -> 1107-1173, 896 x 896
 * 1045-1063 -> 1123-1178; 12 and 16 blocks were no better then, when each group's epilogue swept
 * the whole call's output. With a token tile's output in L1 (q4_amx.c, round 13), 16 against 8
 * (2 threads, 512 tokens, GFLOP/s, 2 alternating runs): 896 x 896 942-1136 -> 1156-1197, 4864 x
 * 896 1373-1398 -> 1456-1566, 896 x 4864 1230-1273 -> 1309-1373, 7b gate/up 1466-1468 ->
 * 1509-1551, 7b q/o 1512-1521 against 1466-1531. */
static int amx_blocks(const cpu_q4pack *pk, int n, int nth) {
    int ab = AMX_BLOCKS, ntg = (n + AMX_TOKENS - 1) / AMX_TOKENS;
    while (ab > 4 && (pk->n_blocks + ab - 1) / ab * ntg < 2 * nth) ab /= 2;
    return ab;
}

/* a prefill task on the tile unit: j->amx row blocks x AMX_TOKENS tokens, tokens outer so that the
 * tasks running at once share their activations. Until round 13 (2026-12-06) a task took 128
 * tokens above 2048 columns (to keep its activations in L2); since a call runs a token tile at a
 * time over a chunk's groups (q4_amx.c), 256 there too (2 threads, 512 tokens, GFLOP/s, 2
 * alternating runs): 7b q/o 1512-1521 -> 1541-1557, 7b gate/up 1466-1468 -> 1473-1575, 896 x 4864
 * 1230-1273 -> 1310-1400. */
static void amx_task(void *arg, int task, int n_tasks, int thread) {
    mm_job *j = arg;
    const int nb = j->pk->n_blocks, ab = j->amx, nrb = (nb + ab - 1) / ab, rows = j->w->rows, nt = AMX_TOKENS;
    const int b0 = task % nrb * ab, t0 = task / nrb * nt;
    const int b1 = b0 + ab < nb ? b0 + ab : nb, t1 = t0 + nt < j->n ? t0 + nt : j->n;
    (void)n_tasks;
    cpu_amx_qmm(j->c->amx_scr[thread], j->pk, &j->c->act, j->y, b0, b1, t0, t1);
    add_bias(j->w, j->y + (size_t)t0 * rows, t1 - t0, b0 * PK_ROWS, b1 * PK_ROWS < rows ? b1 * PK_ROWS : rows);
}

/* ---- held-back matmuls of one input, run as one job ---- */

typedef struct {
    fast_ctx *c;
    int np, n;
    int start[FUSE_MAX + 1]; /* weight i owns blocks [start[i], start[i+1]) of the joint range */
    const cpu_q4pack *pk[FUSE_MAX];
    const bk_weight *w[FUSE_MAX];
    float *y[FUSE_MAX];
} group_job;

/* blocks [b0, b1) of the joint range: the blocks of all weights are the same size (same cols and
 * group), so an even split of the range is an even split of the bytes */
static void group_blocks(void *arg, int b0, int b1, int thread) {
    const group_job *g = arg;
    fast_ctx *c = g->c;
    (void)thread;
    for (int i = 0; i < g->np; i++) {
        int lo = b0 > g->start[i] ? b0 : g->start[i], hi = b1 < g->start[i + 1] ? b1 : g->start[i + 1];
        if (lo >= hi) continue;
        lo -= g->start[i], hi -= g->start[i];
        c->k->pk_qmm(g->pk[i], &c->act, g->y[i], lo, hi, 0, g->n);
        add_bias(g->w[i], g->y[i], g->n, lo * PK_ROWS, hi * PK_ROWS < g->w[i]->rows ? hi * PK_ROWS : g->w[i]->rows);
    }
}

/* a decode job over np repacked weights of one input (np = 1: a matmul alone), whose codes are in
 * c->act: their joint block range by thread range. One token claims whole runs of the kernel's two
 * streams (cpu_kern.h cpu_q4p_pair_run) where a thread's share holds one, else whole pairs. Until
 * round 13 (2026-12-06) runs took a share of 8 runs: the small matrices then went in adjacent
 * pairs, whose streams are closer than the kernel wants. Two threads, alternating backends, 40
 * blocks of ~1000 calls, lower-quartile us: 7b k/v 512 x 3584 34.2 -> 33.0-33.2, 1b k/v 512 x 2048
 * 21.6 -> 20.7, 0.5b q/o 896 x 896 16.4-16.7 -> 15.6-15.8, 1152 x 896 20.8 -> 19.9; claims of one
 * run against the whole share (one claim a thread) the same within noise. */
static void group_now(fast_ctx *c, group_job *g) {
    int step = decode_step(g->pk[0]->block_bytes);
#if defined(__x86_64__)
    if (g->n == 1) {
        const size_t bb = g->pk[0]->block_bytes;
        const int run = 2 * cpu_q4p_pair_run(bb);
        if (g->start[g->np] / tp_threads(c->pool) >= run) step = (step + run - 1) / run * run;
        else if (bb >= CPU_Q4P_PAIR_MIN && step < 2) step = 2;
    }
#endif
    tp_run_ranges(c->pool, group_blocks, g, g->start[g->np], step, c->affine, prefetch_next(c, g->pk, g->start, g->np));
}

static void flush_pending(fast_ctx *c) {
    int np = c->n_pend;
    c->n_pend = 0;
    double t0 = cpu_prof_begin();
    group_job g = {c, np, c->pend[0].n, {0}, {NULL}, {NULL}, {NULL}};
    int ok = np > 1;
    for (int i = 0; ok && i < np; i++) {
        g.pk[i] = get_pack(c, &c->pend[i].w); /* built at enqueue and unchanged since: a lookup */
        g.w[i] = &c->pend[i].w;
        g.y[i] = c->pend[i].y->data;
        ok = g.pk[i] != NULL;
        if (ok) g.start[i + 1] = g.start[i] + g.pk[i]->n_blocks;
    }
    mm_job j = {c, &c->pend[0].w, c->pend[0].x->data, NULL, g.n, g.pk[0], 0, NULL};
    if (!ok || !quantize_x(c, &j, c->pend[0].x)) { /* one matmul, or no memory for codes: one by one */
        for (int i = 0; i < np; i++) matmul_now(c, &c->pend[i].w, c->pend[i].x, c->pend[i].y, c->pend[i].n);
    } else {
        group_now(c, &g);
        cpu_prof_end(t0, "fused", g.start[np] * PK_ROWS, c->pend[0].w.cols, g.n);
    }
}

static void matmul_run(fast_ctx *c, const bk_weight *w, const bk_buf *xb, bk_buf *yb, int n) {
    if (c->act_src == yb->data) c->act_src = NULL;
    mm_job j = {c, w, xb->data, yb->data, n, NULL, 0, NULL};
    int nth = tp_threads(c->pool);
    if (quant_ok(w)) {
        j.pk = get_pack(c, w);
        j.amx = j.pk && amx_shape(c, w, n) && amx_scratch(c) ? amx_blocks(j.pk, n, nth) : 0;
        /* the quantizer has read all of u before any task writes y: y may overlap u */
        if (j.amx && c->glu.g && c->glu.g->data == xb->data && (size_t)n * (size_t)w->cols == (size_t)c->glu.n) {
            j.glu_u = c->glu.u->data; /* applied by the quantizer */
            c->glu.g = NULL;
        }
    }
    if (c->glu.g) glu_flush(c); /* a held SwiGLU this matmul does not take runs before x is read */
    if (quant_ok(w) && !quantize_x(c, &j, xb)) { /* no memory for codes: still correct */
        if (j.glu_u) ew_now(c, EW_GLU, (float *)j.x, j.glu_u, NULL, (size_t)n * (size_t)w->cols);
        tp_run(c->pool, slow_job, &j, nth);
        return;
    }
    if (j.amx) {
        int nrb = (j.pk->n_blocks + j.amx - 1) / j.amx;
        tp_run(c->pool, amx_task, &j, nrb * ((n + AMX_TOKENS - 1) / AMX_TOKENS));
        return;
    }
    if (j.pk && n <= SMALL_N) {
        group_job g = {c, 1, n, {0, j.pk->n_blocks}, {j.pk}, {w}, {j.y}};
        group_now(c, &g);
    } else if (quant_ok(w) || (w->bits == 0 && (w->wdtype == BK_F32 || w->wdtype == BK_F16 || w->wdtype == BK_BF16))) {
        if (n > SMALL_N) {
            tp_run(c->pool, mm_task, &j, mm_tasks(&j));
            return;
        }
        size_t row_bytes = w->bits ? (size_t)w->cols * (size_t)w->bits / 8 : (size_t)w->cols * bk_dtype_size(w->wdtype);
        tp_run_ranges(c->pool, mm_quads, &j, (w->rows + 3) / 4, decode_step(4 * row_bytes), c->affine, NULL);
    } else {
        tp_run(c->pool, slow_job, &j, nth);
    }
}

/* whether [a, a + an) and [b, b + bn) share a byte */
static int overlaps(const void *a, size_t an, const void *b, size_t bn) {
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return x < y + bn && y < x + an;
}

/* whether y = W x can be held back with the pending ones: same input, tokens, columns and group
 * (so one quantization serves all), another code buffer, and an output that overlaps neither the
 * input nor another output (outputs are written while the input's codes are still in use) */
static int can_hold(const fast_ctx *c, const bk_weight *w, const bk_buf *xb, const bk_buf *yb, int n) {
    size_t xn = (size_t)n * (size_t)w->cols * sizeof(float), yn = (size_t)n * (size_t)w->rows * sizeof(float);
    if (overlaps(yb->data, yn, xb->data, xn)) return 0;
    if (!c->n_pend) return 1;
    if (c->n_pend == FUSE_MAX || c->pend[0].x->data != xb->data || c->pend[0].n != n || c->pend[0].w.cols != w->cols ||
        c->pend[0].w.group_size != w->group_size)
        return 0;
    for (int i = 0; i < c->n_pend; i++)
        if (c->pend[i].w.w == w->w || /* one buffer, two descriptions: each pack would evict the other */
            overlaps(yb->data, yn, c->pend[i].y->data, (size_t)n * (size_t)c->pend[i].w.rows * sizeof(float))) return 0;
    return 1;
}

/* Decode and short batches on repacked weights are held back (see fast_ctx.pend); the rest runs
 * now, after whatever is held. */
static void fast_matmul(backend *be, const bk_weight *w, const bk_buf *xb, bk_buf *yb, int n) {
    fast_ctx *c = CTX(be);
    int holdable = c->fuse && n <= SMALL_N && quant_ok(w) && get_pack(c, w);
    /* a held SwiGLU: a matmul that runs now takes it or runs it first (matmul_run); one held back
     * here could read its gate buffer in a group job that does not look, so it runs now */
    if (c->glu.g && holdable) glu_flush(c);
    if (c->n_pend && !(holdable && can_hold(c, w, xb, yb, n))) flush_pending(c);
    if (!holdable || !can_hold(c, w, xb, yb, n)) {
        matmul_now(c, w, xb, yb, n);
        return;
    }
    if (c->act_src == yb->data) c->act_src = NULL;
    c->pend[c->n_pend].w = *w;
    c->pend[c->n_pend].x = xb;
    c->pend[c->n_pend].y = yb;
    c->pend[c->n_pend].n = n;
    c->n_pend++;
}

/* ---- per-token ops, threaded over tokens where a batch makes it pay ---- */

typedef struct {
    backend *be;
    const bk_buf *x;
    const bk_vec *w;
    bk_buf *out;
    int n, dim;
    float eps;
} norm_job;

static void norm_run(void *arg, int ith, int nth, int thread) {
    norm_job *j = arg;
    (void)thread;
    int t0 = (int)((long)j->n * ith / nth), t1 = (int)((long)j->n * (ith + 1) / nth);
    if (t0 >= t1) return;
    const cpu_kernels *k = CTX(j->be)->k;
    if (k->rmsnorm && (j->w->dtype == BK_F32 || j->w->dtype == BK_F16 || j->w->dtype == BK_BF16)) {
        k->rmsnorm(j->x->data, j->w->data->data, j->w->dtype, j->out->data, t0, t1, j->dim, j->eps);
        return;
    }
    size_t off = (size_t)t0 * j->dim * sizeof(float);
    bk_buf xv = {.data = (char *)j->x->data + off}, ov = {.data = (char *)j->out->data + off};
    cpu_rmsnorm(j->be, &xv, j->w, &ov, t1 - t0, j->dim, j->eps);
}

static void fast_rmsnorm(backend *be, const bk_buf *x, const bk_vec *w, bk_buf *out, int n, int dim, float eps) {
    op_begin(be, out->data);
    norm_job j = {be, x, w, out, n, dim, eps};
    if (n >= 8) tp_run(CTX(be)->pool, norm_run, &j, 2 * tp_threads(CTX(be)->pool));
    else norm_run(&j, 0, 1, 0);
}

typedef struct {
    float *x;
    const float *inv_freq;
    int n, n_heads, head_dim, pos0;
    float *tab; /* NULL, or the batch's cos/sin (rope_tab_run fills it, rope_run reads it) */
} rope_job;

/* the angles of a position are the same for every head: cos/sin once per (token, j), with the
 * reference's exact float expressions so the results match it bit for bit */
static void rope_angles(const rope_job *j, int t, int base, int m, float *cs, float *sn) {
    for (int k = 0; k < m; k++) {
        float ang = (float)(j->pos0 + t) * j->inv_freq[base + k];
        cs[k] = cosf(ang);
        sn[k] = sinf(ang);
    }
}

static void rope_tab_run(void *arg, int ith, int nth, int thread) {
    rope_job *j = arg;
    (void)thread;
    int half = j->head_dim / 2;
    for (int t = ith; t < j->n; t += nth) rope_angles(j, t, 0, half, j->tab + (size_t)t * 2 * half, j->tab + (size_t)t * 2 * half + half);
}

static void rope_run(void *arg, int ith, int nth, int thread) {
    rope_job *j = arg;
    (void)thread;
    int half = j->head_dim / 2;
    float cbuf[256], sbuf[256];
    for (int t = ith; t < j->n; t += nth) {
        for (int base = 0; base < half; base += 256) {
            int m = half - base < 256 ? half - base : 256;
            const float *cs = cbuf, *sn = sbuf;
            if (j->tab) cs = j->tab + (size_t)t * 2 * half + base, sn = cs + half;
            else rope_angles(j, t, base, m, cbuf, sbuf);
            for (int h = 0; h < j->n_heads; h++) {
                float *x = j->x + ((size_t)t * j->n_heads + h) * j->head_dim + base;
                for (int k = 0; k < m; k++) {
                    float a = x[k], b = x[k + half];
                    x[k] = a * cs[k] - b * sn[k];
                    x[k + half] = b * cs[k] + a * sn[k];
                }
            }
        }
    }
}

/* A batch's table of cos/sin, built at its first rope and kept for the others of the same positions
 * (q and k of every layer): prefill of 512 tokens at the 0.5b shape computed 1.6M cosf/sinf pairs
 * for 16k distinct ones, 6 ms of ~540 (2 threads, 2026-12-06). */
static const float *rope_table(fast_ctx *c, rope_job *j, const bk_buf *inv_freq) {
    int half = j->head_dim / 2;
    if (c->rope.tab && c->rope.freq == inv_freq->data && c->rope.writes == inv_freq->writes && c->rope.pos0 == j->pos0 &&
        c->rope.n == j->n && c->rope.half == half)
        return c->rope.tab;
    size_t need = (size_t)j->n * 2 * (size_t)half;
    if (need > c->rope.cap) {
        free(c->rope.tab);
        c->rope.tab = malloc(need * sizeof(float));
        c->rope.cap = c->rope.tab ? need : 0;
        if (!c->rope.tab) return NULL;
    }
    j->tab = c->rope.tab;
    tp_run(c->pool, rope_tab_run, j, 2 * tp_threads(c->pool));
    c->rope.freq = inv_freq->data, c->rope.writes = inv_freq->writes;
    c->rope.pos0 = j->pos0, c->rope.n = j->n, c->rope.half = half;
    return c->rope.tab;
}

static void fast_rope(backend *be, bk_buf *x, int n, int n_heads, int head_dim, int pos0, const bk_buf *inv_freq) {
    op_begin(be, x->data);
    rope_job j = {x->data, inv_freq->data, n, n_heads, head_dim, pos0, NULL};
    if (n >= 4) {
        j.tab = (float *)rope_table(CTX(be), &j, inv_freq);
        tp_run(CTX(be)->pool, rope_run, &j, 2 * tp_threads(CTX(be)->pool));
    } else {
        rope_run(&j, 0, 1, 0);
    }
}

/* KV caches in f16 (STRATA_CPU_KV_F16=0: f32) where the level's attention kernels take the head
 * configuration; the kernels widen the rows as they load them. A decode token's attention reads
 * every layer's cache: 2 x 540 rows x 512 bytes a layer at the 0.5b shape after a 512-token
 * prompt, 13 MB beside 278 MB of weights but 7% of the token's time (one core a kv head reads from
 * L3). Decode attention at that shape, 2 threads, caches in L3 (2026-12-06): 540 f32 rows 23.4-24.7
 * us, 270 (the bytes of 540 in f16) 11.8-11.9 us. f16 is llama.cpp's default cache type too. */
static int kv_f16(const fast_ctx *c, int n_heads, int n_kv_heads, int head_dim) {
    return c->kv16 && cpu_attn_f16_ok(c->k, n_heads, n_kv_heads, head_dim);
}

static bk_dtype fast_kv_dtype(backend *be, int n_heads, int n_kv_heads, int head_dim) {
    return kv_f16(CTX(be), n_heads, n_kv_heads, head_dim) ? BK_F16 : BK_F32;
}

static void fast_kv_store(backend *be, const bk_buf *src, bk_buf *cache, int row0, int n, int row_elems) {
    op_begin(be, cache->data);
    cache->writes++;
    ew_now(CTX(be), EW_F16, NULL, src->data, (uint16_t *)cache->data + (size_t)row0 * (size_t)row_elems,
           (size_t)n * (size_t)row_elems);
}

static void fast_attention(backend *be, const bk_buf *q, const bk_buf *kc, const bk_buf *vc, bk_buf *out, int n,
                           int pos0, int n_heads, int n_kv_heads, int head_dim) {
    fast_ctx *c = CTX(be);
    op_begin(be, out->data);
    int kv16 = kv_f16(c, n_heads, n_kv_heads, head_dim);
    cpu_attn_run(&c->attn, c->k, c->pool, c->affine, q->data, kc->data, vc->data, kv16, out->data, n, pos0, n_heads,
                 n_kv_heads, head_dim);
}

/* an elementwise op over n elements, spread over the pool from 32k: a = silu(a) * b (EW_GLU, the
 * level's swiglu), a += b (EW_ADD, a prefill's residual adds: 512 x 896 floats at the 0.5b shape)
 * or h = b rounded to f16 (EW_F16, KV cache rows) */
typedef struct {
    const cpu_kernels *k;
    int op;
    float *a;
    const float *b;
    uint16_t *h;
    size_t n;
} ew_job;

static void ew_run(void *arg, int ith, int nth, int thread) {
    ew_job *j = arg;
    (void)thread;
    size_t i0 = j->n * (size_t)ith / (size_t)nth & ~(size_t)15;
    size_t i1 = ith == nth - 1 ? j->n : j->n * (size_t)(ith + 1) / (size_t)nth & ~(size_t)15;
    if (i0 >= i1) return;
    if (j->op == EW_GLU) j->k->swiglu(j->a + i0, j->b + i0, (int)(i1 - i0));
    else if (j->op == EW_ADD)
        for (size_t i = i0; i < i1; i++) j->a[i] += j->b[i];
    else if (j->k->to_f16) j->k->to_f16(j->b + i0, j->h + i0, i1 - i0);
    else /* a level without f16 caches is never asked for them (fast_kv_dtype): still correct */
        for (size_t i = i0; i < i1; i++) j->h[i] = bk_f32_to_f16(j->b[i]);
}

static void ew_now(fast_ctx *c, int op, float *a, const float *b, uint16_t *h, size_t n) {
    ew_job j = {c->k, op, a, b, h, n};
    if (n >= 1 << 15) tp_run(c->pool, ew_run, &j, 2 * tp_threads(c->pool));
    else ew_run(&j, 0, 1, 0);
}

static void glu_now(fast_ctx *c, bk_buf *gate, const bk_buf *up, int n) {
    ew_now(c, EW_GLU, gate->data, up->data, NULL, (size_t)n);
}

static void glu_flush(fast_ctx *c) {
    bk_buf *g = c->glu.g;
    c->glu.g = NULL;
    glu_now(c, g, c->glu.u, c->glu.n);
}

static void fast_swiglu(backend *be, bk_buf *gate, const bk_buf *up, int n) {
    fast_ctx *c = CTX(be);
    op_begin(be, gate->data);
    if (c->amx && gate->data != up->data) { /* held for a prefill matmul on the tile unit (fast_ctx.glu) */
        c->glu.g = gate, c->glu.u = up, c->glu.n = n;
        return;
    }
    glu_now(c, gate, up, n);
}

static void fast_add(backend *be, bk_buf *x, const bk_buf *y, int n) {
    op_begin(be, x->data);
    ew_now(CTX(be), EW_ADD, x->data, y->data, NULL, (size_t)n);
}

static void fast_embed(backend *be, const bk_weight *w, const int32_t *ids, int n, bk_buf *out) {
    op_begin(be, out->data);
    const cpu_q4pack *p = w->bits == 4 ? w->w->packed : NULL;
    if (p && cpu_q4pack_matches(p, w)) {
        for (int t = 0; t < n; t++) cpu_q4pack_row(p, ids[t], (float *)out->data + (size_t)t * w->cols);
        return;
    }
    cpu_embed(be, w, ids, n, out);
}

static void fast_buf_read(backend *be, const bk_buf *src, size_t off, void *dst, size_t n) {
    op_begin(be, NULL);
    cpu_buf_read(be, src, off, dst, n);
}

static void fast_sync(backend *be) { op_begin(be, NULL); }

static void fast_destroy(backend *be) {
    fast_ctx *c = CTX(be);
    if (c && c->pool) op_begin(be, NULL);
    if (c) {
        cpu_attn_free(&c->attn);
        for (int i = 0; c->amx_scr && c->pool && i < tp_threads(c->pool); i++) free(c->amx_scr[i]);
        free(c->amx_scr);
        tp_free(&c->pool);
        free(c->act_mem);
        free(c->rope.tab);
        free(c);
    }
    free(be);
}

static const backend_ops fast_ops = {
    .name = "cpu",
    .destroy = fast_destroy,
    .buf_alloc = fast_buf_alloc,
    .buf_wrap = cpu_buf_wrap,
    .buf_free = fast_buf_free,
    .buf_write = fast_buf_write,
    .buf_read = fast_buf_read,
    .copy = fast_copy,
    .matmul = fast_matmul,
    .embed = fast_embed,
    .rmsnorm = fast_rmsnorm,
    .rope = fast_rope,
    .attention = fast_attention,
    .kv_dtype = fast_kv_dtype,
    .kv_store = fast_kv_store,
    .swiglu = fast_swiglu,
    .add = fast_add,
    .sync = fast_sync,
};

/* ---- levels ---- */

#if defined(__aarch64__)
/* whether the CPU has the ARMv8.2 dot-product instructions (sdot), as the OS reports them */
static int cpu_has_dotprod(void) {
#if defined(__APPLE__)
    int v = 0;
    size_t len = sizeof v;
    return !sysctlbyname("hw.optional.arm.FEAT_DotProd", &v, &len, NULL, 0) && v;
#elif defined(__linux__)
    return (getauxval(AT_HWCAP) & HWCAP_ASIMDDP) != 0;
#else
    return 0;
#endif
}
#endif

int cpu_fast_has_level(const char *name) {
    if (!strcmp(name, "scalar")) return 1;
#if defined(__x86_64__)
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!strcmp(name, "avx2")) return avx2;
    if (!strcmp(name, "avx2-vnni")) return avx2 && __builtin_cpu_supports("avxvnni");
    if (!strcmp(name, "avx512"))
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni");
#endif
#if defined(__aarch64__)
    if (!strcmp(name, "neon")) return 1;
    if (!strcmp(name, "neon-dot")) return cpu_has_dotprod();
#endif
    return 0;
}

static const cpu_kernels *level_kernels(const char *name) {
#if defined(__x86_64__)
    if (!strcmp(name, "avx512")) return &cpu_kern_avx512;
    if (!strcmp(name, "avx2")) return &cpu_kern_avx2;
    if (!strcmp(name, "avx2-vnni")) return &cpu_kern_avx2_vnni;
#endif
#if defined(__aarch64__)
    if (!strcmp(name, "neon-dot")) return &cpu_kern_neon_dot;
    if (!strcmp(name, "neon")) return &cpu_kern_neon;
#endif
    (void)name;
    return &cpu_kern_scalar;
}

/* the levels, best first: the first one this CPU has is the default */
static const char *const levels[] = {"avx512", "avx2-vnni", "avx2", "neon-dot", "neon", "scalar"};

static const cpu_kernels *pick_level(strata_err *err) {
    const char *want = getenv("STRATA_CPU_LEVEL");
    const int n = (int)(sizeof levels / sizeof levels[0]);
    if (want && *want) {
        int known = 0;
        char names[64] = "";
        for (int i = 0; i < n; i++) {
            known |= !strcmp(want, levels[i]);
            snprintf(names + strlen(names), sizeof names - strlen(names), "%s%s", i ? ", " : "", levels[i]);
        }
        if (!known) {
            err_set(err, "STRATA_CPU_LEVEL=%s: unknown level (known: %s)", want, names);
            return NULL;
        }
        if (!cpu_fast_has_level(want)) {
            err_set(err, "STRATA_CPU_LEVEL=%s: this CPU does not support that level", want);
            return NULL;
        }
        return level_kernels(want);
    }
    for (int i = 0; i < n; i++)
        if (cpu_fast_has_level(levels[i])) return level_kernels(levels[i]);
    return &cpu_kern_scalar;
}

const char *cpu_fast_level(const backend *be) { return ((const fast_ctx *)be->ctx)->k->name; }

/* whether the tile unit can take prefill: the CPU and OS run AMX, and the level says so (the
 * tile path's quantizer and epilogue are AVX-512 code; its activations are that level's layout) */
static int amx_ok(const fast_ctx *c) { return c->k->pk_qmm && c->k->amx && cpu_amx_available(); }

int cpu_fast_option(backend *be, const char *name, int value) {
    fast_ctx *c = CTX(be);
    int *opt = !strcmp(name, "fuse")         ? &c->fuse
               : !strcmp(name, "attn_split") ? &c->attn.split
               : !strcmp(name, "affine")     ? &c->affine
               : !strcmp(name, "pf_next")    ? &c->pf_bytes
               : !strcmp(name, "amx")        ? &c->amx
               : !strcmp(name, "kv_f16")     ? &c->kv16
                                             : NULL;
    if (!opt) return -1;
    op_begin(be, NULL); /* what was held back runs under the old setting */
    int old = *opt;
    *opt = opt == &c->pf_bytes ? (value > 1 ? value : value ? PF_NEXT_BYTES : 0) : value != 0;
    if (opt == &c->amx) *opt = value && amx_ok(c);
    return old;
}

static int n_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

/* a switch that is on unless the environment sets it to "0" */
static int env_on(const char *name) {
    const char *v = getenv(name);
    return !(v && !strcmp(v, "0"));
}

backend *backend_cpu_fast_new(int n_threads, strata_err *err) {
    const cpu_kernels *k = pick_level(err);
    if (!k) return NULL;
    backend *be = calloc(1, sizeof *be);
    fast_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) { free(be); free(c); err_set(err, "out of memory"); return NULL; }
    be->ops = cpu_prof_enabled() ? cpu_prof_ops(&fast_ops) : &fast_ops;
    be->ctx = c;
    c->k = k;
    const char *planes = getenv("STRATA_CPU_PLANES");
    c->planes = planes && !strcmp(planes, "1") ? 1 : 2;
    c->repack = env_on("STRATA_CPU_REPACK");
    c->fuse = env_on("STRATA_CPU_FUSE");
    c->attn.split = env_on("STRATA_CPU_ATTN_SPLIT");
    c->affine = env_on("STRATA_CPU_AFFINE");
    c->huge = env_on("STRATA_CPU_HUGE_BUFS");
    c->pf_bytes = env_on("STRATA_CPU_PREFETCH_NEXT") ? PF_NEXT_BYTES : 0;
    c->amx = env_on("STRATA_CPU_AMX") && amx_ok(c);
    c->kv16 = env_on("STRATA_CPU_KV_F16");
    int nth = n_threads > 0 ? n_threads : n_cores();
    if (nth > 256) nth = 256;
    c->pool = tp_new(nth);
    c->amx_scr = calloc((size_t)nth, sizeof *c->amx_scr);
    if (!c->pool || !c->amx_scr || cpu_attn_init(&c->attn, nth)) {
        fast_destroy(be);
        err_set(err, "cpu backend: cannot start %d threads", nth);
        return NULL;
    }
    return be;
}
