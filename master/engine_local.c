/* engine_local: every layer on this machine, one KV cache per session. */
#include <stdlib.h>
#include <string.h>

#include "common/forward.h"
#include "master/engine.h"

#define MAX_BATCH 64

typedef struct {
    uint64_t id;
    kv_cache *kv;
} local_session;

typedef struct {
    st_model *st;
    model_config cfg;
    backend *be;
    model *m;
    fwd_state *fs;
    int ctx_len;
    int n_sessions;
    local_session *sessions;
} local;

static local_session *find_session(local *l, uint64_t id, int create, strata_err *err) {
    for (int i = 0; i < l->n_sessions; i++)
        if (l->sessions[i].id == id) return &l->sessions[i];
    if (!create) { err_set(err, "no session %llu", (unsigned long long)id); return NULL; }
    local_session *s = realloc(l->sessions, sizeof *s * (size_t)(l->n_sessions + 1));
    if (!s) { err_set(err, "out of memory"); return NULL; }
    l->sessions = s;
    kv_cache *kv = kv_new(l->m, l->ctx_len, err);
    if (!kv) return NULL;
    l->sessions[l->n_sessions] = (local_session){id, kv};
    return &l->sessions[l->n_sessions++];
}

static int local_forward(engine *e, uint64_t session, const int32_t *ids, int n, float *logits, int all_logits,
                         strata_err *err) {
    local *l = e->ctx;
    local_session *s = find_session(l, session, 1, err);
    if (!s) return -1;
    return fwd_run(l->fs, s->kv, ids, NULL, n, NULL, logits, all_logits, err);
}

static int local_trim(engine *e, uint64_t session, int len, strata_err *err) {
    local_session *s = find_session(e->ctx, session, 0, err);
    return s ? kv_trim(s->kv, len, err) : -1;
}

static void local_end(engine *e, uint64_t session) {
    local *l = e->ctx;
    for (int i = 0; i < l->n_sessions; i++)
        if (l->sessions[i].id == session) {
            kv_free(&l->sessions[i].kv);
            l->sessions[i] = l->sessions[--l->n_sessions];
            return;
        }
}

static void local_destroy(engine *e) {
    local *l = e->ctx;
    for (int i = 0; i < l->n_sessions; i++) kv_free(&l->sessions[i].kv);
    free(l->sessions);
    fwd_free(&l->fs);
    model_free(&l->m);
    backend_destroy(&l->be);
    st_model_close(&l->st);
    free(l);
    free(e);
}

static const engine_ops local_ops = {local_forward, local_trim, local_end, local_destroy};

engine *engine_local_new(const char *model_dir, const char *backend_name, int n_threads, int ctx_len,
                         strata_err *err) {
    local *l = calloc(1, sizeof *l);
    engine *e = calloc(1, sizeof *e);
    if (!l || !e) { free(l); free(e); err_set(err, "out of memory"); return NULL; }
    e->ops = &local_ops;
    e->ctx = l;
    e->cfg = &l->cfg;
    if (config_load(model_dir, &l->cfg, err)) goto fail;
    if (!(l->st = st_model_open(model_dir, err))) goto fail;
    if (!(l->be = backend_new(backend_name, n_threads, err))) goto fail;
    model_part all = {0, l->cfg.n_layers, 1, 1};
    if (!(l->m = model_load(l->st, &l->cfg, &all, l->be, err))) goto fail;
    if (!(l->fs = fwd_new(l->m, MAX_BATCH, err))) goto fail;
    l->ctx_len = ctx_len < l->cfg.max_seq_len ? ctx_len : l->cfg.max_seq_len;
    return e;
fail:
    local_destroy(e);
    return NULL;
}

void engine_destroy(engine **e) {
    if (!e || !*e) return;
    (*e)->ops->destroy(*e);
    *e = NULL;
}
