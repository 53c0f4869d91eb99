/* The forward pass over one model part (a layer range, with embedding and head optional),
 * written once against kernels/backend.h. The cluster runs one part per node. */
#ifndef STRATA_FORWARD_H
#define STRATA_FORWARD_H

#include "common/model.h"

/* Keys and values of one session for the layers of one part, [capacity, kv_dim] a layer in the
 * backend's kv_dtype (f32, or f16 where the backend keeps them so: backend.h).
 * len is the number of positions held; trimming it drops the rejected tail (speculation). */
typedef struct {
    backend *be;
    int n_layers, kv_dim, capacity, len;
    bk_dtype dtype;
    bk_buf **k, **v;
} kv_cache;

kv_cache *kv_new(const model *m, int capacity, strata_err *err);
void kv_free(kv_cache **kv);
/* keeps the first len positions; fails if len > kv->len */
int kv_trim(kv_cache *kv, int len, strata_err *err);
/* bytes a cache of `capacity` positions takes for `n_layers` layers in f32 (at most what kv_new takes) */
size_t kv_bytes(const model_config *c, int n_layers, int capacity);

typedef struct fwd_state fwd_state;

/* Scratch for batches of up to max_batch tokens (longer inputs run in chunks). */
fwd_state *fwd_new(const model *m, int max_batch, strata_err *err);
void fwd_free(fwd_state **fs);

/* Runs n tokens at positions kv->len .. kv->len + n - 1 and advances kv->len by n.
 * Input: ids when the part has the embedding, else x_in [n, hidden] (f32).
 * Output: when the part has the head, logits [all_logits ? n : 1, vocab]; else x_out [n, hidden]. */
int fwd_run(fwd_state *fs, kv_cache *kv, const int32_t *ids, const float *x_in, int n,
            float *x_out, float *logits, int all_logits, strata_err *err);

#endif
