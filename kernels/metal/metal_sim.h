/* metal-sim: the Metal backend with its GPU replaced by the MSL-on-CPU harness. The op layer
 * (metal_ops.c) is the one the real backend uses; the kernels are the .metal files compiled as
 * C++; dispatches are queued and run, in order, when the backend waits (buf_read, buf_write,
 * sync), as a command buffer would be. For tests: slow, exact about barriers and simd ops. */
#ifndef STRATA_METAL_SIM_H
#define STRATA_METAL_SIM_H

#include "kernels/backend.h"

#ifdef __cplusplus
extern "C" {
#endif

backend *backend_metal_sim_new(strata_err *err);

/* The first kernel failure of this backend (divergent barrier, argument mismatch), or NULL.
 * A failed dispatch leaves its outputs unwritten. be must come from backend_metal_sim_new. */
const char *backend_metal_sim_error(backend *be);

/* dispatches and blits run so far */
unsigned long backend_metal_sim_dispatches(backend *be);

#ifdef __cplusplus
}
#endif

#endif
