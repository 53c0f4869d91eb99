/* The Metal backend (Apple only): the kernels of the kernels/metal .metal files compiled at run time
 * from the source embedded in the binary, driven from C through the Objective-C runtime.
 * backend_new("metal") reaches it through a weak reference; nothing else needs this header. */
#ifndef STRATA_METAL_H
#define STRATA_METAL_H

#include "kernels/backend.h"

/* The default Metal device, its queue and the compiled library; NULL with the reason (no
 * device, library compile error with the compiler's log, pipeline failure). */
backend *backend_metal_new(strata_err *err);

/* The first failure the GPU reported for this backend's work (a command buffer in error, a
 * kernel whose pipeline cannot run the threadgroup it needs), or NULL. Ops cannot return
 * errors (kernels/backend.h), so callers that care check this after sync. */
const char *backend_metal_error(backend *be);

#endif
