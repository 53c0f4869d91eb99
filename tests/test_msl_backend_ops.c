/* Makes "metal-sim" a backend name for the shared parity test (test_backend_ops.c), linked with
 * -Wl,--wrap=backend_new: calls to backend_new from that test land here first. A stopgap until
 * kernels/backend.c knows the name itself (then the test runs as `test_backend_ops metal-sim`). */
#include <string.h>

#include "kernels/metal/metal_sim.h"

backend *__real_backend_new(const char *name, int n_threads, strata_err *err);
backend *__wrap_backend_new(const char *name, int n_threads, strata_err *err);

backend *__wrap_backend_new(const char *name, int n_threads, strata_err *err) {
    if (name && !strcmp(name, "metal-sim")) return backend_metal_sim_new(err);
    return __real_backend_new(name, n_threads, err);
}
