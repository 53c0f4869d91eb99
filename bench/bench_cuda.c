/* bench_cuda: the CUDA backend's matvec against the card's copy bandwidth.
 *
 *   bench_cuda [--json FILE] [--sweep] [--iters N]
 *
 * Measures device-to-device cudaMemcpy bandwidth (bytes read + written), then the q4 matvec
 * (MLX affine, group 64, bf16 scales) at the qwen2.5-7b and llama-3.1-8b shapes through the
 * backend's own matmul op. Each shape rotates over enough copies of its weight to exceed L2
 * (50 MB on an H100), so every call reads HBM. Times are CUDA events around many back-to-back
 * calls ("stream") and around the replay of those calls captured in a CUDA graph ("graph",
 * which hides the launch gaps, as a captured decode step would). --sweep also times every
 * kernel (register or cp.async pipeline) at 1, 2 and 4 rows a batch. Prints a table; --json writes the numbers. */
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
/* calls of each matrix in one decoder layer, in shape order (q,o; k,v; gate,up; down) */
static const int layer_calls[] = {2, 2, 2, 1, 0, 2, 2, 2, 1, 0};

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

/* times `iters` matvecs rotating over the copies, streamed and as a graph replay */
static int time_matvec(backend *be, bk_weight *ws, int copies, bk_buf *x, bk_buf *y, int iters, timing *t) {
    cudaStream_t s = (cudaStream_t)cuda_backend_stream(be);
    cudaEvent_t e0, e1;
    cudaEventCreate(&e0);
    cudaEventCreate(&e1);
    for (int i = 0; i < copies; i++) be->ops->matmul(be, &ws[i], x, y, 1); /* warm */
    be->ops->sync(be);
    float ms = 0;
    cudaEventRecord(e0, s);
    for (int i = 0; i < iters; i++) be->ops->matmul(be, &ws[i % copies], x, y, 1);
    cudaEventRecord(e1, s);
    if (!cu_ok(cudaEventSynchronize(e1), "stream timing")) return -1;
    cudaEventElapsedTime(&ms, e0, e1);
    t->us_stream = ms * 1e3 / iters;

    /* the same calls replayed as one graph; a capture failure only loses this column */
    cudaGraph_t g;
    cudaGraphExec_t ge;
    t->us_graph = NAN;
    if (!cu_ok(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal), "capture")) return 0;
    for (int i = 0; i < iters; i++) be->ops->matmul(be, &ws[i % copies], x, y, 1);
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
    printf("%-13s %-13s %7s %7s %9s %5s %3s %9s %8s %6s %9s %8s %6s %8s\n", "model", "matrix", "rows", "cols", "MB",
           "kern", "R", "us", "GB/s", "%copy", "us graph", "GB/s", "%copy", "check");
    double layer_bytes[2] = {0, 0}, layer_us[2] = {0, 0}, layer_us_graph[2] = {0, 0};
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

        int R0, W0;
        cuda_matvec_pick(rows, cols, 4, &R0, &W0);
        static const int rs[] = {1, 2, 4};
        int n_cfg = sweep ? 7 : 1;
        for (int k = 0; k < n_cfg; k++) {
            /* k == 0: the defaults; then each kernel at 1, 2, 4 rows a batch */
            int V = k == 0 ? 0 : 1 + (k - 1) / 3, R = k == 0 ? R0 : rs[(k - 1) % 3], W = k == 0 ? W0 : 0;
            cuda_matvec_tune(V, R, W);
            timing t;
            if (time_matvec(be, ws, copies, xb, yb, iters, &t)) return 1;
            double gbs = bytes / (t.us_stream * 1e-6) / 1e9, gbg = bytes / (t.us_graph * 1e-6) / 1e9;
            const char *kn = V == 1 ? "regs" : V == 2 ? "async" : "dflt";
            printf("%-13s %-13s %7d %7d %9.1f %5s %3d %9.2f %8.0f %5.1f%% %9.2f %8.0f %5.1f%% %8.1e%s\n", sh->model,
                   sh->name, rows, cols, bytes / 1e6, kn, R, t.us_stream, gbs, 100 * gbs / bw, t.us_graph, gbg,
                   100 * gbg / bw, rel, k == 0 ? "  <- default" : "");
            if (k == 0) {
                int m = si < 5 ? 0 : 1;
                layer_bytes[m] += layer_calls[si] * bytes;
                layer_us[m] += layer_calls[si] * t.us_stream;
                layer_us_graph[m] += layer_calls[si] * t.us_graph;
            }
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
    printf("\none decoder layer's matvecs (q,k,v,o,gate,up,down; default launch shapes):\n");
    const char *names[2] = {"qwen2.5-7b", "llama-3.1-8b"};
    for (int m = 0; m < 2; m++) {
        double gbs = layer_bytes[m] / (layer_us[m] * 1e-6) / 1e9, gbg = layer_bytes[m] / (layer_us_graph[m] * 1e-6) / 1e9;
        printf("  %-13s %.1f MB: %.1f us (%.0f GB/s, %.1f%% of copy); graph %.1f us (%.0f GB/s, %.1f%%)\n", names[m],
               layer_bytes[m] / 1e6, layer_us[m], gbs, 100 * gbs / bw, layer_us_graph[m], gbg, 100 * gbg / bw);
        if (js)
            fprintf(js, "%s\n  {\"model\": \"%s\", \"matrix\": \"layer\", \"bytes\": %.0f, \"us\": %.3f, \"GBps\": %.1f, "
                        "\"us_graph\": %.3f, \"GBps_graph\": %.1f, \"pct_copy\": %.1f, \"pct_copy_graph\": %.1f}",
                    ",", names[m], layer_bytes[m], layer_us[m], gbs, layer_us_graph[m], gbg, 100 * gbs / bw, 100 * gbg / bw);
    }
    if (js) {
        fprintf(js, "\n]}\n");
        fclose(js);
    }
    backend_destroy(&be);
    return 0;
}
