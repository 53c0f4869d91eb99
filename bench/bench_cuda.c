/* bench_cuda: the CUDA backend's matvec against the card's copy bandwidth.
 *
 *   bench_cuda [--json FILE] [--sweep] [--iters N]
 *
 * Measures device-to-device cudaMemcpy bandwidth (bytes read + written), then the q4 matvec
 * (MLX affine, group 64, bf16 scales) at the qwen2.5-7b and llama-3.1-8b shapes through the
 * backend's own matmul op. Each shape rotates over enough copies of its weight to exceed L2
 * (50 MB on an H100), so every call reads HBM. Times are CUDA events around many back-to-back
 * calls ("stream") and around the replay of those calls captured in a CUDA graph ("graph",
 * which hides the launch gaps, as a captured decode step would). The default launch is timed
 * with and without programmatic dependent launch; --sweep also times every kernel (round 1's
 * register and cp.async pipelines, round 2's warp kernel) at 1, 2 and 4 rows a batch (a warp).
 * Then one decoder layer's matvecs as common/forward.c issues them (q, k, v; o + residual add;
 * gate, up + swiglu; down + residual add), over enough layer copies to exceed L2, with the
 * fusion of matvecs that share x and PDL each on and off. Prints tables; --json writes the
 * numbers. After each shape, ceiling rows: "read-only", the same bytes, rotated the same way,
 * through a kernel that only streams them with the matvec's load instruction (the ceiling of any
 * kernel that must read those bytes at that size after waiting for the launch before it, ramp
 * included); "read-early", the same kernel reading while the launch before it drains (as the
 * bulk matvec requests its first tiles); "bulk-copy", the bulk matvec's copies without its sums.
 * "warp-dflt" is the warp kernel (round 3) where the default is the bulk kernel (round 5). */
#include <cuda_runtime_api.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/backend.h"
#include "kernels/cuda/cuda_internal.h"

typedef struct {
    const char *model, *name;
    int rows, cols;
} shape;

static const shape shapes[] = {
    {"qwen2.5-7b", "q/o_proj", 3584, 3584},      {"qwen2.5-7b", "k/v_proj", 512, 3584},
    {"qwen2.5-7b", "gate/up_proj", 18944, 3584}, {"qwen2.5-7b", "down_proj", 3584, 18944},
    {"qwen2.5-7b", "lm_head", 152064, 3584},     {"llama-3.1-8b", "q/o_proj", 4096, 4096},
    {"llama-3.1-8b", "k/v_proj", 1024, 4096},    {"llama-3.1-8b", "gate/up_proj", 14336, 4096},
    {"llama-3.1-8b", "down_proj", 4096, 14336},  {"llama-3.1-8b", "lm_head", 128256, 4096},
};
#define N_SHAPES (int)(sizeof shapes / sizeof shapes[0])
/* the launch configurations timed at each shape: kernel (0: the default), rows, PDL */
typedef struct {
    const char *name;
    int variant, rows, pdl, bulk;
} config;
/* the first three always; the rest with --sweep ("warp" with rows set: never the bulk kernel) */
static const config configs[] = {
    {"dflt", 0, 0, 1, 1},   {"dflt-nopdl", 0, 0, 0, 1}, {"warp-dflt", 0, 0, 1, 0}, {"regs", 1, 1, 1, 1},
    {"regs", 1, 2, 1, 1},   {"regs", 1, 4, 1, 1},       {"async", 2, 1, 1, 1},     {"async", 2, 2, 1, 1},
    {"async", 2, 4, 1, 1},  {"warp", 3, 1, 1, 1},       {"warp", 3, 2, 1, 1},      {"warp", 3, 4, 1, 1},
};
#define N_CONFIGS (int)(sizeof configs / sizeof configs[0])

#define GROUP 64

static uint64_t rng = 0x243f6a8885a308d3ull;
static uint32_t rnd_u32(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return (uint32_t)(rng >> 16);
}
static float rnd_f(float lo, float hi) { return lo + (hi - lo) * (float)(rnd_u32() & 0xffffff) / 16777216.0f; }

static int cu_ok(cudaError_t e, const char *what) {
    if (e == cudaSuccess) return 1;
    fprintf(stderr, "bench_cuda: %s: %s\n", what, cudaGetErrorString(e));
    return 0;
}

/* device-to-device copy bandwidth, GB/s counting bytes read and written */
static double copy_bandwidth(cudaStream_t s) {
    size_t bytes = (size_t)1 << 30;
    void *a = NULL, *b = NULL;
    if (!cu_ok(cudaMalloc(&a, bytes), "malloc") || !cu_ok(cudaMalloc(&b, bytes), "malloc")) return 0;
    cudaMemsetAsync(a, 1, bytes, s);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (int i = 0; i < 3; i++) cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, s);
    int iters = 20;
    cudaEventRecord(e0, s);
    for (int i = 0; i < iters; i++) cudaMemcpyAsync(i & 1 ? a : b, i & 1 ? b : a, bytes, cudaMemcpyDeviceToDevice, s);
    cudaEventRecord(e1, s);
    cudaEventSynchronize(e1);
    float ms = 0;
    cudaEventElapsedTime(&ms, e0, e1);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    cudaFree(a);
    cudaFree(b);
    return 2.0 * (double)bytes * iters / (ms * 1e-3) / 1e9;
}

typedef struct {
    double us_stream, us_graph;
} timing;

/* call i of a timing: the matvec of copy i % copies, or (read_sink set) the read ceiling's pure
 * streaming read of that copy's three buffers */
static unsigned *read_sink;
static int read_early;
static void issue(backend *be, bk_weight *ws, int i, int copies, bk_buf *x, bk_buf *y) {
    bk_weight *w = &ws[i % copies];
    if (!read_sink) {
        be->ops->matmul(be, w, x, y, 1);
        return;
    }
    const void *bufs[3] = {w->w->d, w->scales->d, w->biases->d};
    size_t groups = (size_t)w->rows * (size_t)(w->cols / w->group_size);
    size_t bytes[3] = {(size_t)w->rows * (size_t)w->cols / 2, groups * 2, groups * 2};
    cuda_bench_read3(cuda_backend_stream(be), bufs, bytes, read_sink, read_early);
}

/* times `iters` matvecs rotating over the copies, streamed and as a graph replay */
static int time_matvec(backend *be, bk_weight *ws, int copies, bk_buf *x, bk_buf *y, int iters, timing *t) {
    cudaStream_t s = (cudaStream_t)cuda_backend_stream(be);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (int i = 0; i < copies; i++) issue(be, ws, i, copies, x, y); /* warm */
    be->ops->sync(be);
    float ms = 0;
    cudaEventRecord(e0, s);
    for (int i = 0; i < iters; i++) issue(be, ws, i, copies, x, y);
    cuda_backend_flush(be); /* the last matvec is deferred until something follows it */
    cudaEventRecord(e1, s);
    if (!cu_ok(cudaEventSynchronize(e1), "stream timing")) return -1;
    cudaEventElapsedTime(&ms, e0, e1);
    t->us_stream = ms * 1e3 / iters;

    /* the same calls replayed as one graph; a capture failure only loses this column */
    cudaGraph_t g;
    cudaGraphExec_t ge;
    t->us_graph = NAN;
    if (!cu_ok(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "capture")) return 0;
    for (int i = 0; i < iters; i++) issue(be, ws, i, copies, x, y);
    cuda_backend_flush(be);
    if (!cu_ok(cudaStreamEndCapture(s, &g), "end capture")) return 0;
    if (cu_ok(cudaGraphInstantiate(&ge, g, 0), "instantiate")) {
        cudaGraphLaunch(ge, s);
        cudaEventRecord(e0, s);
        cudaGraphLaunch(ge, s);
        cudaEventRecord(e1, s);
        if (cu_ok(cudaEventSynchronize(e1), "graph timing")) {
            cudaEventElapsedTime(&ms, e0, e1);
            t->us_graph = ms * 1e3 / iters;
        }
        cudaGraphExecDestroy(ge);
    }
    cudaGraphDestroy(g);
    cudaEventDestroy(e0);
    cudaEventDestroy(e1);
    return 0;
}

/* row r of the q4 weight times x, in double on the host: a spot check of the big shapes */
static double host_row(const uint32_t *q, const uint16_t *sc, const uint16_t *bi, const float *x, int r, int cols) {
    double acc = 0;
    int groups = cols / GROUP;
    for (int c = 0; c < cols; c++) {
        uint32_t v = (q[(size_t)r * (cols / 8) + c / 8] >> ((c % 8) * 4)) & 15u;
        size_t gi = (size_t)r * groups + c / GROUP;
        acc += ((double)bk_bf16_to_f32(sc[gi]) * v + bk_bf16_to_f32(bi[gi])) * x[c];
    }
    return acc;
}

/* one decoder layer's weights: q, k, v, o, gate, up, down (shape indices into shapes[]) */
static const int layer_shapes[2][7] = {{0, 1, 1, 0, 2, 2, 3}, {5, 6, 6, 5, 7, 7, 8}};

static int upload(backend *be, bk_weight *w, int rows, int cols, const uint32_t *q, const uint16_t *sc,
                  const uint16_t *bi) {
    memset(w, 0, sizeof *w);
    w->rows = rows;
    w->cols = cols;
    w->bits = 4;
    w->group_size = GROUP;
    w->sdtype = BK_BF16;
    w->wdtype = BK_U32;
    size_t qb = (size_t)rows * cols / 2, sb = (size_t)rows * (cols / GROUP) * 2;
    w->w = be->ops->buf_wrap(be, q, qb);
    w->scales = be->ops->buf_wrap(be, sc, sb);
    w->biases = be->ops->buf_wrap(be, bi, sb);
    return w->w && w->scales && w->biases ? 0 : -1;
}

/* The layer's matvecs as forward.c calls them, over L copies of the layer; fusion and PDL on
 * and off, and round 1's register kernel (which never fuses) for reference. */
static int bench_layer(backend *be, int m, double bw, int iters, FILE *js) {
    const shape *sq = &shapes[layer_shapes[m][0]], *sk = &shapes[layer_shapes[m][1]], *sg = &shapes[layer_shapes[m][4]];
    int hid = sq->cols, qd = sq->rows, kvd = sk->rows, ffn = sg->rows;
    double bytes = 0;
    for (int j = 0; j < 7; j++) {
        const shape *sh = &shapes[layer_shapes[m][j]];
        bytes += (double)sh->rows * sh->cols / 2 + 4.0 * sh->rows * (sh->cols / GROUP) + 4.0 * (sh->cols + sh->rows);
    }
    int L = (int)(600e6 / bytes) + 1; /* copies: well past L2 */
    bk_weight *ws = calloc((size_t)L * 7, sizeof *ws);
    size_t maxq = (size_t)ffn * hid / 2, maxs = (size_t)ffn * (hid / GROUP) * 2;
    uint32_t *q = malloc(maxq);
    uint16_t *sc = malloc(maxs), *bi = malloc(maxs);
    if (!ws || !q || !sc || !bi) return -1;
    for (size_t i = 0; i < maxq / 4; i++) q[i] = rnd_u32();
    for (size_t i = 0; i < maxs / 2; i++) {
        sc[i] = bk_f32_to_bf16(rnd_f(0.002f, 0.03f));
        bi[i] = bk_f32_to_bf16(rnd_f(-0.25f, 0.25f));
    }
    for (int l = 0; l < L; l++)
        for (int j = 0; j < 7; j++) {
            const shape *sh = &shapes[layer_shapes[m][j]];
            if (upload(be, &ws[l * 7 + j], sh->rows, sh->cols, q, sc, bi)) {
                fprintf(stderr, "bench_cuda: layer upload failed\n");
                return -1;
            }
        }
    float *hx = malloc(sizeof(float) * (size_t)ffn);
    for (int i = 0; i < ffn; i++) hx[i] = rnd_f(-1, 1);
    bk_buf *x = be->ops->buf_alloc(be, 4 * (size_t)hid), *xb = be->ops->buf_alloc(be, 4 * (size_t)(qd > hid ? qd : hid)),
           *xb2 = be->ops->buf_alloc(be, 4 * (size_t)hid), *bq = be->ops->buf_alloc(be, 4 * (size_t)qd),
           *bk = be->ops->buf_alloc(be, 4 * (size_t)kvd), *bv = be->ops->buf_alloc(be, 4 * (size_t)kvd),
           *hb = be->ops->buf_alloc(be, 4 * (size_t)ffn), *hb2 = be->ops->buf_alloc(be, 4 * (size_t)ffn);
    be->ops->buf_write(be, xb, 0, hx, 4 * (size_t)hid);
    /* the two RMSNorms of a layer (configs with norms): weights around 1, x as the residual */
    bk_buf *nwb = be->ops->buf_alloc(be, 4 * (size_t)hid);
    for (int i = 0; i < hid; i++) hx[i] = rnd_f(0.5f, 1.5f);
    be->ops->buf_write(be, nwb, 0, hx, 4 * (size_t)hid);
    for (int i = 0; i < hid; i++) hx[i] = rnd_f(-1, 1);
    be->ops->buf_write(be, x, 0, hx, 4 * (size_t)hid);
    bk_vec nw = {nwb, BK_F32, hid};
    /* pack: 1 = round 3's lane-group pack (+ norm), 0 = round 2's thread-a-chunk kernels */
    static const struct {
        const char *name;
        int variant, fuse, pdl, pack, norms, bulk;
    } lc[] = {{"bulk, fused, pdl", 0, 1, 1, 1, 0, 1},
              {"+norms, bulk, fused, pdl", 0, 1, 1, 1, 1, 1},
              {"bulk, fused, no pdl", 0, 1, 0, 1, 0, 1},
              {"warp, fused, pdl", 0, 1, 1, 1, 0, 0},
              {"fused, pdl, round-2 pack", 0, 1, 1, 0, 0, 0},
              {"+norms, warp, fused, pdl", 0, 1, 1, 1, 1, 0},
              {"+norms, round-2 pack", 0, 1, 1, 0, 1, 0},
              {"+norms, unfused", 0, 0, 1, 1, 1, 0},
              {"warp, fused, no pdl", 0, 1, 0, 1, 0, 0},
              {"warp, unfused, pdl", 0, 0, 1, 1, 0, 0},
              {"warp, unfused, no pdl", 0, 0, 0, 1, 0, 0},
              {"regs (round 1)", 1, 0, 0, 0, 0, 0}};
    cudaStream_t s = (cudaStream_t)cuda_backend_stream(be);
    int n_layers = iters / 4 < 2 * L ? 2 * L : iters / 4;
    printf("\n%s decoder layer, its 7 matvecs as forward.c issues them (%.1f MB, %d copies):\n", shapes[layer_shapes[m][0]].model,
           bytes / 1e6, L);
    for (size_t c = 0; c < sizeof lc / sizeof lc[0]; c++) {
        cuda_matvec_tune(lc[c].variant, 0, 0);
        cuda_features_set(lc[c].fuse, lc[c].pdl);
        cuda_feature_pack_set(lc[c].pack);
        cuda_feature_bulk_set(lc[c].bulk);
        double us[2] = {NAN, NAN};
        for (int graph = 0; graph < 2; graph++) {
            cudaEvent_t e0, e1;
            cudaEventCreate(&e0);
            cudaEventCreate(&e1);
            cudaGraph_t g = NULL;
            cudaGraphExec_t ge = NULL;
            be->ops->sync(be);
            if (graph && !cu_ok(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "layer capture")) break;
            if (!graph) cudaEventRecord(e0, s);
            for (int i = 0; i < n_layers + (graph ? 0 : L); i++) {
                if (!graph && i == L) cudaEventRecord(e0, s); /* the first L layers warm up */
                bk_weight *w = &ws[(i % L) * 7];
                if (lc[c].norms) be->ops->rmsnorm(be, x, &nw, xb, 1, hid, 1e-6f);
                be->ops->matmul(be, &w[0], xb, bq, 1);
                be->ops->matmul(be, &w[1], xb, bk, 1);
                be->ops->matmul(be, &w[2], xb, bv, 1);
                be->ops->matmul(be, &w[3], xb, xb2, 1);
                be->ops->add(be, x, xb2, hid);
                if (lc[c].norms) be->ops->rmsnorm(be, x, &nw, xb, 1, hid, 1e-6f);
                be->ops->matmul(be, &w[4], xb, hb, 1);
                be->ops->matmul(be, &w[5], xb, hb2, 1);
                be->ops->swiglu(be, hb, hb2, ffn);
                be->ops->matmul(be, &w[6], hb, xb2, 1);
                be->ops->add(be, x, xb2, hid);
            }
            cuda_backend_flush(be);
            if (graph) {
                if (!cu_ok(cudaStreamEndCapture(s, &g), "layer end capture")) break;
                if (cu_ok(cudaGraphInstantiate(&ge, g, 0), "layer instantiate")) {
                    cudaGraphLaunch(ge, s);
                    cudaEventRecord(e0, s);
                    cudaGraphLaunch(ge, s);
                }
            }
            cudaEventRecord(e1, s);
            float ms = 0;
            if (cu_ok(cudaEventSynchronize(e1), "layer timing") && cudaEventElapsedTime(&ms, e0, e1) == cudaSuccess)
                us[graph] = ms * 1e3 / n_layers;
            if (ge) cudaGraphExecDestroy(ge);
            if (g) cudaGraphDestroy(g);
            cudaEventDestroy(e0);
            cudaEventDestroy(e1);
        }
        double gbs = bytes / (us[0] * 1e-6) / 1e9, gbg = bytes / (us[1] * 1e-6) / 1e9;
        printf("  layer %-24s %8.1f us %6.0f GB/s %5.1f%% of copy | graph %8.1f us %6.0f GB/s %5.1f%%\n", lc[c].name,
               us[0], gbs, 100 * gbs / bw, us[1], gbg, 100 * gbg / bw);
        if (js)
            fprintf(js, ",\n  {\"model\": \"%s\", \"matrix\": \"layer\", \"config\": \"%s\", \"bytes\": %.0f, "
                        "\"us\": %.3f, \"GBps\": %.1f, \"us_graph\": %.3f, \"GBps_graph\": %.1f, \"pct_copy\": %.1f, "
                        "\"pct_copy_graph\": %.1f}",
                    sq->model, lc[c].name, bytes, us[0], gbs, us[1], gbg, 100 * gbs / bw, 100 * gbg / bw);
    }
    cuda_matvec_tune(0, 0, 0);
    cuda_features_set(1, 1);
    cuda_feature_pack_set(-1);
    cuda_feature_bulk_set(-1);
    bk_buf *bufs[] = {x, xb, xb2, bq, bk, bv, hb, hb2, nwb};
    for (int i = 0; i < 9; i++) be->ops->buf_free(be, bufs[i]);
    for (int i = 0; i < L * 7; i++) {
        be->ops->buf_free(be, ws[i].w);
        be->ops->buf_free(be, ws[i].scales);
        be->ops->buf_free(be, ws[i].biases);
    }
    free(ws);
    free(q);
    free(sc);
    free(bi);
    free(hx);
    return 0;
}

int main(int argc, char **argv) {
    const char *json_path = NULL;
    int sweep = 0, iters = 200;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
        else if (!strcmp(argv[i], "--sweep")) sweep = 1;
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else { fprintf(stderr, "usage: bench_cuda [--json FILE] [--sweep] [--iters N]\n"); return 2; }
    }
    if (iters < 10) iters = 10;
    strata_err err = {{0}};
    backend *be = backend_new("cuda", 0, &err);
    if (!be) { fprintf(stderr, "bench_cuda: %s\n", err.msg); return 77; }
    struct cudaDeviceProp prop;
    int dev = 0;
    cudaGetDevice(&dev);
    cudaGetDeviceProperties(&prop, dev);
    cudaStream_t s = (cudaStream_t)cuda_backend_stream(be);
    double bw = copy_bandwidth(s);
    printf("GPU: %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
    printf("device-to-device copy: %.0f GB/s (bytes read + written)\n\n", bw);

    FILE *js = json_path ? fopen(json_path, "w") : NULL;
    if (js) fprintf(js, "{\"gpu\": \"%s\", \"sms\": %d, \"d2d_copy_GBps\": %.1f, \"matvec\": [", prop.name,
                    prop.multiProcessorCount, bw);
    printf("%-13s %-13s %7s %7s %9s %10s %3s %9s %8s %6s %9s %8s %6s %8s\n", "model", "matrix", "rows", "cols", "MB",
           "kern", "R", "us", "GB/s", "%copy", "us graph", "GB/s", "%copy", "check");
    int first_json = 1;
    for (int si = 0; si < N_SHAPES; si++) {
        const shape *sh = &shapes[si];
        int rows = sh->rows, cols = sh->cols, groups = cols / GROUP;
        size_t qbytes = (size_t)rows * cols / 2, sbytes = (size_t)rows * groups * 2;
        double bytes = (double)qbytes + 2.0 * sbytes + 4.0 * cols + 4.0 * rows;
        uint32_t *q = malloc(qbytes);
        uint16_t *sc = malloc(sbytes), *bi = malloc(sbytes);
        float *x = malloc(sizeof(float) * (size_t)cols), *y = malloc(sizeof(float) * (size_t)rows);
        if (!q || !sc || !bi || !x || !y) { fprintf(stderr, "bench_cuda: out of memory\n"); return 1; }
        for (size_t i = 0; i < qbytes / 4; i++) q[i] = rnd_u32();
        for (size_t i = 0; i < sbytes / 2; i++) {
            sc[i] = bk_f32_to_bf16(rnd_f(0.002f, 0.03f));
            bi[i] = bk_f32_to_bf16(rnd_f(-0.25f, 0.25f));
        }
        for (int i = 0; i < cols; i++) x[i] = rnd_f(-1, 1);
        /* enough copies that the working set is well past L2 */
        int copies = (int)((512.0 * (1 << 20)) / bytes) + 1;
        if (copies < 2) copies = 2;
        if (copies > 64) copies = 64;
        bk_weight *ws = calloc((size_t)copies, sizeof *ws);
        for (int c = 0; c < copies; c++) {
            ws[c].rows = rows;
            ws[c].cols = cols;
            ws[c].bits = 4;
            ws[c].group_size = GROUP;
            ws[c].sdtype = BK_BF16;
            ws[c].wdtype = BK_U32;
            ws[c].w = be->ops->buf_wrap(be, q, qbytes);
            ws[c].scales = be->ops->buf_wrap(be, sc, sbytes);
            ws[c].biases = be->ops->buf_wrap(be, bi, sbytes);
            if (!ws[c].w || !ws[c].scales || !ws[c].biases) { fprintf(stderr, "bench_cuda: upload failed\n"); return 1; }
        }
        bk_buf *xb = be->ops->buf_alloc(be, sizeof(float) * (size_t)cols);
        bk_buf *yb = be->ops->buf_alloc(be, sizeof(float) * (size_t)rows);
        be->ops->buf_write(be, xb, 0, x, sizeof(float) * (size_t)cols);

        /* spot check: a few rows against the host in double */
        cuda_matvec_tune(0, 0, 0);
        be->ops->matmul(be, &ws[0], xb, yb, 1);
        be->ops->buf_read(be, yb, 0, y, sizeof(float) * (size_t)rows);
        double diff = 0, mag = 0;
        int check_rows[] = {0, 1, rows / 2, rows - 2, rows - 1};
        for (int k = 0; k < 5; k++) {
            double h = host_row(q, sc, bi, x, check_rows[k], cols);
            diff = fmax(diff, fabs(h - y[check_rows[k]]));
            mag = fmax(mag, fabs(h));
        }
        double rel = mag > 0 ? diff / mag : diff;

        int n_cfg = sweep ? N_CONFIGS : 3;
        for (int k = 0; k < n_cfg; k++) {
            const config *cf = &configs[k];
            int R = cf->rows;
            cuda_matvec_tune(cf->variant, R, 0);
            cuda_features_set(-1, cf->pdl);
            cuda_feature_bulk_set(cf->bulk);
            timing t;
            if (time_matvec(be, ws, copies, xb, yb, iters, &t)) return 1;
            double gbs = bytes / (t.us_stream * 1e-6) / 1e9, gbg = bytes / (t.us_graph * 1e-6) / 1e9;
            const char *kn = cf->name;
            printf("%-13s %-13s %7d %7d %9.1f %10s %3d %9.2f %8.0f %5.1f%% %9.2f %8.0f %5.1f%% %8.1e%s\n", sh->model,
                   sh->name, rows, cols, bytes / 1e6, kn, R, t.us_stream, gbs, 100 * gbs / bw, t.us_graph, gbg,
                   100 * gbg / bw, rel, k == 0 ? "  <- default" : "");
            if (js) {
                fprintf(js,
                        "%s\n  {\"model\": \"%s\", \"matrix\": \"%s\", \"rows\": %d, \"cols\": %d, \"bytes\": %.0f, "
                        "\"kernel\": \"%s\", \"rows_per_block\": %d, \"default\": %s, \"us\": %.3f, \"GBps\": %.1f, "
                        "\"us_graph\": %.3f, \"GBps_graph\": %.1f, \"pct_copy\": %.1f, \"pct_copy_graph\": %.1f, "
                        "\"check_rel_err\": %.3g}",
                        first_json ? "" : ",", sh->model, sh->name, rows, cols, bytes, kn, R, k == 0 ? "true" : "false",
                        t.us_stream, gbs, t.us_graph, gbg, 100 * gbs / bw, 100 * gbg / bw, rel);
                first_json = 0;
            }
        }
        cuda_matvec_tune(0, 0, 0);
        cuda_features_set(-1, 1);
        cuda_feature_bulk_set(-1);
        /* the ceilings: the same bytes through a kernel that only reads them, after waiting for
         * the launch before it ("read-only") or while it drains ("read-early"), and the bulk
         * kernel's copies without its sums ("bulk-copy": a wrong result, hence no check) */
        static const char *const ceilings[] = {"read-only", "read-early", "bulk-copy"};
        for (int c = 0; c < 3; c++) {
            if (c < 2 && cudaMalloc((void **)&read_sink, 64) != cudaSuccess) continue;
            read_early = c == 1;
            if (c == 2) cuda_bulk_variant_set(3);
            timing t;
            if (time_matvec(be, ws, copies, xb, yb, iters, &t)) return 1;
            double gbs = bytes / (t.us_stream * 1e-6) / 1e9, gbg = bytes / (t.us_graph * 1e-6) / 1e9;
            printf("%-13s %-13s %7d %7d %9.1f %10s %3s %9.2f %8.0f %5.1f%% %9.2f %8.0f %5.1f%%\n", sh->model, sh->name,
                   rows, cols, bytes / 1e6, ceilings[c], "-", t.us_stream, gbs, 100 * gbs / bw, t.us_graph, gbg,
                   100 * gbg / bw);
            if (js)
                fprintf(js,
                        ",\n  {\"model\": \"%s\", \"matrix\": \"%s\", \"rows\": %d, \"cols\": %d, \"bytes\": %.0f, "
                        "\"kernel\": \"%s ceiling\", \"us\": %.3f, \"GBps\": %.1f, \"us_graph\": %.3f, "
                        "\"GBps_graph\": %.1f, \"pct_copy\": %.1f, \"pct_copy_graph\": %.1f}",
                        sh->model, sh->name, rows, cols, bytes, ceilings[c], t.us_stream, gbs, t.us_graph, gbg,
                        100 * gbs / bw, 100 * gbg / bw);
            if (c < 2) {
                cudaFree(read_sink);
                read_sink = NULL;
            }
        }
        cuda_bulk_variant_set(0);
        for (int c = 0; c < copies; c++) {
            be->ops->buf_free(be, ws[c].w);
            be->ops->buf_free(be, ws[c].scales);
            be->ops->buf_free(be, ws[c].biases);
        }
        be->ops->buf_free(be, xb);
        be->ops->buf_free(be, yb);
        free(ws);
        free(q);
        free(sc);
        free(bi);
        free(x);
        free(y);
    }
    for (int m = 0; m < 2; m++)
        if (bench_layer(be, m, bw, iters, js)) return 1;
    if (js) {
        fprintf(js, "\n]}\n");
        fclose(js);
    }
    backend_destroy(&be);
    return 0;
}
