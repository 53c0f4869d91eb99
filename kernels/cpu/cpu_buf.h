/* What the cpu backends share: a bk_buf is plain host memory, and the reference ops that the
 * fast path reuses where it has nothing faster. */
#ifndef STRATA_CPU_BUF_H
#define STRATA_CPU_BUF_H

#include "kernels/backend.h"

struct bk_buf {
    void *data;
    size_t size;
    int owned; /* 0: wraps memory owned elsewhere (the mmap'd checkpoint) */
    /* the fast backend's repacked twin of 4-bit codes (cpu_kern.h), built at first use and freed
     * by its buf_free; `data` stays as it is for embed (tied embeddings share the weight) */
    struct cpu_q4pack *packed;
    unsigned writes; /* bumped by the fast backend's buf_write and copy: a pack built before a
                        write to its codes, scales or biases is stale */
};

bk_buf *cpu_buf_alloc(backend *be, size_t bytes);
bk_buf *cpu_buf_wrap(backend *be, const void *host, size_t bytes);
void cpu_buf_free(backend *be, bk_buf *b);
void cpu_buf_write(backend *be, bk_buf *dst, size_t off, const void *src, size_t n);
void cpu_buf_read(backend *be, const bk_buf *src, size_t off, void *dst, size_t n);
void cpu_copy(backend *be, const bk_buf *src, size_t so, bk_buf *dst, size_t do_, size_t n);

/* element (r, c) of a weight, dequantized */
float cpu_weight_at(const bk_weight *w, int r, int c);
void cpu_embed(backend *be, const bk_weight *w, const int32_t *ids, int n, bk_buf *out);
void cpu_rmsnorm(backend *be, const bk_buf *x, const bk_vec *w, bk_buf *out, int n, int dim, float eps);
void cpu_rope(backend *be, bk_buf *x, int n, int n_heads, int head_dim, int pos0, const bk_buf *inv_freq);
/* attention for query rows [t0, t1); scores holds pos0 + t1 floats */
void cpu_attention_rows(const bk_buf *q, const bk_buf *k, const bk_buf *v, bk_buf *out, int t0,
                        int t1, int pos0, int n_heads, int n_kv_heads, int head_dim, float *scores);
void cpu_swiglu(backend *be, bk_buf *gate, const bk_buf *up, int n);
void cpu_add(backend *be, bk_buf *x, const bk_buf *y, int n);

#endif
