/* Failover: what the master does when a worker's link goes down (master/failover.c).
 *
 * Detection: every link carries ZMTP heartbeats and the master monitors its connection to each
 * worker (common/linkmon.h): a killed worker is seen at once, a frozen or unreachable one after
 * LINK_HEARTBEAT_TIMEOUT_MS; a worker that is connected but never answers is caught by the
 * reply timeout.
 *
 * Recovery of a lost worker L (the forward that was waiting is then simply run again):
 *  1. Rejoin: for up to cluster_opts.rejoin_ms the master tries L's address again. A worker
 *     restarted there (by hand or by a supervisor) with the same cache dir answers hello, gets
 *     the same Assign, finds its bundle in the cache (Ready{cached}) and nothing is re-sent.
 *  2. Otherwise the master takes L's layers itself: it already holds the whole model (mmap'd), so
 *     this needs no transfer and no other worker's memory, and it is always possible; the chain
 *     splits around the new master segment, and the worker before L (if any) is re-assigned
 *     with no next hop (its bundle is cached: nothing is sent).
 *  3. Every session's KV on the workers is now incomplete: each session is marked stale and,
 *     before its next forward, replayed from position 0 in exactly the batches it was first run
 *     in (the master keeps every session's token history). The same batches through the same
 *     layers give the same numbers bit for bit, so greedy output is unchanged.
 */
#ifndef STRATA_FAILOVER_H
#define STRATA_FAILOVER_H

#include <stdint.h>

/* A session's tokens so far and the batch sizes they were run in. */
typedef struct {
    int32_t *ids;
    int n, cap;
    int *batch;
    int n_batches, batch_cap;
} fo_history;

int fo_history_add(fo_history *h, const int32_t *ids, int n);   /* 0, or -1 out of memory */
void fo_history_trim(fo_history *h, int len);                   /* keeps the first len tokens */
void fo_history_free(fo_history *h);

#endif
