/* engine_cluster: the model split over workers along a plan (master/planner.h).
 *
 * Setup, all before the first token: parse and check the topology, say hello to every worker
 * (protocol version, within connect_timeout_ms), build each worker's reduced bundle and its
 * SHA-256, assign it, serve the chunks the worker asks for (credit-based), and wait until every
 * worker reports Ready. The master loads its own segments (embedding, unassigned layers, head).
 *
 * Forward: activations go down the chain master -> A -> B -> ... -> master, each worker passing
 * its output straight to the next; consecutive worker segments are one chain, a master segment
 * in the middle breaks it into two. Every message carries (session, step), so several sessions
 * can be in flight; this engine runs one forward at a time per call. */
#ifndef STRATA_PIPELINE_H
#define STRATA_PIPELINE_H

#include <stdint.h>

#include "master/engine.h"

typedef struct {
    const char *topology_path;
    int strict;               /* a layer held by no worker is an error (instead of a master layer) */
    int connect_timeout_ms;   /* hello must be answered within this */
    int reply_timeout_ms;     /* a forward's result / a bundle fetch must come within this */
    uint32_t chunk_bytes;     /* bundle chunk size */
    uint32_t credit;          /* fetches a worker may keep outstanding */
} cluster_opts;

typedef struct {
    int n_workers, n_cached;
    uint64_t bundle_bytes_sent, bundle_bytes_total;
    double setup_s;
    int hops;                 /* network transfers per forward: a chain of k workers is k + 1 */
    /* [0] prefill (n > 1), [1] decode (n == 1): chain runs, tokens, wall time from sending into
     * a chain to its result, and the workers' own forward time within it; the difference is
     * what the hops cost */
    uint64_t runs[2], tokens[2];
    double chain_wall_s[2], chain_compute_s[2];
} cluster_stats;

void cluster_opts_default(cluster_opts *o);
engine *engine_cluster_new(const char *model_dir, const char *backend_name, int n_threads, int ctx_len,
                           const cluster_opts *o, strata_err *err);
/* 0 and *out filled when e is a cluster engine, else -1 */
int engine_cluster_stats(const engine *e, cluster_stats *out);

#endif
