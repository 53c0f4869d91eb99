#include "kernels/backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

size_t bk_dtype_size(bk_dtype t) {
    switch (t) {
    case BK_F32: case BK_U32: case BK_I32: return 4;
    case BK_F16: case BK_BF16: return 2;
    case BK_U8: return 1;
    }
    return 0;
}

const char *bk_dtype_name(bk_dtype t) {
    static const char *names[] = {"F32", "F16", "BF16", "U32", "I32", "U8"};
    return (unsigned)t < sizeof names / sizeof names[0] ? names[t] : "?";
}

float bk_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h >> 15) << 31, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        if (mant == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            exp = 127 - 15 + 1;
            while (!(mant & 0x400)) { mant <<= 1; exp--; }
            bits = sign | (exp << 23) | ((mant & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (mant << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (mant << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t bk_f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000;
    int32_t exp = (int32_t)((x >> 23) & 0xff) - 127 + 15;
    uint32_t mant = x & 0x7fffff;
    if (((x >> 23) & 0xff) == 0xff) return (uint16_t)(sign | 0x7c00 | (mant ? 0x200 : 0));
    if (exp >= 31) return (uint16_t)(sign | 0x7c00);
    if (exp <= 0) {
        if (exp < -10) return (uint16_t)sign;
        mant |= 0x800000;
        uint32_t shift = (uint32_t)(14 - exp);
        uint32_t half = mant >> shift, rem = mant & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (uint16_t)(sign | half);
    }
    uint32_t h = sign | ((uint32_t)exp << 10) | (mant >> 13);
    uint32_t rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++; /* carry into exponent is correct */
    return (uint16_t)h;
}

float bk_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

uint16_t bk_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffff) > 0x7f800000) return (uint16_t)((x >> 16) | 0x40);
    x += 0x7fff + ((x >> 16) & 1);
    return (uint16_t)(x >> 16);
}

float bk_load_float(const void *p, bk_dtype t, size_t i) {
    switch (t) {
    case BK_F32: return ((const float *)p)[i];
    case BK_F16: return bk_f16_to_f32(((const uint16_t *)p)[i]);
    case BK_BF16: return bk_bf16_to_f32(((const uint16_t *)p)[i]);
    default: return NAN;
    }
}

/* Optional backends register through these weak hooks so that a build without them links. */
backend *backend_cpu_fast_new(int n_threads, strata_err *err) __attribute__((weak));
backend *backend_metal_new(strata_err *err) __attribute__((weak));
backend *backend_cuda_new(strata_err *err) __attribute__((weak));

backend *backend_new(const char *name, int n_threads, strata_err *err) {
    if (!name || !strcmp(name, "cpu")) {
        if (backend_cpu_fast_new) return backend_cpu_fast_new(n_threads, err);
        return backend_cpu_ref_new();
    }
    if (!strcmp(name, "cpu-ref")) return backend_cpu_ref_new();
    if (!strcmp(name, "metal")) {
        if (backend_metal_new) return backend_metal_new(err);
        err_set(err, "backend 'metal' is not available: this build is not for Apple (Metal needs macOS or iOS); use --backend cpu");
        return NULL;
    }
    if (!strcmp(name, "cuda")) {
        if (backend_cuda_new) return backend_cuda_new(err);
        err_set(err, "backend 'cuda' is not available: this build has no CUDA (configure with -DSTRATA_CUDA=ON where nvcc exists); use --backend cpu");
        return NULL;
    }
    err_set(err, "unknown backend '%s' (known: cpu, cpu-ref, metal, cuda)", name);
    return NULL;
}

void backend_destroy(backend **be) {
    if (!be || !*be) return;
    (*be)->ops->destroy(*be);
    *be = NULL;
}
