/* What generation runs on: the whole model, either on this machine (engine_local) or split over
 * workers (the pipeline). Sessions are independent token streams, each with its own KV state. */
#ifndef STRATA_ENGINE_H
#define STRATA_ENGINE_H

#include <stdint.h>

#include "common/config.h"
#include "common/err.h"

typedef struct engine engine;

typedef struct {
    /* Appends n tokens to the session (created on first use) and fills logits [vocab] for the
     * last of them (or [n, vocab] when all_logits). */
    int (*forward)(engine *e, uint64_t session, const int32_t *ids, int n, float *logits, int all_logits,
                   strata_err *err);
    /* Keeps the first len positions of the session. */
    int (*trim)(engine *e, uint64_t session, int len, strata_err *err);
    void (*end_session)(engine *e, uint64_t session);
    void (*destroy)(engine *e);
} engine_ops;

/* Several sessions in flight (an engine whose stages run on different machines: the cluster).
 * submit starts a forward exactly like forward() and returns without waiting for it; ids are
 * consumed before it returns, logits must stay valid until collect hands the session back. At
 * most one forward per session is in flight. collect waits for any submitted forward to finish
 * and puts its session in *session (logits filled). On failure it returns -1 with err and, when
 * the failure belongs to one session only (its forward failed, it was evicted), that session in
 * *session (the others stay in flight); *session 0 means the engine itself failed. Do not mix
 * forward() with forwards in flight. */
typedef struct {
    int (*submit)(engine *e, uint64_t session, const int32_t *ids, int n, float *logits, int all_logits,
                  strata_err *err);
    int (*collect)(engine *e, uint64_t *session, strata_err *err);
} engine_async_ops;

struct engine {
    const engine_ops *ops;
    const model_config *cfg;
    void *ctx;
    const engine_async_ops *async; /* NULL: one forward at a time (engine_local) */
};

/* The whole model on one backend. */
engine *engine_local_new(const char *model_dir, const char *backend_name, int n_threads, int ctx_len,
                         strata_err *err);
void engine_destroy(engine **e);

#endif
