/* The CUDA backend: host side. Buffers are plain device allocations; weights are uploaded once
 * (buf_wrap copies the mmap'd tensor to the device). Every op is enqueued on one stream and
 * returns at once; only buf_read and sync wait, so a forward pass over a layer range runs with
 * no host synchronization inside it.
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
    /* work still queued on the buffer finishes first */
    check(be, cudaStreamSynchronize(ctx_of(be)->stream), "free sync");
    check(be, cudaFree(b->d), "free");
    free(b);
}

static void cu_buf_write(backend *be, bk_buf *dst, size_t off, const void *src, size_t n) {
    if (!n) return;
    /* from pageable memory the driver stages the bytes before returning, so the caller may
     * reuse `src` at once and the stream order is kept */
    check(be, cudaMemcpyAsync((char *)dst->d + off, src, n, cudaMemcpyHostToDevice, ctx_of(be)->stream),
          "buf_write");
}

static void cu_buf_read(backend *be, const bk_buf *src, size_t off, void *dst, size_t n) {
    cuda_ctx *c = ctx_of(be);
    if (!n) return;
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

static void cu_copy(backend *be, const bk_buf *src, size_t so, bk_buf *dst, size_t do_, size_t n) {
    if (!n) return;
    check(be, cudaMemcpyAsync((char *)dst->d + do_, (const char *)src->d + so, n, cudaMemcpyDeviceToDevice,
                              ctx_of(be)->stream),
          "copy");
}

/* ---- ops ---- */

static void cu_matmul(backend *be, const bk_weight *w, const bk_buf *x, bk_buf *y, int n) {
    if (n <= 0) return;
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
    if (n <= 0 || dim <= 0) return;
    cuda_launch_rmsnorm(ctx_of(be)->stream, (const float *)x->d, w->data->d, w->dtype, (float *)out->d, n, dim, eps);
    check_launch(be, "rmsnorm");
}

static void cu_rope(backend *be, bk_buf *x, int n, int n_heads, int head_dim, int pos0, const bk_buf *inv_freq) {
    if (n <= 0 || n_heads <= 0 || head_dim < 2) return;
    cuda_launch_rope(ctx_of(be)->stream, (float *)x->d, n, n_heads, head_dim, pos0, (const float *)inv_freq->d);
    check_launch(be, "rope");
}

static void cu_attention(backend *be, const bk_buf *q, const bk_buf *k, const bk_buf *v, bk_buf *out, int n,
                         int pos0, int n_heads, int n_kv_heads, int head_dim) {
    if (n <= 0) return;
    if (head_dim > CUDA_MAX_HEAD_DIM || n_kv_heads <= 0 || n_heads % n_kv_heads) {
        if (!ctx_of(be)->failed)
            fprintf(stderr, "strata cuda: attention: unsupported heads %d/%d, head_dim %d (max %d)\n", n_heads,
                    n_kv_heads, head_dim, CUDA_MAX_HEAD_DIM);
        ctx_of(be)->failed = 1;
        return;
    }
    cuda_launch_attention(ctx_of(be)->stream, (const float *)q->d, (const float *)k->d, (const float *)v->d,
                          (float *)out->d, n, pos0, n_heads, n_kv_heads, head_dim);
    check_launch(be, "attention");
}

static void cu_swiglu(backend *be, bk_buf *gate, const bk_buf *up, int n) {
    if (n <= 0) return;
    cuda_launch_swiglu(ctx_of(be)->stream, (float *)gate->d, (const float *)up->d, n);
    check_launch(be, "swiglu");
}

static void cu_add(backend *be, bk_buf *x, const bk_buf *y, int n) {
    if (n <= 0) return;
    cuda_launch_add(ctx_of(be)->stream, (float *)x->d, (const float *)y->d, n);
    check_launch(be, "add");
}

static void cu_sync(backend *be) { check(be, cudaStreamSynchronize(ctx_of(be)->stream), "sync"); }

static void cu_destroy(backend *be) {
    cuda_ctx *c = ctx_of(be);
    if (c) {
        cudaStreamSynchronize(c->stream);
        if (c->ids) cudaFree(c->ids);
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
