// metal-sim: the Metal op layer over a device whose kernels are the .metal files compiled as
// C++ and run by the fiber harness (see metal_sim.h).
#include <cstdlib>
#include <functional>
#include <memory>
#include <new>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

extern "C" {
#include "kernels/metal/metal_ops.h"
}
#include "kernels/metal/metal_sim.h"
#include "kernels/metal/msl_sim.h"

// The kernels, exactly as the Metal library gets them.
#include "kernels/metal/quant.metal"
#include "kernels/metal/norm.metal"
#include "kernels/metal/attention.metal"
#include "kernels/metal/elementwise.metal"

namespace {

struct sim_dev {
    std::vector<std::function<void()>> queue; // the open "command buffer"
    std::string error;
    unsigned long runs = 0;
};

// ---- binding: turn the argument list into the kernel's parameters, checking it as we go ----

struct bound_arg {
    char *ptr;
    size_t nbytes; // bytes arguments: their size; buffers: 0
};

// pointers take buffers, or bytes (setBytes into a `constant T *`); references take bytes of
// exactly their struct's size
template <typename T> struct param {
    static bool ok(const bound_arg &) { return std::is_pointer<T>::value; }
    static T get(const bound_arg &a) { return reinterpret_cast<T>(a.ptr); }
};
template <typename T> struct param<const T &> {
    static bool ok(const bound_arg &a) { return a.nbytes == sizeof(T); }
    static const T &get(const bound_arg &a) { return *reinterpret_cast<const T *>(a.ptr); }
};

template <typename... P, size_t... I>
bool args_fit(const std::vector<bound_arg> &a, std::index_sequence<I...>) {
    return (param<std::tuple_element_t<I, std::tuple<P...>>>::ok(a[I]) && ...);
}

template <typename... P, size_t... I>
void call(void (*fn)(P...), const std::vector<bound_arg> &a, const msl_thread_ids &t, std::index_sequence<I...>) {
    fn(param<std::tuple_element_t<I, std::tuple<P...>>>::get(a[I])..., t.tg_pos, t.t_idx, t.simd_lane, t.simd_id);
}

// A kernel takes its bound arguments, then the four thread ids of MSL_THREAD_ARGS.
template <typename... P>
int launch(void (*fn)(P...), const char *name, const std::vector<bound_arg> &a, uint3 groups,
           unsigned threads, std::string *error, bool meets = true) {
    constexpr size_t n_bound = sizeof...(P) - 4;
    auto seq = std::make_index_sequence<n_bound>();
    if (a.size() != n_bound || !args_fit<P...>(a, seq)) {
        *error = std::string(name) + ": the host binds " + std::to_string(a.size()) +
                 " arguments that do not match the kernel's " + std::to_string(n_bound);
        return -1;
    }
    return msl_sim_run(name, groups, threads, meets, [&](const msl_thread_ids &t) { call(fn, a, t, seq); }, error);
}

// `false` marks the kernels with no barrier and no simd op (run without fibers)
int run_kernel(mtl_kernel k, const std::vector<bound_arg> &a, uint3 g, unsigned th, std::string *e) {
    const char *n = mtl_kernel_names[k];
    switch (k) {
    case MK_qmv_q4_f16: return launch(qmv<4, ld_f16>, n, a, g, th, e);
    case MK_qmv_q4_bf16: return launch(qmv<4, ld_bf16>, n, a, g, th, e);
    case MK_qmv_q4_f32: return launch(qmv<4, ld_f32>, n, a, g, th, e);
    case MK_qmv_q8_f16: return launch(qmv<8, ld_f16>, n, a, g, th, e);
    case MK_qmv_q8_bf16: return launch(qmv<8, ld_bf16>, n, a, g, th, e);
    case MK_qmv_q8_f32: return launch(qmv<8, ld_f32>, n, a, g, th, e);
    case MK_qmm_q4_f16: return launch(qmm<4, ld_f16>, n, a, g, th, e);
    case MK_qmm_q4_bf16: return launch(qmm<4, ld_bf16>, n, a, g, th, e);
    case MK_qmm_q4_f32: return launch(qmm<4, ld_f32>, n, a, g, th, e);
    case MK_qmm_q8_f16: return launch(qmm<8, ld_f16>, n, a, g, th, e);
    case MK_qmm_q8_bf16: return launch(qmm<8, ld_bf16>, n, a, g, th, e);
    case MK_qmm_q8_f32: return launch(qmm<8, ld_f32>, n, a, g, th, e);
    case MK_qembed_q4_f16: return launch(qembed<4, ld_f16>, n, a, g, th, e, false);
    case MK_qembed_q4_bf16: return launch(qembed<4, ld_bf16>, n, a, g, th, e, false);
    case MK_qembed_q4_f32: return launch(qembed<4, ld_f32>, n, a, g, th, e, false);
    case MK_qembed_q8_f16: return launch(qembed<8, ld_f16>, n, a, g, th, e, false);
    case MK_qembed_q8_bf16: return launch(qembed<8, ld_bf16>, n, a, g, th, e, false);
    case MK_qembed_q8_f32: return launch(qembed<8, ld_f32>, n, a, g, th, e, false);
    case MK_dmv_f16: return launch(dmv<ld_f16>, n, a, g, th, e);
    case MK_dmv_bf16: return launch(dmv<ld_bf16>, n, a, g, th, e);
    case MK_dmv_f32: return launch(dmv<ld_f32>, n, a, g, th, e);
    case MK_dembed: return launch(dembed, n, a, g, th, e, false);
    case MK_rmsnorm: return launch(rmsnorm, n, a, g, th, e);
    case MK_rope: return launch(rope, n, a, g, th, e, false);
    case MK_attention: return launch(attention, n, a, g, th, e);
    case MK_swiglu: return launch(swiglu, n, a, g, th, e, false);
    case MK_add: return launch(add, n, a, g, th, e, false);
    case MK_COUNT: break;
    }
    *e = "unknown kernel";
    return -1;
}

// ---- the device layer ----

int sim_buf_new(void *, bk_buf *b, size_t bytes) {
    // MTLBuffer contents are page-aligned; 256 keeps the harness honest about 16-byte loads
    size_t len = (bytes + 255) & ~(size_t)255;
    void *m = std::aligned_alloc(256, len);
    if (!m) return -1;
    std::memset(m, 0, len);
    b->obj = nullptr;
    b->host = static_cast<char *>(m);
    b->off = 0;
    b->mem = m;
    return 0;
}

int sim_buf_wrap_pages(void *, bk_buf *b, void *, size_t) {
    b->obj = nullptr;
    b->mem = nullptr;
    return 0;
}

void sim_buf_release(void *, bk_buf *b) {
    std::free(b->mem);
    b->mem = nullptr;
}

void sim_dispatch(void *dv, mtl_kernel k, const mtl_arg *args, int n_args, mtl_grid groups, unsigned threads) {
    sim_dev *d = static_cast<sim_dev *>(dv);
    // resolve now what a command encoder resolves at encode time: buffer addresses and bytes
    auto bytes = std::make_shared<std::vector<std::vector<char>>>();
    std::vector<bound_arg> bound;
    for (int i = 0; i < n_args; i++) {
        if (args[i].buf) {
            bound.push_back({args[i].buf->host + args[i].off, 0});
        } else {
            bytes->emplace_back(static_cast<const char *>(args[i].bytes),
                                static_cast<const char *>(args[i].bytes) + args[i].nbytes);
            bound.push_back({bytes->back().data(), args[i].nbytes});
        }
    }
    uint3 g(groups.x, groups.y, groups.z);
    d->queue.push_back([d, k, bound, bytes, g, threads]() {
        std::string err;
        d->runs++;
        if (run_kernel(k, bound, g, threads, &err) && d->error.empty()) d->error = err;
    });
}

void sim_blit(void *dv, const bk_buf *src, size_t so, const bk_buf *dst, size_t do_, size_t n) {
    sim_dev *d = static_cast<sim_dev *>(dv);
    const char *s = src->host + so;
    char *t = dst->host + do_;
    d->queue.push_back([d, s, t, n]() {
        d->runs++;
        std::memmove(t, s, n);
    });
}

void sim_wait(void *dv) {
    sim_dev *d = static_cast<sim_dev *>(dv);
    std::vector<std::function<void()>> q;
    q.swap(d->queue);
    for (auto &f : q) f();
}

void sim_destroy(void *dv) { delete static_cast<sim_dev *>(dv); }

const mtl_device_ops sim_ops = {
    sim_buf_new, sim_buf_wrap_pages, sim_buf_release, sim_dispatch, sim_blit, sim_wait, sim_destroy,
};

} // namespace

extern "C" backend *backend_metal_sim_new(strata_err *err) {
    sim_dev *d = new (std::nothrow) sim_dev;
    if (!d) {
        err_set(err, "out of memory");
        return nullptr;
    }
    return mtl_backend_new("metal-sim", &sim_ops, d, err);
}

extern "C" const char *backend_metal_sim_error(backend *be) {
    sim_dev *d = static_cast<sim_dev *>(mtl_backend_device(be));
    return d->error.empty() ? nullptr : d->error.c_str();
}

extern "C" unsigned long backend_metal_sim_dispatches(backend *be) {
    return static_cast<sim_dev *>(mtl_backend_device(be))->runs;
}
