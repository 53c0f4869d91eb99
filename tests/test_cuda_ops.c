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
    for (int v = 1; v <= 2; v++)
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
    CHECK(cuda_matvec_tune(0, 3, 1) == -1 && cuda_matvec_tune(0, 16, 0) == -1 && cuda_matvec_tune(3, 0, 0) == -1,
          "rows per block 3 or 16 and variant 3 are refused");
    cuda_matvec_tune(0, 0, 0);
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
    test_elementwise(1);
    test_elementwise(1000);
    test_elementwise(100003);
    backend_destroy(&cu);
    backend_destroy(&ref);
    return TEST_END();
}
