/* engine_cluster's asynchronous forwards (engine_async_ops, master/engine.h): several sessions in
 * flight through the chain at once, so that while worker A runs session 1's step, worker B runs
 * session 2's, and so on; aggregate tokens/s then grows with the number of workers.
 *
 * Each submitted forward is a "flight": the master runs its own segments up to the first worker
 * segment, sends the activations into that chain and returns. collect waits for any chain result
 * (matched by (session, step), which every message carries), runs the master's segments after
 * that chain (the head, or a master segment splitting two chains) and either sends the flight
 * into its next chain or hands its session back with the logits filled.
 *
 * Failover (master/failover.h) stays synchronous: a stale session (its workers lost their KV)
 * and every flight that was in the chain when a worker was lost are run again with fo_forward,
 * one at a time, once nothing else is in the chain (a synchronous forward would drop the other
 * sessions' results as stale). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "master/pipeline_impl.h"

enum { FL_FREE = 0, FL_CHAIN, FL_SYNC, FL_DONE };

typedef struct {
    uint64_t id;        /* the engine caller's session (cl_session.key) */
    int state;
    int seg;            /* FL_CHAIN: the chain's first segment; its last is `last` */
    int last;
    int n, all_logits;
    int32_t *ids;       /* a copy: a synchronous rerun needs them after submit returned */
    int ids_cap;
    float *xa, *xb;     /* activations between segments, [n, hidden] */
    size_t x_cap;
    float *logits;      /* the caller's */
    double t0;
} cl_flight;

struct cl_async {
    cl_flight *f;
    int n;
};

static cl_flight *flight_new(cluster *c, strata_err *err) {
    if (!c->as && !(c->as = calloc(1, sizeof *c->as))) { err_set(err, "out of memory"); return NULL; }
    for (int i = 0; i < c->as->n; i++)
        if (c->as->f[i].state == FL_FREE) return &c->as->f[i];
    cl_flight *g = realloc(c->as->f, sizeof *g * (size_t)(c->as->n + 1));
    if (!g) { err_set(err, "out of memory"); return NULL; }
    c->as->f = g;
    memset(&g[c->as->n], 0, sizeof *g);
    return &g[c->as->n++];
}

static cl_flight *flight_of(cluster *c, uint64_t id) {
    for (int i = 0; c->as && i < c->as->n; i++)
        if (c->as->f[i].state != FL_FREE && c->as->f[i].id == id) return &c->as->f[i];
    return NULL;
}

static int count_state(cluster *c, int state) {
    int k = 0;
    for (int i = 0; c->as && i < c->as->n; i++) k += c->as->f[i].state == state;
    return k;
}

void cl_async_drop(cluster *c, uint64_t session) {
    cl_flight *f = flight_of(c, session);
    if (f) f->state = FL_FREE; /* a result still on its way is ignored: nothing waits for it */
}

void cl_async_free(cluster *c) {
    for (int i = 0; c->as && i < c->as->n; i++) {
        free(c->as->f[i].ids);
        free(c->as->f[i].xa);
        free(c->as->f[i].xb);
    }
    if (c->as) free(c->as->f);
    free(c->as);
    c->as = NULL;
}

/* Runs the master's segments from f->seg on; stops after sending into a worker chain (FL_CHAIN)
 * or at the end (FL_DONE: the session's length and history are updated). */
static int advance(cluster *c, cl_session *s, cl_flight *f, strata_err *err) {
    int hidden = c->cfg.hidden_dim;
    for (int i = f->seg; i < c->plan.n_segments; i++) {
        const plan_segment *sg = &c->plan.segments[i];
        if (sg->worker == PLAN_MASTER) {
            if (fwd_run(c->locals[i].fs, s->kv[i], sg->embed ? f->ids : NULL, sg->embed ? NULL : f->xa, f->n,
                        sg->head ? NULL : f->xb, sg->head ? f->logits : NULL, f->all_logits, err))
                return err_prefix(err, "master layers %d-%d", sg->first_layer, sg->last_layer - 1);
            float *t = f->xa;
            f->xa = f->xb, f->xb = t;
            continue;
        }
        int last = i;
        while (last + 1 < c->plan.n_segments && c->plan.segments[last + 1].worker != PLAN_MASTER) last++;
        cl_worker *w = &c->workers[sg->worker];
        Strata__Envelope env = STRATA__ENVELOPE__INIT;
        Strata__Forward fw = STRATA__FORWARD__INIT;
        fw.session = s->id, fw.step = s->step, fw.pos0 = (uint32_t)s->len, fw.n_tokens = (uint32_t)f->n;
        fw.hidden_dim = (uint32_t)hidden, fw.dtype = STRATA__DTYPE__DTYPE_F32;
        env.body_case = STRATA__ENVELOPE__BODY_FORWARD;
        env.forward = &fw;
        f->t0 = progress_now_s();
        if (wire_send(w->sock, NULL, 0, &env, f->xa, (size_t)f->n * (size_t)hidden * sizeof(float), err))
            return err_prefix(err, "worker '%s'", w->tw->name);
        f->seg = i, f->last = last, f->state = FL_CHAIN;
        return 0;
    }
    s->len += f->n;
    if (fo_history_add(&s->hist, f->ids, f->n)) return err_set(err, "out of memory for the session's history");
    f->state = FL_DONE;
    return 0;
}

static int cl_submit(engine *e, uint64_t session, const int32_t *ids, int n, float *logits, int all_logits,
                     strata_err *err) {
    cluster *c = e->ctx;
    if (n <= 0) return err_set(err, "forward of %d tokens", n);
    if (flight_of(c, session)) return err_set(err, "session %llu already has a forward in flight", (unsigned long long)session);
    cl_session *s = cl_find_session(c, session, 1, err);
    if (!s) return -1;
    if (s->len + n > c->ctx_len) return err_set(err, "context full: %d positions held + %d new > %d", s->len, n, c->ctx_len);
    cl_flight *f = flight_new(c, err);
    if (!f) return -1;
    size_t need = (size_t)n * (size_t)c->cfg.hidden_dim;
    if (n > f->ids_cap) {
        int32_t *g = realloc(f->ids, sizeof *g * (size_t)n);
        if (!g) return err_set(err, "out of memory");
        f->ids = g, f->ids_cap = n;
    }
    if (need > f->x_cap) {
        float *a = realloc(f->xa, need * sizeof(float)), *b = a ? realloc(f->xb, need * sizeof(float)) : NULL;
        if (a) f->xa = a;
        if (b) f->xb = b;
        if (!a || !b) return err_set(err, "out of memory for activations");
        f->x_cap = need;
    }
    memcpy(f->ids, ids, sizeof *ids * (size_t)n);
    f->id = session, f->n = n, f->all_logits = all_logits, f->logits = logits, f->seg = 0;
    /* a stale session replays synchronously, and so does everything behind one (see the top) */
    if (s->stale || count_state(c, FL_SYNC)) {
        f->state = FL_SYNC;
        return 0;
    }
    s->step++;
    if (advance(c, s, f, err)) {
        f->state = FL_FREE;
        return -1;
    }
    return 0;
}

/* Runs one FL_SYNC flight with fo_forward (replay and failover included). */
static int run_sync(cluster *c, cl_flight *f, uint64_t *session, strata_err *err) {
    *session = f->id;
    cl_session *s = cl_find_session(c, f->id, 0, err);
    int rc = s ? fo_forward(c, s, f->ids, f->n, f->logits, f->all_logits, err) : -1;
    f->state = FL_FREE;
    return rc ? -1 : 0;
}

/* A worker's link went down: recover (failover.c), then every flight in the chain runs again. */
static int recover(cluster *c, strata_err *err) {
    int rc, attempt = 0;
    while ((rc = fo_recover(c, err)) == CL_LOST)
        if (++attempt >= 2 * c->n_workers + 1) return err_prefix(err, "giving up after %d failovers", attempt);
    if (rc) return -1;
    for (int i = 0; i < c->as->n; i++)
        if (c->as->f[i].state == FL_CHAIN) c->as->f[i].state = FL_SYNC;
    return 0;
}

/* A Result or Error from a worker: 1 when it belongs to no flight of ours (stale), else 0 with
 * *done = the flight it moved on, or -1 with err (*done = the flight that failed, or NULL when
 * the worker itself failed). */
static int on_message(cluster *c, int from, const wire_in *in, cl_flight **done, strata_err *err) {
    const Strata__Envelope *e = in->msg.env;
    int hidden = c->cfg.hidden_dim;
    uint64_t id, step;
    *done = NULL;
    if (e->body_case == STRATA__ENVELOPE__BODY_RESULT) id = e->result->session, step = e->result->step;
    else if (e->body_case == STRATA__ENVELOPE__BODY_ERROR) id = e->error->session, step = e->error->step;
    else return 1;
    if (e->body_case == STRATA__ENVELOPE__BODY_ERROR && !id) return cl_worker_error(c, from, e->error, err);
    cl_session *s = NULL; /* id is the wire's: see cl_session */
    for (int i = 0; i < c->n_sessions && !s; i++)
        if (c->sessions[i].id == id) s = &c->sessions[i];
    cl_flight *f = s ? flight_of(c, s->key) : NULL;
    if (!f || f->state != FL_CHAIN || s->step != step) return 1;
    *done = f;
    if (e->body_case == STRATA__ENVELOPE__BODY_ERROR) return cl_worker_error(c, from, e->error, err);
    const Strata__Result *r = e->result;
    if ((int)r->n_tokens != f->n || (int)r->hidden_dim != hidden || r->dtype != STRATA__DTYPE__DTYPE_F32 ||
        r->pos0 != (uint32_t)s->len)
        return err_set(err, "worker '%s': result of %u x %u at %u, expected %d x %d at %d", c->workers[from].tw->name,
                       r->n_tokens, r->hidden_dim, r->pos0, f->n, hidden, s->len);
    memcpy(f->xa, in->msg.payload, (size_t)f->n * (size_t)hidden * sizeof(float));
    int k = f->n == 1;
    c->stats.runs[k]++;
    c->stats.tokens[k] += (uint64_t)f->n;
    c->stats.chain_wall_s[k] += progress_now_s() - f->t0;
    c->stats.chain_compute_s[k] += (double)r->compute_us * 1e-6;
    f->seg = f->last + 1;
    return advance(c, s, f, err);
}

static int cl_collect(engine *e, uint64_t *session, strata_err *err) {
    cluster *c = e->ctx;
    *session = 0;
    for (;;) {
        for (int i = 0; c->as && i < c->as->n; i++)
            if (c->as->f[i].state == FL_DONE) {
                c->as->f[i].state = FL_FREE;
                *session = c->as->f[i].id;
                return 0;
            }
        if (!count_state(c, FL_CHAIN)) {
            for (int i = 0; c->as && i < c->as->n; i++)
                if (c->as->f[i].state == FL_SYNC) return run_sync(c, &c->as->f[i], session, err);
            return err_set(err, "collect with no forward in flight");
        }
        int from, rc;
        wire_in in;
        if ((rc = cl_recv_any(c, c->opts.reply_timeout_ms, &from, &in, err))) {
            if (rc == CL_LOST) {
                if (recover(c, err)) return -1;
                continue;
            }
            if (!strcmp(err->msg, "timeout"))
                return err_set(err, "no result from the chain within %d ms (%d forwards in flight)", c->opts.reply_timeout_ms,
                               count_state(c, FL_CHAIN));
            return -1;
        }
        cl_flight *f = NULL;
        rc = on_message(c, from, &in, &f, err);
        if (rc == 1)
            fprintf(stderr, "cluster: ignoring %s from worker '%s' (no forward in flight waits for it)\n",
                    wire_body_name(in.msg.env->body_case), c->workers[from].tw->name);
        wire_in_close(&in);
        if (rc < 0) {
            if (!f) return -1; /* the engine as a whole */
            *session = f->id;
            f->state = FL_FREE;
            return -1;
        }
    }
}

const engine_async_ops cl_async_ops = {cl_submit, cl_collect};
