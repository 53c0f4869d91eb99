/* Every op of the CUDA backend against the cpu reference, on random inputs (never zeros), at
 * several shapes including ragged ones: relative error max|a - b| / max|ref| < 1e-3.
 * Exits 77 (ctest SKIP) where no CUDA device is present. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_internal.h"
#include "tests/check.h"

#define TOL 1e-3

static backend *cu, *ref;
static uint64_t rng = 0x9e3779b97f4a7c15ull;

static uint32_t rnd_u32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float rnd_f(float lo, float hi) { return lo + (hi - lo) * (float)(rnd_u32() & 0xffffff) / 16777216.0f; }

static void *xmalloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
    return p;
}

static float *rnd_vec(size_t n, float lo, float hi) {
    float *v = xmalloc(n * sizeof *v);
    for (size_t i = 0; i < n; i++) v[i] = rnd_f(lo, hi);
    return v;
}

/* floats stored as dtype t (host bytes) */
static void *store_as(const float *v, size_t n, bk_dtype t) {
    void *p = xmalloc(n * bk_dtype_size(t));
    for (size_t i = 0; i < n; i++) {
        if (t == BK_F32) ((float *)p)[i] = v[i];
        else if (t == BK_F16) ((uint16_t *)p)[i] = bk_f32_to_f16(v[i]);
        else ((uint16_t *)p)[i] = bk_f32_to_bf16(v[i]);
    }
    return p;
}

/* an activation buffer on both backends with the same contents */
typedef struct { bk_buf *c, *r; size_t bytes; } pair;

static pair pair_new(const void *host, size_t bytes) {
    pair p = {cu->ops->buf_alloc(cu, bytes), ref->ops->buf_alloc(ref, bytes), bytes};
    if (!p.c || !p.r) { fprintf(stderr, "allocation of %zu bytes failed\n", bytes); exit(1); }
    if (host) {
        cu->ops->buf_write(cu, p.c, 0, host, bytes);
        ref->ops->buf_write(ref, p.r, 0, host, bytes);
    }
    return p;
}

static void pair_free(pair *p) {
    cu->ops->buf_free(cu, p->c);
    ref->ops->buf_free(ref, p->r);
}

/* max|a - b| / max|ref| over the first n floats of the pair */
static double pair_err(const pair *p, size_t n) {
    float *a = xmalloc(n * sizeof *a), *b = xmalloc(n * sizeof *b);
    cu->ops->buf_read(cu, p->c, 0, a, n * sizeof *a);
    ref->ops->buf_read(ref, p->r, 0, b, n * sizeof *b);
    double diff = 0, mag = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        if (!(d <= diff)) diff = d; /* NaN counts as the worst */
        if (fabs(b[i]) > mag) mag = fabs(b[i]);
    }
    free(a);
    free(b);
    return mag > 0 ? diff / mag : diff;
}

/* a weight wrapped on both backends from the same host bytes */
typedef struct {
    bk_weight c, r;
    void *hw, *hs, *hb, *hbias;
} wpair;

static bk_buf *wrap2(backend *be, const void *h, size_t n) {
    bk_buf *b = be->ops->buf_wrap(be, h, n);
    if (!b) { fprintf(stderr, "wrap of %zu bytes failed\n", n); exit(1); }
    return b;
}

static wpair wpair_new(int rows, int cols, int bits, int group, bk_dtype dt, int with_bias) {
    wpair p;
    memset(&p, 0, sizeof p);
    bk_weight w = {0};
    w.rows = rows;
    w.cols = cols;
    w.bits = bits;
    w.group_size = group;
    size_t wbytes;
    if (bits) {
        wbytes = (size_t)rows * cols * bits / 8;
        p.hw = xmalloc(wbytes);
        for (size_t i = 0; i < wbytes / 4; i++) ((uint32_t *)p.hw)[i] = rnd_u32();
        size_t ng = (size_t)rows * (cols / group);
        float *s = rnd_vec(ng, 0.002f, 0.03f), *b = rnd_vec(ng, -0.25f, 0.25f);
        p.hs = store_as(s, ng, dt);
        p.hb = store_as(b, ng, dt);
        free(s);
        free(b);
        w.sdtype = dt;
        w.wdtype = BK_U32;
    } else {
        float *v = rnd_vec((size_t)rows * cols, -0.2f, 0.2f);
        p.hw = store_as(v, (size_t)rows * cols, dt);
        free(v);
        wbytes = (size_t)rows * cols * bk_dtype_size(dt);
        w.wdtype = dt;
    }
    if (with_bias) {
        float *v = rnd_vec((size_t)rows, -1.0f, 1.0f);
        p.hbias = store_as(v, (size_t)rows, dt);
        free(v);
        w.bias.dtype = dt;
        w.bias.n = rows;
    }
    p.c = p.r = w;
    backend *bes[2] = {cu, ref};
    bk_weight *ws[2] = {&p.c, &p.r};
    for (int i = 0; i < 2; i++) {
        ws[i]->w = wrap2(bes[i], p.hw, wbytes);
        if (bits) {
            size_t sb = (size_t)rows * (cols / group) * bk_dtype_size(dt);
            ws[i]->scales = wrap2(bes[i], p.hs, sb);
            ws[i]->biases = wrap2(bes[i], p.hb, sb);
        }
        if (with_bias) ws[i]->bias.data = wrap2(bes[i], p.hbias, (size_t)rows * bk_dtype_size(dt));
    }
    return p;
}

static void wpair_free(wpair *p) {
    backend *bes[2] = {cu, ref};
    bk_weight *ws[2] = {&p->c, &p->r};
    for (int i = 0; i < 2; i++) {
        bes[i]->ops->buf_free(bes[i], ws[i]->w);
        if (ws[i]->scales) bes[i]->ops->buf_free(bes[i], ws[i]->scales);
        if (ws[i]->biases) bes[i]->ops->buf_free(bes[i], ws[i]->biases);
        if (ws[i]->bias.data) bes[i]->ops->buf_free(bes[i], ws[i]->bias.data);
    }
    free(p->hw);
    free(p->hs);
    free(p->hb);
    free(p->hbias);
}

static void test_matmul(int rows, int cols, int bits, int group, bk_dtype dt, int n, int with_bias) {
    wpair w = wpair_new(rows, cols, bits, group, dt, with_bias);
    float *x = rnd_vec((size_t)n * cols, -1.0f, 1.0f);
    pair px = pair_new(x, (size_t)n * cols * sizeof(float));
    float *poison = rnd_vec((size_t)n * rows, 1e6f, 2e6f); /* every output must be written */
    pair py = pair_new(poison, (size_t)n * rows * sizeof(float));
    cu->ops->matmul(cu, &w.c, px.c, py.c, n);
    ref->ops->matmul(ref, &w.r, px.r, py.r, n);
    double e = pair_err(&py, (size_t)n * rows);
    CHECK(e < TOL, "matmul %dx%d bits %d group %d %s n %d bias %d: rel err %.3g", rows, cols, bits, group,
          bk_dtype_name(dt), n, with_bias, e);
    pair_free(&px);
    pair_free(&py);
    free(x);
    free(poison);
    wpair_free(&w);
}

static void test_matmuls(void) {
    static const bk_dtype dts[] = {BK_F16, BK_BF16, BK_F32};
    static const int groups[] = {32, 64, 128};
    for (int bits = 4; bits <= 8; bits += 4)
        for (int gi = 0; gi < 3; gi++)
            for (int di = 0; di < 3; di++) {
                int g = groups[gi];
                test_matmul(1, g, bits, g, dts[di], 1, 0);
                test_matmul(33, 3 * g, bits, g, dts[di], 1, di == 0);
                test_matmul(257, 5 * g, bits, g, dts[di], 1, 0);
                test_matmul(45, 2 * g, bits, g, dts[di], 5, di == 1);
            }
    /* real shapes (qwen2.5-0.5b and the 7b's k/v projection), prefill chunks with a ragged tail */
    test_matmul(4864, 896, 4, 64, BK_BF16, 1, 0);
    test_matmul(512, 3584, 4, 64, BK_F16, 1, 1);
    test_matmul(896, 4864, 4, 64, BK_BF16, 1, 0);
    test_matmul(130, 896, 4, 64, BK_BF16, 64, 1);
    test_matmul(70, 256, 8, 64, BK_F16, 70, 0);
    test_matmul(200, 512, 4, 32, BK_F16, 129, 0);
    /* a group that is not a power of two chunks (the warp matvec divides instead of shifting) */
    test_matmul(21, 288, 8, 48, BK_F16, 1, 0);
    test_matmul(19, 288, 4, 96, BK_BF16, 1, 1);
    /* layouts only the tiled kernel takes: group 16, 2-bit, ragged dense columns */
    test_matmul(37, 48, 4, 16, BK_F16, 1, 0);
    test_matmul(37, 96, 2, 32, BK_BF16, 1, 1);
    test_matmul(37, 96, 2, 32, BK_BF16, 3, 0);
    /* dense weights */
    for (int di = 0; di < 3; di++) {
        test_matmul(65, 37, 0, 0, dts[di], 1, 1);
        test_matmul(65, 64, 0, 0, dts[di], 1, 0);
        test_matmul(300, 200, 0, 0, dts[di], 1, 1);
        test_matmul(31, 200, 0, 0, dts[di], 9, 0);
    }
    /* every matvec kernel and launch shape the benchmark may pick */
    static const int rs[] = {1, 2, 4, 8}, gs[] = {0, 1, 3};
    for (int v = 1; v <= 3; v++)
        for (int ri = 0; ri < 4; ri++)
            for (int gi = 0; gi < 3; gi++) {
                CHECK(cuda_matvec_tune(v, rs[ri], gs[gi]) == 0, "tune %d %d %d", v, rs[ri], gs[gi]);
                test_matmul(37, 2048, 4, 64, BK_BF16, 1, 1);
                test_matmul(11, 1024, 8, 32, BK_F16, 1, 0);
                test_matmul(13, 520, 0, 0, BK_BF16, 1, 0);
                test_matmul(67, 3584, 4, 64, BK_F16, 1, 0);
                test_matmul(301, 4096, 4, 128, BK_F32, 1, 0);
                test_matmul(9, 18944, 4, 64, BK_BF16, 1, 0);
                test_matmul(5, 224, 8, 32, BK_BF16, 1, 1);
            }
    /* rows wider than one block of the x-stationary kernel take the column-split matvec */
    test_matmul(5, 33024, 4, 64, BK_F16, 1, 1);
    test_matmul(3, 16512, 8, 32, BK_BF16, 1, 0);
    CHECK(cuda_matvec_tune(0, 3, 1) == -1 && cuda_matvec_tune(0, 16, 0) == -1 && cuda_matvec_tune(4, 0, 0) == -1,
          "rows per block 3 or 16 and variant 4 are refused");
    cuda_matvec_tune(0, 0, 0);
}

/* ---- deferred matvecs: the launches that share x, and their add / swiglu epilogues ---- */

static pair rnd_pair(size_t n, float lo, float hi) {
    float *v = rnd_vec(n, lo, hi);
    pair p = pair_new(v, n * sizeof(float));
    free(v);
    return p;
}

/* q, k, v style: three matvecs on one x, read back after all three */
static void test_fused_qkv(int rq, int rk, int cols, int bits, int group, bk_dtype dt, int bias) {
    wpair wq = wpair_new(rq, cols, bits, group, dt, bias), wk = wpair_new(rk, cols, bits, group, dt, bias),
          wv = wpair_new(rk, cols, bits, group, dt, 0);
    pair x = rnd_pair((size_t)cols, -1, 1), q = rnd_pair((size_t)rq, 1e6f, 2e6f), k = rnd_pair((size_t)rk, 1e6f, 2e6f),
         v = rnd_pair((size_t)rk, 1e6f, 2e6f);
    cu->ops->matmul(cu, &wq.c, x.c, q.c, 1);
    cu->ops->matmul(cu, &wk.c, x.c, k.c, 1);
    cu->ops->matmul(cu, &wv.c, x.c, v.c, 1);
    ref->ops->matmul(ref, &wq.r, x.r, q.r, 1);
    ref->ops->matmul(ref, &wk.r, x.r, k.r, 1);
    ref->ops->matmul(ref, &wv.r, x.r, v.r, 1);
    double e = fmax(pair_err(&q, (size_t)rq), fmax(pair_err(&k, (size_t)rk), pair_err(&v, (size_t)rk)));
    CHECK(e < TOL, "fused q/k/v %d+%d+%d x %d bits %d group %d %s bias %d: rel err %.3g", rq, rk, rk, cols, bits,
          group, bk_dtype_name(dt), bias, e);
    pair_free(&x);
    pair_free(&q);
    pair_free(&k);
    pair_free(&v);
    wpair_free(&wq);
    wpair_free(&wk);
    wpair_free(&wv);
}

/* gate and up on one x, then swiglu (gate first or up first), both outputs compared */
static void test_fused_swiglu(int rows, int cols, int bits, int group, bk_dtype dt, int up_first) {
    wpair wg = wpair_new(rows, cols, bits, group, dt, 0), wu = wpair_new(rows, cols, bits, group, dt, 0);
    pair x = rnd_pair((size_t)cols, -1, 1), g = rnd_pair((size_t)rows, 1e6f, 2e6f), u = rnd_pair((size_t)rows, 1e6f, 2e6f);
    backend *bes[2] = {cu, ref};
    for (int i = 0; i < 2; i++) {
        backend *be = bes[i];
        bk_weight *pg = i ? &wg.r : &wg.c, *pu = i ? &wu.r : &wu.c;
        bk_buf *xb = i ? x.r : x.c, *gb = i ? g.r : g.c, *ub = i ? u.r : u.c;
        if (up_first) be->ops->matmul(be, pu, xb, ub, 1);
        be->ops->matmul(be, pg, xb, gb, 1);
        if (!up_first) be->ops->matmul(be, pu, xb, ub, 1);
        be->ops->swiglu(be, gb, ub, rows);
    }
    double e = fmax(pair_err(&g, (size_t)rows), pair_err(&u, (size_t)rows));
    CHECK(e < TOL, "fused gate/up + swiglu %dx%d bits %d group %d %s up first %d: rel err %.3g", rows, cols, bits,
          group, bk_dtype_name(dt), up_first, e);
    pair_free(&x);
    pair_free(&g);
    pair_free(&u);
    wpair_free(&wg);
    wpair_free(&wu);
}

/* o_proj + residual: y = W x, then r += y; both compared */
static void test_fused_add(int rows, int cols, int bits, int group, bk_dtype dt) {
    wpair w = wpair_new(rows, cols, bits, group, dt, 1);
    pair x = rnd_pair((size_t)cols, -1, 1), y = rnd_pair((size_t)rows, 1e6f, 2e6f), r = rnd_pair((size_t)rows, -3, 3);
    cu->ops->matmul(cu, &w.c, x.c, y.c, 1);
    cu->ops->add(cu, r.c, y.c, rows);
    ref->ops->matmul(ref, &w.r, x.r, y.r, 1);
    ref->ops->add(ref, r.r, y.r, rows);
    double e = fmax(pair_err(&y, (size_t)rows), pair_err(&r, (size_t)rows));
    CHECK(e < TOL, "fused matvec + add %dx%d bits %d group %d %s: rel err %.3g", rows, cols, bits, group,
          bk_dtype_name(dt), e);
    pair_free(&x);
    pair_free(&y);
    pair_free(&r);
    wpair_free(&w);
}

/* sequences that must not fuse: a chain (the second reads the first's output), two writes of
 * one buffer (the last wins), an add of something else, a swiglu over other buffers */
static void test_unfusable(void) {
    int n = 96;
    wpair a = wpair_new(n, n, 4, 32, BK_F16, 0), b = wpair_new(n, n, 4, 32, BK_F16, 1);
    pair x = rnd_pair((size_t)n, -1, 1), y = rnd_pair((size_t)n, 1e6f, 2e6f), z = rnd_pair((size_t)n, 1e6f, 2e6f),
         t = rnd_pair((size_t)n, -1, 1);
    backend *bes[2] = {cu, ref};
    for (int i = 0; i < 2; i++) {
        backend *be = bes[i];
        bk_weight *wa = i ? &a.r : &a.c, *wb = i ? &b.r : &b.c;
        bk_buf *xb = i ? x.r : x.c, *yb = i ? y.r : y.c, *zb = i ? z.r : z.c, *tb = i ? t.r : t.c;
        be->ops->matmul(be, wa, xb, yb, 1); /* chain: z = B (A x) */
        be->ops->matmul(be, wb, yb, zb, 1);
        be->ops->add(be, tb, xb, n);        /* not the deferred output */
        be->ops->matmul(be, wa, zb, yb, 1); /* y written twice: B z wins */
        be->ops->matmul(be, wb, zb, yb, 1);
        be->ops->swiglu(be, tb, zb, n); /* a swiglu over two buffers nothing deferred wrote */
        be->ops->matmul(be, wa, tb, xb, 1);
        be->ops->matmul(be, wb, tb, zb, 1);
        be->ops->swiglu(be, xb, tb, n); /* one of two deferred outputs only */
        be->ops->add(be, tb, zb, n);    /* two deferred: no epilogue */
    }
    double e = fmax(fmax(pair_err(&x, (size_t)n), pair_err(&y, (size_t)n)), fmax(pair_err(&z, (size_t)n), pair_err(&t, (size_t)n)));
    CHECK(e < TOL, "unfusable matvec sequences keep their order: rel err %.3g", e);
    pair_free(&x);
    pair_free(&y);
    pair_free(&z);
    pair_free(&t);
    wpair_free(&a);
    wpair_free(&b);
}

/* a few decode steps of a small decoder layer, op for op as common/forward.c calls them:
 * every fusion, the PDL chain through norms, rope, cache copies and attention */
static void test_decode_layer(int bits, bk_dtype dt, int hid, int ffn) {
    const int nh = 4, nkv = 2, hd = 64, steps = 4, cap = 8;
    const int qd = nh * hd, kvd = nkv * hd;
    wpair wq = wpair_new(qd, hid, bits, 64, dt, 1), wk = wpair_new(kvd, hid, bits, 64, dt, 1),
          wv = wpair_new(kvd, hid, bits, 64, dt, 1), wo = wpair_new(hid, qd, bits, 64, dt, 0),
          wg = wpair_new(ffn, hid, bits, 64, dt, 0), wu = wpair_new(ffn, hid, bits, 64, dt, 0),
          wd = wpair_new(hid, ffn, bits, 32, dt, 0);
    float *nw = rnd_vec((size_t)hid, 0.5f, 1.5f), *f = xmalloc(sizeof *f * (size_t)(hd / 2));
    for (int j = 0; j < hd / 2; j++) f[j] = powf(10000.0f, -2.0f * j / hd);
    pair x = rnd_pair((size_t)hid, -1, 1), xb = rnd_pair((size_t)(ffn > qd ? ffn : qd), 0, 1),
         xb2 = rnd_pair((size_t)hid, 0, 1), q = rnd_pair((size_t)qd, 0, 1), k = rnd_pair((size_t)kvd, 0, 1),
         v = rnd_pair((size_t)kvd, 0, 1), hb = rnd_pair((size_t)ffn, 0, 1), hb2 = rnd_pair((size_t)ffn, 0, 1),
         kc = rnd_pair((size_t)cap * kvd, 0, 1), vc = rnd_pair((size_t)cap * kvd, 0, 1),
         inv = pair_new(f, sizeof *f * (size_t)(hd / 2)), nwp = pair_new(nw, sizeof *nw * (size_t)hid);
    backend *bes[2] = {cu, ref};
    for (int i = 0; i < 2; i++) {
        backend *be = bes[i];
        const backend_ops *op = be->ops;
#define B_(p) (i ? (p).r : (p).c)
#define W_(p) (i ? &(p).r : &(p).c)
        bk_vec norm = {B_(nwp), BK_F32, hid};
        for (int pos = 0; pos < steps; pos++) {
            op->rmsnorm(be, B_(x), &norm, B_(xb), 1, hid, 1e-6f);
            op->matmul(be, W_(wq), B_(xb), B_(q), 1);
            op->matmul(be, W_(wk), B_(xb), B_(k), 1);
            op->matmul(be, W_(wv), B_(xb), B_(v), 1);
            op->rope(be, B_(q), 1, nh, hd, pos, B_(inv));
            op->rope(be, B_(k), 1, nkv, hd, pos, B_(inv));
            op->copy(be, B_(k), 0, B_(kc), (size_t)pos * kvd * 4, (size_t)kvd * 4);
            op->copy(be, B_(v), 0, B_(vc), (size_t)pos * kvd * 4, (size_t)kvd * 4);
            op->attention(be, B_(q), B_(kc), B_(vc), B_(xb), 1, pos, nh, nkv, hd);
            op->matmul(be, W_(wo), B_(xb), B_(xb2), 1);
            op->add(be, B_(x), B_(xb2), hid);
            op->rmsnorm(be, B_(x), &norm, B_(xb), 1, hid, 1e-6f);
            op->matmul(be, W_(wg), B_(xb), B_(hb), 1);
            op->matmul(be, W_(wu), B_(xb), B_(hb2), 1);
            op->swiglu(be, B_(hb), B_(hb2), ffn);
            op->matmul(be, W_(wd), B_(hb), B_(xb2), 1);
            op->add(be, B_(x), B_(xb2), hid);
        }
#undef B_
#undef W_
    }
    double e = pair_err(&x, (size_t)hid);
    CHECK(e < TOL, "decode layer %d/%d, %d steps, bits %d %s (fuse %d, pdl %d, bulk %d): rel err %.3g", hid, ffn, steps,
          bits, bk_dtype_name(dt), cuda_feature_fuse(), cuda_feature_pdl(), cuda_feature_bulk(), e);
    pair *ps[] = {&x, &xb, &xb2, &q, &k, &v, &hb, &hb2, &kc, &vc, &inv, &nwp};
    for (size_t j = 0; j < sizeof ps / sizeof ps[0]; j++) pair_free(ps[j]);
    wpair *ws[] = {&wq, &wk, &wv, &wo, &wg, &wu, &wd};
    for (size_t j = 0; j < sizeof ws / sizeof ws[0]; j++) wpair_free(ws[j]);
    free(nw);
    free(f);
}

/* rope/copy sequences around the fused rope step: the decode pattern with a second layer's
 * cache offset, a v append that overlaps the k append (the last copy wins), a rope applied twice
 * to one buffer, and a k copy from an offset (none of these but the first may fuse) */
static void test_rope_sequences(void) {
    const int nh = 4, nkv = 2, hd = 32, qd = nh * hd, kvd = nkv * hd, cap = 6;
    float *f = xmalloc(sizeof *f * (size_t)(hd / 2));
    for (int j = 0; j < hd / 2; j++) f[j] = powf(10000.0f, -2.0f * j / hd);
    pair q = rnd_pair((size_t)qd, -1, 1), k = rnd_pair((size_t)kvd, -1, 1), v = rnd_pair((size_t)kvd, -1, 1),
         kc = rnd_pair((size_t)cap * kvd, -1, 1), vc = rnd_pair((size_t)cap * kvd, -1, 1),
         inv = pair_new(f, sizeof *f * (size_t)(hd / 2));
    size_t row = (size_t)kvd * 4;
    backend *bes[2] = {cu, ref};
    for (int i = 0; i < 2; i++) {
        backend *be = bes[i];
        const backend_ops *op = be->ops;
        bk_buf *Q = i ? q.r : q.c, *K = i ? k.r : k.c, *V = i ? v.r : v.c, *KC = i ? kc.r : kc.c, *VC = i ? vc.r : vc.c,
               *I = i ? inv.r : inv.c;
        op->rope(be, Q, 1, nh, hd, 3, I); /* the decode pattern */
        op->rope(be, K, 1, nkv, hd, 3, I);
        op->copy(be, K, 0, KC, 3 * row, row);
        op->copy(be, V, 0, VC, 3 * row, row);
        op->rope(be, Q, 1, nh, hd, 4, I); /* v lands on the k just appended */
        op->rope(be, K, 1, nkv, hd, 4, I);
        op->copy(be, K, 0, KC, 4 * row, row);
        op->copy(be, V, 0, KC, 4 * row, row);
        op->rope(be, Q, 1, nh, hd, 5, I); /* one buffer twice, then k and a partial copy */
        op->rope(be, Q, 1, nh, hd, 5, I);
        op->rope(be, K, 1, nkv, hd, 5, I);
        op->copy(be, K, 16, KC, 5 * row, row - 16);
        op->rope(be, Q, 2, nh / 2, hd, 1, I); /* two tokens, no k */
        op->copy(be, Q, 0, VC, 0, 2 * row);
    }
    double e = fmax(fmax(pair_err(&q, (size_t)qd), pair_err(&k, (size_t)kvd)),
                    fmax(pair_err(&kc, (size_t)cap * kvd), pair_err(&vc, (size_t)cap * kvd)));
    CHECK(e < TOL, "rope/copy sequences (fuse %d, pdl %d): rel err %.3g", cuda_feature_fuse(), cuda_feature_pdl(), e);
    pair *ps[] = {&q, &k, &v, &kc, &vc, &inv};
    for (size_t j = 0; j < sizeof ps / sizeof ps[0]; j++) pair_free(ps[j]);
    free(f);
}

/* a one-token rmsnorm followed by matvecs on its output (the group computes the norm in its
 * launch), in place (the lm_head pattern), followed by other ops, by a matvec the warp kernel
 * does not take, by one that overwrites the norm's input, and on a prefix of its output */
static void test_norm_sequences(int bits, bk_dtype dt) {
    const int d = 256, r1 = 320, r2 = 64;
    wpair wa = wpair_new(r1, d, bits, 64, dt, 1), wb = wpair_new(r2, d, bits, 64, dt, 0),
          w16 = wpair_new(r2, d, bits, 16, dt, 0), wh = wpair_new(r2, d / 2, bits, 64, dt, 0),
          wsq = wpair_new(d, d, bits, 64, dt, 1);
    float *nw = rnd_vec((size_t)d, 0.5f, 1.5f);
    pair x = rnd_pair((size_t)d, -2, 2), xb = rnd_pair((size_t)d, 0, 1), y1 = rnd_pair((size_t)r1, 0, 1),
         y2 = rnd_pair((size_t)r2, 0, 1), t = rnd_pair((size_t)d, -1, 1), nwp = pair_new(nw, sizeof *nw * (size_t)d);
    backend *bes[2] = {cu, ref};
    for (int i = 0; i < 2; i++) {
        backend *be = bes[i];
        const backend_ops *op = be->ops;
#define B_(p) (i ? (p).r : (p).c)
#define W_(p) (i ? &(p).r : &(p).c)
        bk_vec norm = {B_(nwp), BK_F32, d};
        op->rmsnorm(be, B_(x), &norm, B_(xb), 1, d, 1e-5f); /* q/k pattern */
        op->matmul(be, W_(wa), B_(xb), B_(y1), 1);
        op->matmul(be, W_(wb), B_(xb), B_(y2), 1);
        op->add(be, B_(x), B_(y1), d);
        op->copy(be, B_(x), 0, B_(xb), 0, sizeof(float) * (size_t)d); /* lm_head pattern */
        op->rmsnorm(be, B_(xb), &norm, B_(xb), 1, d, 1e-5f);
        op->matmul(be, W_(wb), B_(xb), B_(y2), 1);
        op->add(be, B_(y1), B_(y2), r2);
        op->rmsnorm(be, B_(y1), &norm, B_(xb), 1, d, 1e-5f); /* no matvec follows */
        op->add(be, B_(t), B_(xb), d);
        op->rmsnorm(be, B_(t), &norm, B_(xb), 1, d, 1e-5f); /* a matvec of group 16 */
        op->matmul(be, W_(w16), B_(xb), B_(y2), 1);
        op->rmsnorm(be, B_(t), &norm, B_(xb), 1, d, 1e-5f); /* the matvec writes the norm's input */
        op->matmul(be, W_(wsq), B_(xb), B_(t), 1);
        op->rmsnorm(be, B_(x), &norm, B_(xb), 1, d, 1e-5f); /* a prefix of the output */
        op->matmul(be, W_(wh), B_(xb), B_(y2), 1);
#undef B_
#undef W_
    }
    double e = fmax(fmax(pair_err(&x, (size_t)d), pair_err(&xb, (size_t)d)),
                    fmax(fmax(pair_err(&y1, (size_t)r1), pair_err(&y2, (size_t)r2)), pair_err(&t, (size_t)d)));
    CHECK(e < TOL, "rmsnorm + matvec sequences, bits %d %s (fuse %d, pdl %d): rel err %.3g", bits, bk_dtype_name(dt),
          cuda_feature_fuse(), cuda_feature_pdl(), e);
    pair *ps[] = {&x, &xb, &y1, &y2, &t, &nwp};
    for (size_t j = 0; j < sizeof ps / sizeof ps[0]; j++) pair_free(ps[j]);
    wpair *ws[] = {&wa, &wb, &w16, &wh, &wsq};
    for (size_t j = 0; j < sizeof ws / sizeof ws[0]; j++) wpair_free(ws[j]);
    free(nw);
}

static void test_fusion(void) {
    static const int rs[] = {0, 1, 2, 4};
    for (int fuse = 1; fuse >= 0; fuse--)
        for (int pdl = 1; pdl >= 0; pdl--) {
            cuda_features_set(fuse, pdl);
            for (int ri = 0; ri < 4; ri++) {
                CHECK(cuda_matvec_tune(0, rs[ri], 0) == 0, "tune rows %d", rs[ri]);
                test_fused_qkv(256, 64, 512, 4, 64, BK_BF16, 1);
                test_fused_qkv(33, 17, 96, 4, 32, BK_F16, 0);
                test_fused_qkv(45, 7, 256, 8, 64, BK_F32, 1);
                test_fused_add(37, 3584, 4, 64, BK_BF16);
                test_fused_add(130, 640, 8, 32, BK_F16);
            }
            cuda_matvec_tune(0, 0, 0);
            /* the default launch: the bulk kernel where it takes the shape, then the warp kernel
             * at its default rows a warp (STRATA_CUDA_BULK=0) */
            for (int bulk = 1; bulk >= 0; bulk--) {
                cuda_feature_bulk_set(bulk);
                test_fused_qkv(3584, 512, 3584, 4, 64, BK_BF16, 1);
                test_fused_qkv(1000, 130, 1024, 4, 64, BK_F16, 1); /* ragged tiles */
                test_fused_qkv(77, 33, 512, 8, 32, BK_F32, 1);
                test_fused_swiglu(301, 256, 4, 64, BK_BF16, 0);
                test_fused_swiglu(1000, 896, 4, 64, BK_F16, 1);
                test_fused_swiglu(77, 160, 8, 32, BK_BF16, 0);
                test_fused_swiglu(1001, 1024, 4, 64, BK_BF16, 0);
                test_fused_swiglu(300, 8192, 4, 64, BK_BF16, 1); /* a row pair over 4 warps */
                test_fused_add(3584, 18944, 4, 64, BK_BF16);
                test_fused_add(999, 4096, 4, 64, BK_BF16);
                test_fused_add(250, 2048, 8, 64, BK_F16);
                test_fused_add(130, 5120, 4, 64, BK_BF16); /* bulk with x read from L1 */
                test_fused_qkv(300, 40, 5120, 4, 64, BK_BF16, 1);
                test_unfusable();
                test_rope_sequences();
                test_norm_sequences(4, BK_BF16);
                test_norm_sequences(8, BK_F16);
                test_decode_layer(4, BK_BF16, 256, 640);
                test_decode_layer(8, BK_F16, 256, 640);
                test_decode_layer(4, BK_BF16, 512, 1024); /* every matvec can take the bulk kernel */
                test_decode_layer(8, BK_F16, 512, 1024);
            }
            cuda_feature_bulk_set(-1);
        }
    cuda_features_set(1, 1);
    /* round 2's thread-a-chunk pack kernels (STRATA_CUDA_PACK=0); the rest of this test runs
     * the default (round 3's lane-group pack and norm+pack) */
    cuda_feature_pack_set(0);
    test_fused_qkv(256, 64, 512, 4, 64, BK_BF16, 1);
    test_fused_qkv(33, 17, 96, 4, 32, BK_F16, 0);
    test_fused_qkv(45, 7, 256, 8, 64, BK_F32, 1);
    test_fused_swiglu(1000, 896, 4, 64, BK_F16, 1);
    test_fused_add(3584, 18944, 4, 64, BK_BF16);
    test_norm_sequences(4, BK_BF16);
    test_norm_sequences(8, BK_F16);
    test_decode_layer(4, BK_BF16, 256, 640);
    test_decode_layer(8, BK_F16, 256, 640);
    test_decode_layer(4, BK_BF16, 512, 1024);
    cuda_feature_pack_set(1);
}

/* embed with the reference on the same ids; the ids array is overwritten right after the cuda
 * call to catch a backend that reads host ids late */
static void test_embed_cmp(int rows, int cols, int bits, int group, bk_dtype dt, int n) {
    wpair w = wpair_new(rows, cols, bits, group, dt, 0);
    int32_t *ids = xmalloc(sizeof *ids * (size_t)n), *copy = xmalloc(sizeof *ids * (size_t)n);
    for (int i = 0; i < n; i++) ids[i] = (int32_t)(rnd_u32() % (uint32_t)rows);
    if (n > 2) ids[n - 1] = ids[0];
    memcpy(copy, ids, sizeof *ids * (size_t)n);
    float *poison = rnd_vec((size_t)n * cols, 1e6f, 2e6f);
    pair out = pair_new(poison, (size_t)n * cols * sizeof(float));
    cu->ops->embed(cu, &w.c, ids, n, out.c);
    for (int i = 0; i < n; i++) ids[i] = (ids[i] + 1) % rows;
    ref->ops->embed(ref, &w.r, copy, n, out.r);
    double e = pair_err(&out, (size_t)n * cols);
    CHECK(e < TOL, "embed %dx%d bits %d group %d %s n %d: rel err %.3g", rows, cols, bits, group, bk_dtype_name(dt),
          n, e);
    pair_free(&out);
    free(poison);
    free(ids);
    free(copy);
    wpair_free(&w);
}

static void test_rmsnorm(int n, int dim, bk_dtype dt, int in_place) {
    float *x = rnd_vec((size_t)n * dim, -2.0f, 2.0f), *wv = rnd_vec((size_t)dim, 0.5f, 1.5f);
    void *wh = store_as(wv, (size_t)dim, dt);
    pair px = pair_new(x, (size_t)n * dim * sizeof(float));
    pair po = in_place ? px : pair_new(x, (size_t)n * dim * sizeof(float));
    bk_vec wc = {wrap2(cu, wh, (size_t)dim * bk_dtype_size(dt)), dt, dim};
    bk_vec wr = {wrap2(ref, wh, (size_t)dim * bk_dtype_size(dt)), dt, dim};
    cu->ops->rmsnorm(cu, px.c, &wc, po.c, n, dim, 1e-6f);
    ref->ops->rmsnorm(ref, px.r, &wr, po.r, n, dim, 1e-6f);
    double e = pair_err(&po, (size_t)n * dim);
    CHECK(e < TOL, "rmsnorm n %d dim %d %s in place %d: rel err %.3g", n, dim, bk_dtype_name(dt), in_place, e);
    cu->ops->buf_free(cu, wc.data);
    ref->ops->buf_free(ref, wr.data);
    pair_free(&px);
    if (!in_place) pair_free(&po);
    free(x);
    free(wv);
    free(wh);
}

static void test_rope(int n, int heads, int hd, int pos0) {
    float *x = rnd_vec((size_t)n * heads * hd, -1.0f, 1.0f), *f = xmalloc(sizeof *f * (size_t)(hd / 2));
    for (int j = 0; j < hd / 2; j++) f[j] = powf(1000000.0f, -2.0f * j / hd);
    pair px = pair_new(x, (size_t)n * heads * hd * sizeof(float));
    pair pf = pair_new(f, sizeof *f * (size_t)(hd / 2));
    cu->ops->rope(cu, px.c, n, heads, hd, pos0, pf.c);
    ref->ops->rope(ref, px.r, n, heads, hd, pos0, pf.r);
    double e = pair_err(&px, (size_t)n * heads * hd);
    CHECK(e < TOL, "rope n %d heads %d head_dim %d pos0 %d: rel err %.3g", n, heads, hd, pos0, e);
    pair_free(&px);
    pair_free(&pf);
    free(x);
    free(f);
}

static void test_attention(int n, int pos0, int nh, int nkv, int hd) {
    int len = pos0 + n, cap = len + 3;
    size_t qn = (size_t)n * nh * hd, kvn = (size_t)cap * nkv * hd;
    float *q = rnd_vec(qn, -1.5f, 1.5f), *k = rnd_vec(kvn, -1.5f, 1.5f), *v = rnd_vec(kvn, -1.0f, 1.0f);
    float *poison = rnd_vec(qn, 1e6f, 2e6f);
    pair pq = pair_new(q, qn * 4), pk = pair_new(k, kvn * 4), pv = pair_new(v, kvn * 4), po = pair_new(poison, qn * 4);
    cu->ops->attention(cu, pq.c, pk.c, pv.c, po.c, n, pos0, nh, nkv, hd);
    ref->ops->attention(ref, pq.r, pk.r, pv.r, po.r, n, pos0, nh, nkv, hd);
    double e = pair_err(&po, qn);
    CHECK(e < TOL, "attention n %d pos0 %d heads %d/%d head_dim %d: rel err %.3g", n, pos0, nh, nkv, hd, e);
    pair_free(&pq);
    pair_free(&pk);
    pair_free(&pv);
    pair_free(&po);
    free(q);
    free(k);
    free(v);
    free(poison);
}

static void test_elementwise(int n) {
    float *g = rnd_vec((size_t)n, -6.0f, 6.0f), *u = rnd_vec((size_t)n, -2.0f, 2.0f);
    pair pg = pair_new(g, (size_t)n * 4), pu = pair_new(u, (size_t)n * 4);
    cu->ops->swiglu(cu, pg.c, pu.c, n);
    ref->ops->swiglu(ref, pg.r, pu.r, n);
    double e = pair_err(&pg, (size_t)n);
    CHECK(e < TOL, "swiglu n %d: rel err %.3g", n, e);
    cu->ops->add(cu, pg.c, pu.c, n);
    ref->ops->add(ref, pg.r, pu.r, n);
    e = pair_err(&pg, (size_t)n);
    CHECK(e < TOL, "add n %d: rel err %.3g", n, e);
    pair_free(&pg);
    pair_free(&pu);
    free(g);
    free(u);
}

static void test_memory(void) {
    /* buf_alloc is zeroed */
    bk_buf *z = cu->ops->buf_alloc(cu, 4099);
    unsigned char *h = xmalloc(4099);
    memset(h, 0xab, 4099);
    cu->ops->buf_read(cu, z, 0, h, 4099);
    int zero = 1;
    for (int i = 0; i < 4099; i++) zero &= h[i] == 0;
    CHECK(zero, "buf_alloc returns zeroed memory");
    /* write at an offset, copy between buffers at offsets, read back */
    float src[100], got[100];
    for (int i = 0; i < 100; i++) src[i] = rnd_f(-1, 1);
    bk_buf *a = cu->ops->buf_alloc(cu, 400), *b = cu->ops->buf_alloc(cu, 800);
    cu->ops->buf_write(cu, a, 40, src, 360);
    cu->ops->copy(cu, a, 40, b, 400, 360);
    cu->ops->buf_read(cu, b, 400, got, 360);
    CHECK(!memcmp(src, got, 360), "buf_write, copy and buf_read at offsets round-trip");
    cu->ops->buf_read(cu, b, 396, got, 4);
    CHECK(got[0] == 0.0f, "copy writes only its range");
    /* small copies go through a kernel: 16-byte aligned spans and odd ones, the rest untouched */
    unsigned char hb[1000], hg[1000];
    for (int i = 0; i < 1000; i++) hb[i] = (unsigned char)(rnd_u32() | 1);
    bk_buf *c1 = cu->ops->buf_alloc(cu, 1000), *c2 = cu->ops->buf_alloc(cu, 1000);
    cu->ops->buf_write(cu, c1, 0, hb, 1000);
    cu->ops->copy(cu, c1, 16, c2, 32, 512);
    cu->ops->copy(cu, c1, 3, c2, 601, 333);
    cu->ops->buf_read(cu, c2, 0, hg, 1000);
    int ok = 1;
    for (int i = 0; i < 1000; i++) {
        int want = i >= 32 && i < 544 ? hb[i - 16] : i >= 601 && i < 934 ? hb[i - 598] : 0;
        ok &= hg[i] == want;
    }
    CHECK(ok, "copies of aligned and odd spans land exactly");
    cu->ops->buf_free(cu, c1);
    cu->ops->buf_free(cu, c2);
    cu->ops->sync(cu);
    cu->ops->buf_free(cu, a);
    cu->ops->buf_free(cu, b);
    cu->ops->buf_free(cu, z);
    free(h);
    CHECK(!strcmp(cu->ops->name, "cuda"), "backend name is cuda");
}

int main(void) {
    strata_err err = {{0}};
    cu = backend_new("cuda", 0, &err);
    if (!cu) {
        printf("SKIP: %s\n0 passed, 0 failed\n", err.msg);
        return 77;
    }
    ref = backend_cpu_ref_new();
    test_memory();
    test_matmuls();
    test_fusion();
    test_embed_cmp(100, 896, 4, 64, BK_BF16, 1);
    test_embed_cmp(100, 896, 4, 64, BK_F16, 9);
    test_embed_cmp(50, 256, 8, 32, BK_BF16, 4);
    test_embed_cmp(50, 37, 0, 0, BK_F16, 3);
    test_embed_cmp(50, 40, 0, 0, BK_F32, 300);
    static const int dims[] = {1, 7, 896, 3584, 5000};
    for (int i = 0; i < 5; i++) {
        test_rmsnorm(1, dims[i], BK_F32, 0);
        test_rmsnorm(3, dims[i], BK_BF16, 1);
        test_rmsnorm(2, dims[i], BK_F16, 0);
    }
    test_rope(1, 14, 64, 0);
    test_rope(5, 4, 128, 37);
    test_rope(3, 3, 6, 1000);
    test_rope(64, 2, 128, 4000);
    test_attention(1, 0, 4, 2, 64);
    test_attention(1, 700, 14, 2, 64);
    test_attention(7, 5, 8, 8, 128);
    test_attention(16, 0, 6, 1, 24);
    test_attention(3, 1030, 4, 4, 256);
    test_attention(2, 3, 2, 1, 32);
    test_attention(64, 64, 28, 4, 128);
    /* one token over long contexts: split over positions (flash-decoding) by default, 2 to 64
     * blocks a head, more positions a block past 64 * CUDA_ATT_SPLIT_PER; then one block a head */
    for (int split = 1; split >= 0; split--) {
        cuda_feature_attn_split_set(split);
        test_attention(1, 63, 28, 4, 128);
        test_attention(1, 64, 28, 4, 128);
        test_attention(1, 263, 28, 4, 128);
        test_attention(1, 300, 14, 2, 64);
        test_attention(1, 517, 3, 1, 24);
        test_attention(1, 2100, 4, 2, 128);
        test_attention(1, 5000, 8, 8, 256);
        test_attention(1, 1000, 32, 8, 128);
    }
    cuda_feature_attn_split_set(1);
    test_elementwise(1);
    test_elementwise(1000);
    test_elementwise(100003);
    backend_destroy(&cu);
    backend_destroy(&ref);
    return TEST_END();
}
