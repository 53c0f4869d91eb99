/* The fast cpu backend's attention (cpu_attn.h): causal GQA over the f32 cache on the pool, the
 * level's fused kernel per (token, kv head) where it has one, per (token, head) otherwise; prefill
 * batches per block of tokens and kv head (attn_blk). */
#include "kernels/cpu/cpu_attn.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int cpu_attn_init(cpu_attn *c, int nth) {
    c->nth = nth;
    c->scores = calloc((size_t)nth, sizeof *c->scores);
    return c->scores ? 0 : -1;
}

void cpu_attn_free(cpu_attn *c) {
    for (int i = 0; c->scores && i < c->nth; i++) free(c->scores[i]);
    free(c->scores);
    free(c->part);
    c->scores = NULL, c->part = NULL;
    c->scores_cap = 0, c->part_cap = 0;
}

typedef struct {
    cpu_attn *st;
    const cpu_kernels *kern;
    const float *q;
    const void *k, *v; /* f32 rows, or f16 (kv16) */
    int kv16;
    float *out;
    int n, pos0, n_heads, n_kv_heads, head_dim;
    int slices; /* > 1: each (token, kv head) item's rows in this many slices (attn_slice_run) */
} attn_job;

/* element e of a cache */
static const void *kv_at(const attn_job *j, const void *base, size_t e) {
    return (const char *)base + e * (j->kv16 ? 2 : 4);
}

/* (token, head) pairs dealt round-robin to tasks: later tokens attend to more rows, so a
 * contiguous split would leave the first task short */
static void attn_run(void *arg, int ith, int nth, int thread) {
    attn_job *j = arg;
    const cpu_kernels *k = j->kern;
    int hd = j->head_dim, q_dim = j->n_heads * hd, kv_dim = j->n_kv_heads * hd, group = j->n_heads / j->n_kv_heads;
    float scale = 1.0f / sqrtf((float)hd), *s = j->st->scores[thread];
    for (int item = ith; item < j->n * j->n_heads; item += nth) {
        int t = item / j->n_heads, h = item % j->n_heads, len = j->pos0 + t + 1, kh = h / group;
        const float *q = j->q + (size_t)t * q_dim + (size_t)h * hd;
        float mx = -INFINITY, sum = 0.0f;
        for (int p = 0; p < len; p++) {
            s[p] = k->dot(q, (const float *)j->k + (size_t)p * kv_dim + (size_t)kh * hd, hd) * scale;
            mx = s[p] > mx ? s[p] : mx;
        }
        for (int p = 0; p < len; p++) { s[p] = expf(s[p] - mx); sum += s[p]; }
        float *out = j->out + (size_t)t * q_dim + (size_t)h * hd;
        memset(out, 0, sizeof(float) * (size_t)hd);
        for (int p = 0; p < len; p++) k->axpy(out, s[p] / sum, (const float *)j->v + (size_t)p * kv_dim + (size_t)kh * hd, hd);
    }
}

/* the level's fused kernel: one task per (token, kv head), all query heads of the group at once */
static void attn_group_run(void *arg, int ith, int nth, int thread) {
    attn_job *j = arg;
    int hd = j->head_dim, q_dim = j->n_heads * hd, kv_dim = j->n_kv_heads * hd, group = j->n_heads / j->n_kv_heads;
    float scale = 1.0f / sqrtf((float)hd);
    for (int item = ith; item < j->n * j->n_kv_heads; item += nth) {
        int t = item / j->n_kv_heads, kh = item % j->n_kv_heads, len = j->pos0 + t + 1;
        size_t qo = (size_t)t * q_dim + (size_t)kh * group * hd;
        j->kern->attn(j->q + qo, kv_at(j, j->k, (size_t)kh * hd), kv_at(j, j->v, (size_t)kh * hd), (size_t)kv_dim, j->kv16,
                      len, group, hd, scale, j->st->scores[thread], j->out + qo, NULL);
    }
}

/* Prefill: ATTN_TB tokens of one kv head a task (the level's attn_blk), the longest first, so
 * that the cache rows are read once for all of them and a late short task ends the job. Batches
 * of fewer than ATTN_BLK_MIN tokens (decode, speculative verify) keep the per-token kernel and
 * its split of long caches. */
#define ATTN_TB 8
#define ATTN_BLK_MIN 16

static void attn_blk_run(void *arg, int task, int n_tasks, int thread) {
    attn_job *j = arg;
    (void)n_tasks;
    int hd = j->head_dim, q_dim = j->n_heads * hd, kv_dim = j->n_kv_heads * hd, group = j->n_heads / j->n_kv_heads;
    int nblk = (j->n + ATTN_TB - 1) / ATTN_TB, b = nblk - 1 - task / j->n_kv_heads, kh = task % j->n_kv_heads;
    int t0 = b * ATTN_TB, tb = j->n - t0 < ATTN_TB ? j->n - t0 : ATTN_TB;
    size_t qo = (size_t)t0 * q_dim + (size_t)kh * group * hd;
    j->kern->attn_blk(j->q + qo, (size_t)q_dim, tb, j->pos0 + t0 + 1, kv_at(j, j->k, (size_t)kh * hd),
                      kv_at(j, j->v, (size_t)kh * hd), (size_t)kv_dim, j->kv16, group, hd, 1.0f / sqrtf((float)hd),
                      j->st->scores[thread], j->out + qo);
}

/* Decode has n * n_kv_heads items (2 at the 0.5b shape): as many tasks as threads at best, and
 * one late thread stalls the op. Over a long cache each item's rows are split in `slices` tasks
 * (task = item * slices + slice; a thread's slices in row order, tp_run_ranges); a slice leaves its
 * unnormalised output and (max, sum) per head in st->part for attn_merge. Measured (0.5b shape,
 * from DRAM, 2 threads, 2026-11-23): 5% faster at 2000 rows, 13-19% at 4000, even at 1100, and
 * 5-15% slower at 544 (slices of 136 rows), hence ATTN_SLICE_MIN. */
#define ATTN_SLICE_MIN 512 /* rows a slice at least */

static size_t attn_part_floats(const attn_job *j) {
    return (size_t)(j->n_heads / j->n_kv_heads) * (size_t)(j->head_dim + 2);
}

static void attn_slice(attn_job *j, int task, int thread) {
    int hd = j->head_dim, q_dim = j->n_heads * hd, kv_dim = j->n_kv_heads * hd, group = j->n_heads / j->n_kv_heads;
    int item = task / j->slices, sl = task % j->slices;
    int t = item / j->n_kv_heads, kh = item % j->n_kv_heads, len = j->pos0 + t + 1;
    /* slice bounds on multiples of 16 rows: the kernel scores 16 rows at a time */
    int p0 = (int)((long)len * sl / j->slices) & ~15, p1 = sl + 1 == j->slices ? len : (int)((long)len * (sl + 1) / j->slices) & ~15;
    float *part = j->st->part + (size_t)task * attn_part_floats(j), *ml = part + (size_t)group * hd;
    if (p0 >= p1) { /* an empty slice weighs nothing in the merge */
        for (int i = 0; i < group; i++) ml[2 * i] = -INFINITY, ml[2 * i + 1] = 0.0f;
        return;
    }
    size_t qo = (size_t)t * q_dim + (size_t)kh * group * hd, ro = (size_t)p0 * kv_dim + (size_t)kh * hd;
    j->kern->attn(j->q + qo, kv_at(j, j->k, ro), kv_at(j, j->v, ro), (size_t)kv_dim, j->kv16, p1 - p0, group, hd,
                  1.0f / sqrtf((float)hd), j->st->scores[thread], part, ml);
}

static void attn_slice_run(void *arg, int t0, int t1, int thread) {
    for (int t = t0; t < t1; t++) attn_slice(arg, t, thread);
}

/* out = sum over slices of exp(m_s - M) o_s / sum over slices of exp(m_s - M) l_s, M the max m_s */
static void attn_merge(const attn_job *j) {
    int hd = j->head_dim, q_dim = j->n_heads * hd, group = j->n_heads / j->n_kv_heads, S = j->slices;
    size_t pf = attn_part_floats(j);
    for (int item = 0; item < j->n * j->n_kv_heads; item++) {
        int t = item / j->n_kv_heads, kh = item % j->n_kv_heads;
        const float *base = j->st->part + (size_t)item * S * pf;
        for (int i = 0; i < group; i++) {
            float m = -INFINITY, l = 0.0f, w[64];
            for (int sl = 0; sl < S; sl++) {
                float ms = base[sl * pf + (size_t)group * hd + 2 * i];
                m = ms > m ? ms : m;
            }
            for (int sl = 0; sl < S; sl++) {
                const float *ml = base + sl * pf + (size_t)group * hd + 2 * i;
                w[sl] = ml[1] > 0.0f ? expf(ml[0] - m) : 0.0f;
                l += w[sl] * ml[1];
            }
            float *out = j->out + (size_t)t * q_dim + ((size_t)kh * group + i) * hd;
            for (int d = 0; d < hd; d++) out[d] = 0.0f;
            for (int sl = 0; sl < S; sl++) {
                if (w[sl] == 0.0f) continue;
                const float *o = base + sl * pf + (size_t)i * hd;
                float a = w[sl] / l;
                for (int d = 0; d < hd; d++) out[d] += a * o[d];
            }
        }
    }
}

/* slices for each item of j (1: no split): enough tasks to keep every thread busy and balance a
 * late one, none shorter than ATTN_SLICE_MIN rows; 1 when the scratch cannot be had */
static int attn_slices(cpu_attn *c, const attn_job *j, int nth) {
    int items = j->n * j->n_kv_heads, len = j->pos0 + 1;
    if (!c->split || nth == 1 || items >= 4 * nth) return 1;
    int s = (4 * nth + items - 1) / items, most = len / ATTN_SLICE_MIN;
    if (s > most) s = most;
    if (s > 64) s = 64;
    if (s < 2) return 1;
    size_t need = (size_t)items * (size_t)s * attn_part_floats(j);
    if (need > c->part_cap) {
        float *p = realloc(c->part, need * sizeof(float));
        if (!p) return 1;
        c->part = p;
        c->part_cap = need;
    }
    return s;
}

/* whether the level's fused kernel (attn) and its prefill blocks (attn_blk) take a head shape */
static int fused_ok(const cpu_kernels *k, int group, int head_dim) {
    return k->attn && head_dim % 16 == 0 && head_dim <= 256 && group <= 16;
}
static int blk_ok(const cpu_kernels *k, int group, int head_dim) {
    return k->attn_blk && head_dim % 16 == 0 && ATTN_TB * group <= 256;
}

int cpu_attn_f16_ok(const cpu_kernels *k, int n_heads, int n_kv_heads, int head_dim) {
    if (!k->to_f16 || n_kv_heads < 1 || n_heads % n_kv_heads) return 0;
    int group = n_heads / n_kv_heads; /* every path a batch can take reads the f16 rows */
    return fused_ok(k, group, head_dim) && blk_ok(k, group, head_dim);
}

void cpu_attn_run(cpu_attn *c, const cpu_kernels *k, tpool *pool, int affine, const float *q, const void *kc,
                  const void *vc, int kv16, float *out, int n, int pos0, int n_heads, int n_kv_heads, int head_dim) {
    int nth = tp_threads(pool), group = n_heads / n_kv_heads;
    int fused = fused_ok(k, group, head_dim), blk = blk_ok(k, group, head_dim) && n >= ATTN_BLK_MIN;
    int need = blk ? (int)attn_blk_scratch(ATTN_TB, group, pos0 + n, head_dim) : (pos0 + n) * (fused ? group : 1);
    if (need > c->scores_cap) {
        for (int i = 0; i < c->nth; i++) {
            float *s = realloc(c->scores[i], sizeof(float) * (size_t)need);
            if (!s) abort(); /* tens of KB per thread: out of memory is not recoverable here */
            c->scores[i] = s;
        }
        c->scores_cap = need;
    }
    attn_job j = {c, k, q, kc, vc, kv16, out, n, pos0, n_heads, n_kv_heads, head_dim, 1};
    if (blk) {
        tp_run(pool, attn_blk_run, &j, (n + ATTN_TB - 1) / ATTN_TB * n_kv_heads);
    } else if (fused && (j.slices = attn_slices(c, &j, nth)) > 1) {
        tp_run_ranges(pool, attn_slice_run, &j, n * n_kv_heads * j.slices, 1, affine, NULL);
        attn_merge(&j);
    } else if (fused) {
        int items = n * n_kv_heads;
        tp_run(pool, attn_group_run, &j, items < 4 * nth ? items : 4 * nth);
    } else {
        tp_run(pool, attn_run, &j, 4 * nth);
    }
}
