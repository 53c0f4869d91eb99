#include "common/forward.h"

#include <stdlib.h>
#include <string.h>

#define HEAD_ROWS 8 /* logits rows computed at once: bounds the [rows, vocab] scratch */

struct fwd_state {
    const model *m;
    backend *be;
    int max_batch;
    bk_buf *x;       /* [max_batch, hidden] the residual stream */
    bk_buf *xb;      /* [max_batch, max(hidden, q_dim)] normed input / attention output */
    bk_buf *xb2;     /* [max_batch, hidden] projection output */
    bk_buf *q, *k, *v;
    bk_buf *hb, *hb2; /* [max_batch, ffn] */
    bk_buf *logits;  /* [HEAD_ROWS, vocab] */
};

size_t kv_bytes(const model_config *c, int n_layers, int capacity) {
    return (size_t)n_layers * 2 * (size_t)capacity * (size_t)(c->n_kv_heads * c->head_dim) * sizeof(float);
}

kv_cache *kv_new(const model *m, int capacity, strata_err *err) {
    kv_cache *kv = calloc(1, sizeof *kv);
    if (!kv) { err_set(err, "out of memory"); return NULL; }
    kv->be = m->be;
    kv->n_layers = m->last_layer - m->first_layer;
    kv->kv_dim = m->cfg.n_kv_heads * m->cfg.head_dim;
    kv->capacity = capacity;
    const backend_ops *op = m->be->ops;
    kv->dtype = op->kv_dtype && op->kv_store ? op->kv_dtype(m->be, m->cfg.n_heads, m->cfg.n_kv_heads, m->cfg.head_dim) : BK_F32;
    if (kv->dtype != BK_F16) kv->dtype = BK_F32;
    kv->k = calloc((size_t)(kv->n_layers ? kv->n_layers : 1), sizeof *kv->k);
    kv->v = calloc((size_t)(kv->n_layers ? kv->n_layers : 1), sizeof *kv->v);
    if (!kv->k || !kv->v) goto oom;
    size_t bytes = (size_t)capacity * (size_t)kv->kv_dim * bk_dtype_size(kv->dtype);
    for (int l = 0; l < kv->n_layers; l++) {
        kv->k[l] = m->be->ops->buf_alloc(m->be, bytes);
        kv->v[l] = m->be->ops->buf_alloc(m->be, bytes);
        if (!kv->k[l] || !kv->v[l]) goto oom;
    }
    return kv;
oom:
    err_set(err, "out of memory for a KV cache of %d positions (%zu MB)", capacity,
            (size_t)kv->n_layers * 2 * (size_t)capacity * (size_t)kv->kv_dim * bk_dtype_size(kv->dtype) >> 20);
    kv_free(&kv);
    return NULL;
}

void kv_free(kv_cache **pkv) {
    kv_cache *kv = pkv ? *pkv : NULL;
    if (!kv) return;
    for (int l = 0; l < kv->n_layers; l++) {
        if (kv->k && kv->k[l]) kv->be->ops->buf_free(kv->be, kv->k[l]);
        if (kv->v && kv->v[l]) kv->be->ops->buf_free(kv->be, kv->v[l]);
    }
    free(kv->k);
    free(kv->v);
    free(kv);
    *pkv = NULL;
}

int kv_trim(kv_cache *kv, int len, strata_err *err) {
    if (len < 0 || len > kv->len) return err_set(err, "cannot trim a KV cache of %d positions to %d", kv->len, len);
    kv->len = len;
    return 0;
}

fwd_state *fwd_new(const model *m, int max_batch, strata_err *err) {
    const model_config *c = &m->cfg;
    fwd_state *fs = calloc(1, sizeof *fs);
    if (!fs) { err_set(err, "out of memory"); return NULL; }
    fs->m = m;
    fs->be = m->be;
    fs->max_batch = max_batch;
    size_t nb = (size_t)max_batch * sizeof(float);
    int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    int wide = q_dim > c->hidden_dim ? q_dim : c->hidden_dim;
    backend *be = m->be;
    fs->x = be->ops->buf_alloc(be, nb * (size_t)c->hidden_dim);
    fs->xb = be->ops->buf_alloc(be, nb * (size_t)wide);
    fs->xb2 = be->ops->buf_alloc(be, nb * (size_t)c->hidden_dim);
    fs->q = be->ops->buf_alloc(be, nb * (size_t)q_dim);
    fs->k = be->ops->buf_alloc(be, nb * (size_t)kv_dim);
    fs->v = be->ops->buf_alloc(be, nb * (size_t)kv_dim);
    fs->hb = be->ops->buf_alloc(be, nb * (size_t)c->ffn_dim);
    fs->hb2 = be->ops->buf_alloc(be, nb * (size_t)c->ffn_dim);
    if (m->has_head) fs->logits = be->ops->buf_alloc(be, HEAD_ROWS * sizeof(float) * (size_t)c->vocab_size);
    if (!fs->x || !fs->xb || !fs->xb2 || !fs->q || !fs->k || !fs->v || !fs->hb || !fs->hb2 ||
        (m->has_head && !fs->logits)) {
        fwd_free(&fs);
        err_set(err, "out of memory for forward scratch (batch %d)", max_batch);
        return NULL;
    }
    return fs;
}

void fwd_free(fwd_state **pfs) {
    fwd_state *fs = pfs ? *pfs : NULL;
    if (!fs) return;
    bk_buf *all[] = {fs->x, fs->xb, fs->xb2, fs->q, fs->k, fs->v, fs->hb, fs->hb2, fs->logits};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) fs->be->ops->buf_free(fs->be, all[i]);
    free(fs);
    *pfs = NULL;
}

/* One transformer block on n tokens at positions pos0.., as in the paper and llama2.c. */
static void block(fwd_state *fs, const layer_weights *w, bk_buf *k_cache, bk_buf *v_cache, bk_dtype kv_dtype, int pos0,
                  int n) {
    const model_config *c = &fs->m->cfg;
    const backend_ops *op = fs->be->ops;
    backend *be = fs->be;
    int kv_dim = c->n_kv_heads * c->head_dim;
    size_t kv_row = (size_t)kv_dim * sizeof(float);

    /* attention: norm, q/k/v projections, rotary positions */
    op->rmsnorm(be, fs->x, &w->attn_norm, fs->xb, n, c->hidden_dim, c->rms_eps);
    op->matmul(be, &w->wq, fs->xb, fs->q, n);
    op->matmul(be, &w->wk, fs->xb, fs->k, n);
    op->matmul(be, &w->wv, fs->xb, fs->v, n);
    op->rope(be, fs->q, n, c->n_heads, c->head_dim, pos0, fs->m->inv_freq);
    op->rope(be, fs->k, n, c->n_kv_heads, c->head_dim, pos0, fs->m->inv_freq);
    /* append this chunk's keys and values to the cache, then attend over all of it */
    if (kv_dtype == BK_F16) {
        op->kv_store(be, fs->k, k_cache, pos0, n, kv_dim);
        op->kv_store(be, fs->v, v_cache, pos0, n, kv_dim);
    } else {
        op->copy(be, fs->k, 0, k_cache, (size_t)pos0 * kv_row, (size_t)n * kv_row);
        op->copy(be, fs->v, 0, v_cache, (size_t)pos0 * kv_row, (size_t)n * kv_row);
    }
    op->attention(be, fs->q, k_cache, v_cache, fs->xb, n, pos0, c->n_heads, c->n_kv_heads, c->head_dim);
    /* output projection and residual */
    op->matmul(be, &w->wo, fs->xb, fs->xb2, n);
    op->add(be, fs->x, fs->xb2, n * c->hidden_dim);

    /* feed-forward: norm, SwiGLU, down projection, residual */
    op->rmsnorm(be, fs->x, &w->ffn_norm, fs->xb, n, c->hidden_dim, c->rms_eps);
    op->matmul(be, &w->w_gate, fs->xb, fs->hb, n);
    op->matmul(be, &w->w_up, fs->xb, fs->hb2, n);
    op->swiglu(be, fs->hb, fs->hb2, n * c->ffn_dim);
    op->matmul(be, &w->w_down, fs->hb, fs->xb2, n);
    op->add(be, fs->x, fs->xb2, n * c->hidden_dim);
}

/* Final norm and lm_head for rows [r0, r0 + rows) of x into logits. */
static void head(fwd_state *fs, int r0, int rows, float *logits) {
    const model_config *c = &fs->m->cfg;
    const backend_ops *op = fs->be->ops;
    size_t row = (size_t)c->hidden_dim * sizeof(float);
    for (int done = 0; done < rows; done += HEAD_ROWS) {
        int k = rows - done < HEAD_ROWS ? rows - done : HEAD_ROWS;
        op->copy(fs->be, fs->x, (size_t)(r0 + done) * row, fs->xb, 0, (size_t)k * row);
        op->rmsnorm(fs->be, fs->xb, &fs->m->final_norm, fs->xb, k, c->hidden_dim, c->rms_eps);
        op->matmul(fs->be, &fs->m->lm_head, fs->xb, fs->logits, k);
        op->buf_read(fs->be, fs->logits, 0, logits + (size_t)done * c->vocab_size,
                     (size_t)k * c->vocab_size * sizeof(float));
    }
}

int fwd_run(fwd_state *fs, kv_cache *kv, const int32_t *ids, const float *x_in, int n,
            float *x_out, float *logits, int all_logits, strata_err *err) {
    const model *m = fs->m;
    const model_config *c = &m->cfg;
    const backend_ops *op = fs->be->ops;
    if (n <= 0) return err_set(err, "forward of %d tokens", n);
    if (kv->len + n > kv->capacity)
        return err_set(err, "context full: %d positions held + %d new > capacity %d", kv->len, n, kv->capacity);
    if (m->has_embed ? !ids : !x_in) return err_set(err, "forward: missing %s input", m->has_embed ? "token" : "activation");
    if (m->has_embed)
        for (int i = 0; i < n; i++)
            if (ids[i] < 0 || ids[i] >= c->vocab_size)
                return err_set(err, "token id %d at index %d is outside the vocabulary (%d)", ids[i], i, c->vocab_size);
    size_t row = (size_t)c->hidden_dim * sizeof(float);
    for (int done = 0; done < n; done += fs->max_batch) {
        int k = n - done < fs->max_batch ? n - done : fs->max_batch;
        if (m->has_embed) op->embed(fs->be, &m->embed, ids + done, k, fs->x);
        else op->buf_write(fs->be, fs->x, 0, x_in + (size_t)done * c->hidden_dim, (size_t)k * row);
        for (int l = 0; l < kv->n_layers; l++)
            block(fs, &m->layers[l], kv->k[l], kv->v[l], kv->dtype, kv->len, k);
        kv->len += k;
        if (m->has_head) {
            if (all_logits) head(fs, 0, k, logits + (size_t)done * c->vocab_size);
            else if (done + k == n) head(fs, k - 1, 1, logits);
        } else if (x_out) {
            op->buf_read(fs->be, fs->x, 0, x_out + (size_t)done * c->hidden_dim, (size_t)k * row);
        }
    }
    return 0;
}
