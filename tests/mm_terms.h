/* The size of a matmul's terms, for test_backend_ops's agreement metric (mm_terms.c). terms of
 * output [t, r]: W[r, c] x[t, c] for every c (W dequantized as the contract says) and bias[r];
 * T = sum |terms|, R = sqrt(sum terms^2). */
#ifndef STRATA_TEST_MM_TERMS_H
#define STRATA_TEST_MM_TERMS_H

#include <stddef.h>

#include "kernels/backend.h"

/* y = W x + bias in double (y may be NULL), T and R of each output, [n, rows] each, read through
 * the reference backend; wrong_bias: group 0 of every row with group 1's bias (a deliberate bug
 * for the metric's self-check) */
void mm_terms_host(backend *ref, const bk_weight *w, const bk_buf *x, int n, int wrong_bias, double *y, double *T,
                   double *R);
/* the reference's y = W x, and the terms of its outputs kept for y (T[n] then R[n]) */
void mm_terms_ref(backend *ref, const bk_weight *w, const bk_buf *x, bk_buf *y, int n);
/* the kept T then R of y's n outputs, or NULL */
const double *mm_terms_find(const bk_buf *y, size_t n);
void mm_terms_forget(const bk_buf *y);
/* x += y of n floats, both matmul outputs: x's terms are now both's (else x's are forgotten) */
void mm_terms_add(const bk_buf *x, const bk_buf *y, size_t n);

/* a matmul case's figures (a NaN anywhere wins each): checked = max|a - r| / max(max|r|, max R),
 * and for comparison the old max|a - r| / max|r| and the per-output max of |a - r| / T */
typedef struct {
    double checked, of_ref, of_sum;
} mm_err;
mm_err mm_err_of(const float *a, const float *r, const double *TR, size_t n);

#endif
