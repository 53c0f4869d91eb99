// The harness itself: simd ops and barriers behave as on the GPU, and divergence the GPU does
// not forgive is reported instead of passing silently.
#include <cstdio>
#include <string>

#include "kernels/metal/msl_sim.h"

static int passed, failed;
#define CHECK(c, ...)                                                                   \
    do {                                                                                \
        if (c) passed++;                                                                \
        else { failed++; std::fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #c); \
               std::fprintf(stderr, __VA_ARGS__); std::fprintf(stderr, "\n"); }       \
    } while (0)

// out[t] = sum over the simdgroup of t, lane xor 1, and a threadgroup total through shared memory
static void reduce_kernel(float *out, MSL_THREAD_ARGS) {
    threadgroup float part[4];
    threadgroup float total;
    float s = simd_sum(float(t_idx));
    float x = simd_shuffle_xor(float(simd_lane), 1);
    if (simd_lane == 0) part[simd_id] = s;
    threadgroup_barrier(mem_flags::mem_threadgroup);
    if (t_idx == 0) total = part[0] + part[1] + part[2] + part[3];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    out[tg_pos.x * 128 + t_idx] = s * 1000000.0f + x * 1000.0f + total;
}

static void early_return_kernel(float *out, MSL_THREAD_ARGS) {
    if (t_idx == 5) return; // the GPU may hang or skip the barrier: reported
    threadgroup_barrier(mem_flags::mem_threadgroup);
    out[t_idx] = 1.0f;
}

static void split_kernel(float *out, MSL_THREAD_ARGS) {
    if (simd_lane < 16) out[t_idx] = simd_sum(1.0f); // half the lanes reach a simd op...
    else threadgroup_barrier(mem_flags::mem_threadgroup); // ...the other half a barrier
}

int main() {
    static float out[3 * 128];
    std::string err;
    int rc = msl_sim_run("reduce", uint3(3, 1, 1), 128, true, [&](const msl_thread_ids &t) {
        reduce_kernel(out, t.tg_pos, t.t_idx, t.simd_lane, t.simd_id);
    }, &err);
    CHECK(rc == 0, "%s", err.c_str());
    int bad = 0;
    for (int g = 0; g < 3; g++)
        for (int i = 0; i < 128; i++) {
            int sg = i / 32;
            float s = float(32 * 32 * sg + 31 * 16), x = float((i % 32) ^ 1), total = float(127 * 128 / 2);
            bad += out[g * 128 + i] != s * 1000000.0f + x * 1000.0f + total;
        }
    CHECK(bad == 0, "%d outputs of simd_sum / simd_shuffle_xor / barrier wrong", bad);

    err.clear();
    rc = msl_sim_run("early_return", uint3(1, 1, 1), 64, true, [&](const msl_thread_ids &t) {
        early_return_kernel(out, t.tg_pos, t.t_idx, t.simd_lane, t.simd_id);
    }, &err);
    CHECK(rc == -1 && err.find("stuck") != std::string::npos, "early return before a barrier: rc %d, '%s'", rc, err.c_str());

    err.clear();
    rc = msl_sim_run("split", uint3(1, 1, 1), 32, true, [&](const msl_thread_ids &t) {
        split_kernel(out, t.tg_pos, t.t_idx, t.simd_lane, t.simd_id);
    }, &err);
    CHECK(rc == -1, "lanes split between a simd op and a barrier: rc %d", rc);

    err.clear();
    rc = msl_sim_run("odd", uint3(1, 1, 1), 48, true, [&](const msl_thread_ids &) {}, &err);
    CHECK(rc == -1, "a threadgroup of 48 threads is refused");

    std::printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
