/* The NEON level: every aarch64 CPU (the kernels are q_neon_impl.h's). */
#if defined(__aarch64__)
#define NEON_DOT 0
#define NEON_LEVEL "neon"
#define NEON_TABLE cpu_kern_neon
#include "kernels/cpu/q_neon_impl.h"
#endif
