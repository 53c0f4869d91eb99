/* Generation: prompt ids -> a stream of text pieces, on any engine (local or cluster).
 *
 * One call for the CLI:
 *
 *     gen_params p;
 *     gen_params_default(&p);               // greedy, 256 tokens, no speculation
 *     p.stop_ids = ids; p.n_stop_ids = chat_stop_ids(chat, &ids);   // end of turn / EOS
 *     gen_result r;
 *     if (gen_run(e, 1, tok, prompt, n_prompt, &p, print_piece, stdout, &r, &err)) ...
 *
 * on_piece receives complete UTF-8 text as it is decided (never half a character, never any of
 * a `stop` string, never a stop token); returning non-zero cancels (a client went away). It is
 * also called with len 0 once per forward, so that a cancel is noticed while no text comes.
 *
 * Speculative decoding (spec_k > 0): the next k tokens are drafted by prompt lookup (the longest
 * recent n-gram of the history that occurred before, and what followed it), and one forward over
 * [last, d1..dk] with all logits verifies them: the token chosen at each position is sampled
 * exactly as plain decoding would choose it, and drafting stops at the first that differs from
 * the draft. Because the draft is deterministic this gives the very same tokens as plain decoding,
 * greedy or sampled with a seed (one random draw per emitted token either way); the rejected
 * tail of the KV cache is trimmed (engine trim).
 *
 * Several sequences at once: gen_seq is the step-wise form (the server keeps one per request and
 * drives them through engine submit/collect so that the sessions travel the chain together).
 * gen_run is gen_seq_new + gen_seq_run (forward + gen_seq_feed until finished). */
#ifndef STRATA_GENERATE_H
#define STRATA_GENERATE_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/sampler.h"
#include "common/tokenizer.h"
#include "master/engine.h"

typedef struct {
    sampler_params sampling;       /* temp 0: greedy */
    int max_tokens;                /* tokens to generate at most (0: none) */
    int ctx_len;                   /* the engine's context per session; 0: the model's max_seq_len */
    const int32_t *stop_ids;       /* tokens that end the reply (not emitted), e.g. chat_stop_ids */
    int n_stop_ids;
    const char *const *stop_strs;  /* OpenAI "stop": text ends before the first occurrence */
    int n_stop_strs;
    int spec_k;                    /* drafted tokens per verifying forward; 0: off */
    int ngram_min, ngram_max;      /* prompt-lookup n-gram sizes tried, longest first (1, 3) */
    int skip_special;              /* drop special tokens from the text (1) */
} gen_params;

void gen_params_default(gen_params *p);

typedef enum {
    GEN_FINISH_NONE = 0,   /* still running */
    GEN_FINISH_STOP,       /* a stop token or stop string: OpenAI "stop" */
    GEN_FINISH_LENGTH,     /* max_tokens or the context is full: OpenAI "length" */
    GEN_FINISH_CANCELLED,  /* on_piece asked to stop */
} gen_finish;

const char *gen_finish_name(gen_finish f); /* "stop", "length", "cancelled", NULL for NONE */

typedef struct {
    int n_prompt;
    int n_generated;       /* tokens decided (the stop token included when one ended the reply) */
    gen_finish finish;
    int forwards;          /* engine forwards after the prefill */
    int spec_passes;       /* verifying forwards that carried at least one drafted token */
    int drafted, accepted; /* drafted tokens, and how many of them were accepted */
    double prefill_s, decode_s;
} gen_result;

/* Mean accepted drafted tokens per verifying pass (0 when none). */
double gen_mean_accepted(const gen_result *r);

/* text: len bytes, NUL-terminated; return non-zero to cancel */
typedef int (*gen_piece_fn)(const char *text, size_t len, void *user);

/* Generates a reply to prompt[0..n) in engine session `session` (ended on return). 0 with *out
 * filled (cancelled included), or -1 with err (engine failure, empty prompt, prompt longer than
 * the context). out may be NULL. */
int gen_run(engine *e, uint64_t session, const tokenizer *t, const int32_t *prompt, int n, const gen_params *p,
            gen_piece_fn on_piece, void *user, gen_result *out, strata_err *err);

/* ---- step-wise form ---- */
typedef struct gen_seq gen_seq;

/* Copies prompt and params (stop arrays included). NULL with err on a bad prompt / no memory. */
gen_seq *gen_seq_new(engine *e, uint64_t session, const tokenizer *t, const int32_t *prompt, int n,
                     const gen_params *p, gen_piece_fn on_piece, void *user, strata_err *err);
/* The forward this sequence needs next: ids[0..n), all_logits, and the buffer the logits go to
 * (owned by the sequence, [n, vocab] when all_logits else [vocab]). */
void gen_seq_input(gen_seq *s, const int32_t **ids, int *n, int *all_logits, float **logits);
/* Consumes the logits of that forward: samples, emits text, trims a rejected draft. Returns 1 when
 * the sequence is finished, 0 when it needs another forward, -1 with err. */
int gen_seq_feed(gen_seq *s, strata_err *err);
/* One step alone on the engine: the forward gen_seq_input names, then gen_seq_feed (same
 * returns). Several sequences in flight together use input/feed themselves (batch.c). */
int gen_seq_step(gen_seq *s, strata_err *err);
/* Steps until the sequence is finished: 0, or -1 with err (the sequence keeps what it made). */
int gen_seq_run(gen_seq *s, strata_err *err);
/* 1 when nothing more is to be done (max_tokens 0 finishes at once, before any forward). */
int gen_seq_finished(const gen_seq *s);
/* Tokens generated so far; *ids points into s. */
int gen_seq_tokens(const gen_seq *s, const int32_t **ids);
uint64_t gen_seq_session(const gen_seq *s);
void *gen_seq_user(const gen_seq *s); /* the on_piece user pointer */
void gen_seq_result(const gen_seq *s, gen_result *out);
/* Ends the engine session and frees. */
void gen_seq_free(gen_seq **s);

/* Prompt lookup: drafts up to k tokens continuing hist[0..n) from the most recent earlier match of
 * its last m tokens (m from ngram_max down to ngram_min). Returns the count (0: no match). */
int gen_draft_ngram(const int32_t *hist, int n, int ngram_min, int ngram_max, int k, int32_t *draft);

#endif
