/* The cpu reference backend: plain loops, written for obviousness, not speed. It is the oracle
 * every other backend (cpu fast path, metal, cuda) is compared with. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cpu/cpu_buf.h"

/* ---- memory: a bk_buf is host memory ---- */

bk_buf *cpu_buf_alloc(backend *be, size_t bytes) {
    (void)be;
    bk_buf *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->data = calloc(bytes ? bytes : 1, 1);
    if (!b->data) { free(b); return NULL; }
    b->size = bytes;
    b->owned = 1;
    return b;
}

bk_buf *cpu_buf_wrap(backend *be, const void *host, size_t bytes) {
    (void)be;
    bk_buf *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    b->data = (void *)host; /* weights are never written through a wrapped buffer */
    b->size = bytes;
    return b;
}

void cpu_buf_free(backend *be, bk_buf *b) {
    (void)be;
    if (!b) return;
    if (b->owned) free(b->data);
    free(b);
}

void cpu_buf_write(backend *be, bk_buf *dst, size_t off, const void *src, size_t n) {
    (void)be;
    memcpy((char *)dst->data + off, src, n);
}

void cpu_buf_read(backend *be, const bk_buf *src, size_t off, void *dst, size_t n) {
    (void)be;
    memcpy(dst, (const char *)src->data + off, n);
}

void cpu_copy(backend *be, const bk_buf *src, size_t so, bk_buf *dst, size_t do_, size_t n) {
    (void)be;
    memmove((char *)dst->data + do_, (const char *)src->data + so, n);
}

/* ---- weights ---- */

float cpu_weight_at(const bk_weight *w, int r, int c) {
    if (w->bits == 0) return bk_load_float(w->w->data, w->wdtype, (size_t)r * w->cols + c);
    const uint32_t *q = w->w->data;
    int per_word = 32 / w->bits;
    size_t words_per_row = (size_t)w->cols / per_word;
    uint32_t word = q[(size_t)r * words_per_row + c / per_word];
    uint32_t v = (word >> ((c % per_word) * w->bits)) & ((1u << w->bits) - 1);
    size_t gi = (size_t)r * (w->cols / w->group_size) + c / w->group_size;
    float scale = bk_load_float(w->scales->data, w->sdtype, gi);
    float bias = bk_load_float(w->biases->data, w->sdtype, gi);
    return scale * (float)v + bias;
}

static void ref_matmul(backend *be, const bk_weight *w, const bk_buf *xb, bk_buf *yb, int n) {
    (void)be;
    const float *x = xb->data;
    float *y = yb->data;
    for (int t = 0; t < n; t++)
        for (int r = 0; r < w->rows; r++) {
            float acc = 0.0f;
            for (int c = 0; c < w->cols; c++) acc += cpu_weight_at(w, r, c) * x[(size_t)t * w->cols + c];
            if (w->bias.data) acc += bk_load_float(w->bias.data->data, w->bias.dtype, r);
            y[(size_t)t * w->rows + r] = acc;
        }
}

void cpu_embed(backend *be, const bk_weight *w, const int32_t *ids, int n, bk_buf *outb) {
    (void)be;
    float *out = outb->data;
    for (int t = 0; t < n; t++)
        for (int c = 0; c < w->cols; c++) out[(size_t)t * w->cols + c] = cpu_weight_at(w, ids[t], c);
}

/* ---- elementwise and per-token ops ---- */

void cpu_rmsnorm(backend *be, const bk_buf *xb, const bk_vec *wt, bk_buf *outb, int n, int dim,
                 float eps) {
    (void)be;
    for (int t = 0; t < n; t++) {
        const float *x = (const float *)xb->data + (size_t)t * dim;
        float *out = (float *)outb->data + (size_t)t * dim;
        float ss = 0.0f;
        for (int i = 0; i < dim; i++) ss += x[i] * x[i];
        float inv = 1.0f / sqrtf(ss / (float)dim + eps);
        for (int i = 0; i < dim; i++) out[i] = x[i] * inv * bk_load_float(wt->data->data, wt->dtype, i);
    }
}

void cpu_rope(backend *be, bk_buf *xb, int n, int n_heads, int head_dim, int pos0,
              const bk_buf *inv_freq_b) {
    (void)be;
    const float *inv_freq = inv_freq_b->data;
    int half = head_dim / 2;
    for (int t = 0; t < n; t++)
        for (int h = 0; h < n_heads; h++) {
            float *x = (float *)xb->data + ((size_t)t * n_heads + h) * head_dim;
            for (int j = 0; j < half; j++) {
                float ang = (float)(pos0 + t) * inv_freq[j];
                float c = cosf(ang), s = sinf(ang), a = x[j], b = x[j + half];
                x[j] = a * c - b * s;
                x[j + half] = b * c + a * s;
            }
        }
}

void cpu_attention_rows(const bk_buf *qb, const bk_buf *kb, const bk_buf *vb, bk_buf *outb,
                        int t0, int t1, int pos0, int n_heads, int n_kv_heads, int head_dim,
                        float *scores) {
    int q_dim = n_heads * head_dim, kv_dim = n_kv_heads * head_dim, group = n_heads / n_kv_heads;
    float scale = 1.0f / sqrtf((float)head_dim);
    for (int t = t0; t < t1; t++) {
        int len = pos0 + t + 1;
        for (int h = 0; h < n_heads; h++) {
            const float *q = (const float *)qb->data + (size_t)t * q_dim + (size_t)h * head_dim;
            int kh = h / group;
            float mx = -INFINITY;
            for (int p = 0; p < len; p++) {
                const float *k = (const float *)kb->data + (size_t)p * kv_dim + (size_t)kh * head_dim;
                float s = 0.0f;
                for (int i = 0; i < head_dim; i++) s += q[i] * k[i];
                scores[p] = s * scale;
                if (scores[p] > mx) mx = scores[p];
            }
            float sum = 0.0f;
            for (int p = 0; p < len; p++) { scores[p] = expf(scores[p] - mx); sum += scores[p]; }
            float *out = (float *)outb->data + (size_t)t * q_dim + (size_t)h * head_dim;
            for (int i = 0; i < head_dim; i++) out[i] = 0.0f;
            for (int p = 0; p < len; p++) {
                const float *v = (const float *)vb->data + (size_t)p * kv_dim + (size_t)kh * head_dim;
                float a = scores[p] / sum;
                for (int i = 0; i < head_dim; i++) out[i] += a * v[i];
            }
        }
    }
}

static void ref_attention(backend *be, const bk_buf *q, const bk_buf *k, const bk_buf *v,
                          bk_buf *out, int n, int pos0, int n_heads, int n_kv_heads, int head_dim) {
    (void)be;
    float *scores = malloc(sizeof(float) * (size_t)(pos0 + n));
    if (!scores) abort(); /* allocation of a few KB: out of memory is not recoverable here */
    cpu_attention_rows(q, k, v, out, 0, n, pos0, n_heads, n_kv_heads, head_dim, scores);
    free(scores);
}

void cpu_swiglu(backend *be, bk_buf *gb, const bk_buf *ub, int n) {
    (void)be;
    float *g = gb->data;
    const float *u = ub->data;
    for (int i = 0; i < n; i++) g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

void cpu_add(backend *be, bk_buf *xb, const bk_buf *yb, int n) {
    (void)be;
    float *x = xb->data;
    const float *y = yb->data;
    for (int i = 0; i < n; i++) x[i] += y[i];
}

static void ref_sync(backend *be) { (void)be; }

static void ref_destroy(backend *be) { free(be); }

static const backend_ops ref_ops = {
    .name = "cpu-ref",
    .destroy = ref_destroy,
    .buf_alloc = cpu_buf_alloc,
    .buf_wrap = cpu_buf_wrap,
    .buf_free = cpu_buf_free,
    .buf_write = cpu_buf_write,
    .buf_read = cpu_buf_read,
    .copy = cpu_copy,
    .matmul = ref_matmul,
    .embed = cpu_embed,
    .rmsnorm = cpu_rmsnorm,
    .rope = cpu_rope,
    .attention = ref_attention,
    .swiglu = cpu_swiglu,
    .add = cpu_add,
    .sync = ref_sync,
};

backend *backend_cpu_ref_new(void) {
    backend *be = calloc(1, sizeof *be);
    if (!be) return NULL;
    be->ops = &ref_ops;
    return be;
}
