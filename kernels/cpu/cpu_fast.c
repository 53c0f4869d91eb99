/* The fast cpu backend ("cpu"): integer-dot quantized matmul (cpu_kern.h) at the best SIMD level
 * the CPU has, picked at run time, and a thread pool that splits rows (matmul) or tokens and
 * heads (attention, norms) across the cores. Ops run synchronously on the caller's thread plus
 * the pool; sync() has nothing to wait for.
 *
 * STRATA_CPU_LEVEL=scalar|avx2|avx512 forces a level (the tests cover each one the machine
 * has); STRATA_CPU_PLANES=1 trades the second activation plane for speed outside the contract's
 * tolerance (see cpu_kern.h); STRATA_CPU_REPACK=0 keeps 4-bit weights in the checkpoint's layout
 * (the chunk path) instead of the repacked twin a level with `pk_qmm` builds at first use. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_buf.h"
#include "kernels/cpu/cpu_fast.h"
#include "kernels/cpu/cpu_kern.h"
#include "kernels/cpu/threadpool.h"

#define ROW_BLOCK 32 /* rows a task runs over all tokens at once in prefill: 14-60 KB of q4 */
#define SMALL_N 8    /* up to this many tokens (decode, speculative verify) a task is a run of rows */
#define RUN_BYTES (128 << 10) /* at most this much weight a run when n > 1: its token tiles reread it from L2 */
#define PK_ROWS 16           /* rows of a repacked block (cpu_q4pack) */
#define PK_ROW_BLOCK 64      /* rows a prefill task of the repacked path runs over all tokens */

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
    /* per-thread attention scores */
    float **scores;
    int scores_cap;
} fast_ctx;

static fast_ctx *CTX(backend *be) { return be->ctx; }

/* any op that writes `b` ends the reuse of activations quantized from it */
static void touched(backend *be, const void *data) {
    if (CTX(be)->act_src == data) CTX(be)->act_src = NULL;
}

/* ---- memory: plain host buffers, as the reference ---- */

static void fast_buf_free(backend *be, bk_buf *b) {
    if (b) touched(be, b->data), cpu_q4pack_free(b->packed);
    cpu_buf_free(be, b);
}

static void fast_buf_write(backend *be, bk_buf *dst, size_t off, const void *src, size_t n) {
    touched(be, dst->data);
    dst->writes++;
    cpu_buf_write(be, dst, off, src, n);
}

static void fast_copy(backend *be, const bk_buf *src, size_t so, bk_buf *dst, size_t do_, size_t n) {
    touched(be, dst->data);
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
} mm_job;

/* rows [r0, r1) of thread ith, in multiples of 4 so that tiles stay whole */
static void split_rows(int rows, int ith, int nth, int *r0, int *r1) {
    int quads = (rows + 3) / 4;
    *r0 = (int)((long)quads * ith / nth) * 4;
    *r1 = (int)((long)quads * (ith + 1) / nth) * 4;
    if (*r0 > rows) *r0 = rows;
    if (*r1 > rows) *r1 = rows;
}

static void add_bias(const bk_weight *w, float *y, int n, int r0, int r1) {
    if (!w->bias.data) return;
    for (int t = 0; t < n; t++)
        for (int r = r0; r < r1; r++) y[(size_t)t * w->rows + r] += bk_load_float(w->bias.data->data, w->bias.dtype, r);
}

static void quant_job(void *arg, int ith, int nth, int thread) {
    mm_job *j = arg;
    (void)thread;
    int t0 = (int)((long)j->n * ith / nth), t1 = (int)((long)j->n * (ith + 1) / nth);
    if (t0 < t1) (j->pk ? j->c->k->pk_quant : j->c->k->quant)(j->x, &j->c->act, t0, t1);
}

/* decode and short batches: a task is a run of rows, each read once from memory; prefill: a task
 * is ROW_BLOCK rows, kept hot in cache across all tokens */
static void task_rows(const mm_job *j, int task, int n_tasks, int *r0, int *r1) {
    if (j->n <= SMALL_N) {
        split_rows(j->w->rows, task, n_tasks, r0, r1);
    } else {
        *r0 = task * ROW_BLOCK;
        *r1 = *r0 + ROW_BLOCK < j->w->rows ? *r0 + ROW_BLOCK : j->w->rows;
    }
}

static int mm_tasks(const mm_job *j, int nth) {
    if (j->n > SMALL_N) return (j->w->rows + ROW_BLOCK - 1) / ROW_BLOCK;
    int quads = (j->w->rows + 3) / 4, t = nth == 1 ? 1 : 4 * nth; /* small tasks balance a busy machine */
    if (j->n > 1) { /* a run small enough that the second tile of tokens finds it in L2 */
        size_t bytes = (size_t)j->w->rows * (size_t)j->w->cols * (size_t)(j->w->bits ? j->w->bits : 32) / 8;
        size_t runs = (bytes + RUN_BYTES - 1) / RUN_BYTES;
        if (runs > (size_t)t) t = runs > (size_t)quads ? quads : (int)runs;
    }
    return t < quads ? t : quads;
}

static void qmm_job(void *arg, int task, int n_tasks, int thread) {
    mm_job *j = arg;
    int r0, r1;
    (void)thread;
    task_rows(j, task, n_tasks, &r0, &r1);
    if (r0 >= r1) return;
    j->c->k->qmm(j->w, &j->c->act, j->y, r0, r1, 0, j->n);
    add_bias(j->w, j->y, j->n, r0, r1);
}

static void dmm_job(void *arg, int task, int n_tasks, int thread) {
    mm_job *j = arg;
    int r0, r1;
    (void)thread;
    task_rows(j, task, n_tasks, &r0, &r1);
    if (r0 >= r1) return;
    j->c->k->dmm(j->w, j->x, j->y, r0, r1, 0, j->n);
    add_bias(j->w, j->y, j->n, r0, r1);
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
    cpu_q4pack_free(b->packed);
    b->packed = NULL;
    cpu_q4pack *p = cpu_q4pack_new(w);
    if (!p) return NULL; /* out of memory: the checkpoint layout still works */
    pack_job j = {p, w};
    int nth = tp_threads(c->pool);
    tp_run(c->pool, pack_run, &j, p->n_blocks < 4 * nth ? p->n_blocks : 4 * nth);
    b->packed = p;
    cpu_q4pack_release_source(w);
    return p;
}

/* blocks [b0, b1) of a task: runs of blocks for decode and short batches, PK_ROW_BLOCK rows a
 * task in prefill */
static void pk_task_blocks(const mm_job *j, int task, int n_tasks, int *b0, int *b1) {
    int nb = j->pk->n_blocks;
    if (j->n <= SMALL_N) {
        *b0 = (int)((long)nb * task / n_tasks);
        *b1 = (int)((long)nb * (task + 1) / n_tasks);
    } else {
        *b0 = task * (PK_ROW_BLOCK / PK_ROWS);
        *b1 = *b0 + PK_ROW_BLOCK / PK_ROWS < nb ? *b0 + PK_ROW_BLOCK / PK_ROWS : nb;
    }
}

static int pk_tasks(const mm_job *j, int nth) {
    int nb = j->pk->n_blocks;
    if (j->n > SMALL_N) return (nb + PK_ROW_BLOCK / PK_ROWS - 1) / (PK_ROW_BLOCK / PK_ROWS);
    int t = nth == 1 ? 1 : 4 * nth; /* small tasks balance a busy machine */
    return t < nb ? t : nb;
}

static void pk_job(void *arg, int task, int n_tasks, int thread) {
    mm_job *j = arg;
    int b0, b1;
    (void)thread;
    pk_task_blocks(j, task, n_tasks, &b0, &b1);
    if (b0 >= b1) return;
    j->c->k->pk_qmm(j->pk, &j->c->act, j->y, b0, b1, 0, j->n);
    int r1 = b1 * PK_ROWS < j->w->rows ? b1 * PK_ROWS : j->w->rows;
    add_bias(j->w, j->y, j->n, b0 * PK_ROWS, r1);
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
    size_t need = codes * (size_t)c->planes + 2 * blocks * sizeof(float) + 64;
    if (need > c->act_cap) {
        free(c->act_mem);
        c->act_mem = malloc(need);
        c->act_cap = c->act_mem ? need : 0;
        if (!c->act_mem) return 0;
    }
    float *f = c->act_mem;
    a->d = f;
    a->bsum = f + blocks;
    a->hi = (int8_t *)(f + 2 * blocks);
    a->lo = c->planes == 2 ? a->hi + codes : NULL;
    a->n = n;
    a->cols = cols;
    a->bits = bits;
    a->planes = c->planes;
    a->layout = layout;
    a->block = block;
    c->act_src = NULL;
    return -1; /* needs quantizing */
}

static void fast_matmul(backend *be, const bk_weight *w, const bk_buf *xb, bk_buf *yb, int n) {
    fast_ctx *c = CTX(be);
    touched(be, yb->data);
    mm_job j = {c, w, xb->data, yb->data, n, NULL};
    int nth = tp_threads(c->pool);
    if (quant_ok(w)) {
        j.pk = get_pack(c, w);
        int layout = j.pk ? CPU_QACT_NATURAL
                     : c->k->chunk_ok && c->k->chunk_ok(w->bits, w->cols, w->group_size, c->planes) ? CPU_QACT_CHUNK128
                                                                                                  : CPU_QACT_PLANAR;
        int st = ensure_act(c, xb, n, w, layout, j.pk ? w->group_size : 32);
        if (st == 0) { tp_run(c->pool, slow_job, &j, nth); return; } /* no memory for codes: still correct */
        if (st < 0) {
            if (n >= 2 * nth) tp_run(c->pool, quant_job, &j, 2 * nth);
            else quant_job(&j, 0, 1, 0);
            c->act_src = xb->data;
        }
        if (j.pk) tp_run(c->pool, pk_job, &j, pk_tasks(&j, nth));
        else tp_run(c->pool, qmm_job, &j, mm_tasks(&j, nth));
    } else if (w->bits == 0 && (w->wdtype == BK_F32 || w->wdtype == BK_F16 || w->wdtype == BK_BF16)) {
        tp_run(c->pool, dmm_job, &j, mm_tasks(&j, nth));
    } else {
        tp_run(c->pool, slow_job, &j, nth);
    }
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
    size_t off = (size_t)t0 * j->dim * sizeof(float);
    bk_buf xv = {.data = (char *)j->x->data + off}, ov = {.data = (char *)j->out->data + off};
    cpu_rmsnorm(j->be, &xv, j->w, &ov, t1 - t0, j->dim, j->eps);
}

static void fast_rmsnorm(backend *be, const bk_buf *x, const bk_vec *w, bk_buf *out, int n, int dim, float eps) {
    touched(be, out->data);
    norm_job j = {be, x, w, out, n, dim, eps};
    if (n >= 8) tp_run(CTX(be)->pool, norm_run, &j, 2 * tp_threads(CTX(be)->pool));
    else norm_run(&j, 0, 1, 0);
}

typedef struct {
    float *x;
    const float *inv_freq;
    int n, n_heads, head_dim, pos0;
} rope_job;

/* the angles of a position are the same for every head: cos/sin once per (token, j), with the
 * reference's exact float expressions so the results match it bit for bit */
static void rope_run(void *arg, int ith, int nth, int thread) {
    rope_job *j = arg;
    (void)thread;
    int half = j->head_dim / 2;
    float cs[256], sn[256];
    for (int t = ith; t < j->n; t += nth) {
        for (int base = 0; base < half; base += 256) {
            int m = half - base < 256 ? half - base : 256;
            for (int k = 0; k < m; k++) {
                float ang = (float)(j->pos0 + t) * j->inv_freq[base + k];
                cs[k] = cosf(ang);
                sn[k] = sinf(ang);
            }
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

static void fast_rope(backend *be, bk_buf *x, int n, int n_heads, int head_dim, int pos0, const bk_buf *inv_freq) {
    touched(be, x->data);
    rope_job j = {x->data, inv_freq->data, n, n_heads, head_dim, pos0};
    if (n >= 4) tp_run(CTX(be)->pool, rope_run, &j, 2 * tp_threads(CTX(be)->pool));
    else rope_run(&j, 0, 1, 0);
}

typedef struct {
    fast_ctx *c;
    const float *q, *k, *v;
    float *out;
    int n, pos0, n_heads, n_kv_heads, head_dim;
} attn_job;

/* (token, head) pairs dealt round-robin to tasks: later tokens attend to more rows, so a
 * contiguous split would leave the first task short */
static void attn_run(void *arg, int ith, int nth, int thread) {
    attn_job *j = arg;
    const cpu_kernels *k = j->c->k;
    int hd = j->head_dim, q_dim = j->n_heads * hd, kv_dim = j->n_kv_heads * hd, group = j->n_heads / j->n_kv_heads;
    float scale = 1.0f / sqrtf((float)hd), *s = j->c->scores[thread];
    for (int item = ith; item < j->n * j->n_heads; item += nth) {
        int t = item / j->n_heads, h = item % j->n_heads, len = j->pos0 + t + 1, kh = h / group;
        const float *q = j->q + (size_t)t * q_dim + (size_t)h * hd;
        float mx = -INFINITY, sum = 0.0f;
        for (int p = 0; p < len; p++) {
            s[p] = k->dot(q, j->k + (size_t)p * kv_dim + (size_t)kh * hd, hd) * scale;
            mx = s[p] > mx ? s[p] : mx;
        }
        for (int p = 0; p < len; p++) { s[p] = expf(s[p] - mx); sum += s[p]; }
        float *out = j->out + (size_t)t * q_dim + (size_t)h * hd;
        memset(out, 0, sizeof(float) * (size_t)hd);
        for (int p = 0; p < len; p++) k->axpy(out, s[p] / sum, j->v + (size_t)p * kv_dim + (size_t)kh * hd, hd);
    }
}

/* the level's fused kernel: one task per (token, kv head), all query heads of the group at once */
static void attn_group_run(void *arg, int ith, int nth, int thread) {
    attn_job *j = arg;
    int hd = j->head_dim, q_dim = j->n_heads * hd, kv_dim = j->n_kv_heads * hd, group = j->n_heads / j->n_kv_heads;
    float scale = 1.0f / sqrtf((float)hd);
    for (int item = ith; item < j->n * j->n_kv_heads; item += nth) {
        int t = item / j->n_kv_heads, kh = item % j->n_kv_heads;
        size_t qo = (size_t)t * q_dim + (size_t)kh * group * hd;
        j->c->k->attn(j->q + qo, j->k + (size_t)kh * hd, j->v + (size_t)kh * hd, (size_t)kv_dim, j->pos0 + t + 1, group,
                      hd, scale, j->c->scores[thread], j->out + qo);
    }
}

static void fast_attention(backend *be, const bk_buf *q, const bk_buf *kc, const bk_buf *vc, bk_buf *out, int n,
                           int pos0, int n_heads, int n_kv_heads, int head_dim) {
    fast_ctx *c = CTX(be);
    touched(be, out->data);
    int nth = tp_threads(c->pool), group = n_heads / n_kv_heads;
    int fused = c->k->attn && head_dim % 16 == 0 && head_dim <= 256 && group <= 16;
    int need = (pos0 + n) * (fused ? group : 1);
    if (need > c->scores_cap) {
        for (int i = 0; i < nth; i++) {
            float *s = realloc(c->scores[i], sizeof(float) * (size_t)need);
            if (!s) abort(); /* tens of KB per thread: out of memory is not recoverable here */
            c->scores[i] = s;
        }
        c->scores_cap = need;
    }
    attn_job j = {c, q->data, kc->data, vc->data, out->data, n, pos0, n_heads, n_kv_heads, head_dim};
    if (fused) {
        int items = n * n_kv_heads;
        tp_run(c->pool, attn_group_run, &j, items < 4 * nth ? items : 4 * nth);
    } else {
        tp_run(c->pool, attn_run, &j, 4 * nth);
    }
}

typedef struct {
    const cpu_kernels *k;
    float *g;
    const float *u;
    int n;
} glu_job;

static void glu_run(void *arg, int ith, int nth, int thread) {
    glu_job *j = arg;
    (void)thread;
    int i0 = (int)((long)j->n * ith / nth) & ~15, i1 = ith == nth - 1 ? j->n : (int)((long)j->n * (ith + 1) / nth) & ~15;
    if (i0 < i1) j->k->swiglu(j->g + i0, j->u + i0, i1 - i0);
}

static void fast_swiglu(backend *be, bk_buf *gate, const bk_buf *up, int n) {
    touched(be, gate->data);
    glu_job j = {CTX(be)->k, gate->data, up->data, n};
    if (n >= 1 << 15) tp_run(CTX(be)->pool, glu_run, &j, 2 * tp_threads(CTX(be)->pool));
    else glu_run(&j, 0, 1, 0);
}

static void fast_add(backend *be, bk_buf *x, const bk_buf *y, int n) {
    touched(be, x->data);
    cpu_add(be, x, y, n);
}

static void fast_embed(backend *be, const bk_weight *w, const int32_t *ids, int n, bk_buf *out) {
    touched(be, out->data);
    cpu_embed(be, w, ids, n, out);
}

static void fast_sync(backend *be) { (void)be; }

static void fast_destroy(backend *be) {
    fast_ctx *c = CTX(be);
    if (c) {
        if (c->scores)
            for (int i = 0; i < (c->pool ? tp_threads(c->pool) : 0); i++) free(c->scores[i]);
        free(c->scores);
        tp_free(&c->pool);
        free(c->act_mem);
        free(c);
    }
    free(be);
}

static const backend_ops fast_ops = {
    .name = "cpu",
    .destroy = fast_destroy,
    .buf_alloc = cpu_buf_alloc,
    .buf_wrap = cpu_buf_wrap,
    .buf_free = fast_buf_free,
    .buf_write = fast_buf_write,
    .buf_read = cpu_buf_read,
    .copy = fast_copy,
    .matmul = fast_matmul,
    .embed = fast_embed,
    .rmsnorm = fast_rmsnorm,
    .rope = fast_rope,
    .attention = fast_attention,
    .swiglu = fast_swiglu,
    .add = fast_add,
    .sync = fast_sync,
};

/* ---- levels ---- */

int cpu_fast_has_level(const char *name) {
    if (!strcmp(name, "scalar")) return 1;
#if defined(__x86_64__)
    __builtin_cpu_init();
    int avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!strcmp(name, "avx2")) return avx2;
    if (!strcmp(name, "avx512"))
        return avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
               __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512vnni");
#endif
    return 0;
}

static const cpu_kernels *level_kernels(const char *name) {
#if defined(__x86_64__)
    if (!strcmp(name, "avx512")) return &cpu_kern_avx512;
    if (!strcmp(name, "avx2")) return &cpu_kern_avx2;
#endif
    (void)name;
    return &cpu_kern_scalar;
}

static const cpu_kernels *pick_level(strata_err *err) {
    const char *want = getenv("STRATA_CPU_LEVEL");
    if (want && *want) {
        if (strcmp(want, "scalar") && strcmp(want, "avx2") && strcmp(want, "avx512")) {
            err_set(err, "STRATA_CPU_LEVEL=%s: unknown level (known: scalar, avx2, avx512)", want);
            return NULL;
        }
        if (!cpu_fast_has_level(want)) {
            err_set(err, "STRATA_CPU_LEVEL=%s: this CPU does not support that level", want);
            return NULL;
        }
        return level_kernels(want);
    }
    if (cpu_fast_has_level("avx512")) return level_kernels("avx512");
    if (cpu_fast_has_level("avx2")) return level_kernels("avx2");
    return &cpu_kern_scalar;
}

const char *cpu_fast_level(const backend *be) { return ((const fast_ctx *)be->ctx)->k->name; }

static int n_cores(void) {
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 256 ? 256 : (int)n;
}

backend *backend_cpu_fast_new(int n_threads, strata_err *err) {
    const cpu_kernels *k = pick_level(err);
    if (!k) return NULL;
    backend *be = calloc(1, sizeof *be);
    fast_ctx *c = calloc(1, sizeof *c);
    if (!be || !c) { free(be); free(c); err_set(err, "out of memory"); return NULL; }
    be->ops = &fast_ops;
    be->ctx = c;
    c->k = k;
    const char *planes = getenv("STRATA_CPU_PLANES");
    c->planes = planes && !strcmp(planes, "1") ? 1 : 2;
    const char *repack = getenv("STRATA_CPU_REPACK");
    c->repack = !(repack && !strcmp(repack, "0"));
    int nth = n_threads > 0 ? n_threads : n_cores();
    if (nth > 256) nth = 256;
    c->pool = tp_new(nth);
    c->scores = calloc((size_t)nth, sizeof *c->scores);
    if (!c->pool || !c->scores) {
        fast_destroy(be);
        err_set(err, "cpu backend: cannot start %d threads", nth);
        return NULL;
    }
    return be;
}
