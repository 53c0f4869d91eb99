/* The cpu backend's thread pool: tp_run gives every task to exactly one thread, and
 * tp_run_ranges hands out every unit exactly once (in pool order in runs of `step`, or of a
 * quarter of a thread's share where that is more), a thread with nothing left taking over part of
 * a late thread's range. Counted directly (each unit's runs and the thread that ran it), on pools
 * of 1 to 5 threads. */
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/cpu/threadpool.h"
#include "tests/check.h"

#define MAX_UNITS 5000

typedef struct {
    atomic_int hits[MAX_UNITS];
    atomic_int owner[MAX_UNITS]; /* the thread that ran the unit */
    atomic_int first[16];        /* the first unit each thread was handed, -1: none */
    atomic_int bad_claims;       /* claims out of [0, units), empty, or (in pool order) longer than a run */
    atomic_int off_step;         /* by thread range: claims that start no whole number of steps into the
                                  * range their unit came from (decode's block pairs must stay whole) */
    int units, step, by_thread, run, n_threads;
    int sleeper;         /* >= 0: this thread waits at its first claim until another runs a unit of its range */
    int home_lo, home_hi; /* the sleeper's range */
    atomic_int stolen;   /* set when that happened */
} tally;

static void sleep_ms(int ms) {
    struct timespec ts = {0, ms * 1000000L};
    nanosleep(&ts, NULL);
}

static void count_units(void *arg, int u0, int u1, int thread) {
    tally *t = arg;
    if (u0 < 0 || u1 > t->units || u0 >= u1 || (!t->by_thread && u1 - u0 > t->run)) {
        atomic_fetch_add(&t->bad_claims, 1);
        return;
    }
    if (t->by_thread && t->n_threads > 1) {
        int home = 0;
        while (home + 1 < t->n_threads && u0 >= tp_range_start(t->units, home + 1, t->n_threads)) home++;
        if ((u0 - tp_range_start(t->units, home, t->n_threads)) % t->step) atomic_fetch_add(&t->off_step, 1);
    }
    int none = -1;
    if (atomic_compare_exchange_strong(&t->first[thread], &none, u0) && thread == t->sleeper)
        for (int ms = 0; ms < 5000 && !atomic_load(&t->stolen); ms++) sleep_ms(1);
    for (int u = u0; u < u1; u++) {
        atomic_fetch_add(&t->hits[u], 1);
        atomic_store(&t->owner[u], thread);
        if (thread != t->sleeper && u >= t->home_lo && u < t->home_hi) atomic_store(&t->stolen, 1);
    }
}

static void count_task(void *arg, int task, int n_tasks, int thread) {
    tally *t = arg;
    (void)n_tasks, (void)thread;
    atomic_fetch_add(&t->hits[task], 1);
}

static tally *tally_new(int units, int step, int sleeper, int n_threads) {
    tally *t = calloc(1, sizeof *t);
    if (!t) abort();
    t->units = units, t->step = step, t->sleeper = sleeper, t->n_threads = n_threads;
    if (sleeper >= 0) {
        t->home_lo = tp_range_start(units, sleeper, n_threads);
        t->home_hi = tp_range_start(units, sleeper + 1, n_threads);
    }
    for (int i = 0; i < 16; i++) atomic_init(&t->first[i], -1);
    return t;
}

/* every unit once, claims well formed; returns how many units a thread other than the owner of
 * their range ran */
static int check_ranges(tpool *p, int units, int step, int by_thread, int sleeper) {
    tally *t = tally_new(units, step, sleeper, tp_threads(p));
    t->by_thread = by_thread;
    t->run = units / (4 * tp_threads(p)) > step ? units / (4 * tp_threads(p)) : step;
    tp_run_ranges(p, count_units, t, units, step, by_thread, NULL);
    int n = tp_threads(p), once = 0, taken = 0;
    for (int u = 0; u < units; u++) {
        once += atomic_load(&t->hits[u]) == 1;
        int home = 0;
        while (home + 1 < n && u >= tp_range_start(units, home + 1, n)) home++;
        taken += atomic_load(&t->owner[u]) != home;
    }
    CHECK(once == units, "%d threads, %d units, step %d, by_thread %d: %d of them run exactly once", n, units, step,
          by_thread, once);
    CHECK(atomic_load(&t->bad_claims) == 0, "%d threads, %d units, step %d: %d malformed claims", n, units, step,
          atomic_load(&t->bad_claims));
    CHECK(atomic_load(&t->off_step) == 0, "%d threads, %d units, step %d: %d claims start off a whole step", n, units,
          step, atomic_load(&t->off_step));
    free(t);
    return taken;
}

int main(void) {
    static const int threads[] = {1, 2, 3, 5}, units[] = {1, 2, 7, 100, 4999}, steps[] = {1, 3, 16};
    for (int a = 0; a < 4; a++) {
        tpool *p = tp_new(threads[a]);
        CHECK(p != NULL, "tp_new(%d)", threads[a]);
        if (!p) continue;
        CHECK(tp_threads(p) == threads[a], "tp_threads %d", tp_threads(p));
        for (int rep = 0; rep < 20; rep++) { /* tp_run: each task once */
            tally *t = tally_new(1000, 1, -1, 1);
            tp_run(p, count_task, t, 1000);
            int once = 0;
            for (int i = 0; i < 1000; i++) once += atomic_load(&t->hits[i]) == 1;
            CHECK(once == 1000, "tp_run on %d threads: %d of 1000 tasks run exactly once", threads[a], once);
            free(t);
        }
        for (int b = 0; b < 5; b++)
            for (int s = 0; s < 3; s++)
                for (int rep = 0; rep < 10; rep++) {
                    check_ranges(p, units[b], steps[s], 1, -1);
                    check_ranges(p, units[b], steps[s], 0, -1);
                }
        if (threads[a] > 1) {
            /* a late worker: the others take over part of its range (it waits until they do, 5 s at
             * most: then its range would only have run by stealing) */
            int taken = check_ranges(p, 1000, 1, 1, threads[a] - 1);
            CHECK(taken > 0, "%d threads: no unit of a late worker's range ran elsewhere", threads[a]);
            /* a late caller the same */
            taken = check_ranges(p, 1000, 1, 1, 0);
            CHECK(taken > 0, "%d threads: no unit of a late caller's range ran elsewhere", threads[a]);
        }
        tp_free(&p);
        CHECK(p == NULL, "tp_free clears the pointer");
    }
    return TEST_END();
}
