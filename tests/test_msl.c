/* Every MSL kernel, run by the MSL-on-CPU harness through the Metal op layer (metal-sim), against
 * the cpu reference on random inputs (never zeros) at several shapes, ragged ones included:
 * rows and K that are not multiples of the tiles, tails of grids, odd head counts.
 *
 * Metric per output: max|out - ref| / max|ref|. matmul < 1e-3 (the contract for kernels that
 * reorder f32 sums), float ops < 1e-5, embed and copy exact. Each case also checks that the
 * harness saw no divergent barrier or simd op and no argument mismatch.
 *
 *   test_msl [--only OP] [-v] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "op_inputs.h"
#include "kernels/metal/metal_sim.h"

static backend *be, *ref;
static const char *only;
static int verbose;


static int wanted(const char *op) { return !only || !strcmp(only, op); }

/* the same bytes in both backends */
typedef struct {
    bk_buf *b, *r;
} pair;

static pair upload(const void *host, size_t bytes) {
    pair p = {be->ops->buf_alloc(be, bytes), ref->ops->buf_alloc(ref, bytes)};
    if (!p.b || !p.r) { fprintf(stderr, "out of memory\n"); exit(1); }
    be->ops->buf_write(be, p.b, 0, host, bytes);
    ref->ops->buf_write(ref, p.r, 0, host, bytes);
    return p;
}

/* weights arrive wrapped from the mmap, at whatever alignment the file gives them */
static pair wrap(const void *host, size_t bytes) {
    pair p = {be->ops->buf_wrap(be, host, bytes), ref->ops->buf_wrap(ref, host, bytes)};
    if (!p.b || !p.r) { fprintf(stderr, "out of memory\n"); exit(1); }
    return p;
}

static void drop(pair *p) {
    if (p->b) be->ops->buf_free(be, p->b);
    if (p->r) ref->ops->buf_free(ref, p->r);
    p->b = p->r = NULL;
}

/* reads both sides of a float result and compares; returns the error */
static double compare(const pair *p, size_t n_floats, const char *what, double tol) {
    float *a = malloc(n_floats * 4), *r = malloc(n_floats * 4);
    be->ops->buf_read(be, p->b, 0, a, n_floats * 4);
    ref->ops->buf_read(ref, p->r, 0, r, n_floats * 4);
    double e = rel_err(a, r, n_floats);
    const char *herr = backend_metal_sim_error(be);
    CHECK(!herr, "%s: harness: %s", what, herr);
    if (tol == 0.0) CHECK(memcmp(a, r, n_floats * 4) == 0, "%s: not bit-exact (rel err %.3g)", what, e);
    else CHECK(e < tol, "%s: rel err %.3g >= %.g", what, e, tol);
    if (verbose) printf("  %-60s rel err %.3g\n", what, e);
    free(a);
    free(r);
    return e;
}

static void store_floats(void *dst, const float *src, size_t n, bk_dtype t) {
    for (size_t i = 0; i < n; i++) {
        if (t == BK_F32) ((float *)dst)[i] = src[i];
        else if (t == BK_F16) ((uint16_t *)dst)[i] = bk_f32_to_f16(src[i]);
        else ((uint16_t *)dst)[i] = bk_f32_to_bf16(src[i]);
    }
}

/* ---- a random weight held in host memory at a chosen misalignment ---- */
typedef struct {
    char *mem[4];      /* host blocks (weights, scales, biases, bias) */
    pair w, s, b, ob;
    bk_weight wb, wr;  /* the two backends' views */
} weight;

static void *host_block(char **keep, size_t bytes, size_t misalign) {
    *keep = malloc(bytes + 64);
    return *keep + 16 + misalign;
}

static void weight_make(weight *W, int rows, int cols, int bits, int group, bk_dtype fdt, bk_dtype bias_dt,
                        int has_bias, size_t misalign) {
    memset(W, 0, sizeof *W);
    size_t fsz = bk_dtype_size(fdt);
    if (bits) {
        size_t words = (size_t)rows * cols * bits / 32, groups = (size_t)rows * (cols / group);
        uint32_t *q = host_block(&W->mem[0], words * 4, misalign);
        for (size_t i = 0; i < words; i++) q[i] = (uint32_t)next();
        float *tmp = malloc(groups * 4);
        void *sc = host_block(&W->mem[1], groups * fsz, 0), *bi = host_block(&W->mem[2], groups * fsz, misalign && fsz == 2 ? 2 : 0);
        fill(tmp, groups, 0.05f);
        for (size_t i = 0; i < groups; i++) tmp[i] = fabsf(tmp[i]) + 0.01f;
        store_floats(sc, tmp, groups, fdt);
        fill(tmp, groups, 0.3f);
        store_floats(bi, tmp, groups, fdt);
        free(tmp);
        W->w = wrap(q, words * 4);
        W->s = wrap(sc, groups * fsz);
        W->b = wrap(bi, groups * fsz);
    } else {
        size_t n = (size_t)rows * cols;
        float *tmp = malloc(n * 4);
        fill(tmp, n, 0.5f);
        void *wd = host_block(&W->mem[0], n * fsz, misalign);
        store_floats(wd, tmp, n, fdt);
        free(tmp);
        W->w = wrap(wd, n * fsz);
    }
    W->wb = (bk_weight){.w = W->w.b, .scales = W->s.b, .biases = W->b.b, .wdtype = bits ? BK_U32 : fdt,
                        .sdtype = fdt, .rows = rows, .cols = cols, .bits = bits, .group_size = bits ? group : 0};
    W->wr = W->wb;
    W->wr.w = W->w.r;
    W->wr.scales = W->s.r;
    W->wr.biases = W->b.r;
    if (has_bias) {
        float *tmp = malloc((size_t)rows * 4);
        fill(tmp, rows, 1.0f);
        void *bd = host_block(&W->mem[3], (size_t)rows * 4, 0);
        store_floats(bd, tmp, rows, bias_dt);
        free(tmp);
        W->ob = wrap(bd, (size_t)rows * bk_dtype_size(bias_dt));
        W->wb.bias = (bk_vec){.data = W->ob.b, .dtype = bias_dt, .n = rows};
        W->wr.bias = (bk_vec){.data = W->ob.r, .dtype = bias_dt, .n = rows};
    }
}

static void weight_free(weight *W) {
    drop(&W->w), drop(&W->s), drop(&W->b), drop(&W->ob);
    for (int i = 0; i < 4; i++) free(W->mem[i]);
}

/* ---- matmul ---- */

static void one_matmul(int rows, int cols, int n, int bits, int group, bk_dtype fdt, int has_bias,
                       bk_dtype bias_dt, size_t misalign) {
    weight W;
    weight_make(&W, rows, cols, bits, group, fdt, bias_dt, has_bias, misalign);
    float *x = malloc((size_t)n * cols * 4);
    fill(x, (size_t)n * cols, 1.0f);
    pair xp = upload(x, (size_t)n * cols * 4);
    float *junk = malloc((size_t)n * rows * 4);
    fill(junk, (size_t)n * rows, 9.0f); /* a kernel that skips an output leaves junk behind */
    pair yp = upload(junk, (size_t)n * rows * 4);
    be->ops->matmul(be, &W.wb, xp.b, yp.b, n);
    ref->ops->matmul(ref, &W.wr, xp.r, yp.r, n);
    char what[160];
    snprintf(what, sizeof what, "matmul %s%d g%d %s rows %d cols %d n %d%s%s misalign %zu",
             bits ? "q" : "dense ", bits ? bits : 0, group, bk_dtype_name(fdt), rows, cols, n,
             has_bias ? " bias " : "", has_bias ? bk_dtype_name(bias_dt) : "", misalign);
    compare(&yp, (size_t)n * rows, what, 1e-3);
    drop(&xp), drop(&yp);
    weight_free(&W);
    free(x);
    free(junk);
}

static void test_matmul(void) {
    static const bk_dtype fdts[] = {BK_F16, BK_BF16, BK_F32};
    /* decode (n < 8: qmv) and prefill (qmm) at ragged rows, K below, at and above one
     * simdgroup pass (1024 values), K not a multiple of the 32-wide qmm tile rows */
    static const struct { int rows, cols; } shapes[] = {{1, 64}, {13, 96}, {70, 1088}, {37, 320}};
    static const int ns[] = {1, 3, 9, 40};
    for (int bi = 0; bi < 2; bi++)
        for (int fi = 0; fi < 3; fi++)
            for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
                for (size_t ni = 0; ni < sizeof ns / sizeof ns[0]; ni++) {
                    int bits = bi ? 8 : 4, cols = shapes[si].cols;
                    int group = cols % 128 == 0 ? 128 : cols % 64 == 0 ? 64 : 32;
                    if ((si + ni + fi) % 3 == 1 && cols % 64 == 0) group = 64;
                    if ((si + ni) % 4 == 3) group = 32;
                    int has_bias = (si + ni) % 2;
                    one_matmul(shapes[si].rows, cols, ns[ni], bits, group, fdts[fi], has_bias,
                               fdts[(fi + ni) % 3], 0);
                }
    /* weights at 4, 8 and 12 bytes past 16-byte alignment (re-homed for the 16-byte loads), with
     * their f16/bf16 biases at 2 past 4-byte alignment (copied) */
    one_matmul(19, 128, 1, 4, 64, BK_F16, 1, BK_F32, 4);
    one_matmul(19, 128, 12, 4, 64, BK_BF16, 0, BK_F32, 4);
    one_matmul(19, 128, 2, 8, 32, BK_F16, 0, BK_F32, 8);
    one_matmul(21, 256, 30, 8, 64, BK_F32, 1, BK_F16, 12);
    /* a big one: several qmm tiles each way, 4 K-passes of qmv */
    one_matmul(200, 4096, 1, 4, 64, BK_F16, 0, BK_F32, 0);
    one_matmul(75, 512, 70, 4, 64, BK_BF16, 1, BK_BF16, 0);
    /* dense weights of every dtype, any K */
    static const struct { int rows, cols; } dshapes[] = {{1, 1}, {9, 37}, {33, 100}, {8, 1030}};
    for (int fi = 0; fi < 3; fi++)
        for (size_t si = 0; si < sizeof dshapes / sizeof dshapes[0]; si++)
            one_matmul(dshapes[si].rows, dshapes[si].cols, 1 + (int)si * 3, 0, 0, fdts[fi], (int)si % 2, BK_F16, 0);
}

/* ---- embed ---- */

static void test_embed(void) {
    static const struct { int rows, cols, bits, group; bk_dtype t; } cs[] = {
        {10, 64, 4, 64, BK_F16},   {50, 96, 4, 32, BK_BF16}, {7, 2304, 4, 128, BK_F32},
        {30, 128, 8, 64, BK_BF16}, {9, 160, 8, 32, BK_F16},  {20, 40, 0, 0, BK_F16},
        {5, 3, 0, 0, BK_F32},      {12, 300, 0, 0, BK_BF16},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        weight W;
        weight_make(&W, cs[i].rows, cs[i].cols, cs[i].bits, cs[i].group, cs[i].t, BK_F32, 0, 0);
        int n = 1 + (int)i * 3;
        int32_t *ids = malloc((size_t)n * 4), *keep = malloc((size_t)n * 4);
        for (int t = 0; t < n; t++) ids[t] = (int32_t)(next() % (uint64_t)cs[i].rows);
        ids[n - 1] = cs[i].rows - 1;
        memcpy(keep, ids, (size_t)n * 4);
        size_t nf = (size_t)n * cs[i].cols;
        float *junk = malloc(nf * 4);
        fill(junk, nf, 9.0f);
        pair o = upload(junk, nf * 4);
        be->ops->embed(be, &W.wb, ids, n, o.b);
        memset(ids, 0xff, (size_t)n * 4); /* host ids are consumed before embed returns */
        ref->ops->embed(ref, &W.wr, keep, n, o.r);
        char what[120];
        snprintf(what, sizeof what, "embed %s%d g%d %s rows %d cols %d n %d", cs[i].bits ? "q" : "dense ",
                 cs[i].bits, cs[i].group, bk_dtype_name(cs[i].t), cs[i].rows, cs[i].cols, n);
        compare(&o, nf, what, 0.0);
        drop(&o);
        free(ids), free(keep), free(junk);
        weight_free(&W);
    }
}

/* ---- rmsnorm ---- */

static void test_rmsnorm(void) {
    static const int dims[] = {1, 7, 96, 300, 1000};
    static const bk_dtype wts[] = {BK_F32, BK_F16, BK_BF16};
    for (size_t di = 0; di < sizeof dims / sizeof dims[0]; di++)
        for (int wi = 0; wi < 3; wi++) {
            int dim = dims[di], n = 1 + (int)(di + wi) % 4, in_place = (di + wi) % 2;
            float *x = malloc((size_t)n * dim * 4), *w = malloc((size_t)dim * 4);
            fill(x, (size_t)n * dim, 2.0f);
            fill(w, dim, 1.5f);
            char *wmem;
            void *wh = host_block(&wmem, (size_t)dim * 4, 0);
            store_floats(wh, w, dim, wts[wi]);
            pair wp = wrap(wh, (size_t)dim * bk_dtype_size(wts[wi]));
            bk_vec vb = {wp.b, wts[wi], dim}, vr = {wp.r, wts[wi], dim};
            pair xp = upload(x, (size_t)n * dim * 4);
            pair op = in_place ? xp : upload(x, (size_t)n * dim * 4);
            be->ops->rmsnorm(be, xp.b, &vb, op.b, n, dim, 1e-6f);
            ref->ops->rmsnorm(ref, xp.r, &vr, op.r, n, dim, 1e-6f);
            char what[100];
            snprintf(what, sizeof what, "rmsnorm dim %d n %d w %s%s", dim, n, bk_dtype_name(wts[wi]), in_place ? " in place" : "");
            compare(&op, (size_t)n * dim, what, 1e-5);
            if (!in_place) drop(&op);
            drop(&xp), drop(&wp);
            free(x), free(w), free(wmem);
        }
}

/* ---- rope ---- */

static void test_rope(void) {
    static const struct { int n, heads, hd, pos0; } cs[] = {
        {1, 1, 2, 0}, {3, 2, 64, 5}, {1, 14, 64, 30000}, {5, 3, 128, 17}, {2, 7, 96, 1000}, {4, 1, 6, 3},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        int half = cs[i].hd / 2;
        size_t nx = (size_t)cs[i].n * cs[i].heads * cs[i].hd;
        float *x = malloc(nx * 4), *f = malloc((size_t)half * 4);
        fill(x, nx, 1.0f);
        for (int j = 0; j < half; j++) f[j] = powf(10000.0f, -2.0f * (float)j / (float)cs[i].hd);
        pair xp = upload(x, nx * 4), fp = upload(f, (size_t)half * 4);
        be->ops->rope(be, xp.b, cs[i].n, cs[i].heads, cs[i].hd, cs[i].pos0, fp.b);
        ref->ops->rope(ref, xp.r, cs[i].n, cs[i].heads, cs[i].hd, cs[i].pos0, fp.r);
        char what[100];
        snprintf(what, sizeof what, "rope n %d heads %d head_dim %d pos0 %d", cs[i].n, cs[i].heads, cs[i].hd, cs[i].pos0);
        compare(&xp, nx, what, 1e-5);
        drop(&xp), drop(&fp);
        free(x), free(f);
    }
}

/* ---- attention ---- */

static void test_attention(void) {
    static const struct { int n, pos0, heads, kv, hd; } cs[] = {
        {1, 0, 2, 2, 32},   {1, 40, 4, 2, 64},  {5, 0, 4, 1, 64},   {17, 3, 6, 2, 80},
        {3, 100, 2, 1, 128}, {9, 9, 1, 1, 256},  {2, 5, 3, 3, 24},  {2, 4, 2, 1, 264},
    };
    for (size_t i = 0; i < sizeof cs / sizeof cs[0]; i++) {
        int n = cs[i].n, len = cs[i].pos0 + n, qd = cs[i].heads * cs[i].hd, kvd = cs[i].kv * cs[i].hd;
        float *q = malloc((size_t)n * qd * 4), *k = malloc((size_t)(len + 2) * kvd * 4), *v = malloc((size_t)(len + 2) * kvd * 4);
        fill(q, (size_t)n * qd, 1.0f);
        fill(k, (size_t)(len + 2) * kvd, 1.0f); /* two rows past the end: never read */
        fill(v, (size_t)(len + 2) * kvd, 1.0f);
        pair qp = upload(q, (size_t)n * qd * 4), kp = upload(k, (size_t)(len + 2) * kvd * 4);
        pair vp = upload(v, (size_t)(len + 2) * kvd * 4), op = upload(q, (size_t)n * qd * 4);
        be->ops->attention(be, qp.b, kp.b, vp.b, op.b, n, cs[i].pos0, cs[i].heads, cs[i].kv, cs[i].hd);
        ref->ops->attention(ref, qp.r, kp.r, vp.r, op.r, n, cs[i].pos0, cs[i].heads, cs[i].kv, cs[i].hd);
        char what[100];
        snprintf(what, sizeof what, "attention n %d pos0 %d heads %d/%d head_dim %d%s", n, cs[i].pos0, cs[i].heads,
                 cs[i].kv, cs[i].hd, cs[i].hd > 256 ? " (host fallback)" : "");
        compare(&op, (size_t)n * qd, what, 1e-5);
        drop(&qp), drop(&kp), drop(&vp), drop(&op);
        free(q), free(k), free(v);
    }
}

/* ---- swiglu, add, copy ---- */

static void test_elementwise(void) {
    static const int ns[] = {1, 255, 257, 1000};
    for (size_t i = 0; i < sizeof ns / sizeof ns[0]; i++) {
        int n = ns[i];
        float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4);
        fill(a, n, 6.0f);
        fill(b, n, 2.0f);
        char what[80];
        if (wanted("swiglu")) {
            pair ap = upload(a, (size_t)n * 4), bp = upload(b, (size_t)n * 4);
            be->ops->swiglu(be, ap.b, bp.b, n);
            ref->ops->swiglu(ref, ap.r, bp.r, n);
            snprintf(what, sizeof what, "swiglu n %d", n);
            compare(&ap, n, what, 1e-6);
            drop(&ap), drop(&bp);
        }
        if (wanted("add")) {
            pair ap = upload(a, (size_t)n * 4), bp = upload(b, (size_t)n * 4);
            be->ops->add(be, ap.b, bp.b, n);
            ref->ops->add(ref, ap.r, bp.r, n);
            snprintf(what, sizeof what, "add n %d", n);
            compare(&ap, n, what, 0.0);
            drop(&ap), drop(&bp);
        }
        if (wanted("copy")) {
            /* copy rows into the middle of a cache, then run an op on the result: the copy must
             * land before the op reads (ordering inside one command buffer) */
            float *c3 = malloc((size_t)n * 4 * 3);
            fill(c3, (size_t)n * 3, 1.0f);
            pair ap = upload(a, (size_t)n * 4), cp = upload(c3, (size_t)n * 4 * 3);
            free(c3);
            be->ops->copy(be, ap.b, 4, cp.b, (size_t)n * 4 + 8, (size_t)(n - 1) * 4);
            ref->ops->copy(ref, ap.r, 4, cp.r, (size_t)n * 4 + 8, (size_t)(n - 1) * 4);
            be->ops->add(be, cp.b, cp.b, 3 * n);
            ref->ops->add(ref, cp.r, cp.r, 3 * n);
            snprintf(what, sizeof what, "copy + add n %d", n);
            compare(&cp, (size_t)3 * n, what, 0.0);
            drop(&ap), drop(&cp);
        }
        free(a), free(b);
    }
}

/* A write after queued work: the queued ops must see the old contents (the backend waits
 * before touching shared memory from the host). */
static void test_ordering(void) {
    if (!wanted("ordering")) return;
    int n = 300;
    float *a = malloc((size_t)n * 4), *b = malloc((size_t)n * 4), *c = malloc((size_t)n * 4);
    fill(a, n, 1.0f), fill(b, n, 1.0f), fill(c, n, 1.0f);
    pair ap = upload(a, (size_t)n * 4), bp = upload(b, (size_t)n * 4);
    be->ops->add(be, ap.b, bp.b, n);
    ref->ops->add(ref, ap.r, bp.r, n);
    be->ops->buf_write(be, bp.b, 0, c, (size_t)n * 4);
    ref->ops->buf_write(ref, bp.r, 0, c, (size_t)n * 4);
    be->ops->add(be, ap.b, bp.b, n);
    ref->ops->add(ref, ap.r, bp.r, n);
    compare(&ap, n, "add, host write, add", 0.0);
    drop(&ap), drop(&bp);
    free(a), free(b), free(c);
}

int main(int argc, char **argv) {
    op_rng = 0x2545f4914f6cdd1dull; /* this test's own stream */
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--only") && i + 1 < argc) only = argv[++i];
        else if (!strcmp(argv[i], "-v")) verbose = 1;
        else { fprintf(stderr, "usage: test_msl [--only OP] [-v]\n"); return 2; }
    }
    strata_err err = {{0}};
    be = backend_metal_sim_new(&err);
    ref = backend_cpu_ref_new();
    if (!be || !ref) {
        fprintf(stderr, "cannot create backends: %s\n", err.msg);
        return 1;
    }
    if (wanted("matmul")) test_matmul();
    if (wanted("embed")) test_embed();
    if (wanted("rmsnorm")) test_rmsnorm();
    if (wanted("rope")) test_rope();
    if (wanted("attention")) test_attention();
    test_elementwise();
    test_ordering();
    printf("kernel dispatches run by the harness: %lu\n", backend_metal_sim_dispatches(be));
    backend_destroy(&be);
    backend_destroy(&ref);
    return TEST_END();
}
