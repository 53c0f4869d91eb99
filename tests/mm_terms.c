/* The matmul agreement metric of test_backend_ops (its header says why and how): the size of
 * each output's terms, computed in double on the host from the reference backend's own copies of
 * the weight and the input when the reference runs the matmul (an input may be rewritten before
 * the output is compared: test_matmul_fused), kept per reference output buffer until the next
 * matmul into it or mm_terms_forget. */
#include "tests/mm_terms.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) { fprintf(stderr, "out of memory\n"); exit(1); }
    return p;
}

#define TERMS_MAX 32
static struct { const bk_buf *y; double *terms; size_t n; } terms_of[TERMS_MAX]; /* terms: [2][n], T then R */

void mm_terms_forget(const bk_buf *y) {
    for (int i = 0; i < TERMS_MAX; i++)
        if (terms_of[i].y == y) free(terms_of[i].terms), terms_of[i].y = NULL, terms_of[i].terms = NULL;
}

const double *mm_terms_find(const bk_buf *y, size_t n) {
    for (int i = 0; i < TERMS_MAX; i++)
        if (terms_of[i].y == y && terms_of[i].n == n) return terms_of[i].terms;
    return NULL;
}

/* w's rows dequantized into W[rows, cols] (double), read back through the reference backend;
 * wrong_bias: group 0 of every row with group 1's bias (test_matmul_metric's deliberate bug) */
static double *dequant(backend *ref, const bk_weight *w, int wrong_bias) {
    size_t rows = (size_t)w->rows, cols = (size_t)w->cols, n = rows * cols;
    double *W = xmalloc(n * sizeof(double));
    if (!w->bits) {
        void *d = xmalloc(n * bk_dtype_size(w->wdtype));
        ref->ops->buf_read(ref, w->w, 0, d, n * bk_dtype_size(w->wdtype));
        for (size_t i = 0; i < n; i++) W[i] = bk_load_float(d, w->wdtype, i);
        free(d);
        return W;
    }
    size_t ng = rows * (cols / (size_t)w->group_size), es = bk_dtype_size(w->sdtype);
    uint32_t *q = xmalloc(n * (size_t)w->bits / 8);
    void *s = xmalloc(ng * es), *b = xmalloc(ng * es);
    ref->ops->buf_read(ref, w->w, 0, q, n * (size_t)w->bits / 8);
    ref->ops->buf_read(ref, w->scales, 0, s, ng * es);
    ref->ops->buf_read(ref, w->biases, 0, b, ng * es);
    for (size_t i = 0; i < n; i++) {
        size_t bit = i * (size_t)w->bits, g = i / (size_t)w->group_size; /* rows hold whole groups */
        uint32_t code = q[bit / 32] >> (bit % 32) & ((1u << w->bits) - 1);
        size_t gb = wrong_bias && i % cols < (size_t)w->group_size && cols > (size_t)w->group_size ? g + 1 : g;
        W[i] = (double)bk_load_float(s, w->sdtype, g) * code + bk_load_float(b, w->sdtype, gb);
    }
    free(q), free(s), free(b);
    return W;
}

/* y = W x + bias in double on the host (y may be NULL) and the size of each output's terms, T =
 * sum |terms| and R = sqrt(sum terms^2), from the reference's buffers; wrong_bias as dequant */
void mm_terms_host(backend *ref, const bk_weight *w, const bk_buf *x, int n, int wrong_bias, double *y, double *T, double *R) {
    size_t rows = (size_t)w->rows, cols = (size_t)w->cols;
    double *W = dequant(ref, w, wrong_bias);
    float *xs = xmalloc((size_t)n * cols * sizeof(float)), *bias = NULL;
    ref->ops->buf_read(ref, x, 0, xs, (size_t)n * cols * sizeof(float));
    if (w->bias.data) {
        void *bv = xmalloc(rows * bk_dtype_size(w->bias.dtype));
        ref->ops->buf_read(ref, w->bias.data, 0, bv, rows * bk_dtype_size(w->bias.dtype));
        bias = xmalloc(rows * sizeof(float));
        for (size_t r = 0; r < rows; r++) bias[r] = bk_load_float(bv, w->bias.dtype, r);
        free(bv);
    }
    for (int t = 0; t < n; t++)
        for (size_t r = 0; r < rows; r++) {
            double acc = bias ? bias[r] : 0.0, mag = fabs(acc), sq = acc * acc;
            for (size_t c = 0; c < cols; c++) {
                double term = W[r * cols + c] * xs[(size_t)t * cols + c];
                acc += term, mag += fabs(term), sq += term * term;
            }
            if (y) y[(size_t)t * rows + r] = acc;
            T[(size_t)t * rows + r] = mag;
            R[(size_t)t * rows + r] = sqrt(sq);
        }
    free(W), free(xs), free(bias);
}

/* the reference's y = W x, and the terms of each output (above) */
void mm_terms_ref(backend *ref, const bk_weight *w, const bk_buf *x, bk_buf *y, int n) {
    ref->ops->matmul(ref, w, x, y, n);
    size_t ny = (size_t)n * (size_t)w->rows;
    double *T = xmalloc(2 * ny * sizeof(double));
    mm_terms_host(ref, w, x, n, 0, NULL, T, T + ny);
    mm_terms_forget(y);
    int i = 0;
    while (i < TERMS_MAX && terms_of[i].y) i++;
    if (i == TERMS_MAX) { fprintf(stderr, "test_backend_ops: more than %d matmul outputs at once\n", TERMS_MAX); exit(1); }
    terms_of[i].y = y, terms_of[i].terms = T, terms_of[i].n = ny;
}

/* x += y of n floats on two matmul outputs: x's terms are now both's */
void mm_terms_add(const bk_buf *x, const bk_buf *y, size_t n) {
    double *tx = NULL, *rx = NULL;
    const double *ty = NULL, *ry = NULL;
    for (int i = 0; i < TERMS_MAX; i++) {
        if (terms_of[i].y == x && terms_of[i].n >= n) tx = terms_of[i].terms, rx = tx + terms_of[i].n;
        if (terms_of[i].y == y && terms_of[i].n >= n) ty = terms_of[i].terms, ry = ty + terms_of[i].n;
    }
    if (tx && ty)
        for (size_t i = 0; i < n; i++) tx[i] += ty[i], rx[i] = sqrt(rx[i] * rx[i] + ry[i] * ry[i]);
    else if (tx) mm_terms_forget(x); /* unknown terms: measured against max|ref| */
}

mm_err mm_err_of(const float *a, const float *r, const double *TR, size_t n) {
    double md = 0.0, mr = 0.0, mR = 0.0, mt = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - r[i]), t = d / (TR[i] > 0.0 ? TR[i] : 1e-300);
        if (!(d <= md)) md = d;
        if (!(t <= mt)) mt = t;
        if (fabs(r[i]) > mr) mr = fabs(r[i]);
        if (TR[n + i] > mR) mR = TR[n + i];
    }
    return (mm_err){md / (mr > mR ? mr : mR > 0.0 ? mR : 1e-300), mr > 0.0 ? md / mr : md, mt};
}

