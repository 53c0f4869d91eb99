/* A fixed pool of worker threads for the fast cpu backend. One caller at a time (the backend's
 * own thread) splits a job into tasks; every thread, the caller included, claims tasks from a
 * shared counter until none is left. Claiming (not a fixed share per thread) matters on a busy
 * machine: a worker the OS has descheduled simply takes fewer tasks instead of stalling the
 * job for a whole time slice. Workers spin briefly between jobs, because a decode step issues
 * hundreds of small ops and a sleeping thread takes tens of microseconds to wake; they yield
 * the core while spinning and sleep after a while. */
#ifndef STRATA_THREADPOOL_H
#define STRATA_THREADPOOL_H

#include <stdatomic.h>
#include <stddef.h>

typedef struct tpool tpool;
/* task in [0, n_tasks); thread in [0, tp_threads) names the thread (for per-thread scratch) */
typedef void (*tp_fn)(void *arg, int task, int n_tasks, int thread);

/* n_threads >= 1 (the caller counts as one); NULL when threads cannot be started */
tpool *tp_new(int n_threads);
void tp_free(tpool **p);
int tp_threads(const tpool *p);
/* runs fn for every task in [0, n_tasks) and returns when all are done */
void tp_run(tpool *p, tp_fn fn, void *arg, int n_tasks);
/* tp_run, then each worker that ran a task of it prefetches its own range, pf[thread] = [at, at +
 * bytes), into its L2 while the caller goes on alone (between two decode matmuls the caller runs
 * the small ops; a worker would only spin). pf: NULL, or tp_threads(p) ranges (pf[0], the
 * caller's, unused; bytes 0: none). at is never read: it may name memory gone by then. */
typedef struct {
    const char *at;
    size_t bytes;
} tp_prefetch;
#define TP_PF_MAX 16 /* threads a pool prefetches for; tp_run_pf ignores pf on a larger pool */
void tp_run_pf(tpool *p, tp_fn fn, void *arg, int n_tasks, const tp_prefetch *pf);

/* A job over `units` equal units of one stream of memory (decode matmul row blocks, attention
 * slices), by thread range: thread t owns units [units t / n, units (t+1) / n) and claims them
 * from the front, an eighth of what is left (a multiple of `step`) and `step` at least a claim, so
 * that it reads one contiguous run (its prefetch running on from one claim into the next, where
 * units in pool order alternate between threads and each starts cold); a thread whose range is
 * empty takes the upper half of what another has left (from a multiple of `step` into it:
 * decode's runs of blocks stay whole) and goes on from there, its range now. The threads then end
 * within about a step of each other (a late thread's share is taken over as it is; whole tasks a
 * thread region, before, left the thread that drew a region's last task alone for up to a task).
 * fn(arg, u0, u1, thread) runs units [u0, u1); every unit runs once before tp_run_ranges returns.
 * pf as tp_run_pf's. by_thread 0, or a pool of more than TP_RANGES_MAX threads: runs of `step`
 * units in pool order instead, 4 runs a thread where that is more than `step`. */
#define TP_RANGES_MAX 16
typedef void (*tp_range_fn)(void *arg, int u0, int u1, int thread);
void tp_run_ranges(tpool *p, tp_range_fn fn, void *arg, int units, int step, int by_thread, const tp_prefetch *pf);
/* where thread t's range of a job over `units` begins (its first reads) */
int tp_range_start(int units, int t, int n_threads);

#endif
