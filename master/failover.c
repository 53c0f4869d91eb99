/* Failover: see failover.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/linkmon.h"
#include "master/pipeline_impl.h"

/* ---- a session's history ---- */

int fo_history_add(fo_history *h, const int32_t *ids, int n) {
    if (h->n + n > h->cap) {
        int cap = h->cap ? h->cap : 256;
        while (cap < h->n + n) cap *= 2;
        int32_t *g = realloc(h->ids, sizeof *g * (size_t)cap);
        if (!g) return -1;
        h->ids = g, h->cap = cap;
    }
    if (h->n_batches == h->batch_cap) {
        int cap = h->batch_cap ? 2 * h->batch_cap : 64;
        int *g = realloc(h->batch, sizeof *g * (size_t)cap);
        if (!g) return -1;
        h->batch = g, h->batch_cap = cap;
    }
    memcpy(h->ids + h->n, ids, sizeof *ids * (size_t)n);
    h->n += n;
    h->batch[h->n_batches++] = n;
    return 0;
}

void fo_history_trim(fo_history *h, int len) {
    if (len >= h->n) return;
    /* drop whole batches past len, then cut the one that straddles it */
    int end = h->n;
    while (h->n_batches && end - h->batch[h->n_batches - 1] >= len) end -= h->batch[--h->n_batches];
    if (h->n_batches && end > len) h->batch[h->n_batches - 1] -= end - len;
    h->n = len;
}

void fo_history_free(fo_history *h) {
    free(h->ids);
    free(h->batch);
    memset(h, 0, sizeof *h);
}

/* ---- detection ---- */

int fo_link_event(cluster *c, int i, strata_err *err) {
    cl_worker *w = &c->workers[i];
    int ev;
    uint32_t value;
    while (w->mon && link_monitor_read(w->mon, &ev, &value, NULL, 0) == 1) {
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL || ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL ||
            ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
            c->lost_worker = -1;
            return err_set(err, "worker '%s' at %s refused this master: %s (see the worker's log)", w->tw->name,
                           w->tw->host, link_handshake_reason(ev, value));
        }
        /* before its hello the worker may simply not be up yet: the socket keeps reconnecting */
        if (ev == ZMQ_EVENT_DISCONNECTED && w->hello_ok && !w->lost) {
            c->lost_worker = i;
            return err_set(err, "worker '%s' at %s: link lost (connection closed, or no heartbeat within %d ms)",
                           w->tw->name, w->tw->host, LINK_HEARTBEAT_TIMEOUT_MS);
        }
    }
    return 0;
}

/* ---- recovery ---- */

static void count_hops(cluster *c) {
    c->stats.hops = 0;
    for (int i = 0; i < c->plan.n_segments; i++)
        if (c->plan.segments[i].worker != PLAN_MASTER)
            c->stats.hops += 1 + (i == 0 || c->plan.segments[i - 1].worker == PLAN_MASTER);
}

/* Waits for worker L's hello on its fresh socket. 0: it answered with our protocol version. */
static int await_hello(cluster *c, int L, int timeout_ms, strata_err *err) {
    cl_worker *w = &c->workers[L];
    double deadline = progress_now_s() + timeout_ms * 1e-3;
    for (;;) {
        int left = (int)((deadline - progress_now_s()) * 1e3);
        if (left <= 0) return err_set(err, "no answer within %d ms", timeout_ms);
        zmq_pollitem_t items[2] = {{w->sock, 0, ZMQ_POLLIN, 0}, {w->mon, 0, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(items, 2, left);
        if (rc < 0 && errno == EINTR) continue;
        if (rc < 0) return err_set(err, "poll: %s", zmq_strerror(errno));
        if ((items[1].revents & ZMQ_POLLIN) && fo_link_event(c, L, err)) return -1;
        if (!(items[0].revents & ZMQ_POLLIN)) continue;
        wire_in in;
        int st = wire_recv(w->sock, 0, &in, err);
        int ok = st == WIRE_OK && in.msg.env->body_case == STRATA__ENVELOPE__BODY_HELLO &&
                 in.msg.env->hello->protocol_version == WIRE_PROTOCOL_VERSION;
        wire_in_close(&in);
        if (ok) return 0;
        if (st == -1) return -1; /* anything else from it (a stale reply) is skipped */
    }
}

/* 1. The lost worker restarted at its address: same Assign; its cache makes it cheap. */
static int try_rejoin(cluster *c, int L, strata_err *err) {
    cl_worker *w = &c->workers[L];
    /* a fresh socket drops whatever was queued for the dead connection (stale forwards) */
    w->hello_ok = 0;
    if (cl_socket_open(c, L, err) || cl_send_hello(c, L, err)) return -1;
    if (await_hello(c, L, c->opts.rejoin_ms, err)) return -1;
    w->hello_ok = 1;
    uint64_t sent0 = c->stats.bundle_bytes_sent;
    int rc = cl_send_assign(c, L, err);
    if (!rc) rc = cl_serve_until_ready(c, err);
    if (rc) return rc;
    fprintf(stderr, "cluster: worker '%s' rejoined: layers back on it, %s (%llu bundle bytes sent)\n", w->tw->name,
            w->cached ? "its bundle was cached" : "bundle re-sent", (unsigned long long)(c->stats.bundle_bytes_sent - sent0));
    return 0;
}

/* 2. The master runs the lost worker's layers itself: it holds the whole model already. */
static int take_over(cluster *c, int L, strata_err *err) {
    cl_worker *w = &c->workers[L];
    int seg = c->plan.worker_segment[L];
    plan_segment *sg = &c->plan.segments[seg];
    model_part part = {sg->first_layer, sg->last_layer, 0, 0};
    cl_local *lo = &c->locals[seg];
    w->lost = 1;
    w->ready = 0;
    link_monitor_close(&w->mon);
    if (w->sock) { /* linger 0: nothing queued for it may reach a process that comes up at its address */
        int zero = 0;
        zmq_setsockopt(w->sock, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(w->sock);
    }
    w->sock = NULL;
    if (!(lo->m = model_load(c->st, &c->cfg, &part, c->be, err)) || !(lo->fs = fwd_new(lo->m, MAX_BATCH, err)))
        return err_prefix(err, "taking over layers %d-%d of worker '%s'", sg->first_layer, sg->last_layer - 1, w->tw->name);
    for (int i = 0; i < c->n_sessions; i++)
        if (!(c->sessions[i].kv[seg] = kv_new(lo->m, c->ctx_len, err))) return -1;
    sg->worker = PLAN_MASTER;
    count_hops(c);
    fprintf(stderr, "cluster: layers %d-%d of lost worker '%s' now run on the master (nothing sent: the master holds the model)\n",
            sg->first_layer, sg->last_layer - 1, w->tw->name);
    /* the worker before it in the chain now returns its output to the master */
    if (seg > 0 && c->plan.segments[seg - 1].worker != PLAN_MASTER) {
        int p = c->plan.segments[seg - 1].worker;
        fprintf(stderr, "cluster: worker '%s' re-assigned: its output now returns to the master\n", c->workers[p].tw->name);
        int rc = cl_send_assign(c, p, err);
        if (!rc) rc = cl_serve_until_ready(c, err);
        return rc;
    }
    return 0;
}

int fo_recover(cluster *c, strata_err *err) {
    int L = c->lost_worker;
    if (L < 0 || L >= c->n_workers || c->workers[L].lost) return err_set(err, "failover: no lost worker to recover from");
    double t0 = progress_now_s();
    c->stats.failovers++;
    fprintf(stderr, "cluster: %s; recovering (%d sessions to replay)\n", err->msg, c->n_sessions);
    /* every session had KV on the lost worker (or on the chain after it): all replay */
    for (int i = 0; i < c->n_sessions; i++) c->sessions[i].stale = 1;
    c->workers[L].ready = 0;
    strata_err why = {{0}};
    int rc = -1;
    if (c->opts.rejoin_ms > 0) {
        rc = try_rejoin(c, L, &why);
        if (!rc) c->stats.rejoins++;
        else if (rc == CL_LOST) { *err = why; return rc; }
        else fprintf(stderr, "cluster: worker '%s' did not come back within %d ms (%s)\n", c->workers[L].tw->name,
                     c->opts.rejoin_ms, why.msg);
    }
    if (rc) rc = take_over(c, L, err);
    c->stats.recover_s += progress_now_s() - t0;
    return rc;
}

/* Runs the session's history again from position 0, in its original batches. */
static int replay(cluster *c, cl_session *s, strata_err *err) {
    double t0 = progress_now_s();
    float *scratch = malloc(sizeof(float) * (size_t)c->cfg.vocab_size);
    if (!scratch) return err_set(err, "out of memory");
    s->stale = 0;
    for (int i = 0; i < c->plan.n_segments; i++)
        if (s->kv[i] && kv_trim(s->kv[i], 0, err)) { free(scratch); return -1; }
    s->len = 0;
    int rc = 0, off = 0;
    for (int b = 0; !rc && b < s->hist.n_batches; off += s->hist.batch[b++])
        rc = cl_forward_once(c, s, s->hist.ids + off, s->hist.batch[b], scratch, 0, err);
    free(scratch);
    if (rc == CL_LOST) s->stale = 1;
    else if (!rc)
        fprintf(stderr, "cluster: session %llu replayed: %d tokens in %d batches, %.2f s\n", (unsigned long long)s->id,
                s->hist.n, s->hist.n_batches, progress_now_s() - t0);
    c->stats.recover_s += progress_now_s() - t0;
    return rc;
}

int fo_forward(cluster *c, cl_session *s, const int32_t *ids, int n, float *logits, int all_logits, strata_err *err) {
    int rc;
    /* each recovery either brings a worker back or retires it; a rejoining worker that keeps
     * dying could loop, hence the bound */
    for (int attempt = 0;; attempt++) {
        rc = s->stale ? replay(c, s, err) : 0;
        if (!rc) rc = cl_forward_once(c, s, ids, n, logits, all_logits, err);
        if (rc != CL_LOST) break;
        if (attempt >= 2 * c->n_workers + 1) return err_prefix(err, "giving up after %d failovers", attempt);
        while ((rc = fo_recover(c, err)) == CL_LOST) {
            if (++attempt >= 2 * c->n_workers + 1) return err_prefix(err, "giving up after %d failovers", attempt);
        }
        if (rc) return -1;
    }
    if (rc) return -1;
    if (fo_history_add(&s->hist, ids, n)) return err_set(err, "out of memory for the session's history");
    return 0;
}
