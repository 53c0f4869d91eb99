/* The fast cpu backend: backend_new("cpu") reaches it through backend.c's weak hook. */
#ifndef STRATA_CPU_FAST_H
#define STRATA_CPU_FAST_H

#include "kernels/backend.h"

/* n_threads <= 0: one per online core. STRATA_CPU_LEVEL=scalar|avx2|avx2-vnni|avx512|neon|neon-dot forces a SIMD
 * level (failing if the CPU lacks it); STRATA_CPU_PLANES=1 uses one activation plane;
 * STRATA_CPU_REPACK=0 reads 4-bit weights in the checkpoint layout instead of the repacked copy
 * the avx512 and avx2 levels build at a weight's first matmul (same bytes again in memory);
 * STRATA_CPU_FUSE=0 runs matmuls of one input one by one instead of as one job;
 * STRATA_CPU_AFFINE=0 deals decode matmul chunks to threads in pool order instead of by thread
 * range; STRATA_CPU_ATTN_SPLIT=0 keeps a long cache's rows of a kv head in one task;
 * STRATA_CPU_PREFETCH_NEXT=0 stops the workers' prefetch of the next decode matmul;
 * STRATA_CPU_HUGE_BUFS=0 allocates buffers of 2 MB and more (KV caches) with calloc instead of in
 * transparent huge pages; STRATA_CPU_AMX=0 keeps prefill matmuls (more than 8 tokens) on the
 * AVX-512 kernels on CPUs with AMX-INT8 and AMX-BF16 (q4_amx.c); STRATA_CPU_KV_F16=0 keeps KV caches
 * in f32 where the level's attention would read them in f16 (backend.h kv_dtype); STRATA_CPU_PROFILE=1 prints wall time per op kind to stderr when the backend is destroyed. */
backend *backend_cpu_fast_new(int n_threads, strata_err *err);
/* the SIMD level a fast backend runs at: "scalar", "avx2", "avx2-vnni", "avx512", "neon" or "neon-dot" */
const char *cpu_fast_level(const backend *be);
/* switches a run-time option of a fast backend ("fuse", "affine", "attn_split", "amx", "kv_f16": 0/1
 * as their STRATA_CPU_ variables, amx staying 0 where the CPU has none; kv_f16 only between
 * sessions: it changes how attention reads caches already made; "pf_next": bytes a worker prefetches, 1 the default, 0 off) and returns
 * its previous value, -1 for an unknown name; for benchmarks that alternate old and new between
 * tokens of one model */
int cpu_fast_option(backend *be, const char *name, int value);
/* whether this CPU can run a level */
int cpu_fast_has_level(const char *name);

#endif
