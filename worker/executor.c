#include "worker/executor.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/forward.h"

#define MAX_BATCH 64 /* as engine_local: the same chunking gives the same numbers */
/* each session holds a KV cache of ctx_len positions: their number is bounded before one is
 * allocated, so a peer cannot exhaust memory by naming new session ids */
#define EXEC_MAX_SESSIONS 256

typedef struct {
    uint64_t id;
    kv_cache *kv;
} session;

struct executor {
    st_model *st;
    model_config cfg;
    model *m;
    fwd_state *fs;
    int ctx_len;
    int n_sessions;
    session *sessions;
};

executor *exec_load(const char *bundle_dir, int first_layer, int last_layer, backend *be, int ctx_len,
                    strata_err *err) {
    executor *ex = calloc(1, sizeof *ex);
    if (!ex) { err_set(err, "out of memory"); return NULL; }
    if (config_load(bundle_dir, &ex->cfg, err)) goto fail;
    if (last_layer > ex->cfg.n_layers) {
        err_set(err, "layers [%d, %d) beyond the model's %d", first_layer, last_layer, ex->cfg.n_layers);
        goto fail;
    }
    if (!(ex->st = st_model_open(bundle_dir, err))) goto fail;
    model_part part = {first_layer, last_layer, 0, 0};
    if (!(ex->m = model_load(ex->st, &ex->cfg, &part, be, err))) goto fail;
    if (!(ex->fs = fwd_new(ex->m, MAX_BATCH, err))) goto fail;
    ex->ctx_len = ctx_len < ex->cfg.max_seq_len ? ctx_len : ex->cfg.max_seq_len;
    return ex;
fail:
    exec_free(&ex);
    return NULL;
}

void exec_free(executor **pex) {
    executor *ex = pex ? *pex : NULL;
    if (!ex) return;
    for (int i = 0; i < ex->n_sessions; i++) kv_free(&ex->sessions[i].kv);
    free(ex->sessions);
    fwd_free(&ex->fs);
    model_free(&ex->m);
    st_model_close(&ex->st);
    free(ex);
    *pex = NULL;
}

const model_config *exec_config(const executor *ex) { return &ex->cfg; }
int exec_sessions(const executor *ex) { return ex->n_sessions; }

static session *find(executor *ex, uint64_t id) {
    for (int i = 0; i < ex->n_sessions; i++)
        if (ex->sessions[i].id == id) return &ex->sessions[i];
    return NULL;
}

int exec_forward(executor *ex, uint64_t id, int pos0, const float *x_in, int n, float *x_out, strata_err *err) {
    session *s = find(ex, id);
    if (!s) {
        if (pos0 != 0)
            return err_set(err, "session %llu: unknown here, and its first forward starts at position %d, not 0",
                           (unsigned long long)id, pos0);
        if (ex->n_sessions >= EXEC_MAX_SESSIONS)
            return err_set(err, "session %llu: %d sessions are open already (the limit); end one first",
                           (unsigned long long)id, ex->n_sessions);
        session *g = realloc(ex->sessions, sizeof *g * (size_t)(ex->n_sessions + 1));
        if (!g) return err_set(err, "out of memory");
        ex->sessions = g;
        kv_cache *kv = kv_new(ex->m, ex->ctx_len, err);
        if (!kv) return -1;
        s = &ex->sessions[ex->n_sessions++];
        *s = (session){id, kv};
    }
    if (pos0 > s->kv->len)
        return err_set(err, "session %llu: forward at position %d leaves a gap (%d positions held)",
                       (unsigned long long)id, pos0, s->kv->len);
    if (pos0 < s->kv->len && kv_trim(s->kv, pos0, err)) return -1;
    if (fwd_run(ex->fs, s->kv, NULL, x_in, n, x_out, NULL, 0, err))
        return err_prefix(err, "session %llu", (unsigned long long)id);
    return 0;
}

int exec_trim(executor *ex, uint64_t id, int len, strata_err *err) {
    session *s = find(ex, id);
    if (!s) return err_set(err, "trim: no session %llu", (unsigned long long)id);
    return kv_trim(s->kv, len, err);
}

void exec_end(executor *ex, uint64_t id) {
    session *s = find(ex, id);
    if (!s) return;
    kv_free(&s->kv);
    *s = ex->sessions[--ex->n_sessions];
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

double exec_measure_speed(backend *be, int ms) {
    enum { ROWS = 1024, COLS = 1024, GROUP = 64 };
    uint32_t *q = malloc(sizeof *q * ROWS * COLS / 8);
    uint16_t *sb = malloc(sizeof *sb * 2 * ROWS * (COLS / GROUP));
    float x[COLS];
    double speed = 0;
    if (!q || !sb) goto out;
    uint32_t r = 12345;
    for (int i = 0; i < ROWS * COLS / 8; i++) q[i] = r = r * 1664525u + 1013904223u;
    for (int i = 0; i < 2 * ROWS * (COLS / GROUP); i++) sb[i] = bk_f32_to_f16(0.01f * (float)(i % 7) - 0.03f);
    for (int i = 0; i < COLS; i++) x[i] = (float)(i % 13) * 0.1f - 0.6f;
    bk_weight w = {0};
    w.w = be->ops->buf_wrap(be, q, sizeof *q * ROWS * COLS / 8);
    w.scales = be->ops->buf_wrap(be, sb, sizeof *sb * ROWS * (COLS / GROUP));
    w.biases = be->ops->buf_wrap(be, sb + ROWS * (COLS / GROUP), sizeof *sb * ROWS * (COLS / GROUP));
    w.wdtype = BK_U32;
    w.sdtype = BK_F16;
    w.rows = ROWS, w.cols = COLS, w.bits = 4, w.group_size = GROUP;
    bk_buf *bx = be->ops->buf_alloc(be, sizeof x), *by = be->ops->buf_alloc(be, sizeof(float) * ROWS);
    if (w.w && w.scales && w.biases && bx && by) {
        be->ops->buf_write(be, bx, 0, x, sizeof x);
        double t0 = now_s(), t;
        int iters = 0;
        do {
            be->ops->matmul(be, &w, bx, by, 1);
            be->ops->sync(be);
            iters++;
        } while ((t = now_s() - t0) < ms * 1e-3);
        speed = (double)iters * ROWS * COLS / t / 1e9;
    }
    bk_buf *all[] = {w.w, w.scales, w.biases, bx, by};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (all[i]) be->ops->buf_free(be, all[i]);
out:
    free(q);
    free(sb);
    return speed;
}
