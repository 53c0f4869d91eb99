/* The fast cpu backend's attention: its scratch and switches, and the op on the pool. */
#ifndef STRATA_CPU_ATTN_H
#define STRATA_CPU_ATTN_H

#include <stddef.h>

#include "kernels/cpu/cpu_kern.h"
#include "kernels/cpu/threadpool.h"

typedef struct {
    int nth;
    float **scores; /* per thread, scores_cap floats each */
    int scores_cap;
    /* decode over a long cache (attn_slices): each slice's unnormalised output and (max, sum) per
     * head, merged after the job; NULL/0 until first needed */
    float *part;
    size_t part_cap;
    int split; /* STRATA_CPU_ATTN_SPLIT (1: split long caches) */
} cpu_attn;

/* 0, or -1 when out of memory; the switch is the caller's to set */
int cpu_attn_init(cpu_attn *c, int nth);
void cpu_attn_free(cpu_attn *c);
/* backend.h's attention on host memory: q [n, n_heads * hd], the caches [pos0 + n, n_kv_heads *
 * hd] in f32 or (kv16) f16, out like q; the pool's threads as at init; affine: a thread's slices of
 * a long cache in row order first (tp_run_ranges, the backend's STRATA_CPU_AFFINE). kv16 only where
 * the level has attn and attn_blk and they take the shape (cpu_attn_f16_ok) */
void cpu_attn_run(cpu_attn *c, const cpu_kernels *k, tpool *pool, int affine, const float *q, const void *kc,
                  const void *vc, int kv16, float *out, int n, int pos0, int n_heads, int n_kv_heads, int head_dim);
/* whether the level's kernels attend over f16 caches of this head configuration */
int cpu_attn_f16_ok(const cpu_kernels *k, int n_heads, int n_kv_heads, int head_dim);

#endif
