/* The Metal device layer (see metal_ops.h) in plain C through the Objective-C runtime: every
 * message is objc_msgSend cast to the method's exact C type (on arm64 a call through the
 * variadic or unprototyped form passes arguments wrongly), selectors are registered once.
 *
 * Work model: ops encode into one open command buffer with one compute encoder (serial
 * dispatch: each kernel sees the writes of the one before); a copy closes the compute encoder
 * for a blit encoder. Nothing waits until the op layer asks (buf_read, buf_write, sync, free),
 * so a whole forward over a layer range is one command buffer.
 *
 * Memory management is manual (no ARC in C): objects from new/alloc/copy and
 * MTLCreateSystemDefaultDevice are ours to release; the command buffer and encoders are
 * autoreleased, so they are retained while open and created inside a local autorelease pool. */
#if defined(__APPLE__)
#define OBJC_OLD_DISPATCH_PROTOTYPES 0
#include <objc/message.h>
#include <objc/runtime.h>
typedef unsigned long NSUInteger;
#else
#include "kernels/metal/objc_decls.h"
#endif

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/metal/metal.h"
#include "kernels/metal/metal_ops.h"

/* Metal's C entry point (Metal.framework), and libobjc's pool functions (exported, declared in
 * no public header) */
extern id MTLCreateSystemDefaultDevice(void);
extern void *objc_autoreleasePoolPush(void);
extern void objc_autoreleasePoolPop(void *pool);

/* generated from the .metal files at build time (embed_msl.cmake) */
extern const char strata_metal_source[];

typedef struct {
    NSUInteger width, height, depth;
} MTLSize;

enum {
    MTL_STORAGE_SHARED = 0,      /* MTLResourceStorageModeShared, default cache and hazard tracking */
    MTL_CB_STATUS_ERROR = 5,     /* MTLCommandBufferStatusError */
    MTL_SET_BYTES_MAX = 4096,    /* setBytes:length:atIndex: limit */
};

/* ---- typed message sends ---- */

#if defined(__APPLE__)
#define MSG(ret, ...) ((ret(*)(id, SEL, ##__VA_ARGS__))objc_msgSend)
#else
/* gcc (the compile check) warns on a call through a cast of a function it knows; reading the
 * address from a variable keeps the cast, and the check, identical in every other respect */
static void (*volatile objc_msgSend_ptr)(void) = objc_msgSend;
#define MSG(ret, ...) ((ret(*)(id, SEL, ##__VA_ARGS__))objc_msgSend_ptr)
#endif

static struct {
    SEL alloc, init, release, retain, string_utf8, utf8, localized_description;
    SEL new_queue, new_library, new_function, new_pipeline, max_threads;
    SEL new_buffer_len, new_buffer_nocopy, new_buffer_bytes, contents;
    SEL set_fast_math, command_buffer, compute_encoder, blit_encoder, commit, wait, status, error;
    SEL set_pipeline, set_buffer, set_bytes, dispatch, end_encoding, blit_copy, device_name;
} S;

static void sels_init(void) {
    S.alloc = sel_registerName("alloc");
    S.init = sel_registerName("init");
    S.release = sel_registerName("release");
    S.retain = sel_registerName("retain");
    S.string_utf8 = sel_registerName("stringWithUTF8String:");
    S.utf8 = sel_registerName("UTF8String");
    S.localized_description = sel_registerName("localizedDescription");
    S.new_queue = sel_registerName("newCommandQueue");
    S.new_library = sel_registerName("newLibraryWithSource:options:error:");
    S.new_function = sel_registerName("newFunctionWithName:");
    S.new_pipeline = sel_registerName("newComputePipelineStateWithFunction:error:");
    S.max_threads = sel_registerName("maxTotalThreadsPerThreadgroup");
    S.new_buffer_len = sel_registerName("newBufferWithLength:options:");
    S.new_buffer_nocopy = sel_registerName("newBufferWithBytesNoCopy:length:options:deallocator:");
    S.new_buffer_bytes = sel_registerName("newBufferWithBytes:length:options:");
    S.contents = sel_registerName("contents");
    S.set_fast_math = sel_registerName("setFastMathEnabled:");
    S.command_buffer = sel_registerName("commandBuffer");
    S.compute_encoder = sel_registerName("computeCommandEncoder");
    S.blit_encoder = sel_registerName("blitCommandEncoder");
    S.commit = sel_registerName("commit");
    S.wait = sel_registerName("waitUntilCompleted");
    S.status = sel_registerName("status");
    S.error = sel_registerName("error");
    S.set_pipeline = sel_registerName("setComputePipelineState:");
    S.set_buffer = sel_registerName("setBuffer:offset:atIndex:");
    S.set_bytes = sel_registerName("setBytes:length:atIndex:");
    S.dispatch = sel_registerName("dispatchThreadgroups:threadsPerThreadgroup:");
    S.end_encoding = sel_registerName("endEncoding");
    S.blit_copy = sel_registerName("copyFromBuffer:sourceOffset:toBuffer:destinationOffset:size:");
    S.device_name = sel_registerName("name");
}

static void release(id o) {
    if (o) MSG(void)(o, S.release);
}

static id retain(id o) { return o ? MSG(id)(o, S.retain) : nil; }

/* an autoreleased NSString */
static id nsstring(const char *s) { return MSG(id, const char *)((id)objc_getClass("NSString"), S.string_utf8, s); }

static const char *cstring(id nsstr) { return nsstr ? MSG(const char *)(nsstr, S.utf8) : "(null)"; }

static const char *error_text(id nserror) {
    return nserror ? cstring(MSG(id)(nserror, S.localized_description)) : "unknown error";
}

/* ---- the device ---- */

typedef struct {
    id device, queue, library;
    id pso[MK_COUNT];
    NSUInteger max_threads[MK_COUNT];
    id cb;       /* open command buffer, retained, or nil */
    id enc;      /* open compute encoder, retained, or nil */
    id *temps;   /* buffers carrying large byte arguments until the command buffer completes */
    int n_temps, cap_temps;
    char error[512];
} mtl_dev;

static void dev_fail(mtl_dev *d, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void dev_fail(mtl_dev *d, const char *fmt, ...) {
    if (d->error[0]) return; /* keep the first: later ones are usually its consequences */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(d->error, sizeof d->error, fmt, ap);
    va_end(ap);
}

static id open_encoder(mtl_dev *d) {
    if (d->enc) return d->enc;
    void *pool = objc_autoreleasePoolPush();
    if (!d->cb) d->cb = retain(MSG(id)(d->queue, S.command_buffer));
    if (d->cb) d->enc = retain(MSG(id)(d->cb, S.compute_encoder));
    objc_autoreleasePoolPop(pool);
    return d->enc;
}

static void close_encoder(mtl_dev *d) {
    if (!d->enc) return;
    MSG(void)(d->enc, S.end_encoding);
    release(d->enc);
    d->enc = nil;
}

static int md_buf_new(void *dv, bk_buf *b, size_t bytes) {
    mtl_dev *d = dv;
    id buf = MSG(id, NSUInteger, NSUInteger)(d->device, S.new_buffer_len, bytes, MTL_STORAGE_SHARED);
    if (!buf) return -1;
    b->obj = buf;
    b->host = MSG(void *)(buf, S.contents);
    b->off = 0;
    b->mem = NULL;
    memset(b->host, 0, bytes); /* buf_alloc promises zeroed memory */
    return 0;
}

static int md_buf_wrap_pages(void *dv, bk_buf *b, void *base, size_t bytes) {
    mtl_dev *d = dv;
    /* no deallocator: the mmap belongs to the model and outlives every buffer made from it */
    id buf = MSG(id, void *, NSUInteger, NSUInteger, id)(d->device, S.new_buffer_nocopy, base, bytes,
                                                         MTL_STORAGE_SHARED, nil);
    if (!buf) return -1;
    b->obj = buf;
    b->mem = NULL;
    return 0;
}

static void md_buf_release(void *dv, bk_buf *b) {
    (void)dv;
    release((id)b->obj);
    b->obj = NULL;
}

static void md_dispatch(void *dv, mtl_kernel k, const mtl_arg *args, int n_args, mtl_grid groups,
                        unsigned threads) {
    mtl_dev *d = dv;
    if (threads > d->max_threads[k]) {
        dev_fail(d, "kernel %s needs %u threads a threadgroup, its pipeline allows %lu", mtl_kernel_names[k],
                 threads, (unsigned long)d->max_threads[k]);
        return;
    }
    id enc = open_encoder(d);
    if (!enc) {
        dev_fail(d, "cannot open a command encoder for %s", mtl_kernel_names[k]);
        return;
    }
    MSG(void, id)(enc, S.set_pipeline, d->pso[k]);
    for (int i = 0; i < n_args; i++) {
        const mtl_arg *a = &args[i];
        if (a->buf) {
            MSG(void, id, NSUInteger, NSUInteger)(enc, S.set_buffer, (id)a->buf->obj, a->buf->off + a->off, (NSUInteger)i);
        } else if (a->nbytes <= MTL_SET_BYTES_MAX) {
            MSG(void, const void *, NSUInteger, NSUInteger)(enc, S.set_bytes, a->bytes, a->nbytes, (NSUInteger)i);
        } else {
            /* too big for setBytes: a buffer of its own, alive until the command buffer is done */
            if (d->n_temps == d->cap_temps) {
                int cap = d->cap_temps ? 2 * d->cap_temps : 8;
                id *t = realloc(d->temps, sizeof *t * (size_t)cap);
                if (!t) { dev_fail(d, "out of memory encoding %s", mtl_kernel_names[k]); return; }
                d->temps = t;
                d->cap_temps = cap;
            }
            id tmp = MSG(id, const void *, NSUInteger, NSUInteger)(d->device, S.new_buffer_bytes, a->bytes, a->nbytes,
                                                                   MTL_STORAGE_SHARED);
            if (!tmp) { dev_fail(d, "out of memory encoding %s", mtl_kernel_names[k]); return; }
            d->temps[d->n_temps++] = tmp;
            MSG(void, id, NSUInteger, NSUInteger)(enc, S.set_buffer, tmp, 0, (NSUInteger)i);
        }
    }
    MTLSize g = {groups.x, groups.y, groups.z}, t = {threads, 1, 1};
    MSG(void, MTLSize, MTLSize)(enc, S.dispatch, g, t);
}

static void md_blit(void *dv, const bk_buf *src, size_t so, const bk_buf *dst, size_t do_, size_t bytes) {
    mtl_dev *d = dv;
    close_encoder(d);
    void *pool = objc_autoreleasePoolPush();
    if (!d->cb) d->cb = retain(MSG(id)(d->queue, S.command_buffer));
    id blit = d->cb ? MSG(id)(d->cb, S.blit_encoder) : nil;
    if (blit) {
        MSG(void, id, NSUInteger, id, NSUInteger, NSUInteger)(blit, S.blit_copy, (id)src->obj, src->off + so,
                                                              (id)dst->obj, dst->off + do_, bytes);
        MSG(void)(blit, S.end_encoding);
    } else {
        dev_fail(d, "cannot open a blit encoder");
    }
    objc_autoreleasePoolPop(pool);
}

static void md_wait(void *dv) {
    mtl_dev *d = dv;
    if (!d->cb) return;
    close_encoder(d);
    MSG(void)(d->cb, S.commit);
    MSG(void)(d->cb, S.wait);
    if (MSG(NSUInteger)(d->cb, S.status) == MTL_CB_STATUS_ERROR) {
        void *pool = objc_autoreleasePoolPush();
        dev_fail(d, "command buffer failed: %s", error_text(MSG(id)(d->cb, S.error)));
        objc_autoreleasePoolPop(pool);
    }
    release(d->cb);
    d->cb = nil;
    for (int i = 0; i < d->n_temps; i++) release(d->temps[i]);
    d->n_temps = 0;
}

static void md_destroy(void *dv) {
    mtl_dev *d = dv;
    md_wait(d);
    for (int k = 0; k < MK_COUNT; k++) release(d->pso[k]);
    release(d->library);
    release(d->queue);
    release(d->device);
    free(d->temps);
    free(d);
}

static const mtl_device_ops metal_device_ops = {
    .buf_new = md_buf_new,
    .buf_wrap_pages = md_buf_wrap_pages,
    .buf_release = md_buf_release,
    .dispatch = md_dispatch,
    .blit = md_blit,
    .wait = md_wait,
    .destroy = md_destroy,
};

/* compiles the embedded source and makes a pipeline for every kernel; 0 or -1 with err */
static int build_pipelines(mtl_dev *d, strata_err *err) {
    int rc = 0;
    void *pool = objc_autoreleasePoolPush();
    id opts = MSG(id)(MSG(id)((id)objc_getClass("MTLCompileOptions"), S.alloc), S.init);
    /* RoPE angles reach tens of thousands of radians: fast-math sin/cos would lose the phase */
    if (opts) MSG(void, BOOL)(opts, S.set_fast_math, NO);
    id nserr = nil;
    d->library = MSG(id, id, id, id *)(d->device, S.new_library, nsstring(strata_metal_source), opts, &nserr);
    release(opts);
    if (!d->library) {
        rc = err_set(err, "metal: compiling the kernels failed: %s", error_text(nserr));
        goto out;
    }
    for (int k = 0; k < MK_COUNT; k++) {
        id fn = MSG(id, id)(d->library, S.new_function, nsstring(mtl_kernel_names[k]));
        if (!fn) {
            rc = err_set(err, "metal: kernel '%s' is missing from the library", mtl_kernel_names[k]);
            goto out;
        }
        nserr = nil;
        d->pso[k] = MSG(id, id, id *)(d->device, S.new_pipeline, fn, &nserr);
        release(fn);
        if (!d->pso[k]) {
            rc = err_set(err, "metal: pipeline for '%s': %s", mtl_kernel_names[k], error_text(nserr));
            goto out;
        }
        d->max_threads[k] = MSG(NSUInteger)(d->pso[k], S.max_threads);
    }
out:
    objc_autoreleasePoolPop(pool);
    return rc;
}

backend *backend_metal_new(strata_err *err) {
    sels_init();
    mtl_dev *d = calloc(1, sizeof *d);
    if (!d) {
        err_set(err, "out of memory");
        return NULL;
    }
    d->device = MTLCreateSystemDefaultDevice();
    if (!d->device) {
        free(d);
        err_set(err, "backend 'metal': no Metal device on this machine; use --backend cpu");
        return NULL;
    }
    d->queue = MSG(id)(d->device, S.new_queue);
    if (!d->queue) {
        md_destroy(d);
        err_set(err, "backend 'metal': cannot create a command queue");
        return NULL;
    }
    if (build_pipelines(d, err)) {
        md_destroy(d);
        return NULL;
    }
    return mtl_backend_new("metal", &metal_device_ops, d, err);
}

const char *backend_metal_error(backend *be) {
    mtl_dev *d = mtl_backend_device(be);
    return d->error[0] ? d->error : NULL;
}
