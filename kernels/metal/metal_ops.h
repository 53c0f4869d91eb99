/* The Metal backend's op layer, shared by the real device (metal_backend.c, Apple only) and
 * the MSL-on-CPU harness (metal_sim.cpp): which kernel each backend.h op runs, with which
 * buffers, parameters and grid, and when the host must wait. Only the thin device layer below
 * (encode a dispatch, a blit, commit and wait) differs between the two, so the harness tests
 * everything here as the GPU would run it.
 *
 * Memory is shared between CPU and GPU (MTLStorageModeShared): every bk_buf has a host
 * address, and host reads and writes wait for the encoded work first. */
#ifndef STRATA_METAL_OPS_H
#define STRATA_METAL_OPS_H

#include <stddef.h>

#include "kernels/backend.h"

/* Every kernel of the library by its MSL host name (the enum indexes the name table). */
#define MTL_KERNEL_LIST(X)                                                              \
    X(qmv_q4_f16) X(qmv_q4_bf16) X(qmv_q4_f32) X(qmv_q8_f16) X(qmv_q8_bf16) X(qmv_q8_f32) \
    X(qmm_q4_f16) X(qmm_q4_bf16) X(qmm_q4_f32) X(qmm_q8_f16) X(qmm_q8_bf16) X(qmm_q8_f32) \
    X(qembed_q4_f16) X(qembed_q4_bf16) X(qembed_q4_f32)                                 \
    X(qembed_q8_f16) X(qembed_q8_bf16) X(qembed_q8_f32)                                 \
    X(dmv_f16) X(dmv_bf16) X(dmv_f32) X(dembed)                                         \
    X(rmsnorm) X(rope) X(attention) X(swiglu) X(add)

typedef enum {
#define MTL_KERNEL_ENUM(name) MK_##name,
    MTL_KERNEL_LIST(MTL_KERNEL_ENUM)
#undef MTL_KERNEL_ENUM
    MK_COUNT
} mtl_kernel;

extern const char *const mtl_kernel_names[MK_COUNT];

/* A buffer is a device object plus where our bytes start inside it: weights are wrapped as
 * the page range of the mmap that holds them, so `off` is usually not zero. */
struct bk_buf {
    void *obj;   /* id<MTLBuffer> on Metal; the harness leaves it NULL */
    char *host;  /* CPU address of byte 0 of this buffer */
    size_t off;  /* offset of byte 0 inside obj, passed to setBuffer:offset: */
    size_t size;
    void *mem;   /* memory the device layer allocated for this buffer (freed with it) */
};

/* One kernel argument: a buffer (at its offset plus `off`), or bytes copied at encode time. */
typedef struct {
    const bk_buf *buf;
    size_t off;
    const void *bytes;
    size_t nbytes;
} mtl_arg;

typedef struct {
    unsigned x, y, z;
} mtl_grid;

/* The device layer. All calls come from the backend's one thread. */
typedef struct {
    /* zeroed shared memory of `bytes`; fills obj, host, mem (off = 0). 0 or -1. */
    int (*buf_new)(void *dev, bk_buf *b, size_t bytes);
    /* zero-copy view of [base, base + bytes): base and bytes page-aligned. Fills obj. 0 or -1. */
    int (*buf_wrap_pages)(void *dev, bk_buf *b, void *base, size_t bytes);
    void (*buf_release)(void *dev, bk_buf *b);
    /* encode groups.x * groups.y * groups.z threadgroups of `threads` (a multiple of 32) */
    void (*dispatch)(void *dev, mtl_kernel k, const mtl_arg *args, int n_args, mtl_grid groups,
                     unsigned threads);
    void (*blit)(void *dev, const bk_buf *src, size_t src_off, const bk_buf *dst, size_t dst_off,
                 size_t bytes);
    /* commit what is encoded and wait for it; a no-op when nothing is */
    void (*wait)(void *dev);
    void (*destroy)(void *dev);
} mtl_device_ops;

/* A backend named `name` over a device; takes ownership of dev (destroyed with the backend,
 * and on failure). */
backend *mtl_backend_new(const char *name, const mtl_device_ops *dops, void *dev, strata_err *err);

/* the device a backend made by mtl_backend_new drives */
void *mtl_backend_device(backend *be);

#endif
