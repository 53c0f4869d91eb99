/* Several sequences over one engine; see batch.h. */
#include "master/batch.h"

#include <stdlib.h>

typedef struct {
    gen_seq *s;
    int inflight;
} slot;

struct gen_batch {
    engine *e;
    slot *slots;
    int n, cap;
    int next; /* round robin for a one-at-a-time engine */
};

gen_batch *batch_new(engine *e, strata_err *err) {
    gen_batch *b = calloc(1, sizeof *b);
    if (!b) { err_set(err, "out of memory"); return NULL; }
    b->e = e;
    return b;
}

void batch_free(gen_batch **pb) {
    gen_batch *b = pb ? *pb : NULL;
    if (!b) return;
    for (int i = 0; i < b->n; i++) gen_seq_free(&b->slots[i].s);
    free(b->slots);
    free(b);
    *pb = NULL;
}

int batch_count(const gen_batch *b) { return b->n; }

int batch_add(gen_batch *b, gen_seq *s, strata_err *err) {
    uint64_t id = gen_seq_session(s);
    if (!id) return err_set(err, "session 0 is reserved");
    for (int i = 0; i < b->n; i++)
        if (gen_seq_session(b->slots[i].s) == id) return err_set(err, "session %llu is already in the batch", (unsigned long long)id);
    if (b->n == b->cap) {
        int cap = b->cap ? 2 * b->cap : 8;
        slot *g = realloc(b->slots, sizeof *g * (size_t)cap);
        if (!g) return err_set(err, "out of memory");
        b->slots = g, b->cap = cap;
    }
    b->slots[b->n++] = (slot){s, 0};
    return 0;
}

static gen_seq *remove_at(gen_batch *b, int i) {
    gen_seq *s = b->slots[i].s;
    b->slots[i] = b->slots[--b->n];
    if (b->next >= b->n) b->next = 0;
    return s;
}

gen_seq *batch_take(gen_batch *b) {
    for (int i = 0; i < b->n; i++)
        if (!b->slots[i].inflight || !b->e->async) return remove_at(b, i);
    /* after an engine failure nothing is coming back: in flight or not, hand them out */
    return b->n ? remove_at(b, 0) : NULL;
}

int batch_remove(gen_batch *b, gen_seq *s) {
    for (int i = 0; i < b->n; i++)
        if (b->slots[i].s == s) {
            if (b->slots[i].inflight) return -1;
            remove_at(b, i);
            return 0;
        }
    return -1;
}

/* feeds slot i the logits of its forward; DONE / FAILED / PROGRESS */
static int feed(gen_batch *b, int i, gen_seq **out, strata_err *err) {
    int rc = gen_seq_feed(b->slots[i].s, err);
    if (rc == 0) return BATCH_PROGRESS;
    *out = remove_at(b, i);
    return rc > 0 ? BATCH_DONE : BATCH_FAILED;
}

static int step_sync(gen_batch *b, gen_seq **out, strata_err *err) {
    int i = b->next;
    b->next = b->n ? (b->next + 1) % b->n : 0;
    gen_seq *s = b->slots[i].s;
    if (gen_seq_finished(s)) { *out = remove_at(b, i); return BATCH_DONE; }
    const int32_t *ids;
    int n, all;
    float *logits;
    gen_seq_input(s, &ids, &n, &all, &logits);
    if (b->e->ops->forward(b->e, gen_seq_session(s), ids, n, logits, all, err)) {
        *out = remove_at(b, i);
        return BATCH_FAILED;
    }
    return feed(b, i, out, err);
}

static int step_async(gen_batch *b, gen_seq **out, strata_err *err) {
    const engine_async_ops *a = b->e->async;
    for (int i = 0; i < b->n; i++) {
        slot *sl = &b->slots[i];
        if (sl->inflight) continue;
        if (gen_seq_finished(sl->s)) { *out = remove_at(b, i); return BATCH_DONE; }
        const int32_t *ids;
        int n, all;
        float *logits;
        gen_seq_input(sl->s, &ids, &n, &all, &logits);
        if (a->submit(b->e, gen_seq_session(sl->s), ids, n, logits, all, err)) {
            *out = remove_at(b, i);
            return BATCH_FAILED;
        }
        sl->inflight = 1;
    }
    uint64_t id = 0;
    int rc = a->collect(b->e, &id, err);
    int i = 0;
    while (i < b->n && gen_seq_session(b->slots[i].s) != id) i++;
    if (rc) {
        if (!id || i == b->n) return -1;
        *out = remove_at(b, i);
        return BATCH_FAILED;
    }
    if (i == b->n) return err_set(err, "engine returned session %llu, which is not in the batch", (unsigned long long)id);
    b->slots[i].inflight = 0;
    return feed(b, i, out, err);
}

int batch_step(gen_batch *b, gen_seq **out, strata_err *err) {
    *out = NULL;
    if (!b->n) return BATCH_PROGRESS;
    return b->e->async ? step_async(b, out, err) : step_sync(b, out, err);
}
