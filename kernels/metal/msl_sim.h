/* The grid runner of the MSL-on-CPU harness (C++ only). Every thread of a threadgroup is a
 * fiber (ucontext) on one OS thread; a fiber runs until it reaches a threadgroup barrier, a
 * simd op or its end, then the next runs. A barrier opens when every thread of the threadgroup
 * waits at it; a simd op completes when every live lane of the simdgroup has brought its value.
 * Threads that return while others wait at a barrier, or lanes split between a simd op and a
 * barrier, are divergence the GPU does not forgive: the run stops with an error. */
#ifndef STRATA_MSL_SIM_H
#define STRATA_MSL_SIM_H

#include <functional>
#include <string>

#include "kernels/metal/msl_shim.h"

/* one thread's identity, as the kernel's MSL_THREAD_ARGS see it */
struct msl_thread_ids {
    uint3 tg_pos;
    uint t_idx, simd_lane, simd_id;
};

/* Runs groups.x * groups.y * groups.z threadgroups of `threads` threads (a multiple of 32)
 * through body. `meets`: the kernel has barriers or simd ops (false runs the threads as plain
 * calls, much faster). Returns 0, or -1 with the reason in *error (kernel named `name`). */
int msl_sim_run(const char *name, uint3 groups, unsigned threads, bool meets,
                const std::function<void(const msl_thread_ids &)> &body, std::string *error);

#endif
