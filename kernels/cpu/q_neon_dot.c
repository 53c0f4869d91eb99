/* The NEON level with the ARMv8.2 dot-product instructions (sdot): built with
 * -march=armv8.2-a+dotprod (cpu_fast.cmake), chosen only where the CPU reports them (cpu_fast.c). */
#if defined(__aarch64__)
#define NEON_DOT 1
#define NEON_LEVEL "neon-dot"
#define NEON_TABLE cpu_kern_neon_dot
#include "kernels/cpu/q_neon_impl.h"
#endif
