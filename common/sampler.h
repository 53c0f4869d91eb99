/* Picking the next token from logits, with llama.cpp's semantics and order:
 *   repetition penalty -> top-k -> top-p -> min-p -> temperature -> draw.
 * - repetition penalty: each distinct token among the last repeat_last_n of history has its
 *   logit divided by repeat_penalty when positive, multiplied when not (once, however often
 *   it occurs). repeat_last_n 0 disables it, -1 means the whole history; penalty 1 is off.
 * - temp <= 0 is greedy: the largest logit after the penalty (ties: the lowest id).
 * - top_k <= 0 or >= vocab is off. top_p >= 1 is off; it keeps the smallest prefix of the
 *   sorted candidates whose probability (over the candidates left by top-k) reaches top_p.
 *   min_p <= 0 is off; it keeps tokens whose probability is at least min_p times the top one.
 * - the draw uses xoshiro256** seeded from seed: the same seed, logits and history give the
 *   same tokens (xoshiro is portable; exp() may round differently on another libm). Each
 *   non-greedy call takes exactly one number from the stream.
 * A sampler holds scratch space sized to the vocab: one per generating session. */
#ifndef STRATA_SAMPLER_H
#define STRATA_SAMPLER_H

#include <stdint.h>

typedef struct {
    float temp;
    int top_k;
    float top_p;
    float min_p;
    float repeat_penalty;
    int repeat_last_n;
    uint64_t seed;
} sampler_params;

/* Greedy (temp 0), with llama.cpp's other defaults ready for when temp is raised:
 * top_k 40, top_p 0.95, min_p 0.05, repeat_penalty 1 (off), repeat_last_n 64, seed 0. */
void sampler_params_default(sampler_params *p);

typedef struct sampler sampler;

/* NULL when out of memory or vocab_size < 1. */
sampler *sampler_new(const sampler_params *p, int vocab_size);
/* logits[0..vocab_size) is modified (the penalty is applied in place); history holds the
 * tokens so far, oldest first (ids outside the vocab are ignored). */
int32_t sampler_sample(sampler *s, float *logits, const int32_t *history, int n_history);
/* The greedy pick: the index of the largest of x[0..n) (ties: the lowest; NaNs never win, all
 * NaN: 0). 16 running maxima the compiler keeps in vector registers, then the first index
 * that holds the maximum. Over a 152k vocab on the GPU machine's Xeon host: 44 us, where the
 * one-pass compare-and-index loop took 210 us of every decode step's host time (bench/RESULTS.md,
 * CUDA round 7). */
int32_t sampler_argmax(const float *x, int n);
/* Restarts the random stream as if newly made with this seed. */
void sampler_set_seed(sampler *s, uint64_t seed);
void sampler_free(sampler **s);

#endif
