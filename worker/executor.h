/* A worker's loaded model part and its sessions: one KV cache per session id, created on the
 * session's first forward (pos0 == 0) and dropped by SessionEnd (or a new assignment). */
#ifndef STRATA_WORKER_EXECUTOR_H
#define STRATA_WORKER_EXECUTOR_H

#include <stdint.h>

#include "common/config.h"
#include "common/err.h"
#include "kernels/backend.h"

typedef struct executor executor;

/* Opens bundle_dir (model.safetensors + config.json) and wraps layers [first, last) into be
 * (which outlives the executor). */
executor *exec_load(const char *bundle_dir, int first_layer, int last_layer, backend *be, int ctx_len,
                    strata_err *err);
void exec_free(executor **ex);
const model_config *exec_config(const executor *ex);

/* Runs n rows of activations at positions pos0.. of the session. pos0 below the session's length
 * rolls the cache back first (the master re-sends after a rejected speculation); pos0 above it is
 * an error (a gap). x_out holds [n, hidden]. */
int exec_forward(executor *ex, uint64_t session, int pos0, const float *x_in, int n, float *x_out, strata_err *err);
int exec_trim(executor *ex, uint64_t session, int len, strata_err *err);
void exec_end(executor *ex, uint64_t session);
int exec_sessions(const executor *ex);

/* q4 matvec throughput of the backend in G weights/s, measured for about `ms` milliseconds. */
double exec_measure_speed(backend *be, int ms);

#endif
