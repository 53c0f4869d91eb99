#include "kernels/cpu/threadpool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

/* idle loop of a worker: pause-spins, then yields (so that an oversubscribed core goes to
 * whoever has work), then sleeps; ~1 ms in all, longer than the gap between two ops */
#define TP_PAUSES 2000
#define TP_YIELDS 2000

struct tpool {
    int n;
    pthread_t *threads;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_uint gen;      /* bumped once per job */
    atomic_int next_task; /* the next task to claim */
    atomic_int finished;  /* tasks done */
    atomic_int sleepers;
    atomic_int stop;
    int n_tasks;
    tp_fn fn;
    void *arg;
    int has_pf;
    tp_prefetch pf[TP_PF_MAX]; /* per thread, copied from tp_run_pf's */
};

typedef struct {
    tpool *p;
    int ith;
} tp_worker_arg;

static inline void cpu_relax(void) {
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static void claim_tasks(tpool *p, int thread, unsigned gen) {
    int done = 0;
    for (;;) {
        /* acquire pairs with tp_run's release store: a claim of the new job sees its fn and arg,
         * even from a worker still leaving the previous job */
        int t = atomic_fetch_add_explicit(&p->next_task, 1, memory_order_acq_rel);
        if (t >= p->n_tasks) break;
        p->fn(p->arg, t, p->n_tasks, thread);
        done++;
    }
    if (!done) return; /* no claim: the caller may already be setting up the next job */
    int has_pf = thread && p->has_pf; /* read before the release: until then the caller waits */
    tp_prefetch pf;
    if (has_pf) pf = p->pf[thread];
    atomic_fetch_add_explicit(&p->finished, done, memory_order_release);
    /* until the next job comes (looked at every 1 KB): its first rows are the ones being fetched,
     * and its kernel prefetches on from there */
    for (size_t o = 0; has_pf && o < pf.bytes; o += 64) {
        if (!(o & 1023) && atomic_load_explicit(&p->gen, memory_order_relaxed) != gen) break;
        __builtin_prefetch(pf.at + o, 0, 2);
    }
}

static void *worker(void *varg) {
    tp_worker_arg wa = *(tp_worker_arg *)varg;
    free(varg);
    tpool *p = wa.p;
    unsigned seen = 0;
    for (;;) {
        unsigned g;
        int spins = 0;
        while ((g = atomic_load_explicit(&p->gen, memory_order_acquire)) == seen) {
            spins++;
            if (spins < TP_PAUSES) { cpu_relax(); continue; }
            if (spins < TP_PAUSES + TP_YIELDS) { sched_yield(); continue; }
            pthread_mutex_lock(&p->mu);
            atomic_fetch_add(&p->sleepers, 1);
            while (atomic_load(&p->gen) == seen) pthread_cond_wait(&p->cv, &p->mu);
            atomic_fetch_sub(&p->sleepers, 1);
            pthread_mutex_unlock(&p->mu);
            spins = 0;
        }
        seen = g;
        if (atomic_load(&p->stop)) break;
        claim_tasks(p, wa.ith, g);
    }
    return NULL;
}

tpool *tp_new(int n_threads) {
    tpool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->n = n_threads < 1 ? 1 : n_threads;
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv, NULL);
    p->threads = calloc((size_t)p->n, sizeof *p->threads);
    if (!p->threads) { free(p); return NULL; }
    for (int i = 1; i < p->n; i++) {
        tp_worker_arg *wa = malloc(sizeof *wa);
        if (!wa) { p->n = i; tp_free(&p); return NULL; }
        wa->p = p;
        wa->ith = i;
        if (pthread_create(&p->threads[i], NULL, worker, wa)) { free(wa); p->n = i; tp_free(&p); return NULL; }
    }
    return p;
}

void tp_free(tpool **pp) {
    tpool *p = pp ? *pp : NULL;
    if (!p) return;
    atomic_store(&p->stop, 1);
    /* the bump and the broadcast under the lock: a worker either sees the new generation
     * before it waits or is already waiting when the broadcast comes */
    pthread_mutex_lock(&p->mu);
    atomic_fetch_add(&p->gen, 1);
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    for (int i = 1; i < p->n; i++) pthread_join(p->threads[i], NULL);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free(p->threads);
    free(p);
    *pp = NULL;
}

int tp_threads(const tpool *p) { return p->n; }

void tp_run(tpool *p, tp_fn fn, void *arg, int n_tasks) { tp_run_pf(p, fn, arg, n_tasks, NULL); }

void tp_run_pf(tpool *p, tp_fn fn, void *arg, int n_tasks, const tp_prefetch *pf) {
    if (n_tasks <= 0) return;
    if (p->n == 1 || n_tasks == 1) {
        for (int t = 0; t < n_tasks; t++) fn(arg, t, n_tasks, 0);
        return;
    }
    atomic_store_explicit(&p->finished, 0, memory_order_relaxed);
    p->fn = fn;
    p->arg = arg;
    p->n_tasks = n_tasks;
    p->has_pf = pf && p->n <= TP_PF_MAX;
    if (p->has_pf) memcpy(p->pf, pf, sizeof *pf * (size_t)p->n);
    atomic_store_explicit(&p->next_task, 0, memory_order_release);
    atomic_fetch_add_explicit(&p->gen, 1, memory_order_seq_cst);
    if (atomic_load(&p->sleepers) > 0) {
        pthread_mutex_lock(&p->mu);
        pthread_cond_broadcast(&p->cv);
        pthread_mutex_unlock(&p->mu);
    }
    claim_tasks(p, 0, 0); /* the caller prefetches nothing */
    /* only tasks a worker claimed and has not finished remain */
    for (int spins = 0; atomic_load_explicit(&p->finished, memory_order_acquire) < n_tasks; spins++) {
        if (spins < TP_PAUSES) cpu_relax();
        else sched_yield();
    }
}

int tp_range_start(int units, int t, int n_threads) { return (int)((long)units * t / n_threads); }

/* A claim takes 1/RANGE_PART of what is left of the thread's range, `step` at least: a long range
 * goes in few claims (each a locked instruction, which costs a compute-bound job: 7b lm_head, 4
 * tokens, 2 threads, 4 alternating runs, 2026-12-06: claims of `step` 19.8-21.3 GB/s, of 1/8
 * 21.2-22.1, the whole tasks before 21.4-22.0) and its end in steps, as another thread may come to
 * take half of it. */
#define RANGE_PART 8

typedef struct {
    _Alignas(64) atomic_ullong span; /* [lo, hi): lo in the low 32 bits, hi in the high */
} range_span;

typedef struct {
    tp_range_fn fn;
    void *arg;
    int units, step, n; /* n: the threads with a range, 0: runs of step units in pool order */
    range_span reg[TP_RANGES_MAX];
} range_job;

static unsigned long long span_of(int lo, int hi) { return (unsigned)lo | (unsigned long long)(unsigned)hi << 32; }
static int span_lo(unsigned long long s) { return (int)(unsigned)(s & 0xffffffffu); }
static int span_hi(unsigned long long s) { return (int)(unsigned)(s >> 32); }

/* the next units [*u0, *u1) for `thread`: from the front of its range, else the upper half of
 * another's (then its range); 0 when none is left. Relaxed throughout: a unit's index is all a
 * claim hands over (the job's data was published by tp_run_pf, its results are collected through
 * the pool's counters). */
static int range_next(range_job *j, int thread, int *u0, int *u1) {
    atomic_ullong *own = &j->reg[thread].span;
    for (;;) {
        unsigned long long s = atomic_load_explicit(own, memory_order_relaxed);
        int lo = span_lo(s), hi = span_hi(s);
        if (lo < hi) {
            int take = (hi - lo) / RANGE_PART > j->step ? (hi - lo) / RANGE_PART / j->step * j->step : j->step;
            int e = hi - lo > take ? lo + take : hi;
            if (!atomic_compare_exchange_weak_explicit(own, &s, span_of(e, hi), memory_order_relaxed, memory_order_relaxed))
                continue;
            *u0 = lo, *u1 = e;
            return 1;
        }
        int got = 0;
        for (int k = 1; k < j->n && !got; k++) {
            atomic_ullong *v = &j->reg[(thread + k) % j->n].span;
            unsigned long long t = atomic_load_explicit(v, memory_order_relaxed);
            while (!got && span_lo(t) < span_hi(t)) {
                int mid = span_lo(t) + (span_hi(t) - span_lo(t)) / 2 / j->step * j->step;
                got = atomic_compare_exchange_weak_explicit(v, &t, span_of(span_lo(t), mid), memory_order_relaxed,
                                                            memory_order_relaxed);
                if (got) atomic_store_explicit(own, span_of(mid, span_hi(t)), memory_order_relaxed);
            }
        }
        if (!got) return 0;
    }
}

static void range_task(void *arg, int task, int n_tasks, int thread) {
    range_job *j = arg;
    int u0, u1;
    (void)n_tasks;
    if (!j->n) {
        u0 = task * j->step;
        j->fn(j->arg, u0, u0 + j->step < j->units ? u0 + j->step : j->units, thread);
        return;
    }
    while (range_next(j, thread, &u0, &u1)) j->fn(j->arg, u0, u1, thread);
}

void tp_run_ranges(tpool *p, tp_range_fn fn, void *arg, int units, int step, int by_thread, const tp_prefetch *pf) {
    if (units <= 0) return;
    if (step < 1) step = 1;
    range_job j = {fn, arg, units, step, by_thread && p->n > 1 && p->n <= TP_RANGES_MAX ? p->n : 0, {{0}}};
    if (!j.n && units / (4 * p->n) > step) j.step = units / (4 * p->n); /* in pool order: 4 runs a thread at least */
    for (int i = 0; i < j.n; i++)
        atomic_init(&j.reg[i].span, span_of(tp_range_start(units, i, j.n), tp_range_start(units, i + 1, j.n)));
    tp_run_pf(p, range_task, &j, j.n ? j.n : (units + j.step - 1) / j.step, pf);
}
