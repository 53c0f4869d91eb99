/* engine_cluster: see pipeline.h. */
#include "master/pipeline.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/linkmon.h"
#include "master/pipeline_impl.h"

void cluster_opts_default(cluster_opts *o) {
    memset(o, 0, sizeof *o);
    o->connect_timeout_ms = 5000;
    o->reply_timeout_ms = 120000;
    o->chunk_bytes = 1u << 20;
    o->credit = 8;
    o->rejoin_ms = 2000;
}

static char *read_text(const char *path, strata_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) { err_set(err, "%s: %s", path, strerror(errno)); return NULL; }
    char *buf = malloc(WIRE_MAX_CTRL_BYTES / 2 + 1);
    size_t n = buf ? fread(buf, 1, WIRE_MAX_CTRL_BYTES / 2 + 1, f) : 0;
    fclose(f);
    if (!buf) { err_set(err, "out of memory"); return NULL; }
    if (n > WIRE_MAX_CTRL_BYTES / 2) { free(buf); err_set(err, "%s: too large for a config", path); return NULL; }
    buf[n] = 0;
    return buf;
}

/* Waits up to timeout_ms for one message from any worker; *from is its index. 0, or -1 with err
 * (timeout or socket error). A message that does not decode is reported as an error too: a
 * worker never sends one, so it means a broken peer. */
static int recv_any(cluster *c, int timeout_ms, int *from, wire_in *in, strata_err *err) {
    /* [0, n): the workers' sockets, [n, 2n): their monitors; a lost worker's entries stay empty */
    int nw = c->n_workers;
    zmq_pollitem_t items[2 * (nw ? nw : 1)];
    for (int i = 0; i < nw; i++) {
        int on = !c->workers[i].lost && c->workers[i].sock;
        items[i] = (zmq_pollitem_t){on ? c->workers[i].sock : NULL, -1, on ? ZMQ_POLLIN : 0, 0};
        items[nw + i] = (zmq_pollitem_t){on ? c->workers[i].mon : NULL, -1, on && c->workers[i].mon ? ZMQ_POLLIN : 0, 0};
    }
    double deadline = progress_now_s() + timeout_ms * 1e-3;
    for (;;) {
        int left = (int)((deadline - progress_now_s()) * 1e3);
        if (left < 0) left = 0;
        int rc = zmq_poll(items, 2 * nw, left);
        if (rc < 0 && errno == EINTR) continue;
        if (rc < 0) return err_set(err, "poll: %s", zmq_strerror(errno));
        if (rc == 0) return err_set(err, "timeout");
        for (int i = 0; i < nw; i++)
            if ((items[nw + i].revents & ZMQ_POLLIN) && fo_link_event(c, i, err)) return c->lost_worker == i ? CL_LOST : -1;
        for (int i = 0; i < nw; i++)
            if (items[i].revents & ZMQ_POLLIN) {
                *from = i;
                int st = wire_recv(c->workers[i].sock, 0, in, err);
                if (st == WIRE_OK) return 0;
                wire_in_close(in);
                return err_prefix(err, "worker '%s' sent a bad message", c->workers[i].tw->name);
            }
    }
}

static int worker_error(cluster *c, int w, const Strata__Error *e, strata_err *err) {
    if (e->code == STRATA__ERROR_CODE__ERR_VERSION)
        return err_set(err, "worker '%s' (%s): protocol version mismatch: the worker speaks %u, this master speaks %u (%s)",
                       c->workers[w].tw->name, c->workers[w].tw->host, e->protocol_version, WIRE_PROTOCOL_VERSION,
                       e->message);
    return err_set(err, "worker '%s' (%s): %s", c->workers[w].tw->name, c->workers[w].tw->host, e->message);
}

int cl_socket_open(cluster *c, int i, strata_err *err) {
    cl_worker *w = &c->workers[i];
    link_monitor_close(&w->mon);
    if (w->sock) {
        /* linger 0: what was queued for a lost worker (a forward sent before its loss was seen)
         * must not go out when the socket reconnects to the worker restarted at that address,
         * after its replay: it would roll its KV back to a stale position */
        int zero = 0;
        zmq_setsockopt(w->sock, ZMQ_LINGER, &zero, sizeof zero);
        zmq_close(w->sock);
    }
    /* heartbeats and the monitor: a lost worker is noticed in seconds (common/linkmon.h) */
    if (!(w->sock = zmq_socket(c->zctx, ZMQ_DEALER)) || wire_socket_setup(w->sock, MASTER_LINGER_MS) ||
        link_heartbeat_setup(w->sock))
        return err_set(err, "worker '%s': socket: %s", w->tw->name, zmq_strerror(errno));
    if (curve_key_set(&c->key) && curve_client_setup(w->sock, &c->key, err)) return err_prefix(err, "worker '%s'", w->tw->name);
    if (!(w->mon = link_monitor_open(c->zctx, w->sock,
                                     ZMQ_EVENT_DISCONNECTED | ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL |
                                         ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, err)))
        return err_prefix(err, "worker '%s'", w->tw->name);
    if (zmq_connect(w->sock, w->endpoint))
        return err_set(err, "worker '%s': cannot connect to '%s': %s", w->tw->name, w->endpoint, zmq_strerror(errno));
    return 0;
}

int cl_send_hello(cluster *c, int i, strata_err *err) {
    Strata__Envelope env = STRATA__ENVELOPE__INIT;
    Strata__Hello h = STRATA__HELLO__INIT;
    h.protocol_version = WIRE_PROTOCOL_VERSION;
    h.name = "master";
    h.backend = (char *)c->be->ops->name;
    env.body_case = STRATA__ENVELOPE__BODY_HELLO;
    env.hello = &h;
    if (wire_send(c->workers[i].sock, NULL, 0, &env, NULL, 0, err)) return err_prefix(err, "worker '%s'", c->workers[i].tw->name);
    return 0;
}

static int say_hello(cluster *c, strata_err *err) {
    for (int i = 0; i < c->n_workers; i++)
        if (cl_socket_open(c, i, err) || cl_send_hello(c, i, err)) return -1;
    double deadline = progress_now_s() + c->opts.connect_timeout_ms * 1e-3;
    for (int answered = 0; answered < c->n_workers;) {
        int left = (int)((deadline - progress_now_s()) * 1e3), from;
        wire_in in;
        if (left <= 0 || recv_any(c, left > 0 ? left : 0, &from, &in, err)) {
            if (strcmp(err->msg, "timeout") && left > 0) return -1;
            for (int i = 0; i < c->n_workers; i++)
                if (!c->workers[i].hello_ok)
                    return err_set(err, "worker '%s' at %s: no answer to hello within %d ms (unreachable host, or no "
                                   "strata-worker listening there)", c->workers[i].tw->name, c->workers[i].tw->host,
                                   c->opts.connect_timeout_ms);
            return -1;
        }
        const Strata__Envelope *e = in.msg.env;
        cl_worker *w = &c->workers[from];
        int rc = 0;
        if (e->body_case == STRATA__ENVELOPE__BODY_ERROR) rc = worker_error(c, from, e->error, err);
        else if (e->body_case != STRATA__ENVELOPE__BODY_HELLO)
            rc = err_set(err, "worker '%s': expected hello, got %s", w->tw->name, wire_body_name(e->body_case));
        else if (e->hello->protocol_version != WIRE_PROTOCOL_VERSION)
            rc = err_set(err, "worker '%s' (%s): protocol version mismatch: the worker speaks %u, this master speaks %u",
                         w->tw->name, w->tw->host, e->hello->protocol_version, WIRE_PROTOCOL_VERSION);
        else if (!w->hello_ok) {
            w->hello_ok = 1;
            answered++;
            snprintf(w->backend, sizeof w->backend, "%s", e->hello->backend);
            snprintf(w->device, sizeof w->device, "%s", e->hello->device);
            w->memory_bytes = e->hello->memory_bytes;
            fprintf(stderr, "cluster: worker '%s' at %s: %s, %s, %.1f GB free, %.2f G q4 weights/s\n", w->tw->name,
                    w->tw->host, e->hello->name, w->device, w->memory_bytes / 1e9, e->hello->speed);
        }
        wire_in_close(&in);
        if (rc) return rc;
    }
    return 0;
}

/* Assigns every worker its part and serves bundle chunks until all are ready. */
/* Sends worker i its Assign (building and hashing its bundle the first time); it is not ready
 * until cl_serve_until_ready has seen its Ready. Also used by failover to re-assign. */
int cl_send_assign(cluster *c, int i, strata_err *err) {
    cl_worker *w = &c->workers[i];
    const plan_segment *s = &c->plan.segments[c->plan.worker_segment[i]];
    model_part part = {s->first_layer, s->last_layer, 0, 0};
    char label[200];
    if (!w->b) {
        if (!(w->b = bundle_new(c->st, &c->cfg, c->config_json, &part, err))) return err_prefix(err, "worker '%s'", w->tw->name);
        snprintf(label, sizeof label, "cluster: hashing bundle for '%s'", w->tw->name);
        if (bundle_hash(w->b, w->hash, bundle_size(w->b) > (64u << 20) ? label : NULL, err)) return -1;
        c->stats.bundle_bytes_total += bundle_size(w->b);
    }
    w->ready = 0;
    int next = plan_next(&c->plan, c->plan.worker_segment[i]);
    const plan_segment *ns = next >= 0 ? &c->plan.segments[next] : NULL;
    Strata__Envelope env = STRATA__ENVELOPE__INIT;
    Strata__Assign a = STRATA__ASSIGN__INIT;
    a.config_json = c->config_json;
    a.first_layer = (uint32_t)s->first_layer;
    a.last_layer = (uint32_t)s->last_layer;
    a.bundle_sha256.data = w->hash;
    a.bundle_sha256.len = SHA256_BYTES;
    a.bundle_bytes = bundle_size(w->b);
    a.next_hop = ns && ns->worker != PLAN_MASTER ? c->workers[ns->worker].endpoint : "";
    a.ctx_len = (uint32_t)c->ctx_len;
    a.chunk_bytes = c->opts.chunk_bytes;
    a.credit = c->opts.credit;
    env.body_case = STRATA__ENVELOPE__BODY_ASSIGN;
    env.assign = &a;
    char hex[SHA256_HEX_BYTES];
    sha256_hex(w->hash, hex);
    fprintf(stderr, "cluster: worker '%s': layers %d-%d, bundle %d tensors, %.1f MB, sha256 %.16s\n", w->tw->name,
            s->first_layer, s->last_layer - 1, bundle_tensor_count(w->b), bundle_size(w->b) / 1e6, hex);
    if (wire_send(w->sock, NULL, 0, &env, NULL, 0, err)) return err_prefix(err, "worker '%s'", w->tw->name);
    return 0;
}

/* Serves bundle chunks until every worker that is not lost is ready. 0, CL_LOST or -1. */
int cl_serve_until_ready(cluster *c, strata_err *err) {
    if (!c->chunk && !(c->chunk = malloc(c->opts.chunk_bytes))) return err_set(err, "out of memory");
    progress p;
    int shown = 0, waiting = 0;
    uint64_t total = 0;
    for (int i = 0; i < c->n_workers; i++)
        if (!c->workers[i].lost && !c->workers[i].ready) waiting++, total += bundle_size(c->workers[i].b);
    progress_start(&p, "cluster: bundles", total);
    while (waiting > 0) {
        int from, got;
        wire_in in;
        if ((got = recv_any(c, c->opts.reply_timeout_ms, &from, &in, err))) {
            if (got == -1 && !strcmp(err->msg, "timeout"))
                for (int i = 0; i < c->n_workers; i++)
                    if (!c->workers[i].ready && !c->workers[i].lost)
                        return err_set(err, "worker '%s': no progress on its bundle within %d ms", c->workers[i].tw->name,
                                       c->opts.reply_timeout_ms);
            return got;
        }
        const Strata__Envelope *e = in.msg.env;
        cl_worker *w = &c->workers[from];
        int rc = 0;
        if (e->body_case == STRATA__ENVELOPE__BODY_FETCH) {
            uint32_t n = e->fetch->size;
            if (n > c->opts.chunk_bytes) n = c->opts.chunk_bytes;
            if (bundle_read(w->b, e->fetch->offset, c->chunk, n, err)) rc = err_prefix(err, "worker '%s' fetch", w->tw->name);
            else {
                Strata__Envelope out = STRATA__ENVELOPE__INIT;
                Strata__BundleChunk ch = STRATA__BUNDLE_CHUNK__INIT;
                ch.offset = e->fetch->offset;
                out.body_case = STRATA__ENVELOPE__BODY_CHUNK;
                out.chunk = &ch;
                rc = wire_send(w->sock, NULL, 0, &out, c->chunk, n, err);
                w->sent += n;
                c->stats.bundle_bytes_sent += n;
                progress_add(&p, n);
                shown = 1;
            }
        } else if (e->body_case == STRATA__ENVELOPE__BODY_READY) {
            if (!w->ready) waiting--;
            w->ready = 1;
            w->cached = e->ready->cached;
            if (c->stats.setup_s == 0) c->stats.n_cached += w->cached; /* setup's count, not a failover's */
            fprintf(stderr, "cluster: worker '%s' ready: layers %u-%u %s, RSS %.1f MB\n", w->tw->name,
                    e->ready->first_layer, e->ready->last_layer - 1,
                    w->cached ? "(bundle was cached: nothing sent)" : "(bundle received)", e->ready->rss_bytes / 1e6);
        } else if (e->body_case == STRATA__ENVELOPE__BODY_ERROR && !e->error->session) {
            rc = worker_error(c, from, e->error, err);
        } else if (e->body_case != STRATA__ENVELOPE__BODY_RESULT && e->body_case != STRATA__ENVELOPE__BODY_ERROR) {
            rc = err_set(err, "worker '%s': unexpected %s during setup", w->tw->name, wire_body_name(e->body_case));
        } /* else: a result or a session's error from before a failover: stale */
        wire_in_close(&in);
        if (rc) return rc;
    }
    if (shown) progress_finish(&p);
    return 0;
}

static int ship_bundles(cluster *c, strata_err *err) {
    for (int i = 0; i < c->n_workers; i++)
        if (cl_send_assign(c, i, err)) return -1;
    if (cl_serve_until_ready(c, err)) return -1;
    fprintf(stderr, "cluster: bundle bytes sent: %llu (%d of %d workers had their bundle cached)\n",
            (unsigned long long)c->stats.bundle_bytes_sent, c->stats.n_cached, c->n_workers);
    return 0;
}

static cl_session *find_session(cluster *c, uint64_t id, int create, strata_err *err) {
    for (int i = 0; i < c->n_sessions; i++)
        if (c->sessions[i].key == id) return &c->sessions[i];
    if (!create) { err_set(err, "no session %llu", (unsigned long long)id); return NULL; }
    cl_session *g = realloc(c->sessions, sizeof *g * (size_t)(c->n_sessions + 1));
    if (!g) { err_set(err, "out of memory"); return NULL; }
    c->sessions = g;
    cl_session *s = &c->sessions[c->n_sessions];
    memset(s, 0, sizeof *s);
    s->key = id;
    s->id = ++c->wire_ids; /* see cl_session.id */
    if (!(s->kv = calloc((size_t)c->plan.n_segments, sizeof *s->kv))) { err_set(err, "out of memory"); return NULL; }
    c->n_sessions++;
    for (int i = 0; i < c->plan.n_segments; i++)
        if (c->locals[i].m && !(s->kv[i] = kv_new(c->locals[i].m, c->ctx_len, err))) return NULL;
    return s;
}

static void session_free(cl_session *s, int n_segments) {
    for (int i = 0; i < n_segments; i++) kv_free(&s->kv[i]);
    free(s->kv);
    fo_history_free(&s->hist);
}

/* Sends x [n, hidden] into the chain starting at segment `first` and waits for the chain's
 * result into out. */
static int run_chain(cluster *c, cl_session *s, int first, int last, const float *x, int n, float *out, strata_err *err) {
    int hidden = c->cfg.hidden_dim;
    size_t bytes = (size_t)n * (size_t)hidden * sizeof(float);
    cl_worker *w = &c->workers[c->plan.segments[first].worker];
    Strata__Envelope env = STRATA__ENVELOPE__INIT;
    Strata__Forward f = STRATA__FORWARD__INIT;
    f.session = s->id, f.step = s->step, f.pos0 = (uint32_t)s->len, f.n_tokens = (uint32_t)n;
    f.hidden_dim = (uint32_t)hidden, f.dtype = STRATA__DTYPE__DTYPE_F32;
    env.body_case = STRATA__ENVELOPE__BODY_FORWARD;
    env.forward = &f;
    double t0 = progress_now_s();
    if (wire_send(w->sock, NULL, 0, &env, x, bytes, err)) return err_prefix(err, "worker '%s'", w->tw->name);
    int tail = c->plan.segments[last].worker;
    for (;;) {
        int from, lost;
        wire_in in;
        if ((lost = recv_any(c, c->opts.reply_timeout_ms, &from, &in, err))) {
            if (lost == -1 && !strcmp(err->msg, "timeout"))
                return err_set(err, "no result for session %llu step %llu from the chain ending at worker '%s' within %d ms",
                               (unsigned long long)s->id, (unsigned long long)s->step, c->workers[tail].tw->name,
                               c->opts.reply_timeout_ms);
            return lost; /* CL_LOST: the caller's failover takes it from here */
        }
        const Strata__Envelope *e = in.msg.env;
        int rc = 1; /* 1: not ours, keep waiting */
        if (e->body_case == STRATA__ENVELOPE__BODY_RESULT && e->result->session == s->id && e->result->step == s->step) {
            const Strata__Result *r = e->result;
            if ((int)r->n_tokens != n || (int)r->hidden_dim != hidden || r->dtype != STRATA__DTYPE__DTYPE_F32 ||
                r->pos0 != (uint32_t)s->len)
                rc = err_set(err, "worker '%s': result of %u x %u at %u, expected %d x %d at %d", c->workers[from].tw->name,
                             r->n_tokens, r->hidden_dim, r->pos0, n, hidden, s->len);
            else {
                memcpy(out, in.msg.payload, bytes);
                int k = n == 1;
                c->stats.runs[k]++;
                c->stats.tokens[k] += (uint64_t)n;
                c->stats.chain_wall_s[k] += progress_now_s() - t0;
                c->stats.chain_compute_s[k] += (double)r->compute_us * 1e-6;
                rc = 0;
            }
        } else if (e->body_case == STRATA__ENVELOPE__BODY_ERROR &&
                   (!e->error->session || (e->error->session == s->id && e->error->step == s->step))) {
            rc = worker_error(c, from, e->error, err);
        } else {
            /* a result or error of an earlier step: it went out before a failover and is stale */
            fprintf(stderr, "cluster: ignoring %s from worker '%s' while waiting for session %llu step %llu\n",
                    wire_body_name(e->body_case), c->workers[from].tw->name, (unsigned long long)s->id,
                    (unsigned long long)s->step);
        }
        wire_in_close(&in);
        if (rc <= 0) return rc;
    }
}

static int cl_forward(engine *e, uint64_t session, const int32_t *ids, int n, float *logits, int all_logits,
                      strata_err *err) {
    cluster *c = e->ctx;
    cl_session *s = find_session(c, session, 1, err);
    if (!s) return -1;
    if (n <= 0) return err_set(err, "forward of %d tokens", n);
    if (s->len + n > c->ctx_len) return err_set(err, "context full: %d positions held + %d new > %d", s->len, n, c->ctx_len);
    return fo_forward(c, s, ids, n, logits, all_logits, err); /* cl_forward_once, with failover */
}

/* One forward through the plan as it stands. 0, -1, or CL_LOST (a worker's link went down). */
int cl_forward_once(cluster *c, cl_session *s, const int32_t *ids, int n, float *logits, int all_logits, strata_err *err) {
    size_t need = (size_t)n * (size_t)c->cfg.hidden_dim;
    if (need > c->x_cap) {
        float *a = realloc(c->xa, need * sizeof(float)), *b = a ? realloc(c->xb, need * sizeof(float)) : NULL;
        if (a) c->xa = a;
        if (b) c->xb = b;
        if (!a || !b) return err_set(err, "out of memory for activations");
        c->x_cap = need;
    }
    s->step++;
    /* xa holds the activations between segments */
    for (int i = 0; i < c->plan.n_segments; i++) {
        const plan_segment *sg = &c->plan.segments[i];
        if (sg->worker == PLAN_MASTER) {
            int rc = fwd_run(c->locals[i].fs, s->kv[i], sg->embed ? ids : NULL, sg->embed ? NULL : c->xa, n,
                             sg->head ? NULL : c->xb, sg->head ? logits : NULL, all_logits, err);
            if (rc) return err_prefix(err, "master layers %d-%d", sg->first_layer, sg->last_layer - 1);
        } else {
            int last = i;
            while (last + 1 < c->plan.n_segments && c->plan.segments[last + 1].worker != PLAN_MASTER) last++;
            int rc = run_chain(c, s, i, last, c->xa, n, c->xb, err);
            if (rc) return rc;
            i = last;
        }
        float *t = c->xa;
        c->xa = c->xb;
        c->xb = t;
    }
    s->len += n;
    return 0;
}

static void send_all(cluster *c, const Strata__Envelope *env) {
    for (int i = 0; i < c->n_workers; i++)
        if (c->workers[i].ready && !c->workers[i].lost) wire_send(c->workers[i].sock, NULL, 0, env, NULL, 0, NULL);
}

static int cl_trim(engine *e, uint64_t session, int len, strata_err *err) {
    cluster *c = e->ctx;
    cl_session *s = find_session(c, session, 0, err);
    if (!s) return -1;
    if (len < 0 || len > s->len) return err_set(err, "cannot trim session %llu of %d positions to %d", (unsigned long long)session, s->len, len);
    for (int i = 0; i < c->plan.n_segments; i++) /* a stale session's local KV is rebuilt by its replay */
        if (s->kv[i] && !s->stale && kv_trim(s->kv[i], len, err)) return -1;
    fo_history_trim(&s->hist, len);
    Strata__Envelope env = STRATA__ENVELOPE__INIT;
    Strata__KvTrim t = STRATA__KV_TRIM__INIT;
    t.session = s->id;
    t.len = (uint32_t)len;
    env.body_case = STRATA__ENVELOPE__BODY_TRIM;
    env.trim = &t;
    /* Only to the heads of chains (workers fed by the master): a worker deeper in a chain gets
     * its Forwards from the previous worker and this Trim from the master, two peers whose
     * messages its socket does not order, so a Trim could overtake the Forward sent before it or
     * land after the next one (then cutting what that one added). The next Forward's pos0 == len
     * rolls every worker back anyway (exec_forward). */
    for (int i = 0; i < c->plan.n_segments; i++) {
        int w = c->plan.segments[i].worker;
        if (w == PLAN_MASTER || (i > 0 && c->plan.segments[i - 1].worker != PLAN_MASTER)) continue;
        if (c->workers[w].ready && !c->workers[w].lost) wire_send(c->workers[w].sock, NULL, 0, &env, NULL, 0, NULL);
    }
    s->len = len;
    return 0;
}

static void cl_end(engine *e, uint64_t session) {
    cluster *c = e->ctx;
    cl_async_drop(c, session);
    for (int i = 0; i < c->n_sessions; i++)
        if (c->sessions[i].key == session) {
            Strata__Envelope env = STRATA__ENVELOPE__INIT;
            Strata__SessionEnd se = STRATA__SESSION_END__INIT;
            se.session = c->sessions[i].id;
            env.body_case = STRATA__ENVELOPE__BODY_END;
            env.end = &se;
            send_all(c, &env);
            session_free(&c->sessions[i], c->plan.n_segments);
            c->sessions[i] = c->sessions[--c->n_sessions];
            return;
        }
}

static void cl_destroy(engine *e) {
    cluster *c = e->ctx;
    while (c->n_sessions) cl_end(e, c->sessions[0].key);
    free(c->sessions);
    cl_async_free(c);
    for (int i = 0; c->locals && i < c->plan.n_segments; i++) {
        fwd_free(&c->locals[i].fs);
        model_free(&c->locals[i].m);
    }
    free(c->locals);
    for (int i = 0; c->workers && i < c->n_workers; i++) {
        link_monitor_close(&c->workers[i].mon);
        if (c->workers[i].sock) zmq_close(c->workers[i].sock);
        bundle_free(&c->workers[i].b);
    }
    free(c->workers);
    if (c->zctx) zmq_ctx_term(c->zctx);
    backend_destroy(&c->be);
    plan_free(&c->plan);
    topo_free(&c->topo);
    st_model_close(&c->st);
    free(c->config_json);
    free(c->xa);
    free(c->xb);
    free(c->chunk);
    free(c);
    free(e);
}

static const engine_ops cluster_ops = {cl_forward, cl_trim, cl_end, cl_destroy};

engine *engine_cluster_new(const char *model_dir, const char *backend_name, int n_threads, int ctx_len,
                           const cluster_opts *o, strata_err *err) {
    cluster *c = calloc(1, sizeof *c);
    engine *e = calloc(1, sizeof *e);
    if (!c || !e) { free(c); free(e); err_set(err, "out of memory"); return NULL; }
    e->ops = &cluster_ops;
    e->ctx = c;
    e->cfg = &c->cfg;
    c->opts = *o;
    double t0 = progress_now_s();
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", model_dir);
    if (config_load(model_dir, &c->cfg, err) || !(c->config_json = read_text(path, err))) goto fail;
    c->ctx_len = ctx_len < c->cfg.max_seq_len ? ctx_len : c->cfg.max_seq_len;
    /* everything that can be checked without the network is checked first */
    c->topo = o->topology_text ? topo_parse(o->topology_text, strlen(o->topology_text), o->topology_path, err)
                               : topo_load(o->topology_path, err);
    if (!c->topo) goto fail;
    if (plan_from_topology(c->topo, c->cfg.n_layers, o->strict, &c->plan, err)) {
        err_prefix(err, "%s", o->topology_path);
        goto fail;
    }
    for (int i = 0; i < c->plan.n_segments; i++)
        if (c->plan.segments[i].worker != PLAN_MASTER)
            c->stats.hops += 1 + (i == 0 || c->plan.segments[i - 1].worker == PLAN_MASTER);
    fprintf(stderr, "cluster: plan for %d layers:\n", c->cfg.n_layers);
    plan_print(&c->plan, c->topo, stderr);
    c->n_workers = c->topo->n_workers;
    c->stats.n_workers = c->n_workers;
    if (!(c->workers = calloc((size_t)c->n_workers, sizeof *c->workers)) ||
        !(c->locals = calloc((size_t)c->plan.n_segments, sizeof *c->locals))) {
        err_set(err, "out of memory");
        goto fail;
    }
    for (int i = 0; i < c->n_workers; i++) {
        c->workers[i].tw = &c->topo->workers[i];
        if (topo_endpoint(c->workers[i].tw, c->workers[i].endpoint, sizeof c->workers[i].endpoint)) {
            err_set(err, "worker '%s': host too long", c->workers[i].tw->name);
            goto fail;
        }
    }
    if (curve_key_resolve(o->key_path, o->insecure, "strata-master", &c->key, err)) goto fail;
    if (!(c->st = st_model_open(model_dir, err))) goto fail;
    if (!(c->be = backend_new(backend_name, n_threads, err))) goto fail;
    if (!(c->zctx = zmq_ctx_new())) { err_set(err, "zmq_ctx_new: %s", zmq_strerror(errno)); goto fail; }
    if (say_hello(c, err) || ship_bundles(c, err)) goto fail;
    for (int i = 0; i < c->plan.n_segments; i++) {
        const plan_segment *s = &c->plan.segments[i];
        if (s->worker != PLAN_MASTER) continue;
        model_part part = {s->first_layer, s->last_layer, s->embed, s->head};
        if (!(c->locals[i].m = model_load(c->st, &c->cfg, &part, c->be, err)) ||
            !(c->locals[i].fs = fwd_new(c->locals[i].m, MAX_BATCH, err)))
            goto fail;
    }
    c->stats.setup_s = progress_now_s() - t0;
    e->async = &cl_async_ops; /* several sessions in flight: pipeline_async.c */
    return e;
fail:
    cl_destroy(e);
    return NULL;
}

/* for pipeline_async.c */
int cl_recv_any(cluster *c, int timeout_ms, int *from, wire_in *in, strata_err *err) {
    return recv_any(c, timeout_ms, from, in, err);
}
cl_session *cl_find_session(cluster *c, uint64_t id, int create, strata_err *err) { return find_session(c, id, create, err); }
int cl_worker_error(cluster *c, int w, const Strata__Error *e, strata_err *err) { return worker_error(c, w, e, err); }

int engine_cluster_stats(const engine *e, cluster_stats *out) {
    if (!e || e->ops != &cluster_ops) return -1;
    *out = ((const cluster *)e->ctx)->stats;
    return 0;
}
