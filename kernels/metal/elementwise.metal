// Elementwise ops on f32 activations, one value per thread (consecutive threads, consecutive
// addresses: every simdgroup access is one 128-byte line).
#include <metal_stdlib>
#include "msl_params.h"
#include "msl_common.h"
using namespace metal;

// gate[i] = silu(gate[i]) * up[i]
[[kernel]] void swiglu(device float *gate [[buffer(0)]],
                       device const float *up [[buffer(1)]],
                       constant msl_ew_params &p [[buffer(2)]],
                       MSL_THREAD_ARGS) {
    const int i = int(tg_pos.x) * EW_THREADS + int(t_idx);
    if (i >= p.n) return;
    const float g = gate[i];
    gate[i] = g / (1.0f + exp(-g)) * up[i];
}

// x[i] += y[i]
[[kernel]] void add(device float *x [[buffer(0)]],
                    device const float *y [[buffer(1)]],
                    constant msl_ew_params &p [[buffer(2)]],
                    MSL_THREAD_ARGS) {
    const int i = int(tg_pos.x) * EW_THREADS + int(t_idx);
    if (i >= p.n) return;
    x[i] += y[i];
}
