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

static void claim_tasks(tpool *p, int thread) {
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
    for (size_t o = 0; has_pf && o < pf.bytes; o += 64) __builtin_prefetch(pf.at + o, 0, 2);
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
        claim_tasks(p, wa.ith);
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
    claim_tasks(p, 0);
    /* only tasks a worker claimed and has not finished remain */
    for (int spins = 0; atomic_load_explicit(&p->finished, memory_order_acquire) < n_tasks; spins++) {
        if (spins < TP_PAUSES) cpu_relax();
        else sched_yield();
    }
}

tp_regions *tp_regions_init(tp_regions *r, const tpool *p, int n_tasks) {
    if (p->n < 2 || p->n > TP_REGIONS_MAX || n_tasks < p->n) return NULL;
    r->n = n_tasks;
    r->nreg = p->n;
    for (int i = 0; i < p->n; i++) atomic_init(&r->next[i], 0);
    return r;
}

int tp_regions_claim(tp_regions *r, int task, int thread) {
    if (!r) return task;
    for (int k = 0; k < r->nreg; k++) {
        int g = (thread + k) % r->nreg, lo = (int)((long)r->n * g / r->nreg), hi = (int)((long)r->n * (g + 1) / r->nreg);
        if (atomic_load_explicit(&r->next[g], memory_order_relaxed) >= hi - lo) continue;
        int i = atomic_fetch_add_explicit(&r->next[g], 1, memory_order_relaxed);
        if (i < hi - lo) return lo + i;
    }
    return task; /* not reached: as many tasks as handed out */
}
