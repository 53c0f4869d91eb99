/* Token sampling; semantics and order in sampler.h. */
#include "common/sampler.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    int32_t id;
    float logit;
} cand;

struct sampler {
    sampler_params p;
    int vocab;
    cand *c;
    uint32_t *stamp; /* stamp[id] == epoch: already penalized this call */
    uint32_t epoch;
    uint64_t rng[4];
};

void sampler_params_default(sampler_params *p) {
    *p = (sampler_params){.temp = 0.0f, .top_k = 40, .top_p = 0.95f, .min_p = 0.05f,
                          .repeat_penalty = 1.0f, .repeat_last_n = 64, .seed = 0};
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void sampler_set_seed(sampler *s, uint64_t seed) {
    for (int i = 0; i < 4; i++) s->rng[i] = splitmix64(&seed); /* never all zero */
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

/* xoshiro256**, then the top 53 bits as a double in [0, 1). */
static double next_uniform(sampler *s) {
    uint64_t *r = s->rng, out = rotl(r[1] * 5, 7) * 9, t = r[1] << 17;
    r[2] ^= r[0], r[3] ^= r[1], r[1] ^= r[2], r[0] ^= r[3], r[2] ^= t, r[3] = rotl(r[3], 45);
    return (double)(out >> 11) * 0x1.0p-53;
}

sampler *sampler_new(const sampler_params *p, int vocab_size) {
    if (!p || vocab_size < 1) return NULL;
    sampler *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->p = *p;
    s->vocab = vocab_size;
    s->c = malloc((size_t)vocab_size * sizeof *s->c);
    s->stamp = calloc((size_t)vocab_size, sizeof *s->stamp);
    if (!s->c || !s->stamp) {
        sampler_free(&s);
        return NULL;
    }
    sampler_set_seed(s, p->seed);
    return s;
}

void sampler_free(sampler **s) {
    if (!s || !*s) return;
    free((*s)->c);
    free((*s)->stamp);
    free(*s);
    *s = NULL;
}

/* Descending logit, then ascending id: a total order, so every platform sorts alike. */
static int before(cand a, cand b) { return a.logit > b.logit || (a.logit == b.logit && a.id < b.id); }

static int cmp_cand(const void *x, const void *y) {
    cand a = *(const cand *)x, b = *(const cand *)y;
    return before(a, b) ? -1 : before(b, a) ? 1 : 0;
}

/* Moves the m first candidates (in `before` order) of c[0..n) to c[0..m), unordered. */
static void select_top(cand *c, int n, int m) {
    int lo = 0, hi = n - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2; /* median of three keeps sorted input linear */
        if (before(c[mid], c[lo])) { cand t = c[mid]; c[mid] = c[lo]; c[lo] = t; }
        if (before(c[hi], c[lo])) { cand t = c[hi]; c[hi] = c[lo]; c[lo] = t; }
        if (before(c[hi], c[mid])) { cand t = c[hi]; c[hi] = c[mid]; c[mid] = t; }
        cand pivot = c[mid];
        int i = lo, j = hi;
        while (i <= j) {
            while (before(c[i], pivot)) i++;
            while (before(pivot, c[j])) j--;
            if (i <= j) { cand t = c[i]; c[i] = c[j]; c[j] = t; i++, j--; }
        }
        if (m - 1 <= j) hi = j;
        else if (m - 1 >= i) lo = i;
        else break;
    }
}

static void sort_top(cand *c, int n, int m) {
    if (m < n) select_top(c, n, m);
    qsort(c, (size_t)m, sizeof *c, cmp_cand);
}

static void apply_penalty(sampler *s, float *logits, const int32_t *history, int n_history) {
    float pen = s->p.repeat_penalty;
    int last = s->p.repeat_last_n;
    if (pen == 1.0f || last == 0 || n_history <= 0 || !history) return;
    int from = last < 0 || last >= n_history ? 0 : n_history - last;
    if (++s->epoch == 0) { /* wrapped: old stamps could collide */
        memset(s->stamp, 0, (size_t)s->vocab * sizeof *s->stamp);
        s->epoch = 1;
    }
    for (int i = from; i < n_history; i++) {
        int32_t id = history[i];
        if (id < 0 || id >= s->vocab || s->stamp[id] == s->epoch) continue;
        s->stamp[id] = s->epoch;
        logits[id] = logits[id] <= 0.0f ? logits[id] * pen : logits[id] / pen;
    }
}

int32_t sampler_argmax(const float *x, int n) {
    enum { LANES = 16 };
    float m[LANES], top = -INFINITY;
    for (int j = 0; j < LANES; j++) m[j] = -INFINITY;
    int i = 0;
    for (; i + LANES <= n; i += LANES) /* x > m ? x : m: a NaN x leaves m as it was */
        for (int j = 0; j < LANES; j++) m[j] = x[i + j] > m[j] ? x[i + j] : m[j];
    for (; i < n; i++) top = x[i] > top ? x[i] : top;
    for (int j = 0; j < LANES; j++) top = m[j] > top ? m[j] : top;
    for (i = 0; i < n; i++)
        if (x[i] == top) return i;
    return 0; /* all NaN */
}

int32_t sampler_sample(sampler *s, float *logits, const int32_t *history, int n_history) {
    const sampler_params *p = &s->p;
    int V = s->vocab;
    apply_penalty(s, logits, history, n_history);
    int greedy = p->temp <= 0.0f;
    if (!greedy) { /* an infinite top logit leaves nothing to weigh: take it */
        float top = -INFINITY;
        for (int i = 0; i < V; i++) top = logits[i] > top ? logits[i] : top;
        greedy = isinf(top);
    }
    if (greedy) return sampler_argmax(logits, V);
    cand *c = s->c;
    for (int i = 0; i < V; i++) c[i] = (cand){i, isnan(logits[i]) ? -INFINITY : logits[i]};
    int n = V, sorted = 0;
    if (p->top_k > 0 && p->top_k < n) {
        sort_top(c, n, p->top_k);
        n = p->top_k;
        sorted = 1;
    }
    if (p->top_p < 1.0f) {
        float max = -INFINITY;
        for (int i = 0; i < n; i++) max = c[i].logit > max ? c[i].logit : max;
        double z = 0;
        for (int i = 0; i < n; i++) z += exp((double)c[i].logit - max);
        /* Sort only as deep as the mass needs: 256 first, then 4x, then all. */
        int m = sorted ? n : (n < 256 ? n : 256), cut = n;
        for (;;) {
            if (!sorted) sort_top(c, n, m);
            double cum = 0;
            int found = 0;
            for (int i = 0; i < m && !found; i++) {
                cum += exp((double)c[i].logit - max) / z;
                if (cum >= p->top_p) cut = i + 1, found = 1;
            }
            if (found || m == n) break;
            m = m > n / 4 ? n : m * 4;
        }
        n = cut;
        sorted = 1; /* c[0..n) is sorted now: the cut lies within the sorted prefix */
    }
    if (p->min_p > 0.0f) {
        float max = -INFINITY;
        for (int i = 0; i < n; i++) max = c[i].logit > max ? c[i].logit : max;
        float thr = max + logf(p->min_p);
        int k = 0;
        for (int i = 0; i < n; i++)
            if (c[i].logit >= thr) c[k++] = c[i];
        n = k > 0 ? k : 1;
    }
    float max = -INFINITY;
    for (int i = 0; i < n; i++) max = c[i].logit > max ? c[i].logit : max;
    double z = 0;
    for (int i = 0; i < n; i++) z += exp(((double)c[i].logit - max) / p->temp);
    double u = next_uniform(s) * z, cum = 0;
    for (int i = 0; i < n; i++) {
        cum += exp(((double)c[i].logit - max) / p->temp);
        if (u < cum) return c[i].id;
    }
    return c[n - 1].id; /* rounding, or every logit -inf */
}
