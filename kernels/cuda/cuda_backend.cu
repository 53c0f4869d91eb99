/* The CUDA backend: host side. Buffers are plain device allocations; weights are uploaded once
 * (buf_wrap copies the mmap'd tensor to the device). Every op is enqueued on one stream and
 * returns at once; only buf_read and sync wait, so a forward pass over a layer range runs with
 * no host synchronization inside it.
 *
 * Matvecs (n == 1) that the warp kernel takes are deferred: the next matvec on the same x
 * joins them (q, k, v; gate, up) and one launch runs them all; a residual add of the result, or
 * a swiglu over a gate/up pair, becomes that launch's epilogue. Any other op launches what is
 * deferred first, so the order every op sees is the order of the calls.
 *
 * The ops have no error return: a CUDA failure is reported once on stderr and makes the
 * backend sticky-failed (buf_read then fills its output with NaN, so a bad result is visible
 * rather than plausible). */
#include <cuda_runtime.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/cuda/cuda_internal.h"

typedef struct {
    int device;
    cudaStream_t stream;
    int32_t *ids;   /* device copy of embed's token ids */
    int ids_cap;
    int failed;     /* a CUDA call failed: results are no longer trustworthy */
    /* deferred matvecs: all read px, each writes its own py[k] */
    bk_weight pw[CUDA_MV_MAX_PARTS];
    float *py[CUDA_MV_MAX_PARTS];
    const float *px;
    int pn;
    /* deferred rope step (cuda_rope_job): 0 none, 1 rope q, 2 + rope k, 3 + k append; a v
     * append completes it and launches it */
    cuda_rope_job rj;
    int rstate;
    size_t rk_bytes; /* bytes of k (n * nk * head_dim floats) */
    /* a deferred one-token rmsnorm (rn_pending); the matvec group that reads its output takes
     * it over (gnorm) and computes it in place of the pack of x */
    struct {
        const float *x;
        const void *w;
        float *out;
        int wdtype, dim;
        float eps;
    } rn;
    int rn_pending, gnorm;
    /* scratch of the split attention (cuda_launch_attention): partials, then a counter a head */
    void *att;
    size_t att_part; /* bytes of partials; the counters follow */
    int att_heads;   /* counters */
} cuda_ctx;

static cuda_ctx *ctx_of(backend *be) { return (cuda_ctx *)be->ctx; }

/* Records the first failure; returns nonzero when `e` is an error. */
static int check(backend *be, cudaError_t e, const char *what) {
    if (e == cudaSuccess) return 0;
    cuda_ctx *c = ctx_of(be);
    if (!c->failed) fprintf(stderr, "strata cuda: %s: %s\n", what, cudaGetErrorString(e));
    c->failed = 1;
    return 1;
}

/* After a launch: a bad configuration shows up here, a fault later at sync. */
static void check_launch(backend *be, const char *what) { check(be, cudaGetLastError(), what); }

void *cuda_backend_stream(backend *be) { return (void *)ctx_of(be)->stream; }

/* ---- switches ---- */

static int feat_fuse = -1, feat_pdl = -1;

static int env_on(const char *name) {
    const char *e = getenv(name);
    return !(e && !strcmp(e, "0"));
}

extern "C" void cuda_features_set(int fuse, int pdl) {
    if (fuse >= 0) feat_fuse = fuse != 0;
    if (pdl >= 0) feat_pdl = pdl != 0;
}

extern "C" int cuda_feature_fuse(void) {
    if (feat_fuse < 0) feat_fuse = env_on("STRATA_CUDA_FUSE");
    return feat_fuse;
}

extern "C" int cuda_feature_pdl(void) {
    if (feat_pdl < 0) feat_pdl = env_on("STRATA_CUDA_PDL");
    return feat_pdl;
}

static int feat_pack = -1, feat_attn = -1, feat_bulk = -1;

extern "C" void cuda_feature_bulk_set(int on) { feat_bulk = on < 0 ? -1 : on != 0; }

extern "C" int cuda_feature_bulk(void) {
    if (feat_bulk < 0) feat_bulk = env_on("STRATA_CUDA_BULK");
    return feat_bulk;
}

extern "C" void cuda_feature_attn_split_set(int on) { feat_attn = on < 0 ? -1 : on != 0; }

extern "C" int cuda_feature_attn_split(void) {
    if (feat_attn < 0) feat_attn = env_on("STRATA_CUDA_ATTN");
    return feat_attn;
}

extern "C" void cuda_feature_pack_set(int on) { feat_pack = on < 0 ? -1 : on != 0; }

extern "C" int cuda_feature_pack(void) {
    if (feat_pack < 0) feat_pack = env_on("STRATA_CUDA_PACK");
    return feat_pack;
}

/* ---- deferred matvecs ---- */

/* launches the deferred group g (its parts are ctx's), with the tuned launch shape */
static void launch_group(backend *be, cuda_mv_group *g) {
    cuda_ctx *c = ctx_of(be);
    int R, G;
    cuda_matvec_tuning(&R, &G);
    if (c->gnorm) {
        g->norm_x = c->rn.x;
        g->norm_w = c->rn.w;
        g->norm_wdtype = c->rn.wdtype;
        g->norm_dim = c->rn.dim;
        g->norm_eps = c->rn.eps;
    }
    c->gnorm = c->rn_pending = 0;
    if (cuda_launch_mv_group(c->stream, g, c->px, R > 4 ? 4 : R, G)) {
        /* not expected (every part was checked on entry): run them one by one, unfused */
        if (g->norm_x)
            cuda_launch_rmsnorm(c->stream, g->norm_x, g->norm_w, (bk_dtype)g->norm_wdtype, (float *)c->px, 1,
                                g->norm_dim, g->norm_eps);
        for (int k = 0; k < g->n_parts; k++) cuda_launch_matmul(c->stream, g->w[k], c->px, g->y[k], 1);
        if (g->epilogue == CUDA_EPI_ADD) cuda_launch_add(c->stream, g->add_to, g->y[0], g->w[0]->rows);
        if (g->epilogue == CUDA_EPI_SWIGLU) cuda_launch_swiglu(c->stream, g->y[0], g->y[1], g->w[0]->rows);
    }
    check_launch(be, "matvec");
    c->pn = 0;
}

static void group_of(cuda_ctx *c, cuda_mv_group *g) {
    memset(g, 0, sizeof *g);
    for (int k = 0; k < c->pn; k++) {
        g->w[k] = &c->pw[k];
        g->y[k] = c->py[k];
    }
    g->n_parts = c->pn;
}

static void flush_rope(backend *be) {
    cuda_ctx *c = ctx_of(be);
    if (!c->rstate) return;
    c->rstate = 0;
    cuda_launch_rope_append(c->stream, &c->rj);
    check_launch(be, "rope");
}

static void flush(backend *be) {
    cuda_ctx *c = ctx_of(be);
    flush_rope(be);
    if (c->rn_pending && !c->gnorm) { /* no group took it over */
        c->rn_pending = 0;
        cuda_launch_rmsnorm(c->stream, c->rn.x, c->rn.w, (bk_dtype)c->rn.wdtype, c->rn.out, 1, c->rn.dim, c->rn.eps);
        check_launch(be, "rmsnorm");
    }
    if (!c->pn) return;
    cuda_mv_group g;
    group_of(c, &g);
    launch_group(be, &g);
}

extern "C" void cuda_backend_flush(backend *be) { flush(be); }

/* ---- memory ---- */

/* plain device memory; an allocation fails cleanly instead of oversubscribing. 16 bytes of
 * padding: the matvec fetches a scale as the aligned 4-byte word that holds it, which for the
 * last 2-byte scale reaches past the tensor. */
static bk_buf *alloc_raw(size_t bytes) {
    bk_buf *b = (bk_buf *)calloc(1, sizeof *b);
    if (!b) return NULL;
    if (cudaMalloc(&b->d, bytes + 16) != cudaSuccess) {
        cudaGetLastError(); /* clear: an out-of-memory answer is not a sticky failure */
        free(b);
        return NULL;
    }
    b->size = bytes;
    return b;
}

static bk_buf *cu_buf_alloc(backend *be, size_t bytes) {
    bk_buf *b = alloc_raw(bytes);
    if (!b) return NULL;
    /* zeroed, as the interface promises; ordered before any later op on the stream */
    if (check(be, cudaMemsetAsync(b->d, 0, bytes ? bytes : 1, ctx_of(be)->stream), "memset")) {
        cudaFree(b->d);
        free(b);
        return NULL;
    }
    return b;
}

static bk_buf *cu_buf_wrap(backend *be, const void *host, size_t bytes) {
    cuda_ctx *c = ctx_of(be);
    bk_buf *b = alloc_raw(bytes);
    if (!b) return NULL;
    /* weights are uploaded once, before any forward, on the backend's own stream (a non-blocking
     * stream does not order against the legacy default stream that plain cudaMemcpy uses);
     * waiting here keeps the mmap'd source free of lifetime questions */
    if (bytes && (check(be, cudaMemcpyAsync(b->d, host, bytes, cudaMemcpyHostToDevice, c->stream), "weight upload") ||
                  check(be, cudaStreamSynchronize(c->stream), "weight upload sync"))) {
        cudaFree(b->d);
        free(b);
        return NULL;
    }
    return b;
}

static void cu_buf_free(backend *be, bk_buf *b) {
    if (!b) return;
    flush(be);
    /* work still queued on the buffer finishes first */
    check(be, cudaStreamSynchronize(ctx_of(be)->stream), "free sync");
    check(be, cudaFree(b->d), "free");
    free(b);
}

static void cu_buf_write(backend *be, bk_buf *dst, size_t off, const void *src, size_t n) {
    if (!n) return;
    flush(be);
    /* from pageable memory the driver stages the bytes before returning, so the caller may
     * reuse `src` at once and the stream order is kept */
    check(be, cudaMemcpyAsync((char *)dst->d + off, src, n, cudaMemcpyHostToDevice, ctx_of(be)->stream),
          "buf_write");
}

static void cu_buf_read(backend *be, const bk_buf *src, size_t off, void *dst, size_t n) {
    cuda_ctx *c = ctx_of(be);
    if (!n) return;
    flush(be);
    if (!c->failed) {
        check(be, cudaMemcpyAsync(dst, (const char *)src->d + off, n, cudaMemcpyDeviceToHost, c->stream),
              "buf_read");
        check(be, cudaStreamSynchronize(c->stream), "buf_read sync");
    }
    if (c->failed) {
        float nan = NAN;
        for (size_t i = 0; i + sizeof nan <= n; i += sizeof nan) memcpy((char *)dst + i, &nan, sizeof nan);
    }
}

/* spans up to this size are copied by a kernel (cuda_ops.cu says why), larger ones by the
 * copy engine */
#define COPY_KERNEL_MAX (1u << 20)

/* whether [a, a + an) and [b, b + bn) overlap */
static int spans_overlap(const void *a, size_t an, const void *b, size_t bn) {
    const char *x = (const char *)a, *y = (const char *)b;
    return x < y + bn && y < x + an;
}

/* a copy that completes the deferred rope step: the rotated k into the cache (state 2), then
 * v into the cache (state 3, which launches it). Returns 1 when taken. */
static int rope_takes_copy(backend *be, const bk_buf *src, size_t so, bk_buf *dst, size_t do_, size_t n) {
    cuda_ctx *c = ctx_of(be);
    cuda_rope_job *j = &c->rj;
    if (so != 0 || n != c->rk_bytes || do_ % sizeof(float)) return 0;
    float *d = (float *)((char *)dst->d + do_);
    size_t qb = (size_t)j->n * j->nq * j->head_dim * sizeof(float);
    if (spans_overlap(d, n, j->q, qb) || spans_overlap(d, n, j->k, n)) return 0;
    if (c->rstate == 2 && src->d == (void *)j->k) {
        j->kdst = d;
        c->rstate = 3;
        return 1;
    }
    if (c->rstate == 3 && !spans_overlap(src->d, n, j->q, qb) && !spans_overlap(src->d, n, j->k, n) &&
        !spans_overlap(src->d, n, d, n) && !spans_overlap(d, n, j->kdst, n) && !spans_overlap(src->d, n, j->kdst, n)) {
        j->vsrc = (const float *)src->d;
        j->vdst = d;
        flush_rope(be);
        return 1;
    }
    return 0;
}

static void cu_copy(backend *be, const bk_buf *src, size_t so, bk_buf *dst, size_t do_, size_t n) {
    if (!n) return;
    if (ctx_of(be)->rstate >= 2 && rope_takes_copy(be, src, so, dst, do_, n)) return;
    flush(be);
    if (n <= COPY_KERNEL_MAX && cuda_feature_pdl() && (src != dst || so + n <= do_ || do_ + n <= so)) {
        cuda_launch_copy(ctx_of(be)->stream, (char *)dst->d + do_, (const char *)src->d + so, n);
        check_launch(be, "copy");
        return;
    }
    check(be, cudaMemcpyAsync((char *)dst->d + do_, (const char *)src->d + so, n, cudaMemcpyDeviceToDevice,
                              ctx_of(be)->stream),
          "copy");
}

/* ---- ops ---- */

/* whether a deferred matvec writes p */
static int pending_writes(const cuda_ctx *c, const void *p) {
    for (int k = 0; k < c->pn; k++)
        if (c->py[k] == p) return 1;
    return 0;
}

static void cu_matmul(backend *be, const bk_weight *w, const bk_buf *x, bk_buf *y, int n) {
    cuda_ctx *c = ctx_of(be);
    if (n <= 0) return;
    if (n == 1 && x->d != y->d && w->rows > 0 && cuda_feature_fuse() && cuda_matvec_variant(w) == CUDA_MV_WARP) {
        /* joins the deferred group when it reads the same x and writes elsewhere */
        if (c->pn > 0 && c->px == x->d && cuda_warp_compatible(&c->pw[0], w) && !pending_writes(c, y->d)) {
            c->pw[c->pn] = *w;
            c->py[c->pn++] = (float *)y->d;
            if (c->pn == CUDA_MV_MAX_PARTS) flush(be);
            return;
        }
        /* a new group on the output of the deferred rmsnorm takes that over (it runs first in
         * the group's launch, so the order of the calls is kept) */
        int take_norm = c->rn_pending && !c->pn && c->rn.out == (float *)x->d && c->rn.dim == w->cols;
        if (!take_norm) flush(be);
        c->pw[0] = *w;
        c->py[0] = (float *)y->d;
        c->px = (const float *)x->d;
        c->pn = 1;
        c->gnorm = take_norm;
        return;
    }
    flush(be);
    if (cuda_launch_matmul(ctx_of(be)->stream, w, (const float *)x->d, (float *)y->d, n)) {
        if (!ctx_of(be)->failed)
            fprintf(stderr, "strata cuda: matmul: unsupported weight (bits %d, group %d, %dx%d)\n", w->bits,
                    w->group_size, w->rows, w->cols);
        ctx_of(be)->failed = 1;
        return;
    }
    check_launch(be, "matmul");
}

static void cu_embed(backend *be, const bk_weight *w, const int32_t *ids, int n, bk_buf *out) {
    cuda_ctx *c = ctx_of(be);
    if (n <= 0) return;
    flush(be);
    if (n > c->ids_cap) {
        int cap = n < 256 ? 256 : n;
        int32_t *d = NULL;
        if (check(be, cudaMalloc(&d, sizeof *d * (size_t)cap), "embed ids")) return;
        if (c->ids) { /* the embed that last read it must be done */
            check(be, cudaStreamSynchronize(c->stream), "embed ids sync");
            cudaFree(c->ids);
        }
        c->ids = d;
        c->ids_cap = cap;
    }
    /* ids are host memory consumed before return: pageable copies are staged by the driver */
    if (check(be, cudaMemcpyAsync(c->ids, ids, sizeof *ids * (size_t)n, cudaMemcpyHostToDevice, c->stream),
              "embed ids copy"))
        return;
    cuda_launch_embed(c->stream, w, c->ids, n, (float *)out->d);
    check_launch(be, "embed");
}

static void cu_rmsnorm(backend *be, const bk_buf *x, const bk_vec *w, bk_buf *out, int n, int dim, float eps) {
    cuda_ctx *c = ctx_of(be);
    if (n <= 0 || dim <= 0) return;
    flush(be);
    if (n == 1 && cuda_feature_fuse()) { /* deferred: the next matvec may take it over */
        c->rn.x = (const float *)x->d;
        c->rn.w = w->data->d;
        c->rn.wdtype = (int)w->dtype;
        c->rn.out = (float *)out->d;
        c->rn.dim = dim;
        c->rn.eps = eps;
        c->rn_pending = 1;
        return;
    }
    cuda_launch_rmsnorm(ctx_of(be)->stream, (const float *)x->d, w->data->d, w->dtype, (float *)out->d, n, dim, eps);
    check_launch(be, "rmsnorm");
}

static void cu_rope(backend *be, bk_buf *x, int n, int n_heads, int head_dim, int pos0, const bk_buf *inv_freq) {
    cuda_ctx *c = ctx_of(be);
    if (n <= 0 || n_heads <= 0 || head_dim < 2) return;
    cuda_rope_job *j = &c->rj;
    /* the second rope of a layer (k after q) joins the first: same tokens, positions, head size */
    if (c->rstate == 1 && j->n == n && j->pos0 == pos0 && j->head_dim == head_dim && j->inv_freq == inv_freq->d &&
        !spans_overlap(x->d, (size_t)n * n_heads * head_dim * sizeof(float), j->q,
                       (size_t)n * j->nq * head_dim * sizeof(float))) {
        j->k = (float *)x->d;
        j->nk = n_heads;
        c->rk_bytes = (size_t)n * n_heads * head_dim * sizeof(float);
        c->rstate = 2;
        return;
    }
    flush(be);
    if (cuda_feature_fuse()) {
        memset(j, 0, sizeof *j);
        j->q = (float *)x->d;
        j->nq = n_heads;
        j->n = n;
        j->head_dim = head_dim;
        j->pos0 = pos0;
        j->inv_freq = (const float *)inv_freq->d;
        c->rstate = 1;
        return;
    }
    cuda_launch_rope(c->stream, (float *)x->d, n, n_heads, head_dim, pos0, (const float *)inv_freq->d);
    check_launch(be, "rope");
}

static void cu_attention(backend *be, const bk_buf *q, const bk_buf *k, const bk_buf *v, bk_buf *out, int n,
                         int pos0, int n_heads, int n_kv_heads, int head_dim) {
    if (n <= 0) return;
    flush(be);
    if (head_dim > CUDA_MAX_HEAD_DIM || n_kv_heads <= 0 || n_heads % n_kv_heads) {
        if (!ctx_of(be)->failed)
            fprintf(stderr, "strata cuda: attention: unsupported heads %d/%d, head_dim %d (max %d)\n", n_heads,
                    n_kv_heads, head_dim, CUDA_MAX_HEAD_DIM);
        ctx_of(be)->failed = 1;
        return;
    }
    cuda_ctx *c = ctx_of(be);
    float *ws = NULL;
    unsigned *cnt = NULL;
    int per, splits = cuda_feature_attn_split() ? cuda_attention_splits(n, pos0, &per) : 0;
    if (splits) {
        size_t part = sizeof(float) * (size_t)n_heads * (size_t)splits * (size_t)(2 + head_dim);
        part = (part + 255) & ~(size_t)255;
        if (part > c->att_part || n_heads > c->att_heads) { /* a few times a run: drain the stream first */
            cudaStreamSynchronize(c->stream);
            if (c->att) cudaFree(c->att);
            c->att = NULL;
            c->att_part = 0;
            c->att_heads = 0;
            /* room for the longest split (CUDA_ATT_MAX_SPLITS) of up to 2x these heads */
            size_t big = (sizeof(float) * (size_t)CUDA_ATT_MAX_SPLITS * (size_t)(2 + head_dim) * 2 * (size_t)n_heads +
                          255) & ~(size_t)255;
            if (big < part) big = part;
            size_t cap = big + sizeof(unsigned) * 2 * (size_t)n_heads;
            if (cudaMalloc(&c->att, cap) == cudaSuccess && cudaMemsetAsync(c->att, 0, cap, c->stream) == cudaSuccess) {
                c->att_part = big;
                c->att_heads = 2 * n_heads;
            } else {
                cudaGetLastError();
                if (c->att) cudaFree(c->att);
                c->att = NULL;
            }
        }
        if (c->att && part <= c->att_part && n_heads <= c->att_heads) {
            /* the counters sit past the largest partial region: each launch leaves them zero */
            ws = (float *)c->att;
            cnt = (unsigned *)((char *)c->att + c->att_part);
        }
    }
    cuda_launch_attention(c->stream, (const float *)q->d, (const float *)k->d, (const float *)v->d, (float *)out->d,
                          n, pos0, n_heads, n_kv_heads, head_dim, ws, cnt);
    check_launch(be, "attention");
}

static void cu_swiglu(backend *be, bk_buf *gate, const bk_buf *up, int n) {
    cuda_ctx *c = ctx_of(be);
    if (n <= 0) return;
    /* gate and up deferred, same rows: the swiglu is their launch's epilogue */
    if (c->pn == 2 && c->pw[0].rows == n && c->pw[1].rows == n && gate->d != up->d) {
        int gi = c->py[0] == gate->d ? 0 : c->py[1] == gate->d ? 1 : -1;
        if (gi >= 0 && c->py[1 - gi] == up->d) {
            cuda_mv_group g;
            memset(&g, 0, sizeof g);
            g.w[0] = &c->pw[gi];
            g.y[0] = c->py[gi];
            g.w[1] = &c->pw[1 - gi];
            g.y[1] = c->py[1 - gi];
            g.n_parts = 2;
            g.epilogue = CUDA_EPI_SWIGLU;
            launch_group(be, &g);
            return;
        }
    }
    flush(be);
    cuda_launch_swiglu(ctx_of(be)->stream, (float *)gate->d, (const float *)up->d, n);
    check_launch(be, "swiglu");
}

static void cu_add(backend *be, bk_buf *x, const bk_buf *y, int n) {
    cuda_ctx *c = ctx_of(be);
    if (n <= 0) return;
    /* x += the one deferred matvec's output: the launch adds it as it writes it */
    if (c->pn == 1 && c->py[0] == y->d && c->pw[0].rows == n && x->d != y->d && x->d != c->px) {
        cuda_mv_group g;
        group_of(c, &g);
        g.epilogue = CUDA_EPI_ADD;
        g.add_to = (float *)x->d;
        launch_group(be, &g);
        return;
    }
    flush(be);
    cuda_launch_add(ctx_of(be)->stream, (float *)x->d, (const float *)y->d, n);
    check_launch(be, "add");
}

static void cu_sync(backend *be) {
    flush(be);
    check(be, cudaStreamSynchronize(ctx_of(be)->stream), "sync");
}

static void cu_destroy(backend *be) {
    cuda_ctx *c = ctx_of(be);
    if (c) {
        flush(be);
        cudaStreamSynchronize(c->stream);
        if (c->ids) cudaFree(c->ids);
        if (c->att) cudaFree(c->att);
        cuda_matvec_release(c->stream);
        cudaStreamDestroy(c->stream);
        free(c);
    }
    free(be);
}

static const backend_ops cuda_ops = {
    .name = "cuda",
    .destroy = cu_destroy,
    .buf_alloc = cu_buf_alloc,
    .buf_wrap = cu_buf_wrap,
    .buf_free = cu_buf_free,
    .buf_write = cu_buf_write,
    .buf_read = cu_buf_read,
    .copy = cu_copy,
    .matmul = cu_matmul,
    .embed = cu_embed,
    .rmsnorm = cu_rmsnorm,
    .rope = cu_rope,
    .attention = cu_attention,
    .swiglu = cu_swiglu,
    .add = cu_add,
    .sync = cu_sync,
    .kv_dtype = NULL, /* f32 caches */
    .kv_store = NULL,
};

extern "C" backend *backend_cuda_new(strata_err *err) {
    int count = 0;
    cudaError_t e = cudaGetDeviceCount(&count);
    if (e != cudaSuccess || count == 0) {
        cudaGetLastError();
        err_set(err, "no CUDA device (%s)", e != cudaSuccess ? cudaGetErrorString(e) : "none found");
        return NULL;
    }
    int device = 0;
    const char *env = getenv("STRATA_CUDA_DEVICE");
    if (env && *env) device = atoi(env);
    if (device < 0 || device >= count) {
        err_set(err, "backend 'cuda': STRATA_CUDA_DEVICE=%s but %d device(s) exist", env, count);
        return NULL;
    }
    backend *be = (backend *)calloc(1, sizeof *be);
    cuda_ctx *c = (cuda_ctx *)calloc(1, sizeof *c);
    if (!be || !c) {
        free(be);
        free(c);
        err_set(err, "out of memory");
        return NULL;
    }
    if ((e = cudaSetDevice(device)) != cudaSuccess ||
        (e = cudaStreamCreateWithFlags(&c->stream, cudaStreamNonBlocking)) != cudaSuccess) {
        cudaGetLastError();
        err_set(err, "backend 'cuda': device %d: %s", device, cudaGetErrorString(e));
        free(be);
        free(c);
        return NULL;
    }
    c->device = device;
    be->ops = &cuda_ops;
    be->ctx = c;
    return be;
}
