/* bench_cpu: how close the cpu backend runs to the memory bandwidth of this machine.
 *
 *   bench_cpu [--threads N] [--json FILE] [--quick] [--skip-models] [--skip-kernels] [--model DIR]
 *             [--models SHAPE[:LAYERS],...] [--kernels MODEL[/MATRIX],...] [--prefill N] [--decode N] [--ns N,...]
 *             [--ab] [--ab-var NAME] [--ab-live NAME[=VALUE]] [--rounds N] [--side-probe] [--side-warm]
 *             [--kv-cap N]
 *
 * (1) read bandwidth, 1 thread and all threads; (2) q4 matvec and matmul GB/s, GFLOP/s and GB/s
 * over (1) ("of bw") at the matrix shapes of qwen2.5-0.5b, llama-3.2-1b and qwen2.5-7b (random
 * weights in memory, copies cycled so they never sit in cache), and for n <= 8 also q+k+v and
 * gate+up issued on one input as decode issues them (the backend runs them as one job); (3)
 * whole-model prefill and decode tok/s on generated checkpoints (or --model DIR), with the
 * effective weight bandwidth of decode (weight bytes read per token x tok/s) against the measured
 * bandwidth. Table on stdout, JSON with --json.
 *
 * --ab: every matmul and model row twice, alternating, with the 4-bit weights in the checkpoint
 * layout ("old", STRATA_CPU_REPACK=0) and repacked ("new", the default): a before/after in one
 * run of one binary; --ab-var NAME flips another switch of cpu_fast.h the same way (NAME=0 is
 * "old", e.g. STRATA_CPU_FUSE). --ab-live NAME[=VALUE] (fuse, attn_split, affine, pf_next; VALUE, 1 by
 * default, is "new" and 0 "old"): one model, the option switched
 * between prefills and between decode tokens (cpu_fast_option), old and new side by side in
 * time. --side-probe: a 256 MB read with all threads after every timed decode token; the model
 * rows then also give the median probe and the median of (token's weight GB/s / its probe);
 * --side-warm: the probe before each timed token, then an untimed token (side_before).
 * --kv-cap N: KV caches of at least N positions (a served context's; by default the run's
 * length, which keeps a layer's cache under the 2 MB at which the backend asks for huge pages).
 * --rounds N repeats the model rows N times (alternating with --ab): on a
 * shared machine one run is not a measurement. */
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "common/forward.h"
#include "kernels/cpu/cpu_fast.h"
#include "kernels/cpu/threadpool.h"
#include "tools/genmodel.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static uint64_t rng = 88172645463325252ull;
static uint64_t next(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}

/* ---- (1) read bandwidth ---- */

typedef struct {
    const uint64_t *p;
    size_t n;
    int pf; /* 1: the prefetching read, 2: the paired read */
    uint64_t sink[256];
} bw_job;

/* How far ahead the prefetching read asks for each line (L2 hint). On the Intel AMX VM of
 * 2026-12-06 it read 19.7-19.8 GB/s one thread and 36.3-38.6 two, where the plain loop read
 * 17.5-19.0 and 33.2-34.7 in the same minutes (1 KB ahead no better than none). */
#define BW_PREFETCH 2048

/* The paired read: a thread's range as pairs of BW_PAIR-byte blocks, both blocks of a pair read
 * at once (two streams) with a prefetch in each, as the cpu backend's one-token kernel reads the
 * 16-row blocks of the 7b shapes (q4_pack_avx512.c block_2, 32 KB blocks), at its prefetch
 * distance (3 KB). Added when that kernel read more than the plain and the prefetching read
 * (2026-12-06): the reference stays the fastest read of this machine we know.
 * Intel AMX VM, 2 alternating runs, 1 / 2 threads GB/s: prefetching read 19.4-19.6 / 36.7-37.2,
 * paired 2 KB ahead 18.0-19.2 / 36.0-36.6, 3 KB 19.9-20.1 / 37.4-37.6, 4 KB 17.7-18.2 / 33.9-35.0. */
#define BW_PAIR 32768
#define BW_PAIR_PREFETCH 3072

/* eight independent sums: enough loads in flight to saturate the memory system; the compiler
 * vectorises the loop. j->pf: each line also prefetched BW_PREFETCH bytes ahead, a read the
 * hardware prefetchers alone do not reach on every machine; 2: the paired read */
static void bw_run(void *arg, int ith, int nth, int thread) {
    bw_job *j = arg;
    (void)thread;
    size_t a = j->n * (size_t)ith / (size_t)nth & ~(size_t)7, b = j->n * (size_t)(ith + 1) / (size_t)nth & ~(size_t)7;
    uint64_t s[8] = {0};
    if (j->pf == 2) {
        const size_t blk = BW_PAIR / 8;
        for (; a + 2 * blk <= b; a += 2 * blk)
            for (size_t i = a; i < a + blk; i += 8) {
                __builtin_prefetch(j->p + i + BW_PAIR_PREFETCH / 8, 0, 2);
                __builtin_prefetch(j->p + i + blk + BW_PAIR_PREFETCH / 8, 0, 2);
                for (int k = 0; k < 8; k++) s[k] ^= j->p[i + k] ^ j->p[i + blk + k];
            }
    }
    if (j->pf)
        for (size_t i = a; i < b; i += 8) {
            __builtin_prefetch(j->p + i + BW_PREFETCH / 8, 0, 2);
            for (int k = 0; k < 8; k++) s[k] ^= j->p[i + k];
        }
    else
        for (size_t i = a; i < b; i += 8)
            for (int k = 0; k < 8; k++) s[k] ^= j->p[i + k];
    j->sink[ith] = s[0] ^ s[1] ^ s[2] ^ s[3] ^ s[4] ^ s[5] ^ s[6] ^ s[7];
}

/* huge = 1: the buffer asks for transparent huge pages (as the cpu backend's repacked weights
 * do; fewer TLB misses read faster), 0: plain 4 KB pages (as a malloc'd or mmap'd file). The
 * plain, the prefetching and the paired read alternate pass by pass (the bandwidth left to this VM
 * moves within seconds); best[0] the plain read's best, best[1] the prefetching read's, best[2]
 * the paired read's. */
static void read_bw(int threads, size_t bytes, int huge, double best[3]) {
    tpool *tp = tp_new(threads);
    uint64_t *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (!tp || p == MAP_FAILED) { fprintf(stderr, "bench_cpu: out of memory\n"); exit(1); }
#ifdef MADV_HUGEPAGE
    madvise(p, bytes, huge ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
#else
    (void)huge;
#endif
    for (size_t i = 0; i < bytes / 8; i++) p[i] = i * 0x9e3779b97f4a7c15ull;
    best[0] = best[1] = best[2] = 0.0;
    for (int rep = 0; rep < 18; rep++) {
        bw_job j = {p, bytes / 8, rep % 3, {0}};
        double t0 = now();
        tp_run(tp, bw_run, &j, threads);
        double gbs = (double)bytes / (now() - t0) / 1e9;
        if (gbs > best[rep % 3]) best[rep % 3] = gbs;
    }
    munmap(p, bytes);
    tp_free(&tp);
}

/* The probe again between decode tokens: on this shared VM the bandwidth left to us moves by 2x
 * within seconds (other tenants), so a token is set against a read of the same moment. Plain
 * threads (started per probe, gone after) rather than a pool, whose workers would spin beside the
 * backend's. */
typedef struct {
    uint64_t *p;
    size_t n; /* uint64 words */
} side_probe;

typedef struct {
    bw_job *j;
    int ith, nth;
} side_arg;

static void *side_thread(void *arg) {
    side_arg *a = arg;
    bw_run(a->j, a->ith, a->nth, a->ith);
    return NULL;
}

static int side_probe_new(side_probe *sp, size_t bytes) {
    sp->p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (sp->p == MAP_FAILED) return sp->p = NULL, -1;
    sp->n = bytes / 8;
    for (size_t i = 0; i < sp->n; i++) sp->p[i] = i * 0x9e3779b97f4a7c15ull;
    return 0;
}

static void side_probe_free(side_probe *sp) {
    if (sp->p) munmap(sp->p, sp->n * 8);
    sp->p = NULL;
}

/* GB/s of one read of the buffer by `threads` threads */
static int side_pf; /* the read method of the bandwidth figure: the side probe reads the same way */
static double side_probe_run(side_probe *sp, int threads) {
    bw_job j = {sp->p, sp->n, side_pf, {0}};
    pthread_t th[16];
    side_arg args[16];
    if (threads > 16) threads = 16;
    usleep(5000); /* the backend pool's idle workers spin, then yield, then sleep (threadpool.c): asleep by now */
    int ok[16] = {0};
    double t0 = now();
    for (int i = 1; i < threads; i++) {
        args[i] = (side_arg){&j, i, threads};
        ok[i] = !pthread_create(&th[i], NULL, side_thread, &args[i]);
    }
    bw_run(&j, 0, threads, 0);
    for (int i = 1; i < threads; i++)
        if (ok[i]) pthread_join(th[i], NULL);
        else bw_run(&j, i, threads, i);
    return (double)(sp->n * 8) / (now() - t0) / 1e9;
}


/* ---- (2) matmul at model shapes ---- */

/* part: the matrices of one input that decode runs as one job (the backend holds back matmuls of
 * one input and runs them together, cpu_fast.c flush_pending): q, k and v; gate and up. rows is
 * their sum. Rows with parts run for n <= 8 only (prefill runs them one by one). */
typedef struct { const char *name; int rows, cols; int part[3]; } mat_shape;
#define N_MATS 7
typedef struct { const char *model; mat_shape m[N_MATS]; } model_shapes;

static const model_shapes shapes[] = {
    {"qwen2.5-0.5b", {{"q/o", 896, 896, {0}}, {"k/v", 128, 896, {0}}, {"gate/up", 4864, 896, {0}}, {"down", 896, 4864, {0}},
                      {"lm_head", 151936, 896, {0}}, {"q+k+v", 1152, 896, {896, 128, 128}}, {"gate+up", 9728, 896, {4864, 4864}}}},
    {"llama-3.2-1b", {{"q/o", 2048, 2048, {0}}, {"k/v", 512, 2048, {0}}, {"gate/up", 8192, 2048, {0}}, {"down", 2048, 8192, {0}},
                      {"lm_head", 128256, 2048, {0}}, {"q+k+v", 3072, 2048, {2048, 512, 512}}, {"gate+up", 16384, 2048, {8192, 8192}}}},
    {"qwen2.5-7b", {{"q/o", 3584, 3584, {0}}, {"k/v", 512, 3584, {0}}, {"gate/up", 18944, 3584, {0}}, {"down", 3584, 18944, {0}},
                    {"lm_head", 152064, 3584, {0}}, {"q+k+v", 4608, 3584, {3584, 512, 512}}, {"gate+up", 37888, 3584, {18944, 18944}}}},
};

typedef struct {
    void *mem;
    bk_buf *w, *s, *b;
    bk_weight wt;
} qmat;

static size_t q4_bytes(int rows, int cols, int group) {
    return (size_t)rows * cols / 2 + 2 * (size_t)rows * (cols / group) * 2;
}

static void qmat_make(backend *be, qmat *m, int rows, int cols, int group) {
    size_t wb = (size_t)rows * cols / 2, sb = (size_t)rows * (cols / group) * 2;
    m->mem = malloc(wb + 2 * sb);
    if (!m->mem) { fprintf(stderr, "bench_cpu: out of memory\n"); exit(1); }
    uint64_t *w = m->mem;
    for (size_t i = 0; i < wb / 8; i++) w[i] = next();
    uint16_t *s = (uint16_t *)((char *)m->mem + wb);
    for (size_t i = 0; i < 2 * sb / 2; i++) s[i] = bk_f32_to_f16(i % 2 ? 0.01f : -0.07f);
    m->w = be->ops->buf_wrap(be, m->mem, wb);
    m->s = be->ops->buf_wrap(be, s, sb);
    m->b = be->ops->buf_wrap(be, s + sb / 2, sb);
    m->wt = (bk_weight){.w = m->w, .scales = m->s, .biases = m->b, .wdtype = BK_U32, .sdtype = BK_F16,
                        .rows = rows, .cols = cols, .bits = 4, .group_size = group};
}

static void qmat_free(backend *be, qmat *m) {
    be->ops->buf_free(be, m->w), be->ops->buf_free(be, m->s), be->ops->buf_free(be, m->b);
    free(m->mem);
}

/* bytes read between two uses of one copy of a matrix: 384 MB, or twice the last-level cache
 * where that is larger (the Intel VM of 2026-12-06 reports 480 MB of L3: 384 MB would have left
 * part of the copies in it) */
static size_t cycle_bytes(void) {
    size_t b = (size_t)384 << 20;
#ifdef _SC_LEVEL3_CACHE_SIZE
    long l3 = sysconf(_SC_LEVEL3_CACHE_SIZE);
    if (l3 > 0 && 2 * (size_t)l3 > b) b = 2 * (size_t)l3;
#endif
    return b;
}

/* seconds per matmul of n tokens (the parts of ms one after another on one input, as decode issues
 * them); copies of the matrices cycled so that cycle_bytes() are read between two uses of one copy
 * (no cache holds it) */
static double time_matmul(backend *be, const mat_shape *ms, int n, int min_reps) {
    int np = 0, rows[3] = {ms->rows};
    while (np < 3 && ms->part[np]) rows[np] = ms->part[np], np++;
    if (!np) np = 1;
    const int cols = ms->cols;
    size_t one = q4_bytes(ms->rows, cols, 64);
    int copies = n > 8 ? 1 : (int)(cycle_bytes() / one) + 1; /* small n: decode / speculative verify */
    if (copies > 2048) copies = 2048;
    qmat *m = calloc((size_t)copies * (size_t)np, sizeof *m);
    for (int i = 0; i < copies * np; i++) qmat_make(be, &m[i], rows[i % np], cols, 64);
    float *x = malloc(sizeof(float) * (size_t)n * cols);
    for (size_t i = 0; i < (size_t)n * cols; i++) x[i] = (float)(next() % 2001) / 1000.0f - 1.0f;
    bk_buf *xb = be->ops->buf_alloc(be, sizeof(float) * (size_t)n * cols), *yb[3];
    for (int p = 0; p < np; p++) yb[p] = be->ops->buf_alloc(be, sizeof(float) * (size_t)n * rows[p]);
    be->ops->buf_write(be, xb, 0, x, sizeof(float) * (size_t)n * cols);
    int reps = copies > min_reps ? copies : min_reps;
    /* one warm-up pass, then the best of three timed passes; each call re-quantizes its input
     * (the write invalidates the backend's cached codes), as a forward pass does */
    double best = 1e30;
    for (int pass = 0; pass < 4; pass++) {
        double t0 = now();
        for (int r = 0; r < reps; r++) {
            be->ops->buf_write(be, xb, 0, x, sizeof(float) * (size_t)cols);
            for (int p = 0; p < np; p++) be->ops->matmul(be, &m[r % copies * np + p].wt, xb, yb[p], n);
        }
        be->ops->sync(be);
        double t = (now() - t0) / reps;
        if (pass && t < best) best = t;
    }
    be->ops->buf_free(be, xb);
    for (int p = 0; p < np; p++) be->ops->buf_free(be, yb[p]);
    for (int i = 0; i < copies * np; i++) qmat_free(be, &m[i]);
    free(m), free(x);
    return best;
}

/* the switch --ab flips: STRATA_CPU_REPACK (round 4), or another of cpu_fast.h's with --ab-var */
static const char *ab_var = "STRATA_CPU_REPACK";

/* a fast backend with ab_var on (repack = 1) or off (0), or as the environment says (-1) */
static backend *fast_backend(int threads, int repack, strata_err *err) {
    const char *old = getenv(ab_var);
    char saved[16] = "";
    if (old) snprintf(saved, sizeof saved, "%s", old);
    if (repack >= 0) setenv(ab_var, repack ? "1" : "0", 1);
    backend *be = backend_cpu_fast_new(threads, err);
    if (old) setenv(ab_var, saved, 1);
    else unsetenv(ab_var);
    return be;
}

/* ---- (3) whole models ---- */

typedef struct {
    double prefill_tps, decode_tps, decode_med_tps, weight_bytes_per_token;
    double prefill_runs[3]; /* run_model: tok/s of each of the three timed prefills (prefill_tps: their median) */
    double huge_mb; /* AnonHugePages of the process after decode: how much of the repacked weights THP backs */
    double side_gbs, side_frac; /* with --side-probe: median probe between tokens, median token / its probe */
} model_result;

static double median_of(double *v, int n) {
    qsort(v, (size_t)n, sizeof *v, cmp_double);
    return n ? v[n / 2] : 0.0;
}

/* --side-probe: the probe after every decode token of the timed round; fills the result's
 * side_gbs and side_frac from the tokens' times (before they are sorted) */
static side_probe side;

/* --side-warm (with --side-probe): the probe comes before each timed token instead of after it,
 * followed by one untimed token at the same position (trimmed off again), so that the timed token
 * does not start cold (the pool asleep after the probe's 5 ms wait, TLB and caches full of the
 * probe's data) but as in back-to-back decode. Returns the probe's GB/s, or -1 on an error. */
static int side_warm;
static int kv_cap_min; /* --kv-cap: the KV cache holds at least this many positions */

static int kv_cap(int need) { return need > kv_cap_min ? need : kv_cap_min; }
static double side_before(fwd_state *fs, kv_cache *kv, const int32_t *id, float *logits, int threads, strata_err *err) {
    double gbs = side_probe_run(&side, threads);
    int len = kv->len;
    if (fwd_run(fs, kv, id, NULL, 1, NULL, logits, 0, err) || kv_trim(kv, len, err)) return -1.0;
    return gbs;
}
static void side_result(model_result *r, const double *tok, double *probe, int n, double bytes) {
    double *frac = malloc(sizeof(double) * (size_t)n);
    if (!frac || !side.p) { free(frac); r->side_gbs = r->side_frac = 0.0; return; }
    for (int i = 0; i < n; i++) frac[i] = bytes / tok[i] / 1e9 / probe[i];
    r->side_frac = median_of(frac, n);
    r->side_gbs = median_of(probe, n);
    free(frac);
}


static size_t weight_bytes(const model *m) {
    size_t total = 0;
    const bk_weight *ws[7];
    for (int l = 0; l < m->last_layer - m->first_layer; l++) {
        const layer_weights *lw = &m->layers[l];
        const bk_weight *list[] = {&lw->wq, &lw->wk, &lw->wv, &lw->wo, &lw->w_gate, &lw->w_up, &lw->w_down};
        memcpy(ws, list, sizeof ws);
        for (int i = 0; i < 7; i++) {
            const bk_weight *w = ws[i];
            total += w->bits ? q4_bytes(w->rows, w->cols, w->group_size) * (size_t)w->bits / 4
                             : (size_t)w->rows * w->cols * bk_dtype_size(w->wdtype);
        }
    }
    const bk_weight *h = &m->lm_head;
    total += h->bits ? (size_t)h->rows * h->cols * h->bits / 8 + 2 * (size_t)h->rows * (h->cols / h->group_size) * bk_dtype_size(h->sdtype)
                     : (size_t)h->rows * h->cols * bk_dtype_size(h->wdtype);
    return total;
}

/* transparent huge pages the process holds, MB (-1 where /proc does not say) */
static double anon_huge_mb(void) {
    FILE *f = fopen("/proc/self/smaps_rollup", "r");
    char line[256];
    double kb = -1.0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "AnonHugePages:", 14)) kb = atof(line + 14);
    if (f) fclose(f);
    return kb < 0 ? -1.0 : kb / 1024.0;
}

/* a generated model loaded whole on the fast backend, with a forward state, a KV cache of
 * kv_cap positions, logits and n_prefill + 1 random token ids */
typedef struct {
    model_config cfg;
    st_model *st;
    model *m;
    fwd_state *fs;
    kv_cache *kv;
    backend *be;
    float *logits;
    int32_t *ids;
} bench_model;

static void bench_model_close(bench_model *b) {
    free(b->logits), free(b->ids);
    kv_free(&b->kv);
    fwd_free(&b->fs);
    model_free(&b->m);
    backend_destroy(&b->be);
    st_model_close(&b->st);
}

static int bench_model_open(bench_model *b, const char *dir, int threads, int repack, int n_prefill, int kv_cap,
                            strata_err *err) {
    memset(b, 0, sizeof *b);
    if (config_load(dir, &b->cfg, err) || !(b->st = st_model_open(dir, err)) ||
        !(b->be = fast_backend(threads, repack, err)))
        goto fail;
    model_part part = {0, b->cfg.n_layers, 1, 1};
    if (!(b->m = model_load(b->st, &b->cfg, &part, b->be, err)) || !(b->fs = fwd_new(b->m, n_prefill, err)) ||
        !(b->kv = kv_new(b->m, kv_cap, err)))
        goto fail;
    b->logits = malloc(sizeof(float) * (size_t)b->cfg.vocab_size);
    b->ids = malloc(sizeof(int32_t) * (size_t)(n_prefill + 1));
    if (!b->logits || !b->ids) { err_set(err, "out of memory"); goto fail; }
    for (int i = 0; i <= n_prefill; i++) b->ids[i] = (int32_t)(next() % (uint64_t)b->cfg.vocab_size);
    return 0;
fail:
    bench_model_close(b);
    return -1;
}

static int run_model(const char *dir, int threads, int repack, int n_prefill, int n_decode, model_result *res, strata_err *err) {
    bench_model b;
    int rc = -1;
    if (bench_model_open(&b, dir, threads, repack, n_prefill, kv_cap(n_prefill + n_decode + 8), err)) return -1;
    fwd_state *fs = b.fs;
    kv_cache *kv = b.kv;
    model *m = b.m;
    float *logits = b.logits;
    int32_t *ids = b.ids;
    /* touch every weight page once so that page faults of the mmap (and the repacking of the
     * weights) are not timed */
    if (fwd_run(fs, kv, ids, NULL, 1, NULL, logits, 0, err)) goto done;
    /* three prefills of the prompt, their median reported: one alone moved by 10-20% between
     * runs on the shared VM of 2026-12-06 (the other tenants' load), and the first also meets the
     * first touch of the batch buffers */
    double pf[3];
    for (int r = 0; r < 3; r++) {
        kv_trim(kv, 0, err);
        double t0 = now();
        if (fwd_run(fs, kv, ids, NULL, n_prefill, NULL, logits, 0, err)) goto done;
        res->prefill_runs[r] = pf[r] = n_prefill / (now() - t0);
    }
    res->prefill_tps = median_of(pf, 3);
    /* decode continues after the prompt (attention spans 512+ positions, as in use); one
     * untimed round first so that the threads and caches are warm */
    double t_all = 0.0, *tok = malloc(sizeof(double) * (size_t)n_decode), *probe = malloc(sizeof(double) * (size_t)n_decode);
    if (!tok || !probe) { free(tok), free(probe); err_set(err, "out of memory"); goto done; }
    for (int round = 0; round < 2; round++) {
        kv_trim(kv, n_prefill, err);
        double busy = 0.0;
        for (int i = 0; i < n_decode; i++) {
            if (side.p && side_warm && round == 1 &&
                (probe[i] = side_before(fs, kv, ids + i % n_prefill, logits, threads, err)) < 0) {
                free(tok), free(probe);
                goto done;
            }
            double ti = now();
            if (fwd_run(fs, kv, ids + i % n_prefill, NULL, 1, NULL, logits, 0, err)) { free(tok), free(probe); goto done; }
            tok[i] = now() - ti;
            busy += tok[i];
            if (side.p && !side_warm && round == 1) probe[i] = side_probe_run(&side, threads);
        }
        t_all = busy / n_decode;
    }
    side_result(res, tok, probe, n_decode, (double)weight_bytes(m));
    free(probe);
    /* the median token: on a shared machine the mean carries other jobs' time slices */
    qsort(tok, (size_t)n_decode, sizeof *tok, cmp_double);
    res->decode_med_tps = 1.0 / tok[n_decode / 2];
    free(tok);
    res->decode_tps = 1.0 / t_all;
    res->weight_bytes_per_token = (double)weight_bytes(m);
    res->huge_mb = anon_huge_mb();
    rc = 0;
done:
    bench_model_close(&b);
    return rc;
}

/* --ab-live NAME: one model, the run-time option NAME of the fast backend (cpu_fast_option) off
 * ("old", res[0]) and on ("new", res[1]) alternating between prefills and between decode tokens,
 * so that both see the same moments of a shared machine */
static int run_model_live(const char *dir, int threads, const char *opt, int n_prefill, int n_decode, model_result res[2],
                          strata_err *err) {
    bench_model b;
    double *tok[2] = {NULL, NULL}, *probe[2] = {NULL, NULL}, sum[2] = {0.0, 0.0};
    int rc = -1;
    if (bench_model_open(&b, dir, threads, -1, n_prefill, kv_cap(n_prefill + 2 * n_decode + 8), err)) return -1;
    backend *be = b.be;
    fwd_state *fs = b.fs;
    kv_cache *kv = b.kv;
    model *m = b.m;
    float *logits = b.logits;
    int32_t *ids = b.ids;
    /* NAME or NAME=VALUE: the option is 0 in "old" and 1 (or VALUE) in "new" */
    char name[64];
    snprintf(name, sizeof name, "%s", opt);
    char *eq = strchr(name, '=');
    int on = eq ? atoi(eq + 1) : 1;
    if (eq) *eq = '\0';
    opt = name;
    if (cpu_fast_option(be, opt, on) < 0) {
        err_set(err, "--ab-live %s: no such option (fuse, attn_split, affine, pf_next)", opt);
        goto done;
    }
    tok[0] = malloc(sizeof(double) * (size_t)n_decode);
    tok[1] = malloc(sizeof(double) * (size_t)n_decode);
    probe[0] = malloc(sizeof(double) * (size_t)n_decode);
    probe[1] = malloc(sizeof(double) * (size_t)n_decode);
    if (!tok[0] || !tok[1] || !probe[0] || !probe[1]) { err_set(err, "out of memory"); goto done; }
    if (fwd_run(fs, kv, ids, NULL, 1, NULL, logits, 0, err)) goto done; /* packs and page faults, untimed */
    for (int v = 0; v < 2; v++) res[v].prefill_tps = 0.0;
    for (int r = 0; r < 4; r++) { /* old new new old: the better of two each */
        int v = r == 1 || r == 2;
        cpu_fast_option(be, opt, v ? on : 0);
        kv_trim(kv, 0, err);
        double t0 = now();
        if (fwd_run(fs, kv, ids, NULL, n_prefill, NULL, logits, 0, err)) goto done;
        double tps = n_prefill / (now() - t0);
        if (tps > res[v].prefill_tps) res[v].prefill_tps = tps;
    }
    for (int round = 0; round < 2; round++) { /* the first untimed */
        kv_trim(kv, n_prefill, err);
        sum[0] = sum[1] = 0.0;
        for (int i = 0; i < 2 * n_decode; i++) {
            int v = (i ^ (i >> 1)) & 1; /* old new new old ...: neither always goes first */
            cpu_fast_option(be, opt, v ? on : 0);
            if (side.p && side_warm && round == 1 &&
                (probe[v][i / 2] = side_before(fs, kv, ids + i % n_prefill, logits, threads, err)) < 0)
                goto done;
            double ti = now();
            if (fwd_run(fs, kv, ids + i % n_prefill, NULL, 1, NULL, logits, 0, err)) goto done;
            tok[v][i / 2] = now() - ti;
            sum[v] += tok[v][i / 2];
            if (side.p && !side_warm && round == 1) probe[v][i / 2] = side_probe_run(&side, threads);
        }
    }
    for (int v = 0; v < 2; v++) {
        side_result(&res[v], tok[v], probe[v], n_decode, (double)weight_bytes(m));
        qsort(tok[v], (size_t)n_decode, sizeof *tok[v], cmp_double);
        res[v].decode_med_tps = 1.0 / tok[v][n_decode / 2];
        res[v].decode_tps = n_decode / sum[v];
        res[v].weight_bytes_per_token = (double)weight_bytes(m);
        res[v].huge_mb = anon_huge_mb();
    }
    rc = 0;
done:
    free(tok[0]), free(tok[1]), free(probe[0]), free(probe[1]);
    bench_model_close(&b);
    return rc;
}

/* --kernels: a comma-separated list of "model" or "model/matrix" prefixes; NULL selects all */
static int kernel_wanted(const char *list, const char *model, const char *matrix) {
    if (!list) return 1;
    char name[64];
    snprintf(name, sizeof name, "%s/%s", model, matrix);
    for (const char *p = list; *p;) {
        size_t len = strcspn(p, ",");
        if (len && !strncmp(name, p, len)) return 1;
        p += len + (p[len] == ',');
    }
    return 0;
}

int main(int argc, char **argv) {
    const char *ns_arg = NULL;
    int threads = 0, quick = 0, skip_models = 0, skip_kernels = 0, n_prefill = 512, n_decode = 32, ab = 0, rounds = 1;
    const char *json_path = NULL, *model_dir = NULL, *models = "qwen2.5-0.5b,llama-3.2-1b,qwen2.5-7b:4";
    const char *kernels = NULL, *ab_live = NULL;
    int side_mb = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--threads") && v) threads = atoi(argv[++i]);
        else if (!strcmp(a, "--json") && v) json_path = argv[++i];
        else if (!strcmp(a, "--model") && v) model_dir = argv[++i];
        else if (!strcmp(a, "--models") && v) models = argv[++i];
        else if (!strcmp(a, "--kernels") && v) kernels = argv[++i];
        else if (!strcmp(a, "--prefill") && v) n_prefill = atoi(argv[++i]);
        else if (!strcmp(a, "--decode") && v) n_decode = atoi(argv[++i]);
        else if (!strcmp(a, "--ns") && v) ns_arg = argv[++i];
        else if (!strcmp(a, "--rounds") && v) rounds = atoi(argv[++i]);
        else if (!strcmp(a, "--kv-cap") && v) kv_cap_min = atoi(argv[++i]);
        else if (!strcmp(a, "--ab")) ab = 1;
        else if (!strcmp(a, "--ab-var") && v) ab_var = argv[++i];
        else if (!strcmp(a, "--ab-live") && v) ab_live = argv[++i], ab = 1;
        else if (!strcmp(a, "--side-probe")) side_mb = 256;
        else if (!strcmp(a, "--side-warm")) side_mb = 256, side_warm = 1;
        else if (!strcmp(a, "--quick")) quick = 1;
        else if (!strcmp(a, "--skip-models")) skip_models = 1;
        else if (!strcmp(a, "--skip-kernels")) skip_kernels = 1;
        else {
            fprintf(stderr, "usage: bench_cpu [--threads N] [--json FILE] [--quick] [--skip-models] [--skip-kernels]\n"
                            "                 [--model DIR]"
                            "                 [--models SHAPE[:LAYERS],...] [--kernels MODEL[/MATRIX],...] [--prefill N] [--decode N] [--ns N,...]\n"
                            "                 [--ab] [--ab-var NAME] [--ab-live NAME[=VALUE]] [--rounds N] [--side-probe] [--side-warm]\n"
                            "                 [--kv-cap N]\n");
            return 2;
        }
    }
    if (n_prefill < 1 || n_decode < 1 || rounds < 1) { fprintf(stderr, "bench_cpu: --prefill, --decode and --rounds need >= 1\n"); return 2; }
    /* the variants every row runs in: the environment's choice, or old then new */
    static const char *const path_name[] = {"old", "new", "env"};
    int n_var = ab ? 2 : 1, var_repack[2] = {ab ? 0 : -1, 1};
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int all = threads > 0 ? threads : (int)(cores > 0 ? cores : 1);
    strata_err err = {{0}};
    backend *probe = backend_cpu_fast_new(1, &err);
    if (!probe) { fprintf(stderr, "bench_cpu: %s\n", err.msg); return 1; }
    const char *level = cpu_fast_level(probe);
    backend_destroy(&probe);
    json_t *root = json_object();
    json_object_set_new(root, "level", json_string(level));
    json_object_set_new(root, "threads", json_integer(all));
    printf("cpu backend level %s, %d threads\n\n", level, all);

    /* (1) */
    size_t bw_bytes = (size_t)(quick ? 256 : 1024) << 20;
    /* the reference is the best of 4 KB and huge pages, plain, prefetching and paired read: the
     * fraction of bandwidth a kernel reaches is then against the fastest read of this machine we know */
    double r1_4k[3], rn_4k[3], r1_hp[3], rn_hp[3];
    read_bw(1, bw_bytes, 0, r1_4k), read_bw(all, bw_bytes, 0, rn_4k);
    read_bw(1, bw_bytes, 1, r1_hp), read_bw(all, bw_bytes, 1, rn_hp);
    double bw1_4k = fmax(fmax(r1_4k[0], r1_4k[1]), r1_4k[2]), bwn_4k = fmax(fmax(rn_4k[0], rn_4k[1]), rn_4k[2]);
    double bw1_hp = fmax(fmax(r1_hp[0], r1_hp[1]), r1_hp[2]), bwn_hp = fmax(fmax(rn_hp[0], rn_hp[1]), rn_hp[2]);
    double bw1 = fmax(bw1_4k, bw1_hp), bwn = fmax(bwn_4k, bwn_hp);
    side_pf = rn_hp[2] > rn_hp[1] && rn_hp[2] > rn_hp[0] ? 2 : rn_hp[1] > rn_hp[0];
    printf("read bandwidth: %.1f GB/s (1 thread), %.1f GB/s (%d threads); 4 KB pages %.1f / %.1f, huge pages %.1f / %.1f;\n"
           "  plain read (huge pages) %.1f / %.1f, prefetching read %.1f / %.1f, paired read %.1f / %.1f\n\n",
           bw1, bwn, all, bw1_4k, bwn_4k, bw1_hp, bwn_hp, r1_hp[0], rn_hp[0], r1_hp[1], rn_hp[1], r1_hp[2], rn_hp[2]);
    json_t *jbw = json_object();
    json_object_set_new(jbw, "gbs_1", json_real(bw1));
    json_object_set_new(jbw, "gbs_all", json_real(bwn));
    json_object_set_new(jbw, "gbs_1_4k", json_real(bw1_4k));
    json_object_set_new(jbw, "gbs_all_4k", json_real(bwn_4k));
    json_object_set_new(jbw, "gbs_1_huge", json_real(bw1_hp));
    json_object_set_new(jbw, "gbs_all_huge", json_real(bwn_hp));
    json_object_set_new(jbw, "gbs_1_plain_huge", json_real(r1_hp[0]));
    json_object_set_new(jbw, "gbs_all_plain_huge", json_real(rn_hp[0]));
    json_object_set_new(jbw, "gbs_1_prefetch_huge", json_real(r1_hp[1]));
    json_object_set_new(jbw, "gbs_all_prefetch_huge", json_real(rn_hp[1]));
    json_object_set_new(jbw, "gbs_1_paired_huge", json_real(r1_hp[2]));
    json_object_set_new(jbw, "gbs_all_paired_huge", json_real(rn_hp[2]));
    json_object_set_new(root, "read_bandwidth", jbw);

    /* (2) */
    printf("%-13s %-8s %15s %5s %4s | %8s %6s %7s %5s | %8s %6s %7s %5s\n", "model", "matrix", "rows x cols", "n", "path",
           "1 thr", "GB/s", "GFLOP/s", "of bw", "all thr", "GB/s", "GFLOP/s", "of bw");
    json_t *jmm = json_array();
    backend *b1[2] = {NULL, NULL}, *bn[2] = {NULL, NULL};
    for (int v = 0; v < n_var; v++) {
        b1[v] = fast_backend(1, var_repack[v], &err);
        bn[v] = b1[v] ? fast_backend(all, var_repack[v], &err) : NULL;
        if (!b1[v] || !bn[v]) { fprintf(stderr, "bench_cpu: %s\n", err.msg); return 1; }
    }
    int ns[16] = {1, 64, 512}, n_ns = 3;
    if (ns_arg) { /* --ns 1,2,4,8: these n instead (n <= 8 read from DRAM, as decode and verify do) */
        char buf[128], *sv = NULL;
        snprintf(buf, sizeof buf, "%s", ns_arg);
        n_ns = 0;
        for (char *t = strtok_r(buf, ",", &sv); t && n_ns < 16; t = strtok_r(NULL, ",", &sv))
            if (atoi(t) > 0) ns[n_ns++] = atoi(t);
    }
    for (size_t s = 0; !skip_kernels && s < sizeof shapes / sizeof shapes[0]; s++)
        for (int mi = 0; mi < N_MATS; mi++) {
            const mat_shape *ms = &shapes[s].m[mi];
            if (!kernel_wanted(kernels, shapes[s].model, ms->name)) continue;
            for (int k = 0; k < n_ns; k++) {
                int n = ns[k];
                if (n > 1 && !ns_arg && (mi == 4 || (quick && n == 512))) continue; /* lm_head runs one row in use */
                if (ms->part[0] && n > 8) continue;
                if (n == 512 && s > 0 && !ns_arg) continue;
                double bytes = (double)q4_bytes(ms->rows, ms->cols, 64), flops = 2.0 * ms->rows * ms->cols * n;
                for (int v = 0; v < n_var; v++) {
                    double t1 = time_matmul(b1[v], ms, n, n == 1 ? 20 : 2);
                    double tn = time_matmul(bn[v], ms, n, n == 1 ? 20 : 2);
                    const char *path = path_name[var_repack[v] < 0 ? 2 : var_repack[v]];
                    const double gbs1 = bytes / t1 / 1e9, gbsn = bytes / tn / 1e9;
                    /* of bw: weight bytes a second over the probe of as many threads (the matvec target) */
                    printf("%-13s %-8s %7d x %-6d %5d %4s | %6.3fms %6.1f %7.1f %4.0f%% | %6.3fms %6.1f %7.1f %4.0f%%\n",
                           shapes[s].model, ms->name, ms->rows, ms->cols, n, path, t1 * 1e3, gbs1, flops / t1 / 1e9,
                           100.0 * gbs1 / bw1, tn * 1e3, gbsn, flops / tn / 1e9, 100.0 * gbsn / bwn);
                    json_t *e = json_object();
                    json_object_set_new(e, "path", json_string(path));
                    json_object_set_new(e, "model", json_string(shapes[s].model));
                    json_object_set_new(e, "matrix", json_string(ms->name));
                    json_object_set_new(e, "rows", json_integer(ms->rows));
                    json_object_set_new(e, "cols", json_integer(ms->cols));
                    json_object_set_new(e, "n", json_integer(n));
                    json_object_set_new(e, "ms_1", json_real(t1 * 1e3));
                    json_object_set_new(e, "gbs_1", json_real(gbs1));
                    json_object_set_new(e, "fraction_of_bandwidth_1", json_real(gbs1 / bw1));
                    json_object_set_new(e, "gflops_1", json_real(flops / t1 / 1e9));
                    json_object_set_new(e, "ms_all", json_real(tn * 1e3));
                    json_object_set_new(e, "gbs_all", json_real(gbsn));
                    json_object_set_new(e, "fraction_of_bandwidth_all", json_real(gbsn / bwn));
                    json_object_set_new(e, "gflops_all", json_real(flops / tn / 1e9));
                    json_array_append_new(jmm, e);
                }
            }
        }
    for (int v = 0; v < n_var; v++) backend_destroy(&b1[v]), backend_destroy(&bn[v]);
    json_object_set_new(root, "matmul", jmm);

    /* (3) */
    if (side_mb && side_probe_new(&side, (size_t)side_mb << 20)) { fprintf(stderr, "bench_cpu: out of memory\n"); return 1; }
    json_t *jmod = json_array();
    if (!skip_models) {
        printf("\n%-18s %4s %12s %12s %12s %12s %10s %10s %8s %8s\n", "model", "path", "prefill t/s", "decode t/s", "median t/s", "MB/token",
               "eff GB/s", "of bw", "pf/dec", "THP MB");
        if (side.p) printf("%-18s %4s %12s %12s %12s %12s %10s %10s %8s %8s %8s %10s\n", "", "", "", "", "", "", "", "", "", "",
                           "probe/tok", "tok/probe");
        char tmp[] = "/tmp/strata_bench_XXXXXX";
        int have_tmp = 0;
        char list[512];
        snprintf(list, sizeof list, "%s", model_dir ? "" : models);
        char *save = NULL;
        for (char *tok = model_dir ? (char *)model_dir : strtok_r(list, ",", &save); tok;
             tok = model_dir ? NULL : strtok_r(NULL, ",", &save)) {
            char dir[600], label[128];
            if (model_dir) {
                snprintf(dir, sizeof dir, "%s", model_dir);
                snprintf(label, sizeof label, "%s", model_dir);
            } else {
                if (!have_tmp && !mkdtemp(tmp)) { fprintf(stderr, "bench_cpu: mkdtemp failed\n"); return 1; }
                have_tmp = 1;
                char shape[64];
                int layers = 0;
                snprintf(shape, sizeof shape, "%s", tok);
                char *colon = strchr(shape, ':');
                if (colon) { *colon = '\0'; layers = atoi(colon + 1); }
                snprintf(dir, sizeof dir, "%s/%s", tmp, tok);
                snprintf(label, sizeof label, "%s%s", tok, layers ? " layers" : "");
                gen_opts o;
                gen_opts_default(&o);
                o.shape = shape;
                o.n_layers = layers;
                if (gen_model(dir, &o, &err)) { fprintf(stderr, "bench_cpu: generating %s: %s\n", tok, err.msg); return 1; }
            }
            for (int round = 0; round < rounds; round++) {
                model_result live[2] = {{0}}; /* --ab-live: both rows of one run, made at v == 0 */
                for (int v = 0; v < n_var; v++) {
                    model_result r = {0};
                    if (ab_live && v == 0 && run_model_live(dir, all, ab_live, n_prefill, n_decode, live, &err)) {
                        fprintf(stderr, "bench_cpu: %s: %s\n", label, err.msg);
                        return 1;
                    }
                    if (ab_live) r = live[v];
                    else if (run_model(dir, all, var_repack[v], n_prefill, n_decode, &r, &err)) {
                        fprintf(stderr, "bench_cpu: %s: %s\n", label, err.msg);
                        return 1;
                    }
                    double eff = r.weight_bytes_per_token * r.decode_tps / 1e9;
                    double eff_med = r.weight_bytes_per_token * r.decode_med_tps / 1e9;
                    const char *path = path_name[var_repack[v] < 0 ? 2 : var_repack[v]];
                    printf("%-18s %4s %12.1f %12.2f %12.2f %12.1f %10.1f %9.0f%% %7.1fx %8.0f", label, path, r.prefill_tps, r.decode_tps,
                           r.decode_med_tps, r.weight_bytes_per_token / 1e6, eff, 100.0 * eff / bwn, r.prefill_tps / r.decode_tps,
                           r.huge_mb);
                    if (side.p) printf(" %8.1f %9.0f%%", r.side_gbs, 100.0 * r.side_frac);
                    printf("\n");
                    json_t *e = json_object();
                    json_object_set_new(e, "model", json_string(label));
                    json_object_set_new(e, "path", json_string(path));
                    json_object_set_new(e, "round", json_integer(round + 1));
                    json_object_set_new(e, "prefill_tokens", json_integer(n_prefill));
                    json_object_set_new(e, "prefill_tps", json_real(r.prefill_tps));
                    if (r.prefill_runs[0] > 0) {
                        json_t *runs = json_array();
                        for (int k = 0; k < 3; k++) json_array_append_new(runs, json_real(r.prefill_runs[k]));
                        json_object_set_new(e, "prefill_tps_runs", runs);
                    }
                    json_object_set_new(e, "decode_tps", json_real(r.decode_tps));
                    json_object_set_new(e, "decode_median_tps", json_real(r.decode_med_tps));
                    json_object_set_new(e, "effective_gbs_median", json_real(eff_med));
                    json_object_set_new(e, "weight_bytes_per_token", json_real(r.weight_bytes_per_token));
                    json_object_set_new(e, "effective_gbs", json_real(eff));
                    json_object_set_new(e, "fraction_of_bandwidth", json_real(eff / bwn));
                    json_object_set_new(e, "prefill_over_decode", json_real(r.prefill_tps / r.decode_tps));
                    json_object_set_new(e, "anon_huge_mb", json_real(r.huge_mb));
                    if (side.p) {
                        json_object_set_new(e, "side_probe_gbs_median", json_real(r.side_gbs));
                        json_object_set_new(e, "fraction_of_side_probe_median", json_real(r.side_frac));
                    }
                    json_array_append_new(jmod, e);
                }
            }
            if (!model_dir) {
                char cmd[700];
                snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
                if (system(cmd) != 0) fprintf(stderr, "bench_cpu: could not remove %s\n", dir);
            }
        }
        if (have_tmp) rmdir(tmp);
    }
    json_object_set_new(root, "models", jmod);
    if (json_path && json_dump_file(root, json_path, JSON_INDENT(2))) {
        fprintf(stderr, "bench_cpu: cannot write %s\n", json_path);
        return 1;
    }
    json_decref(root);
    side_probe_free(&side);
    return 0;
}
