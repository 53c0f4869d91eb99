/* A fixed pool of worker threads for the fast cpu backend. One caller at a time (the backend's
 * own thread) splits a job into tasks; every thread, the caller included, claims tasks from a
 * shared counter until none is left. Claiming (not a fixed share per thread) matters on a busy
 * machine: a worker the OS has descheduled simply takes fewer tasks instead of stalling the
 * job for a whole time slice. Workers spin briefly between jobs, because a decode step issues
 * hundreds of small ops and a sleeping thread takes tens of microseconds to wake; they yield
 * the core while spinning and sleep after a while. */
#ifndef STRATA_THREADPOOL_H
#define STRATA_THREADPOOL_H

typedef struct tpool tpool;
/* task in [0, n_tasks); thread in [0, tp_threads) names the thread (for per-thread scratch) */
typedef void (*tp_fn)(void *arg, int task, int n_tasks, int thread);

/* n_threads >= 1 (the caller counts as one); NULL when threads cannot be started */
tpool *tp_new(int n_threads);
void tp_free(tpool **p);
int tp_threads(const tpool *p);
/* runs fn for every task in [0, n_tasks) and returns when all are done */
void tp_run(tpool *p, tp_fn fn, void *arg, int n_tasks);

#endif
