/* The Metal backend's ops over a device layer (see metal_ops.h): kernel choice, arguments,
 * grids, buffer wrapping policy, and the host waits that make shared memory safe. */
#include "kernels/metal/metal_ops.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/metal/msl_params.h"

_Static_assert(MSL_F32 == BK_F32 && MSL_F16 == BK_F16 && MSL_BF16 == BK_BF16,
               "MSL dtype codes follow bk_dtype");

const char *const mtl_kernel_names[MK_COUNT] = {
#define MTL_KERNEL_NAME(name) #name,
    MTL_KERNEL_LIST(MTL_KERNEL_NAME)
#undef MTL_KERNEL_NAME
};

typedef struct {
    backend be;
    backend_ops ops;
    const mtl_device_ops *d;
    void *dev;
    size_t page;
} mtl_ctx;

static mtl_ctx *ctx_of(backend *be) { return be->ctx; }

static unsigned ceil_div(long a, long b) { return (unsigned)((a + b - 1) / b); }

/* ---- memory ---- */

static bk_buf *mo_buf_alloc(backend *be, size_t bytes) {
    mtl_ctx *c = ctx_of(be);
    bk_buf *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    if (c->d->buf_new(c->dev, b, bytes ? bytes : 16)) { free(b); return NULL; }
    b->size = bytes;
    return b;
}

/* Zero-copy where Metal allows it: newBufferWithBytesNoCopy wants a page-aligned base and
 * length, so wrap the pages that hold the tensor and bind at the tensor's offset in them.
 * Metal also wants a bound offset aligned to what the kernel reads through it; 4 bytes covers
 * every scalar read, and matmul re-homes the rare weight that its 16-byte loads cannot read
 * in place (see aligned_weight). Anything else gets a copy. */
static bk_buf *mo_buf_wrap(backend *be, const void *host, size_t bytes) {
    mtl_ctx *c = ctx_of(be);
    bk_buf *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    uintptr_t a = (uintptr_t)host;
    if (a % 4 == 0) {
        uintptr_t base = a & ~(uintptr_t)(c->page - 1);
        size_t len = (a + bytes - base + c->page - 1) & ~(c->page - 1);
        if (c->d->buf_wrap_pages(c->dev, b, (void *)base, len) == 0) {
            b->off = a - base;
            b->host = (char *)host;
            b->size = bytes;
            return b;
        }
    }
    if (c->d->buf_new(c->dev, b, bytes ? bytes : 16)) { free(b); return NULL; }
    memcpy(b->host, host, bytes);
    b->size = bytes;
    return b;
}

static void mo_buf_free(backend *be, bk_buf *b) {
    mtl_ctx *c = ctx_of(be);
    if (!b) return;
    c->d->wait(c->dev); /* encoded work may still read or write it */
    c->d->buf_release(c->dev, b);
    free(b);
}

static void mo_buf_write(backend *be, bk_buf *dst, size_t off, const void *src, size_t bytes) {
    mtl_ctx *c = ctx_of(be);
    c->d->wait(c->dev); /* encoded ops must see the old contents, not these */
    memcpy(dst->host + off, src, bytes);
}

static void mo_buf_read(backend *be, const bk_buf *src, size_t off, void *dst, size_t bytes) {
    mtl_ctx *c = ctx_of(be);
    c->d->wait(c->dev);
    memcpy(dst, src->host + off, bytes);
}

static void mo_copy(backend *be, const bk_buf *src, size_t so, bk_buf *dst, size_t do_, size_t bytes) {
    mtl_ctx *c = ctx_of(be);
    if (bytes) c->d->blit(c->dev, src, so, dst, do_, bytes);
}

static void mo_sync(backend *be) {
    mtl_ctx *c = ctx_of(be);
    c->d->wait(c->dev);
}

/* ---- argument helpers ---- */

static mtl_arg arg_buf(const bk_buf *b) { return (mtl_arg){.buf = b}; }
static mtl_arg arg_bytes(const void *p, size_t n) { return (mtl_arg){.bytes = p, .nbytes = n}; }

static int dtype_index(bk_dtype t) { return t == BK_F16 ? 0 : t == BK_BF16 ? 1 : t == BK_F32 ? 2 : -1; }

/* The quantized kernels read the weight 16 bytes at a time, so it must sit at a 16-byte
 * aligned address. A tensor that does not (its file offset is only 4-aligned) is copied once
 * into a buffer of its own; the mmap stays the source of truth for everything else. */
static int aligned_weight(mtl_ctx *c, const bk_buf *w) {
    if ((uintptr_t)w->host % 16 == 0) return 0;
    bk_buf fresh = {0};
    if (c->d->buf_new(c->dev, &fresh, w->size ? w->size : 16)) return -1;
    memcpy(fresh.host, w->host, w->size);
    bk_buf *mut = (bk_buf *)w; /* our own struct: the caller's view of it stays a weight */
    c->d->buf_release(c->dev, mut);
    fresh.size = w->size;
    *mut = fresh;
    return 0;
}

/* ---- host fallbacks: shapes no kernel covers, run over the shared memory ---- */

static float host_weight_at(const bk_weight *w, int r, int cix) {
    if (w->bits == 0) return bk_load_float(w->w->host, w->wdtype, (size_t)r * w->cols + cix);
    const uint32_t *q = (const uint32_t *)w->w->host;
    int per_word = 32 / w->bits;
    uint32_t word = q[(size_t)r * (w->cols / per_word) + cix / per_word];
    uint32_t v = (word >> ((cix % per_word) * w->bits)) & ((1u << w->bits) - 1);
    size_t gi = (size_t)r * (w->cols / w->group_size) + cix / w->group_size;
    return bk_load_float(w->scales->host, w->sdtype, gi) * (float)v + bk_load_float(w->biases->host, w->sdtype, gi);
}

static void host_matmul(mtl_ctx *c, const bk_weight *w, const bk_buf *xb, bk_buf *yb, int n) {
    c->d->wait(c->dev);
    const float *x = (const float *)xb->host;
    float *y = (float *)yb->host;
    for (int t = 0; t < n; t++)
        for (int r = 0; r < w->rows; r++) {
            float acc = 0.0f;
            for (int k = 0; k < w->cols; k++) acc += host_weight_at(w, r, k) * x[(size_t)t * w->cols + k];
            if (w->bias.data) acc += bk_load_float(w->bias.data->host, w->bias.dtype, r);
            y[(size_t)t * w->rows + r] = acc;
        }
}

/* ---- ops ---- */

static void mo_matmul(backend *be, const bk_weight *w, const bk_buf *x, bk_buf *y, int n) {
    mtl_ctx *c = ctx_of(be);
    if (n <= 0) return;
    msl_mm_params p = {
        .rows = w->rows, .cols = w->cols, .group_size = w->group_size, .n = n,
        .has_bias = w->bias.data != NULL, .bias_dtype = w->bias.data ? (int)w->bias.dtype : 0,
    };
    const bk_buf *ob = w->bias.data ? w->bias.data : y; /* bound either way; read only with has_bias */
    mtl_grid mv_grid = {ceil_div(w->rows, MV_ROWS_PER_TG), 1, (unsigned)n};
    if (w->bits == 0) {
        int di = dtype_index(w->wdtype);
        if (di < 0) { host_matmul(c, w, x, y, n); return; }
        static const mtl_kernel dmv[3] = {MK_dmv_f16, MK_dmv_bf16, MK_dmv_f32};
        mtl_arg a[] = {arg_buf(w->w), arg_buf(x), arg_buf(y), arg_buf(ob), arg_bytes(&p, sizeof p)};
        c->d->dispatch(c->dev, dmv[di], a, 5, mv_grid, MV_SIMDS * 32);
        return;
    }
    int di = dtype_index(w->sdtype);
    if ((w->bits != 4 && w->bits != 8) || di < 0 || w->group_size <= 0 || w->group_size % QMM_BK ||
        w->cols % w->group_size || aligned_weight(c, w->w)) {
        host_matmul(c, w, x, y, n);
        return;
    }
    static const mtl_kernel qmv[2][3] = {{MK_qmv_q4_f16, MK_qmv_q4_bf16, MK_qmv_q4_f32},
                                         {MK_qmv_q8_f16, MK_qmv_q8_bf16, MK_qmv_q8_f32}};
    static const mtl_kernel qmm[2][3] = {{MK_qmm_q4_f16, MK_qmm_q4_bf16, MK_qmm_q4_f32},
                                         {MK_qmm_q8_f16, MK_qmm_q8_bf16, MK_qmm_q8_f32}};
    int bi = w->bits == 8;
    mtl_arg a[] = {arg_buf(w->w), arg_buf(w->scales), arg_buf(w->biases), arg_buf(x),
                   arg_buf(y), arg_buf(ob), arg_bytes(&p, sizeof p)};
    if (n < QMM_MIN_TOKENS)
        c->d->dispatch(c->dev, qmv[bi][di], a, 7, mv_grid, MV_SIMDS * 32);
    else
        c->d->dispatch(c->dev, qmm[bi][di], a, 7,
                       (mtl_grid){ceil_div(w->rows, QMM_BN), ceil_div(n, QMM_BM), 1}, QMM_THREADS);
}

static void mo_embed(backend *be, const bk_weight *w, const int32_t *ids, int n, bk_buf *out) {
    mtl_ctx *c = ctx_of(be);
    if (n <= 0) return;
    msl_embed_params p = {.cols = w->cols, .group_size = w->group_size, .n = n, .dtype = (int)w->wdtype};
    mtl_arg idarg = arg_bytes(ids, (size_t)n * sizeof *ids);
    if (w->bits == 0) {
        mtl_arg a[] = {arg_buf(w->w), idarg, arg_buf(out), arg_bytes(&p, sizeof p)};
        c->d->dispatch(c->dev, MK_dembed, a, 4, (mtl_grid){ceil_div(w->cols, EW_THREADS), (unsigned)n, 1}, EW_THREADS);
        return;
    }
    static const mtl_kernel qe[2][3] = {{MK_qembed_q4_f16, MK_qembed_q4_bf16, MK_qembed_q4_f32},
                                        {MK_qembed_q8_f16, MK_qembed_q8_bf16, MK_qembed_q8_f32}};
    int di = dtype_index(w->sdtype), words = w->cols * w->bits / 32;
    mtl_arg a[] = {arg_buf(w->w), arg_buf(w->scales), arg_buf(w->biases), idarg, arg_buf(out),
                   arg_bytes(&p, sizeof p)};
    c->d->dispatch(c->dev, qe[w->bits == 8][di < 0 ? 0 : di], a, 6,
                   (mtl_grid){ceil_div(words, EW_THREADS), (unsigned)n, 1}, EW_THREADS);
}

static void mo_rmsnorm(backend *be, const bk_buf *x, const bk_vec *wt, bk_buf *out, int n, int dim, float eps) {
    mtl_ctx *c = ctx_of(be);
    if (n <= 0) return;
    msl_norm_params p = {.dim = dim, .eps = eps, .w_dtype = (int)wt->dtype};
    mtl_arg a[] = {arg_buf(x), arg_buf(wt->data), arg_buf(out), arg_bytes(&p, sizeof p)};
    c->d->dispatch(c->dev, MK_rmsnorm, a, 4, (mtl_grid){(unsigned)n, 1, 1}, NORM_THREADS);
}

static void mo_rope(backend *be, bk_buf *x, int n, int n_heads, int head_dim, int pos0, const bk_buf *inv_freq) {
    mtl_ctx *c = ctx_of(be);
    long total = (long)n * n_heads * (head_dim / 2);
    if (total <= 0) return;
    msl_rope_params p = {.n = n, .n_heads = n_heads, .head_dim = head_dim, .pos0 = pos0};
    mtl_arg a[] = {arg_buf(x), arg_buf(inv_freq), arg_bytes(&p, sizeof p)};
    c->d->dispatch(c->dev, MK_rope, a, 3, (mtl_grid){ceil_div(total, EW_THREADS), 1, 1}, EW_THREADS);
}

/* causal GQA over host memory, for head dims beyond the kernel's register budget */
static void host_attention(mtl_ctx *c, const bk_buf *qb, const bk_buf *kb, const bk_buf *vb, bk_buf *ob,
                           int n, int pos0, int n_heads, int n_kv_heads, int hd) {
    c->d->wait(c->dev);
    int q_dim = n_heads * hd, kv_dim = n_kv_heads * hd, group = n_heads / n_kv_heads;
    float scale = 1.0f / sqrtf((float)hd);
    float *sc = malloc(sizeof(float) * (size_t)(pos0 + n));
    if (!sc) return;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < n_heads; h++) {
            const float *q = (const float *)qb->host + (size_t)t * q_dim + (size_t)h * hd;
            int kh = h / group, len = pos0 + t + 1;
            float mx = -INFINITY, sum = 0.0f;
            for (int p = 0; p < len; p++) {
                const float *k = (const float *)kb->host + (size_t)p * kv_dim + (size_t)kh * hd;
                float s = 0.0f;
                for (int i = 0; i < hd; i++) s += q[i] * k[i];
                sc[p] = s * scale;
                mx = sc[p] > mx ? sc[p] : mx;
            }
            for (int p = 0; p < len; p++) sum += sc[p] = expf(sc[p] - mx);
            float *o = (float *)ob->host + (size_t)t * q_dim + (size_t)h * hd;
            for (int i = 0; i < hd; i++) o[i] = 0.0f;
            for (int p = 0; p < len; p++) {
                const float *v = (const float *)vb->host + (size_t)p * kv_dim + (size_t)kh * hd;
                for (int i = 0; i < hd; i++) o[i] += sc[p] / sum * v[i];
            }
        }
    free(sc);
}

static void mo_attention(backend *be, const bk_buf *q, const bk_buf *k, const bk_buf *v, bk_buf *out,
                         int n, int pos0, int n_heads, int n_kv_heads, int head_dim) {
    mtl_ctx *c = ctx_of(be);
    if (n <= 0) return;
    if (head_dim > ATTN_MAX_HEAD_DIM) {
        host_attention(c, q, k, v, out, n, pos0, n_heads, n_kv_heads, head_dim);
        return;
    }
    msl_attn_params p = {.n = n, .pos0 = pos0, .n_heads = n_heads, .n_kv_heads = n_kv_heads,
                         .head_dim = head_dim, .scale = 1.0f / sqrtf((float)head_dim)};
    mtl_arg a[] = {arg_buf(q), arg_buf(k), arg_buf(v), arg_buf(out), arg_bytes(&p, sizeof p)};
    c->d->dispatch(c->dev, MK_attention, a, 5, (mtl_grid){(unsigned)n_heads, (unsigned)n, 1}, ATTN_THREADS);
}

static void mo_swiglu(backend *be, bk_buf *gate, const bk_buf *up, int n) {
    mtl_ctx *c = ctx_of(be);
    if (n <= 0) return;
    msl_ew_params p = {.n = n};
    mtl_arg a[] = {arg_buf(gate), arg_buf(up), arg_bytes(&p, sizeof p)};
    c->d->dispatch(c->dev, MK_swiglu, a, 3, (mtl_grid){ceil_div(n, EW_THREADS), 1, 1}, EW_THREADS);
}

static void mo_add(backend *be, bk_buf *x, const bk_buf *y, int n) {
    mtl_ctx *c = ctx_of(be);
    if (n <= 0) return;
    msl_ew_params p = {.n = n};
    mtl_arg a[] = {arg_buf(x), arg_buf(y), arg_bytes(&p, sizeof p)};
    c->d->dispatch(c->dev, MK_add, a, 3, (mtl_grid){ceil_div(n, EW_THREADS), 1, 1}, EW_THREADS);
}

static void mo_destroy(backend *be) {
    mtl_ctx *c = ctx_of(be);
    c->d->wait(c->dev);
    c->d->destroy(c->dev);
    free(c);
}

backend *mtl_backend_new(const char *name, const mtl_device_ops *dops, void *dev, strata_err *err) {
    mtl_ctx *c = calloc(1, sizeof *c);
    if (!c) {
        dops->destroy(dev);
        err_set(err, "out of memory");
        return NULL;
    }
    long page = sysconf(_SC_PAGESIZE);
    c->page = page > 0 ? (size_t)page : 16384;
    c->d = dops;
    c->dev = dev;
    c->ops = (backend_ops){
        .name = name, .destroy = mo_destroy,
        .buf_alloc = mo_buf_alloc, .buf_wrap = mo_buf_wrap, .buf_free = mo_buf_free,
        .buf_write = mo_buf_write, .buf_read = mo_buf_read, .copy = mo_copy,
        .matmul = mo_matmul, .embed = mo_embed, .rmsnorm = mo_rmsnorm, .rope = mo_rope,
        .attention = mo_attention, .swiglu = mo_swiglu, .add = mo_add, .sync = mo_sync,
    };
    c->be.ops = &c->ops;
    c->be.ctx = c;
    return &c->be;
}

void *mtl_backend_device(backend *be) { return ctx_of(be)->dev; }
