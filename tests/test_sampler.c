/* Sampler: greedy, penalty, and each filter against a plain reference (full sort, then
 * llama.cpp's steps one by one), checked by drawing many times; seeds reproduce. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/sampler.h"
#include "tests/check.h"

static sampler_params params(float temp, int top_k, float top_p, float min_p) {
    sampler_params p;
    sampler_params_default(&p);
    p.temp = temp, p.top_k = top_k, p.top_p = top_p, p.min_p = min_p, p.seed = 42;
    return p;
}

/* Reference distribution: llama.cpp's chain written the obvious way. */
static void reference(const float *logits, int V, const sampler_params *p, double *prob) {
    int *order = malloc((size_t)V * sizeof *order);
    for (int i = 0; i < V; i++) order[i] = i;
    for (int i = 1; i < V; i++) { /* insertion sort: descending logit, ascending id */
        int x = order[i], j = i;
        for (; j > 0 && logits[order[j - 1]] < logits[x]; j--) order[j] = order[j - 1];
        order[j] = x;
    }
    int n = p->top_k > 0 && p->top_k < V ? p->top_k : V;
    if (p->top_p < 1) {
        double z = 0, cum = 0;
        for (int i = 0; i < n; i++) z += exp(logits[order[i]] - logits[order[0]]);
        for (int i = 0; i < n; i++) {
            cum += exp(logits[order[i]] - logits[order[0]]) / z;
            if (cum >= p->top_p) {
                n = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0) {
        int k = 0;
        while (k < n && logits[order[k]] >= logits[order[0]] + logf(p->min_p)) k++;
        n = k ? k : 1;
    }
    double z = 0;
    memset(prob, 0, (size_t)V * sizeof *prob);
    for (int i = 0; i < n; i++) z += prob[order[i]] = exp((logits[order[i]] - logits[order[0]]) / p->temp);
    for (int i = 0; i < n; i++) prob[order[i]] /= z;
    free(order);
}

/* Draws `draws` tokens and checks each token's count against the reference within 5 sigma,
 * and that no token outside the reference's support appears. */
static void check_distribution(const char *what, const float *logits, int V, sampler_params p, int draws) {
    double *prob = malloc((size_t)V * sizeof *prob);
    int *count = calloc((size_t)V, sizeof *count);
    float *work = malloc((size_t)V * sizeof *work);
    reference(logits, V, &p, prob);
    sampler *s = sampler_new(&p, V);
    for (int d = 0; d < draws; d++) {
        memcpy(work, logits, (size_t)V * sizeof *work);
        int32_t id = sampler_sample(s, work, NULL, 0);
        if (id >= 0 && id < V) count[id]++;
    }
    int bad = 0, outside = 0;
    for (int i = 0; i < V; i++) {
        double mean = prob[i] * draws, sd = sqrt(draws * prob[i] * (1 - prob[i]));
        if (prob[i] == 0 && count[i]) outside++;
        else if (fabs(count[i] - mean) > 5 * sd + 1) bad++;
    }
    CHECK(bad == 0 && outside == 0, "%s: %d counts off, %d outside the support", what, bad, outside);
    sampler_free(&s);
    free(prob), free(count), free(work);
}

/* the greedy pick as a plain loop: the largest, ties to the lowest id, NaN never wins */
static int32_t argmax_ref(const float *x, int n) {
    int32_t best = -1;
    for (int i = 0; i < n; i++)
        if (!isnan(x[i]) && (best < 0 || x[i] > x[best])) best = i;
    return best < 0 ? 0 : best;
}

/* sampler_argmax against it: lengths around its 16 lanes and a real vocab, random values with
 * planted ties, NaNs and infinities */
static void check_argmax(void) {
    static const int lens[] = {1, 2, 15, 16, 17, 31, 33, 100, 1000, 151936, 152064};
    unsigned r = 12345;
    int bad = 0, cases = 0;
    for (size_t li = 0; li < sizeof lens / sizeof lens[0]; li++)
        for (int rep = 0; rep < 24; rep++) {
            int n = lens[li];
            float *x = malloc(sizeof *x * (size_t)n);
            for (int i = 0; i < n; i++) {
                r = r * 1103515245u + 12345u;
                x[i] = (float)((r >> 8) & 0xffff) / 256.0f - 128.0f;
            }
            r = r * 1103515245u + 12345u;
            int a = (int)(r % (unsigned)n), b = (int)((r >> 7) % (unsigned)n);
            if (rep % 6 == 1) x[a] = x[b] = 1000.0f;                 /* a tie at the top */
            if (rep % 6 == 2) x[a] = NAN;                            /* a NaN anywhere */
            if (rep % 6 == 3) x[a] = INFINITY, x[b] = INFINITY;      /* tied infinities */
            if (rep % 6 == 4)                                        /* all NaN but one -inf */
                for (int i = 0; i < n; i++) x[i] = i == a ? -INFINITY : NAN;
            if (rep % 6 == 5)
                for (int i = 0; i < n; i++) x[i] = NAN;              /* all NaN: 0 */
            bad += sampler_argmax(x, n) != argmax_ref(x, n);
            cases++;
            free(x);
        }
    CHECK(bad == 0, "sampler_argmax = the plain loop on %d arrays (%d differ)", cases, bad);
}

int main(void) {
    check_argmax();
    /* Greedy: argmax, lowest id on ties, and the penalty applies first. */
    {
        sampler_params p;
        sampler_params_default(&p);
        CHECK(p.temp == 0 && p.repeat_penalty == 1.0f, "defaults are greedy, penalty off");
        sampler *s = sampler_new(&p, 5);
        float l[5] = {1, 3, 3, 2, -1};
        CHECK(sampler_sample(s, l, NULL, 0) == 1, "greedy tie goes to the lowest id");
        sampler_free(&s);
        p.repeat_penalty = 2.0f;
        s = sampler_new(&p, 5);
        float l2[5] = {1, 3, 2.5f, 2, -1};
        int32_t hist[] = {1, 1, 1, 4};
        CHECK(sampler_sample(s, l2, hist, 4) == 2, "penalized token loses");
        CHECK(l2[1] == 1.5f && l2[4] == -2.0f && l2[0] == 1.0f, "penalty: /2 once if positive, *2 if not");
        sampler_free(&s);
        p.repeat_last_n = 1;
        s = sampler_new(&p, 5);
        float l3[5] = {1, 3, 2.5f, 2, -1};
        CHECK(sampler_sample(s, l3, hist, 4) == 1 && l3[1] == 3 && l3[4] == -2.0f, "only the last N count");
        sampler_free(&s);
        p.repeat_last_n = 0;
        s = sampler_new(&p, 5);
        float l4[5] = {1, 3, 2.5f, 2, -1};
        CHECK(sampler_sample(s, l4, hist, 4) == 1 && l4[4] == -1, "repeat_last_n 0 disables");
        sampler_free(&s);
        p.repeat_last_n = -1;
        s = sampler_new(&p, 5);
        float l5[5] = {1, 3, 2.5f, 2, -1};
        int32_t junk[] = {-7, 99, 1};
        CHECK(sampler_sample(s, l5, junk, 3) == 2 && l5[1] == 1.5f, "-1 is the whole history; bad ids ignored");
        sampler_free(&s);
        CHECK(sampler_new(&p, 0) == NULL, "vocab 0 refused");
    }
    /* Filters against the reference on small vocabularies. */
    float small[6] = {2.0f, 1.5f, 1.0f, 0.2f, -1.0f, -3.0f};
    check_distribution("temp 1", small, 6, params(1.0f, 0, 1.0f, 0.0f), 20000);
    check_distribution("temp 0.5", small, 6, params(0.5f, 0, 1.0f, 0.0f), 20000);
    check_distribution("temp 2", small, 6, params(2.0f, 0, 1.0f, 0.0f), 20000);
    check_distribution("top_k 2", small, 6, params(1.0f, 2, 1.0f, 0.0f), 20000);
    check_distribution("top_k 1 is greedy", small, 6, params(1.5f, 1, 1.0f, 0.0f), 2000);
    check_distribution("top_p 0.7", small, 6, params(1.0f, 0, 0.7f, 0.0f), 20000);
    check_distribution("min_p 0.3", small, 6, params(1.0f, 0, 1.0f, 0.3f), 20000);
    check_distribution("top_k 4 + top_p 0.9 + min_p 0.1 + temp 0.8", small, 6, params(0.8f, 4, 0.9f, 0.1f), 20000);
    /* A flat tail forces top-p past its first 256 sorted candidates. */
    enum { V = 1000 };
    float *flat = malloc(V * sizeof *flat);
    for (int i = 0; i < V; i++) flat[i] = (float)(i % 7) * 0.01f;
    check_distribution("top_p 0.9 over a flat 1000", flat, V, params(1.0f, 0, 0.9f, 0.0f), 8000);
    check_distribution("top_k 300 + top_p 0.5 over a flat 1000", flat, V, params(0.7f, 300, 0.5f, 0.0f), 8000);
    free(flat);
    /* Seeds: same seed, same tokens; another seed, other tokens. */
    {
        enum { BIG = 151936 };
        float *logits = malloc(BIG * sizeof *logits), *work = malloc(BIG * sizeof *work);
        uint64_t x = 7;
        for (int i = 0; i < BIG; i++) {
            x = x * 6364136223846793005ull + 1442695040888963407ull;
            logits[i] = (float)((x >> 40) % 1000) / 100.0f;
        }
        sampler_params p = params(1.2f, 0, 0.95f, 0.0f); /* top_p alone: the deep-sort path */
        int32_t a[16], b[16], c[16];
        for (int run = 0; run < 3; run++) {
            p.seed = run == 2 ? 43 : 42;
            sampler *s = sampler_new(&p, BIG);
            int32_t *out = run == 0 ? a : run == 1 ? b : c;
            for (int i = 0; i < 16; i++) {
                memcpy(work, logits, BIG * sizeof *work);
                out[i] = sampler_sample(s, work, out, i);
            }
            sampler_free(&s);
        }
        CHECK(!memcmp(a, b, sizeof a), "same seed gives the same 16 tokens");
        CHECK(memcmp(a, c, sizeof a) != 0, "another seed gives other tokens");
        sampler *s = sampler_new(&p, BIG);
        sampler_set_seed(s, 42);
        int same = 1;
        for (int i = 0; i < 16; i++) {
            memcpy(work, logits, BIG * sizeof *work);
            same &= sampler_sample(s, work, a, i) == a[i];
        }
        CHECK(same, "sampler_set_seed restarts the stream");
        sampler_free(&s);
        free(logits), free(work);
    }
    /* Degenerate logits never crash and give an id in range. */
    {
        sampler_params p = params(1.0f, 0, 0.9f, 0.05f);
        sampler *s = sampler_new(&p, 4);
        float inf[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
        int32_t id = sampler_sample(s, inf, NULL, 0);
        CHECK(id >= 0 && id < 4, "all -inf gives %d", id);
        float pinf[4] = {0, INFINITY, 1, NAN};
        CHECK(sampler_sample(s, pinf, NULL, 0) == 1, "+inf wins");
        float nan_[4] = {NAN, 1, NAN, 0};
        id = sampler_sample(s, nan_, NULL, 0);
        CHECK(id == 1 || id == 3, "NaN is never drawn (%d)", id);
        sampler_free(&s);
    }
    return TEST_END();
}
