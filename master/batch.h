/* Drives several generating sequences over one engine: with an engine that keeps several sessions
 * in flight (engine->async: the cluster), each sequence's next forward is submitted as soon as its
 * previous one is consumed, so that the workers of the chain each work on a different session;
 * with a one-at-a-time engine the sequences take turns, one forward each.
 *
 * One thread owns a batch and its engine. */
#ifndef STRATA_BATCH_H
#define STRATA_BATCH_H

#include "master/generate.h"

typedef struct gen_batch gen_batch;

gen_batch *batch_new(engine *e, strata_err *err);
void batch_free(gen_batch **b); /* frees the sequences still in it */

/* Takes s (its session must be non-zero and unique in the batch); it starts on the next step.
 * A finished sequence (max_tokens 0) comes back out of the next step at once. */
int batch_add(gen_batch *b, gen_seq *s, strata_err *err);
int batch_count(const gen_batch *b);

enum { BATCH_PROGRESS = 0, BATCH_DONE = 1, BATCH_FAILED = 2 };
/* Submits every sequence that waits for a forward, then waits for one forward and feeds it.
 * BATCH_DONE: *out finished (removed from the batch; the caller frees it). BATCH_FAILED: *out
 * failed with err (removed; the caller frees it); the others go on. BATCH_PROGRESS: no sequence
 * ended. -1: the engine failed as a whole (err); every sequence is still in the batch, the caller
 * takes them out with batch_take. */
int batch_step(gen_batch *b, gen_seq **out, strata_err *err);
/* Removes and returns any one sequence (NULL when empty): to fail them all after -1, or to drop
 * a cancelled one. */
gen_seq *batch_take(gen_batch *b);
/* Removes a given sequence; 0, or -1 when it is in flight (wait for it to come back). */
int batch_remove(gen_batch *b, gen_seq *s);

#endif
