#include "kernels/cpu/cpu_prof.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define PROF_SLOTS 64
static struct {
    const char *op;
    int rows, cols, n1;
    double s;
    long calls;
} prof[PROF_SLOTS];
static int prof_on = -1;
static double skipped;

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cpu_prof_enabled(void) {
    if (prof_on < 0) prof_on = getenv("STRATA_CPU_PROFILE") && !strcmp(getenv("STRATA_CPU_PROFILE"), "1");
    return prof_on;
}

double cpu_prof_begin(void) { return cpu_prof_enabled() ? now() : 0.0; }

void cpu_prof_end(double t0, const char *op, int rows, int cols, int n) {
    if (!cpu_prof_enabled()) return;
    double dt = now() - t0;
    int n1 = n == 1;
    for (int i = 0; i < PROF_SLOTS; i++) {
        if (!prof[i].op) prof[i].op = op, prof[i].rows = rows, prof[i].cols = cols, prof[i].n1 = n1;
        if (prof[i].op == op && prof[i].rows == rows && prof[i].cols == cols && prof[i].n1 == n1) {
            prof[i].s += dt;
            prof[i].calls++;
            return;
        }
    }
}

void cpu_prof_skip(double t0) {
    if (cpu_prof_enabled()) skipped += now() - t0;
}

double cpu_prof_skipped(void) { return skipped; }

static void print(void) {
    for (int i = 0; i < PROF_SLOTS && prof[i].op; i++)
        fprintf(stderr, "prof %-10s %7d x %-6d %s %8ld calls %9.3f ms %8.2f us/call\n", prof[i].op, prof[i].rows, prof[i].cols,
                prof[i].n1 ? "n=1" : "n>1", prof[i].calls, prof[i].s * 1e3, prof[i].s * 1e6 / (double)prof[i].calls);
    memset(prof, 0, sizeof prof);
}

/* ---- the timed table ---- */

static const backend_ops *in; /* the one backend's table being profiled */

static void p_destroy(backend *be) {
    in->destroy(be);
    print();
}
static void p_embed(backend *be, const bk_weight *w, const int32_t *ids, int n, bk_buf *out) {
    in->sync(be);
    double t0 = cpu_prof_begin();
    in->embed(be, w, ids, n, out);
    cpu_prof_end(t0, "embed", 0, 0, n);
}
static void p_rmsnorm(backend *be, const bk_buf *x, const bk_vec *w, bk_buf *out, int n, int dim, float eps) {
    in->sync(be);
    double t0 = cpu_prof_begin();
    in->rmsnorm(be, x, w, out, n, dim, eps);
    cpu_prof_end(t0, "rmsnorm", 0, dim, n);
}
static void p_rope(backend *be, bk_buf *x, int n, int n_heads, int head_dim, int pos0, const bk_buf *inv_freq) {
    in->sync(be);
    double t0 = cpu_prof_begin();
    in->rope(be, x, n, n_heads, head_dim, pos0, inv_freq);
    cpu_prof_end(t0, "rope", n_heads, head_dim, n);
}
static void p_attention(backend *be, const bk_buf *q, const bk_buf *kc, const bk_buf *vc, bk_buf *out, int n, int pos0,
                        int n_heads, int n_kv_heads, int head_dim) {
    in->sync(be);
    double t0 = cpu_prof_begin();
    in->attention(be, q, kc, vc, out, n, pos0, n_heads, n_kv_heads, head_dim);
    cpu_prof_end(t0, "attention", n_heads, head_dim, n);
}
static void p_swiglu(backend *be, bk_buf *gate, const bk_buf *up, int n) {
    in->sync(be);
    double t0 = cpu_prof_begin();
    in->swiglu(be, gate, up, n);
    cpu_prof_end(t0, "swiglu", 0, n, n <= 65536);
}
static void p_add(backend *be, bk_buf *x, const bk_buf *y, int n) {
    in->sync(be);
    double t0 = cpu_prof_begin();
    in->add(be, x, y, n);
    cpu_prof_end(t0, "add", 0, 0, n <= 4096);
}
static void p_copy(backend *be, const bk_buf *src, size_t so, bk_buf *dst, size_t do_, size_t n) {
    in->sync(be);
    double t0 = cpu_prof_begin();
    in->copy(be, src, so, dst, do_, n);
    cpu_prof_end(t0, "copy", 0, 0, n <= 4096);
}
static void p_kv_store(backend *be, const bk_buf *src, bk_buf *cache, int row0, int n, int row_elems) {
    in->sync(be);
    double t0 = cpu_prof_begin();
    in->kv_store(be, src, cache, row0, n, row_elems);
    cpu_prof_end(t0, "kv_store", 0, row_elems, n);
}
static void p_read(backend *be, const bk_buf *src, size_t off, void *dst, size_t n) {
    in->sync(be);
    double t0 = cpu_prof_begin();
    in->buf_read(be, src, off, dst, n);
    cpu_prof_end(t0, "read", 0, 0, 1);
}

static backend_ops timed;

const backend_ops *cpu_prof_ops(const backend_ops *inner) {
    in = inner;
    timed = *inner;
    timed.destroy = p_destroy;
    timed.embed = p_embed;
    timed.rmsnorm = p_rmsnorm;
    timed.rope = p_rope;
    timed.attention = p_attention;
    timed.swiglu = p_swiglu;
    timed.add = p_add;
    timed.copy = p_copy;
    timed.buf_read = p_read;
    timed.kv_store = inner->kv_store ? p_kv_store : NULL;
    return &timed;
}
