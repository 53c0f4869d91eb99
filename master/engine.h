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

struct engine {
    const engine_ops *ops;
    const model_config *cfg;
    void *ctx;
};

/* The whole model on one backend. */
engine *engine_local_new(const char *model_dir, const char *backend_name, int n_threads, int ctx_len,
                         strata_err *err);
void engine_destroy(engine **e);

#endif
