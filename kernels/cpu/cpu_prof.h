/* STRATA_CPU_PROFILE=1: wall time per op kind (and per matmul shape) of the fast cpu backend,
 * printed to stderr when the backend is destroyed; a table for the whole process, so profile one
 * backend at a time. How the decode overheads of issue 7 were found. */
#ifndef STRATA_CPU_PROF_H
#define STRATA_CPU_PROF_H

#include "kernels/backend.h"

/* whether STRATA_CPU_PROFILE=1 (read once) */
int cpu_prof_enabled(void);
/* a start time for cpu_prof_end, 0 when off */
double cpu_prof_begin(void);
/* adds the time since t0 to the row (op, rows, cols, n == 1 or not) */
void cpu_prof_end(double t0, const char *op, int rows, int cols, int n);
/* time inside an op that is another row's (a weight packed in its first matmul): cpu_prof_skip(t0)
 * counts it, cpu_prof_skipped() is the running total, to take off the enclosing op */
void cpu_prof_skip(double t0);
double cpu_prof_skipped(void);
/* a table that times each non-matmul op of inner (its held matmuls run first, untimed: inner's
 * sync), prints the table at destroy and clears it; matmuls time themselves (cpu_fast.c) */
const backend_ops *cpu_prof_ops(const backend_ops *inner);

#endif
