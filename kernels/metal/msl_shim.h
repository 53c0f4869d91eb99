/* The MSL-on-CPU shim: enough of the Metal Shading Language, as C++17, to compile strata's
 * .metal files unchanged with g++ and run them on the CPU (msl_sim.cpp runs the grid).
 *
 * What it maps:
 *   kernel, device, thread      -> nothing (one flat address space)
 *   constant                    -> const
 *   threadgroup                 -> static thread_local: one copy per OS thread, and the
 *                                  harness runs one threadgroup at a time per OS thread, so
 *                                  every thread (fiber) of a threadgroup shares it, as on the
 *                                  GPU. Consequence: declare threadgroup ARRAYS only, never
 *                                  threadgroup pointer variables (they would become shared
 *                                  statics too).
 *   [[buffer(n)]] etc.          -> ignored attributes (compiled with -Wno-attributes)
 *   MSL_THREAD_ARGS             -> the same parameter names without attributes
 *   simd_sum/max/min/shuffle*   -> lanes exchange values through slots and wait for each other
 *   threadgroup_barrier         -> the fiber waits until every thread of its threadgroup is there
 *   half, vectors, as_type, metal:: math
 * The fiber scheduling lives in msl_sim.cpp; the hooks are declared at the end. */
#ifndef STRATA_MSL_SHIM_H
#define STRATA_MSL_SHIM_H

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#define kernel
#define device
#define thread
#define constant const
#define threadgroup static thread_local

typedef unsigned int uint;
typedef unsigned short ushort;
typedef unsigned char uchar;

/* ---- scalar types ---- */

float msl_f16_to_f32(uint16_t h);
uint16_t msl_f32_to_f16(float f);

struct half {
    uint16_t bits;
    half() = default;
    half(float f) : bits(msl_f32_to_f16(f)) {}
    operator float() const { return msl_f16_to_f32(bits); }
};

template <typename To, typename From>
inline To as_type(From v) {
    static_assert(sizeof(To) == sizeof(From), "as_type needs equal sizes");
    To t;
    std::memcpy(&t, &v, sizeof t);
    return t;
}

/* ---- vectors: members x y z w, [] indexing, elementwise arithmetic ---- */

template <typename T, int N> struct msl_vec_base;
template <typename T> struct alignas(2 * sizeof(T)) msl_vec_base<T, 2> { T x, y; };
template <typename T> struct alignas(4 * sizeof(T)) msl_vec_base<T, 3> { T x, y, z; };
template <typename T> struct alignas(4 * sizeof(T)) msl_vec_base<T, 4> { T x, y, z, w; };

template <typename T, int N>
struct msl_vec : msl_vec_base<T, N> {
    msl_vec() = default;
    msl_vec(T s) { for (int i = 0; i < N; i++) (*this)[i] = s; }
    template <typename... A, typename = std::enable_if_t<sizeof...(A) == N && (N > 1)>>
    msl_vec(A... a) {
        T vals[N] = {T(a)...};
        for (int i = 0; i < N; i++) (*this)[i] = vals[i];
    }
    template <typename U>
    explicit msl_vec(const msl_vec<U, N> &o) { for (int i = 0; i < N; i++) (*this)[i] = T(o[i]); }
    T &operator[](int i) { return (&this->x)[i]; }
    const T &operator[](int i) const { return (&this->x)[i]; }
#define MSL_VEC_OP(op)                                                                          \
    msl_vec operator op(const msl_vec &o) const { msl_vec r; for (int i = 0; i < N; i++) r[i] = (*this)[i] op o[i]; return r; } \
    msl_vec operator op(T s) const { msl_vec r; for (int i = 0; i < N; i++) r[i] = (*this)[i] op s; return r; } \
    msl_vec &operator op##=(const msl_vec &o) { for (int i = 0; i < N; i++) (*this)[i] = (*this)[i] op o[i]; return *this; } \
    msl_vec &operator op##=(T s) { for (int i = 0; i < N; i++) (*this)[i] = (*this)[i] op s; return *this; }
    MSL_VEC_OP(+)
    MSL_VEC_OP(-)
    MSL_VEC_OP(*)
    MSL_VEC_OP(/)
    MSL_VEC_OP(&)
    MSL_VEC_OP(|)
    MSL_VEC_OP(>>)
    MSL_VEC_OP(<<)
#undef MSL_VEC_OP
};
template <typename T, int N>
msl_vec<T, N> operator*(T s, const msl_vec<T, N> &v) { return v * s; }
template <typename T, int N>
msl_vec<T, N> operator+(T s, const msl_vec<T, N> &v) { return v + s; }

typedef msl_vec<float, 2> float2;
typedef msl_vec<float, 3> float3;
typedef msl_vec<float, 4> float4;
typedef msl_vec<half, 4> half4;
typedef msl_vec<int, 2> int2;
typedef msl_vec<int, 4> int4;
typedef msl_vec<uint, 2> uint2;
typedef msl_vec<uint, 3> uint3;
typedef msl_vec<uint, 4> uint4;
typedef msl_vec<ushort, 2> ushort2;
typedef msl_vec<ushort, 4> ushort4;
typedef msl_vec<uchar, 4> uchar4;

static_assert(sizeof(float4) == 16 && alignof(float4) == 16, "float4 layout as in MSL");
static_assert(sizeof(uint4) == 16 && sizeof(uint2) == 8 && sizeof(half) == 2, "MSL layouts");

/* ---- metal:: functions ---- */

enum class mem_flags { mem_none = 0, mem_device = 1, mem_threadgroup = 2, mem_texture = 4 };
inline mem_flags operator|(mem_flags a, mem_flags b) { return mem_flags(int(a) | int(b)); }

namespace metal {
using std::abs;
using std::ceil;
using std::exp;
using std::floor;
using std::fma;
using std::log;
using std::sqrt;
template <typename T> inline T max(T a, T b) { return a > b ? a : b; }
template <typename T> inline T min(T a, T b) { return a < b ? a : b; }
template <typename T> inline T clamp(T v, T lo, T hi) { return v < lo ? lo : v > hi ? hi : v; }
inline float rsqrt(float v) { return 1.0f / std::sqrt(v); }
inline float cos(float v) { return std::cos(v); }
inline float sin(float v) { return std::sin(v); }
template <typename T, int N> inline T dot(const msl_vec<T, N> &a, const msl_vec<T, N> &b) {
    T s = T(0);
    for (int i = 0; i < N; i++) s += a[i] * b[i];
    return s;
}
namespace precise {
inline float cos(float v) { return std::cos(v); }
inline float sin(float v) { return std::sin(v); }
inline float exp(float v) { return std::exp(v); }
inline float sqrt(float v) { return std::sqrt(v); }
inline float rsqrt(float v) { return 1.0f / std::sqrt(v); }
}
namespace fast {
inline float exp(float v) { return std::exp(v); }
}
}

/* ---- hooks into the harness (msl_sim.cpp) ---- */

/* Each hook is called by the current fiber; it returns once every participating thread has
 * arrived. simd ops exchange `size` bytes per lane: `in` is this lane's value, `all` receives
 * the 32 lanes' values and `active` the mask of lanes that took part. */
void msl_sim_threadgroup_barrier();
void msl_sim_simd_exchange(const void *in, unsigned size, void *all, unsigned *active);
unsigned msl_sim_lane();

inline void threadgroup_barrier(mem_flags) { msl_sim_threadgroup_barrier(); }
inline void simdgroup_barrier(mem_flags) {
    char c = 0, all[32];
    unsigned act;
    msl_sim_simd_exchange(&c, 1, all, &act);
}

template <typename T> inline T msl_simd_reduce(T v, int kind) {
    T all[32];
    unsigned active;
    msl_sim_simd_exchange(&v, sizeof v, all, &active);
    bool first = true;
    T r = v;
    for (int i = 0; i < 32; i++) {
        if (!(active >> i & 1)) continue;
        if (first) { r = all[i]; first = false; continue; }
        if (kind == 0) r = r + all[i];
        else if (kind == 1) r = all[i] > r ? all[i] : r;
        else r = all[i] < r ? all[i] : r;
    }
    return r;
}
template <typename T> inline T msl_simd_from_lane(T v, unsigned src) {
    T all[32];
    unsigned active;
    msl_sim_simd_exchange(&v, sizeof v, all, &active);
    /* reading an inactive lane is undefined on the GPU: make it loud here */
    if (src >= 32 || !(active >> src & 1)) return T(NAN);
    return all[src];
}
template <typename T> inline T simd_sum(T v) { return msl_simd_reduce(v, 0); }
template <typename T> inline T simd_max(T v) { return msl_simd_reduce(v, 1); }
template <typename T> inline T simd_min(T v) { return msl_simd_reduce(v, 2); }
template <typename T> inline T simd_broadcast(T v, ushort lane) { return msl_simd_from_lane(v, lane); }
template <typename T> inline T simd_shuffle(T v, ushort lane) { return msl_simd_from_lane(v, lane); }
template <typename T> inline T simd_shuffle_xor(T v, ushort mask) { return msl_simd_from_lane(v, msl_sim_lane() ^ mask); }
template <typename T> inline T simd_shuffle_down(T v, ushort delta) { return msl_simd_from_lane(v, msl_sim_lane() + delta); }

/* The thread-position arguments every kernel takes last (see msl_params.h for the MSL form). */
#define MSL_THREAD_ARGS uint3 tg_pos, uint t_idx, uint simd_lane, uint simd_id

#endif
