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
 * can be in flight: forward() runs one at a time, and e->async (submit/collect, master/engine.h;
 * pipeline_async.c) keeps several sessions in the chain at once, each worker busy on a different
 * one (the HTTP server drives its requests this way, master/batch.h). */
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
    /* security and failover (issue 10: common/curve.h, master/failover.h) */
    const char *key_path;     /* the cluster key file (NULL: $STRATA_KEY) */
    int insecure;             /* no CurveZMQ (a trusted LAN only; warns) */
    int rejoin_ms;            /* after a worker is lost, wait this long for it to come back before taking its layers */
    /* discovery (master/discover.h), used when there is no topology_path */
    const char *topology_text; /* a topology.yml already in memory (the automatic plan's); wins over the path */
    const char *discovery;    /* "avahi" or "dnssd"; NULL: the build's default */
    int discover_ms;          /* browse this long (0: the default, 3 s) */
    int min_workers;          /* fail unless this many are found (browsing waits for them, bounded) */
    int dry_run;              /* print the plan (and the topology it amounts to) and exit */
    int keep_layers;          /* the master takes a share of the layers itself, as a node */
    int local_only;           /* no discovery: the whole model here */
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
    int failovers, rejoins;   /* workers lost; of them, how many came back (bundle cached) */
    double recover_s;         /* time spent re-planning and replaying sessions */
} cluster_stats;

void cluster_opts_default(cluster_opts *o);
engine *engine_cluster_new(const char *model_dir, const char *backend_name, int n_threads, int ctx_len,
                           const cluster_opts *o, strata_err *err);
/* 0 and *out filled when e is a cluster engine, else -1 */
int engine_cluster_stats(const engine *e, cluster_stats *out);

#endif
