/* engine_cluster's insides, shared by the files that make it up: pipeline.c (setup, the chain,
 * sessions) and failover.c (loss of a worker: re-plan, rejoin, replay). Not a public header. */
#ifndef STRATA_PIPELINE_IMPL_H
#define STRATA_PIPELINE_IMPL_H

#include <stdint.h>

#include "common/curve.h"
#include "common/forward.h"
#include "common/sha256.h"
#include "common/topology.h"
#include "common/wire.h"
#include "master/bundler.h"
#include "master/failover.h"
#include "master/pipeline.h"
#include "master/planner.h"

#define MAX_BATCH 64       /* as engine_local and the workers: the same chunking, the same numbers */
#define MASTER_LINGER_MS 200
#define CL_LOST (-2)       /* a worker's link went down: see cluster.lost_worker (failover.c recovers) */

typedef struct {
    const topo_worker *tw;
    char endpoint[300];
    void *sock;            /* DEALER connected to the worker's ROUTER */
    void *mon;             /* its monitor (common/linkmon.h): disconnects and failed handshakes */
    int hello_ok, ready, cached;
    int lost;              /* its link went down and its layers moved: never polled or sent to again */
    char backend[32], device[160];
    uint64_t memory_bytes;
    bundle *b;
    uint8_t hash[SHA256_BYTES];
    uint64_t sent;
} cl_worker;

typedef struct {           /* a segment the master runs itself */
    model *m;
    fwd_state *fs;
} cl_local;

typedef struct {
    /* id: the session on the wire, unique for this engine's life; key: the engine caller's
     * session. A caller may end a session and start another under the same key at once, while
     * the SessionEnd (sent straight to every worker) can still reach a worker deep in the chain
     * after the new session's first Forward (which comes through the workers before it): under
     * a fresh wire id the late SessionEnd only ends the old session. */
    uint64_t id, key, step;
    int len;
    kv_cache **kv;         /* [n_segments]: NULL for worker segments */
    fo_history hist;       /* every token so far, in the batches it was run in (for a replay) */
    int stale;             /* the workers lost this session's KV (a failover): replay before the next forward */
} cl_session;

typedef struct {
    cluster_opts opts;
    st_model *st;
    model_config cfg;
    char *config_json;
    topology *topo;
    plan plan;
    backend *be;
    cl_local *locals;      /* [n_segments] */
    int n_workers;
    cl_worker *workers;
    void *zctx;
    curve_key key;         /* empty with --insecure */
    int ctx_len;
    int n_sessions;
    cl_session *sessions;
    float *xa, *xb;        /* activations [n, hidden] in and out of a segment */
    size_t x_cap;
    uint8_t *chunk;
    int lost_worker;       /* set with CL_LOST */
    cluster_stats stats;
    uint64_t wire_ids;     /* the last wire session id given out */
    struct cl_async *as;   /* forwards in flight (pipeline_async.c); NULL until the first submit */
} cluster;

/* pipeline.c, for failover.c */
/* (Re)opens worker w's DEALER: CURVE client, heartbeats, monitor, connect. */
int cl_socket_open(cluster *c, int w, strata_err *err);
int cl_send_assign(cluster *c, int w, strata_err *err);
int cl_serve_until_ready(cluster *c, strata_err *err);
int cl_send_hello(cluster *c, int w, strata_err *err);
int cl_forward_once(cluster *c, cl_session *s, const int32_t *ids, int n, float *logits, int all_logits, strata_err *err);

/* pipeline.c, for pipeline_async.c */
int cl_recv_any(cluster *c, int timeout_ms, int *from, wire_in *in, strata_err *err); /* 0, -1 ("timeout"), CL_LOST */
cl_session *cl_find_session(cluster *c, uint64_t id, int create, strata_err *err);
int cl_worker_error(cluster *c, int w, const Strata__Error *e, strata_err *err);

/* pipeline_async.c: several sessions in flight (engine->async) */
extern const engine_async_ops cl_async_ops;
void cl_async_drop(cluster *c, uint64_t session); /* the session ended: forget its forward in flight */
void cl_async_free(cluster *c);

/* failover.c */
/* Reads worker i's pending link events: 0, or -1 with err and c->lost_worker = i when its link
 * went down (the caller returns CL_LOST), or c->lost_worker = -1 when the handshake was refused. */
int fo_link_event(cluster *c, int i, strata_err *err);
/* A forward with failover: replays a stale session first, and on CL_LOST recovers and runs the
 * forward again (at most once per worker). Records the batch in the session's history. */
int fo_forward(cluster *c, cl_session *s, const int32_t *ids, int n, float *logits, int all_logits, strata_err *err);
/* Recovers from the loss of c->lost_worker (see failover.h). 0, CL_LOST (another worker was
 * lost meanwhile: call again), or -1. */
int fo_recover(cluster *c, strata_err *err);

#endif
