/* The HTTP server: libmicrohttpd connections, the request queue and the scheduler thread that
 * owns the engine; see http.h. */
#define _GNU_SOURCE /* POLLRDHUP */
#include "master/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <jansson.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include "master/batch.h"
#include "master/http_api.h"

#define MAX_BODY_BYTES (8u << 20)
#define WAIT_SLICE_MS 100 /* how often a waiting connection looks whether its client is still there */

typedef struct req req;
struct req {
    req *next;              /* the queue */
    void *srv;              /* the server (for the piece callback) */
    api_request api;
    char id[48];
    long created;
    pthread_cond_t cv;      /* new text, or done */
    /* under server.mu: */
    char *text;             /* everything generated so far */
    size_t len, cap, sent;  /* sent: what a stream has passed on */
    int done, failed, cancelled, refs;
    api_error err;
    gen_result res;
    double t_start;
};

typedef struct {
    http_opts o;
    engine *e;
    tokenizer *tok;
    chat_template *chat;
    api_config api;
    char model_id[256];
    pthread_mutex_t mu;
    pthread_cond_t work;    /* the scheduler: a request came, or stop */
    req *head, *tail;
    int n_queued, n_active, stopping;
    uint64_t next_session;
    unsigned long long served, failed_n, rejected;
    unsigned long long tokens, drafted, accepted, spec_passes; /* totals, for /health (and benchmarks) */
    pthread_t sched;
    long started;
} server;

typedef struct {            /* one connection's request */
    char *body;
    size_t len, cap;
    int too_big;
} conn_state;

typedef struct {            /* one SSE response */
    server *s;
    struct MHD_Connection *conn;
    req *r;
    char *buf;
    size_t len, pos;
    int role_sent, finished;
} stream_state;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void http_opts_default(http_opts *o) {
    memset(o, 0, sizeof *o);
    o->host = "127.0.0.1";
    o->port = 8080;
    o->max_active = 4;
    o->max_queue = 16;
    o->max_connections = 64;
    o->default_max_tokens = 512;
    o->ctx_len = 4096;
}

/* ---- requests: shared by a connection thread and the scheduler, freed by the last ---- */

static void req_release(server *s, req *r) { /* under s->mu */
    (void)s;
    if (--r->refs > 0) return;
    api_request_free(&r->api);
    pthread_cond_destroy(&r->cv);
    free(r->text);
    free(r);
}

static int req_piece(const char *text, size_t len, void *user) { /* the scheduler, without mu */
    req *r = user;
    server *s = r->srv;
    pthread_mutex_lock(&s->mu);
    int stop = r->cancelled || s->stopping;
    if (!stop && len) {
        if (r->len + len + 1 > r->cap) {
            size_t cap = (r->len + len + 1) * 2;
            char *g = realloc(r->text, cap);
            if (!g) stop = 1;
            else r->text = g, r->cap = cap;
        }
        if (!stop) {
            memcpy(r->text + r->len, text, len);
            r->len += len;
            r->text[r->len] = 0;
            pthread_cond_broadcast(&r->cv);
        }
    }
    pthread_mutex_unlock(&s->mu);
    return stop;
}

static void req_finish(server *s, req *r, gen_seq *seq, int failed, const char *why) { /* under mu */
    if (seq) gen_seq_result(seq, &r->res);
    r->done = 1;
    r->failed = failed;
    if (failed) {
        api_fail(&r->err, 500, "server_error", NULL, "generation_failed", "generation failed: %s", why);
        s->failed_n++;
    } else {
        s->served++;
    }
    fprintf(stderr, "strata-master: %s: %s, %d prompt + %d completion tokens in %.2f s%s%s\n", r->id,
            failed ? "failed" : r->cancelled ? "cancelled" : gen_finish_name(r->res.finish), r->res.n_prompt,
            r->res.n_generated, now_s() - r->t_start, failed ? ": " : "", failed ? why : "");
    s->tokens += (unsigned long long)r->res.n_generated;
    s->drafted += (unsigned long long)r->res.drafted;
    s->accepted += (unsigned long long)r->res.accepted;
    s->spec_passes += (unsigned long long)r->res.spec_passes;
    if (r->res.spec_passes)
        fprintf(stderr, "strata-master: %s: speculative: %d drafted, %d accepted, mean accepted length %.2f\n", r->id,
                r->res.drafted, r->res.accepted, gen_mean_accepted(&r->res));
    pthread_cond_broadcast(&r->cv);
    req_release(s, r);
}

/* ---- the scheduler: the one thread that touches the engine ---- */

static void admit(server *s, gen_batch *b) { /* under mu */
    while (s->head && batch_count(b) < s->o.max_active) {
        req *r = s->head;
        s->head = r->next;
        if (!s->head) s->tail = NULL;
        s->n_queued--;
        if (r->cancelled) { req_release(s, r); continue; }
        r->next = NULL;
        strata_err err = {{0}};
        gen_seq *seq = gen_seq_new(s->e, ++s->next_session, s->tok, r->api.prompt, r->api.n_prompt, &r->api.gen,
                                   req_piece, r, &err);
        if (!seq || batch_add(b, seq, &err)) {
            gen_seq_free(&seq);
            req_finish(s, r, NULL, 1, err.msg);
            continue;
        }
        s->n_active++;
    }
}

static void *scheduler(void *arg) {
    server *s = arg;
    strata_err err = {{0}};
    gen_batch *b = batch_new(s->e, &err);
    pthread_mutex_lock(&s->mu);
    while (b && !s->stopping) {
        admit(s, b);
        if (!batch_count(b)) {
            pthread_cond_wait(&s->work, &s->mu);
            continue;
        }
        pthread_mutex_unlock(&s->mu);
        gen_seq *out = NULL;
        int rc = batch_step(b, &out, &err);
        pthread_mutex_lock(&s->mu);
        if (out) {
            s->n_active--;
            req_finish(s, gen_seq_user(out), out, rc == BATCH_FAILED, err.msg);
            pthread_mutex_unlock(&s->mu);
            gen_seq_free(&out);
            pthread_mutex_lock(&s->mu);
        }
        if (rc < 0) { /* the engine as a whole failed: every generation in it ends with the reason */
            fprintf(stderr, "strata-master: engine failure: %s\n", err.msg);
            gen_seq *q;
            while ((q = batch_take(b))) {
                s->n_active--;
                req_finish(s, gen_seq_user(q), q, 1, err.msg);
                gen_seq_free(&q);
            }
        }
    }
    /* stopping: whatever is left ends now */
    gen_seq *q;
    while (b && (q = batch_take(b))) {
        req_finish(s, gen_seq_user(q), q, 1, "the server is shutting down");
        gen_seq_free(&q);
    }
    while (s->head) {
        req *r = s->head;
        s->head = r->next;
        req_finish(s, r, NULL, 1, "the server is shutting down");
    }
    pthread_mutex_unlock(&s->mu);
    batch_free(&b);
    return NULL;
}

/* ---- connections ---- */

static int client_gone(struct MHD_Connection *c) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
    if (!ci) return 0;
    struct pollfd p = {ci->connect_fd, POLLIN | POLLRDHUP, 0};
    if (poll(&p, 1, 0) <= 0) return 0;
    if (p.revents & (POLLHUP | POLLERR | POLLRDHUP)) return 1;
    char ch;
    return (p.revents & POLLIN) && recv(ci->connect_fd, &ch, 1, MSG_PEEK | MSG_DONTWAIT) == 0;
}

static void timed_wait(pthread_cond_t *cv, pthread_mutex_t *mu, int ms) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_nsec += (long)ms * 1000000L;
    ts.tv_sec += ts.tv_nsec / 1000000000L;
    ts.tv_nsec %= 1000000000L;
    pthread_cond_timedwait(cv, mu, &ts);
}

static char *dump_json(json_t *o) {
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

static enum MHD_Result send_json(struct MHD_Connection *c, int status, char *json) {
    if (!json) {
        static char oom[] = "{\"error\":{\"message\":\"out of memory\",\"type\":\"server_error\",\"param\":null,\"code\":null}}";
        struct MHD_Response *resp = MHD_create_response_from_buffer(sizeof oom - 1, oom, MHD_RESPMEM_PERSISTENT);
        MHD_add_response_header(resp, "Content-Type", "application/json");
        enum MHD_Result rc = MHD_queue_response(c, 500, resp);
        MHD_destroy_response(resp);
        return rc;
    }
    size_t n = strlen(json);
    struct MHD_Response *resp = MHD_create_response_from_buffer(n, json, MHD_RESPMEM_MUST_FREE);
    if (!resp) { free(json); return MHD_NO; }
    MHD_add_response_header(resp, "Content-Type", "application/json");
    if (status == 429 || status == 503) MHD_add_response_header(resp, "Retry-After", "1");
    enum MHD_Result rc = MHD_queue_response(c, (unsigned)status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result send_error(struct MHD_Connection *c, const api_error *e) {
    return send_json(c, e->status, api_error_json(e));
}

static void stream_add(stream_state *st, const char *json) {
    if (!json) return;
    size_t n = strlen(json) + 8;
    if (st->len + n + 1 > 0 && st->len + n >= st->len) {
        char *g = realloc(st->buf, st->len + n + 1);
        if (!g) return;
        st->buf = g;
        st->len += (size_t)sprintf(st->buf + st->len, "data: %s\n\n", json);
    }
}

/* SSE body: blocks (this connection's own thread) until there is text, the end, or the client left */
static ssize_t stream_reader(void *cls, uint64_t pos, char *out, size_t max) {
    stream_state *st = cls;
    server *s = st->s;
    req *r = st->r;
    (void)pos;
    if (st->pos == st->len) {
        if (st->finished) return MHD_CONTENT_READER_END_OF_STREAM;
        st->len = st->pos = 0;
        pthread_mutex_lock(&s->mu);
        while (st->role_sent && r->sent == r->len && !r->done) {
            timed_wait(&r->cv, &s->mu, WAIT_SLICE_MS);
            if (r->sent == r->len && !r->done && client_gone(st->conn)) {
                r->cancelled = 1;
                pthread_mutex_unlock(&s->mu);
                return MHD_CONTENT_READER_END_WITH_ERROR;
            }
        }
        int chat = r->api.chat;
        if (!st->role_sent || r->sent < r->len) {
            char *j = api_chunk_json(&s->api, chat, r->id, r->created, chat && !st->role_sent, r->text ? r->text + r->sent : "",
                                     r->len - r->sent, NULL, NULL);
            stream_add(st, j);
            free(j);
            r->sent = r->len;
            st->role_sent = 1;
        }
        if (r->done) {
            if (r->failed) {
                char *j = api_error_json(&r->err);
                stream_add(st, j);
                free(j);
            } else {
                const char *fin = gen_finish_name(r->res.finish);
                char *j = api_chunk_json(&s->api, chat, r->id, r->created, 0, "", 0, fin ? fin : "stop", NULL);
                stream_add(st, j);
                free(j);
                if (r->api.include_usage) {
                    j = api_chunk_json(&s->api, chat, r->id, r->created, 0, "", 0, NULL, &r->res);
                    stream_add(st, j);
                    free(j);
                }
            }
            char *g = realloc(st->buf, st->len + 16);
            if (g) {
                st->buf = g;
                st->len += (size_t)sprintf(st->buf + st->len, "data: [DONE]\n\n");
            }
            st->finished = 1;
        }
        pthread_mutex_unlock(&s->mu);
        if (st->pos == st->len) return st->finished ? MHD_CONTENT_READER_END_OF_STREAM : 0;
    }
    size_t n = st->len - st->pos < max ? st->len - st->pos : max;
    memcpy(out, st->buf + st->pos, n);
    st->pos += n;
    return (ssize_t)n;
}

static void stream_free(void *cls) {
    stream_state *st = cls;
    pthread_mutex_lock(&st->s->mu);
    if (!st->r->done) st->r->cancelled = 1; /* the client left mid-stream */
    req_release(st->s, st->r);
    pthread_mutex_unlock(&st->s->mu);
    free(st->buf);
    free(st);
}

/* Queues r, or answers why not (429 when the queue is full). 0 when queued. */
static int enqueue(server *s, req *r, api_error *e) { /* under mu */
    if (s->stopping) return api_fail(e, 503, "server_error", NULL, "shutting_down", "the server is shutting down");
    /* counted together: a request the scheduler has not admitted yet still holds a slot */
    if (s->n_queued + s->n_active >= s->o.max_queue + s->o.max_active) {
        s->rejected++;
        return api_fail(e, 429, "server_busy", NULL, "queue_full",
                        "The server is busy: %d requests are generating and %d waiting (the most it queues); retry later",
                        s->n_active, s->n_queued);
    }
    r->next = NULL;
    if (s->tail) s->tail->next = r;
    else s->head = r;
    s->tail = r;
    s->n_queued++;
    r->refs = 2; /* this connection and the scheduler */
    pthread_cond_signal(&s->work);
    return 0;
}

static enum MHD_Result handle_completion(server *s, struct MHD_Connection *c, int chat, const conn_state *cs) {
    api_error e;
    req *r = calloc(1, sizeof *r);
    if (!r) return send_json(c, 500, NULL);
    if (api_parse_request(&s->api, chat, cs->body ? cs->body : "", cs->len, &r->api, &e)) {
        free(r);
        return send_error(c, &e);
    }
    static unsigned long long counter;
    pthread_cond_init(&r->cv, NULL);
    r->srv = s;
    r->created = (long)time(NULL);
    r->t_start = now_s();
    pthread_mutex_lock(&s->mu);
    snprintf(r->id, sizeof r->id, "%s-%llx%08llx", chat ? "chatcmpl" : "cmpl", ++counter, (unsigned long long)r->created);
    if (enqueue(s, r, &e)) {
        pthread_mutex_unlock(&s->mu);
        api_request_free(&r->api);
        pthread_cond_destroy(&r->cv);
        free(r);
        return send_error(c, &e);
    }
    if (r->api.stream) {
        pthread_mutex_unlock(&s->mu);
        stream_state *st = calloc(1, sizeof *st);
        struct MHD_Response *resp = st ? MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 4096, stream_reader, st, stream_free) : NULL;
        if (!resp) {
            free(st);
            pthread_mutex_lock(&s->mu);
            r->cancelled = 1;
            req_release(s, r);
            pthread_mutex_unlock(&s->mu);
            return send_json(c, 500, NULL);
        }
        st->s = s, st->r = r, st->conn = c;
        MHD_add_response_header(resp, "Content-Type", "text/event-stream");
        MHD_add_response_header(resp, "Cache-Control", "no-cache");
        enum MHD_Result rc = MHD_queue_response(c, 200, resp);
        MHD_destroy_response(resp);
        return rc;
    }
    while (!r->done) {
        timed_wait(&r->cv, &s->mu, WAIT_SLICE_MS);
        if (!r->done && client_gone(c)) {
            r->cancelled = 1;
            req_release(s, r);
            pthread_mutex_unlock(&s->mu);
            return MHD_NO; /* nobody to answer */
        }
    }
    char *json = r->failed ? api_error_json(&r->err) : api_completion_json(&s->api, chat, r->id, r->created, r->text ? r->text : "", r->len, &r->res);
    int status = r->failed ? r->err.status : 200;
    req_release(s, r);
    pthread_mutex_unlock(&s->mu);
    return send_json(c, status, json);
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
                              const char *version, const char *upload, size_t *upload_size, void **con_cls) {
    server *s = cls;
    (void)version;
    conn_state *cs = *con_cls;
    if (!cs) {
        if (!(cs = calloc(1, sizeof *cs))) return MHD_NO;
        *con_cls = cs;
        return MHD_YES;
    }
    if (*upload_size) { /* body bytes: keep them (bounded) */
        if (!cs->too_big && cs->len + *upload_size <= MAX_BODY_BYTES) {
            if (cs->len + *upload_size + 1 > cs->cap) {
                size_t cap = (cs->len + *upload_size + 1) * 2;
                char *g = realloc(cs->body, cap);
                if (!g) cs->too_big = 1;
                else cs->body = g, cs->cap = cap;
            }
            if (!cs->too_big) {
                memcpy(cs->body + cs->len, upload, *upload_size);
                cs->len += *upload_size;
                cs->body[cs->len] = 0;
            }
        } else {
            cs->too_big = 1;
        }
        *upload_size = 0;
        return MHD_YES;
    }
    api_error e;
    int post = !strcmp(method, "POST"), get = !strcmp(method, "GET");
    int chat = !strcmp(url, "/v1/chat/completions"), compl = !strcmp(url, "/v1/completions");
    if (chat || compl) {
        if (!post) { api_fail(&e, 405, "invalid_request_error", NULL, "method_not_allowed", "%s %s: use POST", method, url); return send_error(c, &e); }
        if (cs->too_big) { api_fail(&e, 413, "invalid_request_error", NULL, "body_too_large", "the body is over %u bytes", MAX_BODY_BYTES); return send_error(c, &e); }
        return handle_completion(s, c, chat, cs);
    }
    if (!strcmp(url, "/v1/models") || !strncmp(url, "/v1/models/", 11) || !strcmp(url, "/health")) {
        if (!get) { api_fail(&e, 405, "invalid_request_error", NULL, "method_not_allowed", "%s %s: use GET", method, url); return send_error(c, &e); }
        if (!strcmp(url, "/health")) {
            pthread_mutex_lock(&s->mu);
            json_t *o = json_pack("{s:s, s:s, s:i, s:i, s:I, s:I, s:I, s:{s:I, s:I, s:I, s:I}}", "status", "ok", "model",
                                  s->model_id, "active", s->n_active, "queued", s->n_queued, "served", (json_int_t)s->served,
                                  "failed", (json_int_t)s->failed_n, "rejected", (json_int_t)s->rejected, "generated",
                                  "tokens", (json_int_t)s->tokens, "spec_passes", (json_int_t)s->spec_passes, "drafted",
                                  (json_int_t)s->drafted, "accepted", (json_int_t)s->accepted);
            pthread_mutex_unlock(&s->mu);
            return send_json(c, 200, dump_json(o));
        }
        if (url[10] == '/' && strcmp(url + 11, s->model_id)) {
            api_fail(&e, 404, "invalid_request_error", "model", "model_not_found", "The model '%s' does not exist", url + 11);
            return send_error(c, &e);
        }
        if (url[10] == '/')
            return send_json(c, 200, dump_json(json_pack("{s:s, s:s, s:I, s:s}", "id", s->model_id, "object", "model",
                                                         "created", (json_int_t)s->started, "owned_by", "strata")));
        return send_json(c, 200, api_models_json(&s->api, s->started));
    }
    api_fail(&e, 404, "invalid_request_error", NULL, "not_found", "no such endpoint: %s %s", method, url);
    return send_error(c, &e);
}

static void completed(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe) {
    (void)cls, (void)c, (void)toe;
    conn_state *cs = *con_cls;
    if (cs) {
        free(cs->body);
        free(cs);
    }
    *con_cls = NULL;
}

int http_serve(engine *e, const char *model_dir, const http_opts *o, strata_err *err) {
    server *s = calloc(1, sizeof *s);
    if (!s) return err_set(err, "out of memory");
    int rc = -1;
    s->o = *o;
    s->e = e;
    s->started = (long)time(NULL);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->work, NULL);
    if (o->model_id) snprintf(s->model_id, sizeof s->model_id, "%s", o->model_id);
    else {
        size_t n = strlen(model_dir);
        while (n > 1 && model_dir[n - 1] == '/') n--;
        size_t b = n;
        while (b > 0 && model_dir[b - 1] != '/') b--;
        snprintf(s->model_id, sizeof s->model_id, "%.*s", (int)(n - b), model_dir + b);
    }
    struct MHD_Daemon *d = NULL;
    int sched_started = 0;
    if (!(s->tok = tok_load(model_dir, err))) { err_prefix(err, "--serve needs the model's tokenizer"); goto out; }
    if (!(s->chat = chat_load(model_dir, s->tok, err))) {
        /* a base model (no template at all) still serves /v1/completions; a broken one is an error */
        if (chat_template_present(model_dir)) { err_prefix(err, "--serve: the chat template"); goto out; }
        fprintf(stderr, "strata-master: %s: no chat template (a base model): /v1/chat/completions answers 400, "
                        "/v1/completions serves\n", model_dir);
    }
    if (tok_vocab_size(s->tok) > e->cfg->vocab_size) {
        err_set(err, "the tokenizer has %d tokens, the model only %d: not this model's tokenizer", tok_vocab_size(s->tok), e->cfg->vocab_size);
        goto out;
    }
    s->api = (api_config){s->model_id, s->tok, s->chat, e->cfg->vocab_size, o->ctx_len, o->default_max_tokens, o->spec_k};
    struct sockaddr_in addr = {0};
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)o->port);
    if (inet_pton(AF_INET, o->host, &addr.sin_addr) != 1) { err_set(err, "--host '%s' is not an IPv4 address", o->host); goto out; }
    /* signals go to the thread that waits for them, never to a connection or the scheduler */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (pthread_create(&s->sched, NULL, scheduler, s)) { err_set(err, "cannot start the scheduler thread"); goto out; }
    sched_started = 1;
    d = MHD_start_daemon(MHD_USE_THREAD_PER_CONNECTION | MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG, 0, NULL, NULL,
                         handle, s, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr, MHD_OPTION_NOTIFY_COMPLETED, completed, s,
                         MHD_OPTION_CONNECTION_LIMIT, (unsigned)o->max_connections, MHD_OPTION_CONNECTION_TIMEOUT, 600u,
                         MHD_OPTION_END);
    if (!d) { err_set(err, "cannot listen on %s:%d: %s", o->host, o->port, strerror(errno)); goto out; }
    const union MHD_DaemonInfo *di = MHD_get_daemon_info(d, MHD_DAEMON_INFO_BIND_PORT);
    fprintf(stderr, "strata-master: serving '%s' on http://%s:%u (%d at once, queue %d, spec-k %d)\n", s->model_id,
            o->host, di ? di->port : (unsigned)o->port, o->max_active, o->max_queue, o->spec_k);
    int sig = 0;
    sigwait(&sigs, &sig);
    fprintf(stderr, "strata-master: %s: stopping (%llu served, %llu failed, %llu rejected as busy)\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM", s->served, s->failed_n, s->rejected);
    rc = 0;
out:
    if (sched_started) {
        pthread_mutex_lock(&s->mu);
        s->stopping = 1;
        pthread_cond_broadcast(&s->work);
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->sched, NULL);
    }
    if (d) MHD_stop_daemon(d);
    chat_free(&s->chat);
    tok_free(&s->tok);
    pthread_cond_destroy(&s->work);
    pthread_mutex_destroy(&s->mu);
    free(s);
    return rc;
}
