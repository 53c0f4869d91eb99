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

/* Tasks by thread region, for jobs whose tasks are runs of one stream of memory (decode matmul
 * chunks, attention slices): a job's fn maps the task it was handed to one taken from its thread's
 * own region first (region r = tasks [n r / threads, n (r+1) / threads): each thread then reads
 * one contiguous run, its prefetch running on from one task into the next, where tasks in pool
 * order alternate between threads and each starts cold), then from the front of the others' (a
 * late thread's share). As many tasks as handed out, so every call finds one. One per job, owned
 * by the job (it outlives no tp_run). */
#define TP_REGIONS_MAX 16
typedef struct {
    int n, nreg;
    atomic_int next[TP_REGIONS_MAX];
} tp_regions;
/* r ready for n_tasks tasks of a job on p; NULL (tasks in pool order) when p has one thread or
 * more than TP_REGIONS_MAX, or fewer tasks than threads */
tp_regions *tp_regions_init(tp_regions *r, const tpool *p, int n_tasks);
/* the task to run for the handed-out `task` on `thread`; r NULL: task */
int tp_regions_claim(tp_regions *r, int task, int thread);

#endif
