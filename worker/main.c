/* strata-worker: listens for a master, receives its bundle (or finds it in the cache), runs its
 * layers for every session, and passes activations on to the next hop of the chain.
 *
 * One ROUTER socket on --listen takes everything addressed to this worker: the master's control
 * messages and the previous hop's Forwards (both are DEALERs that connected here). Outputs go to
 * the next worker through a DEALER connected to Assign.next_hop, or back to the master as a
 * Result over the master's own connection. One thread: messages are handled in arrival order. */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/curve.h"
#include "common/linkmon.h"
#include "common/sha256.h"
#include "common/wire.h"
#include "worker/cache.h"
#include "worker/executor.h"
#include "worker/zap.h"
#ifdef STRATA_HAVE_DISCOVERY
#include "common/discovery.h"
#endif

/* a send to the next hop that cannot go out within this long is reported to the master instead
 * of blocking the worker (the next hop is gone; the master's failover re-plans) */
#define NEXT_HOP_SEND_TIMEOUT_MS 2000

typedef struct {
    /* options */
    const char *listen, *name, *backend_name, *cache_dir, *key_path;
    int threads, insecure;
    curve_key key;                /* empty with --insecure */
    zap_gate *gate;
    unsigned protocol;            /* WIRE_PROTOCOL_VERSION; --protocol overrides it for tests */
    /* sockets */
    void *zctx, *router, *next;
    char next_hop[256];
    /* the master: whoever assigned us */
    uint8_t master_id[WIRE_MAX_IDENTITY];
    size_t master_id_bytes;
    /* compute */
    backend *be;
    double speed;
    executor *ex;
    int first_layer, last_layer, ctx_len;
    float *out;                   /* output scratch */
    size_t out_cap;
    float *in;                    /* aligned/converted input when frame 2 cannot be used in place */
    size_t in_cap;
    /* an incoming bundle */
    cache_rx *rx;
    uint64_t requested;           /* bytes asked for so far */
    uint32_t chunk_bytes, credit;
    double rx_t0;
    uint64_t bytes_received_total;
} worker;

static volatile sig_atomic_t stop;
static void on_signal(int sig) { (void)sig; stop = 1; }

static void logf_(const worker *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(const worker *w, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "strata-worker[%s]: ", w->name);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static uint64_t proc_status_kb(const char *key) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    uint64_t v = 0;
    size_t n = strlen(key);
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, key, n) && line[n] == ':') { v = strtoull(line + n + 1, NULL, 10); break; }
    if (f) fclose(f);
    return v;
}

static uint64_t mem_available_bytes(void) {
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    uint64_t v = 0;
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "MemAvailable:", 13)) { v = strtoull(line + 13, NULL, 10) * 1024; break; }
    if (f) fclose(f);
    if (!v) v = (uint64_t)sysconf(_SC_AVPHYS_PAGES) * (uint64_t)sysconf(_SC_PAGESIZE);
    return v;
}

static void device_name(const worker *w, char *out, size_t n) {
    snprintf(out, n, "%s", w->be->ops->name);
    FILE *f = fopen("/proc/cpuinfo", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "model name", 10) && strchr(line, ':')) {
            char *v = strchr(line, ':') + 2, *nl = strchr(v, '\n');
            if (nl) *nl = 0;
            snprintf(out, n, "%s (%s, %ld cores)", w->be->ops->name, v, sysconf(_SC_NPROCESSORS_ONLN));
            break;
        }
    if (f) fclose(f);
}

/* errors about a request go to whoever asked; errors of the chain go to the master */
static void reply_error(worker *w, const uint8_t *id, size_t id_bytes, Strata__ErrorCode code, uint64_t session,
                        uint64_t step, const char *msg) {
    logf_(w, "error: %s", msg);
    if (wire_send_error(w->router, id, id_bytes, code, session, step, w->name, msg))
        logf_(w, "could not deliver the error reply: %s", zmq_strerror(errno));
}

static int send_to_master(worker *w, const Strata__Envelope *env, const void *payload, size_t bytes) {
    strata_err err = {{0}};
    if (!w->master_id_bytes) return -1;
    if (wire_send(w->router, w->master_id, w->master_id_bytes, env, payload, bytes, &err)) {
        logf_(w, "send to master: %s", err.msg);
        return -1;
    }
    return 0;
}

static void handle_hello(worker *w, const wire_in *in) {
    const Strata__Hello *h = in->msg.env->hello;
    if (h->protocol_version != w->protocol) {
        char msg[256];
        snprintf(msg, sizeof msg, "protocol version mismatch: master speaks %u, worker '%s' speaks %u",
                 h->protocol_version, w->name, w->protocol);
        Strata__Envelope env = STRATA__ENVELOPE__INIT;
        Strata__Error e = STRATA__ERROR__INIT;
        e.code = STRATA__ERROR_CODE__ERR_VERSION;
        e.message = msg;
        e.protocol_version = w->protocol;
        e.from = (char *)w->name;
        env.body_case = STRATA__ENVELOPE__BODY_ERROR;
        env.error = &e;
        logf_(w, "error: %s", msg);
        wire_send(w->router, in->identity, in->identity_bytes, &env, NULL, 0, NULL);
        return;
    }
    char device[256];
    device_name(w, device, sizeof device);
    Strata__Envelope env = STRATA__ENVELOPE__INIT;
    Strata__Hello r = STRATA__HELLO__INIT;
    r.protocol_version = w->protocol;
    r.name = (char *)w->name;
    r.backend = (char *)w->be->ops->name;
    r.device = device;
    r.memory_bytes = mem_available_bytes();
    r.speed = w->speed;
    env.body_case = STRATA__ENVELOPE__BODY_HELLO;
    env.hello = &r;
    wire_send(w->router, in->identity, in->identity_bytes, &env, NULL, 0, NULL);
}

static void unload(worker *w) {
    exec_free(&w->ex);
    cache_rx_abort(&w->rx);
    if (w->next) zmq_close(w->next);
    w->next = NULL;
    w->next_hop[0] = 0;
}

/* Loads the bundle at dir and tells the master it is ready. */
static void load_and_report(worker *w, const char *dir, int cached, uint64_t received, double t0) {
    strata_err err = {{0}};
    if (!(w->ex = exec_load(dir, w->first_layer, w->last_layer, w->be, w->ctx_len, &err))) {
        char msg[600];
        snprintf(msg, sizeof msg, "cannot load bundle %s: %s", dir, err.msg);
        reply_error(w, w->master_id, w->master_id_bytes, STRATA__ERROR_CODE__ERR_BAD_ASSIGN, 0, 0, msg);
        return;
    }
    Strata__Envelope env = STRATA__ENVELOPE__INIT;
    Strata__Ready r = STRATA__READY__INIT;
    r.cached = cached;
    r.bytes_received = received;
    r.rss_bytes = proc_status_kb("VmRSS") * 1024;
    r.load_ms = (now_s() - t0) * 1e3;
    r.first_layer = (uint32_t)w->first_layer;
    r.last_layer = (uint32_t)w->last_layer;
    env.body_case = STRATA__ENVELOPE__BODY_READY;
    env.ready = &r;
    logf_(w, "layers %d-%d loaded from %s (%s, %llu bundle bytes received, RSS %.1f MB)", w->first_layer,
          w->last_layer - 1, dir, cached ? "cached" : "received", (unsigned long long)received, r.rss_bytes / 1e6);
    send_to_master(w, &env, NULL, 0);
}

/* Asks for bundle bytes until `credit` fetches are outstanding (the fileio3 pattern). */
static void request_chunks(worker *w, uint32_t credit) {
    uint64_t total = cache_rx_total(w->rx);
    while (w->requested < total && w->requested - cache_rx_received(w->rx) < (uint64_t)credit * w->chunk_bytes) {
        Strata__Envelope env = STRATA__ENVELOPE__INIT;
        Strata__BundleFetch f = STRATA__BUNDLE_FETCH__INIT;
        f.offset = w->requested;
        f.size = total - w->requested < w->chunk_bytes ? (uint32_t)(total - w->requested) : w->chunk_bytes;
        env.body_case = STRATA__ENVELOPE__BODY_FETCH;
        env.fetch = &f;
        if (send_to_master(w, &env, NULL, 0)) return;
        w->requested += f.size;
    }
}

static void handle_assign(worker *w, const wire_in *in) {
    const Strata__Assign *a = in->msg.env->assign;
    strata_err err = {{0}};
    unload(w);
    memcpy(w->master_id, in->identity, in->identity_bytes);
    w->master_id_bytes = in->identity_bytes;
    model_config cfg;
    if (config_parse(a->config_json, strlen(a->config_json), &cfg, &err) || (int)a->last_layer > cfg.n_layers) {
        char msg[600];
        if (!err.msg[0]) snprintf(err.msg, sizeof err.msg, "layers [%u, %u) beyond the model's %d", a->first_layer,
                                  a->last_layer, cfg.n_layers);
        snprintf(msg, sizeof msg, "assign refused: %s", err.msg);
        reply_error(w, in->identity, in->identity_bytes, STRATA__ERROR_CODE__ERR_BAD_ASSIGN, 0, 0, msg);
        return;
    }
    w->first_layer = (int)a->first_layer;
    w->last_layer = (int)a->last_layer;
    w->ctx_len = (int)a->ctx_len;
    if (a->next_hop && *a->next_hop) {
        snprintf(w->next_hop, sizeof w->next_hop, "%s", a->next_hop);
        w->next = zmq_socket(w->zctx, ZMQ_DEALER);
        int sndtimeo = NEXT_HOP_SEND_TIMEOUT_MS;
        if (!w->next || wire_socket_setup(w->next, 0) || link_heartbeat_setup(w->next) ||
            zmq_setsockopt(w->next, ZMQ_SNDTIMEO, &sndtimeo, sizeof sndtimeo) ||
            (curve_key_set(&w->key) && curve_client_setup(w->next, &w->key, &err)) || zmq_connect(w->next, w->next_hop)) {
            char msg[900];
            snprintf(msg, sizeof msg, "cannot connect to next hop '%s': %s", w->next_hop, err.msg[0] ? err.msg : zmq_strerror(errno));
            reply_error(w, in->identity, in->identity_bytes, STRATA__ERROR_CODE__ERR_BAD_ASSIGN, 0, 0, msg);
            unload(w);
            return;
        }
    }
    char hex[SHA256_HEX_BYTES], dir[CACHE_PATH_MAX];
    sha256_hex(a->bundle_sha256.data, hex);
    logf_(w, "assigned layers %u-%u, bundle %.16s (%llu bytes), next hop %s", a->first_layer, a->last_layer - 1, hex,
          (unsigned long long)a->bundle_bytes, w->next ? w->next_hop : "master");
    if (cache_lookup(w->cache_dir, a->bundle_sha256.data, a->bundle_bytes, dir, sizeof dir)) {
        load_and_report(w, dir, 1, 0, now_s());
        return;
    }
    if (!(w->rx = cache_rx_begin(w->cache_dir, a->bundle_sha256.data, a->bundle_bytes, &err))) {
        reply_error(w, in->identity, in->identity_bytes, STRATA__ERROR_CODE__ERR_BUNDLE, 0, 0, err.msg);
        return;
    }
    w->requested = 0;
    w->chunk_bytes = a->chunk_bytes;
    w->credit = a->credit;
    w->rx_t0 = now_s();
    request_chunks(w, w->credit);
}

static void handle_chunk(worker *w, const wire_in *in) {
    strata_err err = {{0}};
    if (!w->rx) {
        reply_error(w, in->identity, in->identity_bytes, STRATA__ERROR_CODE__ERR_BUNDLE, 0, 0,
                    "bundle chunk while no bundle is being received");
        return;
    }
    if (cache_rx_write(w->rx, in->msg.env->chunk->offset, in->msg.payload, in->msg.payload_bytes, &err)) {
        cache_rx_abort(&w->rx);
        reply_error(w, w->master_id, w->master_id_bytes, STRATA__ERROR_CODE__ERR_BUNDLE, 0, 0, err.msg);
        return;
    }
    w->bytes_received_total += in->msg.payload_bytes;
    if (cache_rx_received(w->rx) < cache_rx_total(w->rx)) {
        request_chunks(w, w->credit);
        return;
    }
    uint64_t received = cache_rx_received(w->rx);
    char dir[CACHE_PATH_MAX];
    int mismatch = 0;
    if (cache_rx_commit(&w->rx, dir, sizeof dir, &mismatch, &err)) {
        reply_error(w, w->master_id, w->master_id_bytes,
                    mismatch ? STRATA__ERROR_CODE__ERR_HASH_MISMATCH : STRATA__ERROR_CODE__ERR_BUNDLE, 0, 0, err.msg);
        return;
    }
    logf_(w, "bundle received: %llu bytes in %.2f s, sha256 verified", (unsigned long long)received, now_s() - w->rx_t0);
    load_and_report(w, dir, 0, received, w->rx_t0);
}

static float *grow(float **buf, size_t *cap, size_t n) {
    if (n > *cap) {
        float *g = realloc(*buf, n * sizeof **buf);
        if (!g) return NULL;
        *buf = g;
        *cap = n;
    }
    return *buf;
}

static void handle_forward(worker *w, const wire_in *in) {
    const Strata__Forward *f = in->msg.env->forward;
    strata_err err = {{0}};
    char msg[700];
    if (!w->ex) {
        reply_error(w, w->master_id_bytes ? w->master_id : in->identity,
                    w->master_id_bytes ? w->master_id_bytes : in->identity_bytes, STRATA__ERROR_CODE__ERR_NOT_READY,
                    f->session, f->step, "forward before a model is loaded (no assign, or the bundle is not ready)");
        return;
    }
    int hidden = exec_config(w->ex)->hidden_dim, n = (int)f->n_tokens;
    if ((int)f->hidden_dim != hidden) {
        snprintf(msg, sizeof msg, "forward: hidden_dim %u, this model has %d", f->hidden_dim, hidden);
        reply_error(w, w->master_id, w->master_id_bytes, STRATA__ERROR_CODE__ERR_FORWARD, f->session, f->step, msg);
        return;
    }
    size_t count = (size_t)n * (size_t)hidden;
    const float *x = (const float *)in->msg.payload;
    /* frame 2 is used in place when it already is aligned f32 (the usual case) */
    if (f->dtype != STRATA__DTYPE__DTYPE_F32 || ((uintptr_t)x & 3)) {
        if (!grow(&w->in, &w->in_cap, count)) goto oom;
        bk_dtype t = f->dtype == STRATA__DTYPE__DTYPE_F16 ? BK_F16 : f->dtype == STRATA__DTYPE__DTYPE_BF16 ? BK_BF16 : BK_F32;
        if (t == BK_F32) memcpy(w->in, in->msg.payload, count * sizeof(float));
        else
            for (size_t i = 0; i < count; i++) {
                uint16_t h;
                memcpy(&h, in->msg.payload + 2 * i, 2);
                w->in[i] = bk_load_float(&h, t, 0);
            }
        x = w->in;
    }
    if (!grow(&w->out, &w->out_cap, count)) goto oom;
    double t0 = now_s();
    if (exec_forward(w->ex, f->session, (int)f->pos0, x, n, w->out, &err)) {
        reply_error(w, w->master_id, w->master_id_bytes, STRATA__ERROR_CODE__ERR_FORWARD, f->session, f->step, err.msg);
        return;
    }
    uint64_t compute_us = f->compute_us + (uint64_t)((now_s() - t0) * 1e6);
    Strata__Envelope env = STRATA__ENVELOPE__INIT;
    if (w->next) {
        Strata__Forward out = *f;
        out.dtype = STRATA__DTYPE__DTYPE_F32;
        out.compute_us = compute_us;
        env.body_case = STRATA__ENVELOPE__BODY_FORWARD;
        env.forward = &out;
        if (wire_send(w->next, NULL, 0, &env, w->out, count * sizeof(float), &err))
            reply_error(w, w->master_id, w->master_id_bytes, STRATA__ERROR_CODE__ERR_FORWARD, f->session, f->step, err.msg);
    } else {
        Strata__Result r = STRATA__RESULT__INIT;
        r.session = f->session, r.step = f->step, r.pos0 = f->pos0, r.n_tokens = f->n_tokens;
        r.hidden_dim = f->hidden_dim, r.dtype = STRATA__DTYPE__DTYPE_F32, r.compute_us = compute_us;
        env.body_case = STRATA__ENVELOPE__BODY_RESULT;
        env.result = &r;
        send_to_master(w, &env, w->out, count * sizeof(float));
    }
    return;
oom:
    reply_error(w, w->master_id, w->master_id_bytes, STRATA__ERROR_CODE__ERR_FORWARD, f->session, f->step,
                "out of memory for activations");
}

static void handle(worker *w, wire_in *in) {
    const Strata__Envelope *e = in->msg.env;
    strata_err err = {{0}};
    switch (e->body_case) {
    case STRATA__ENVELOPE__BODY_HELLO: handle_hello(w, in); break;
    case STRATA__ENVELOPE__BODY_ASSIGN: handle_assign(w, in); break;
    case STRATA__ENVELOPE__BODY_CHUNK: handle_chunk(w, in); break;
    case STRATA__ENVELOPE__BODY_FORWARD: handle_forward(w, in); break;
    case STRATA__ENVELOPE__BODY_TRIM:
        if (!w->ex || exec_trim(w->ex, e->trim->session, (int)e->trim->len, &err))
            reply_error(w, in->identity, in->identity_bytes, STRATA__ERROR_CODE__ERR_SESSION, e->trim->session, 0,
                        w->ex ? err.msg : "trim before a model is loaded");
        break;
    case STRATA__ENVELOPE__BODY_END:
        if (w->ex) exec_end(w->ex, e->end->session);
        break;
    case STRATA__ENVELOPE__BODY_ERROR:
        logf_(w, "peer reports: %s", e->error->message);
        break;
    default: {
        char msg[96];
        snprintf(msg, sizeof msg, "unexpected message '%s' for a worker", wire_body_name(e->body_case));
        reply_error(w, in->identity, in->identity_bytes, STRATA__ERROR_CODE__ERR_UNKNOWN_MESSAGE, 0, 0, msg);
    }
    }
}

#ifdef STRATA_HAVE_DISCOVERY
static void advert_log(void *ctx, const char *msg) { logf_(ctx, "%s", msg); }

/* Publishes this worker as _strata._tcp (issue 5). Not fatal: without a daemon the worker still
 * serves a master that names it in a topology file. */
static disc_publisher *advertise(worker *w, const char *impl, uint64_t offer_bytes) {
    char endpoint[256] = "";
    size_t n = sizeof endpoint;
    const char *colon;
    if (zmq_getsockopt(w->router, ZMQ_LAST_ENDPOINT, endpoint, &n) || !(colon = strrchr(endpoint, ':'))) {
        logf_(w, "not advertised: cannot tell the port bound for %s", w->listen);
        return NULL;
    }
    disc_service s;
    memset(&s, 0, sizeof s);
    snprintf(s.name, sizeof s.name, "%s", w->name);
    s.port = (uint16_t)atoi(colon + 1);
    s.protocol = w->protocol;
    snprintf(s.backend, sizeof s.backend, "%s", w->be->ops->name);
    device_name(w, s.device, sizeof s.device);
    s.memory_bytes = offer_bytes ? offer_bytes : disc_default_memory_bytes();
    s.speed = w->speed;
    if (curve_key_set(&w->key)) key_fingerprint(w->key.public_z85, s.key_fingerprint);
    strata_err err = {{0}};
    disc_publisher *p = disc_publish(impl, &s, advert_log, w, &err);
    if (!p) logf_(w, "not advertised: %s", err.msg);
    return p;
}
#endif

static void usage(FILE *f) {
    fprintf(f, "usage: strata-worker --listen tcp://0.0.0.0:PORT [--name NAME] [--backend cpu|cpu-ref|metal|cuda]\n"
               "                     [--cache-dir DIR] [--threads N] (--key FILE | --insecure)\n"
               "  --key FILE   the cluster key (`strata-master keygen --out FILE`; default $%s): only peers\n"
               "               holding it get through (CurveZMQ)\n"
               "  --insecure   no encryption, no authentication: a trusted LAN only (warns on every start)\n"
               "  --advertise, --no-advertise  publish this worker over mDNS as _strata._tcp (default: on)\n"
               "  --discovery avahi|dnssd      mDNS implementation (default: the first built in)\n"
               "  --memory-mb N                memory offered for weights + KV cache (default: 90%% of available)\n",
            CURVE_KEY_ENV);
}

int main(int argc, char **argv) {
    worker w = {0};
    static char default_name[128];
    int advertise_on = 1;          /* mDNS (issue 5): on where an implementation is built in */
    const char *discovery = NULL;
    uint64_t offer_bytes = 0;
    w.backend_name = "cpu";
    w.protocol = WIRE_PROTOCOL_VERSION;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        if (!strcmp(a, "--insecure")) { w.insecure = 1; continue; }
        if (!strcmp(a, "--advertise") || !strcmp(a, "--no-advertise")) { advertise_on = a[2] == 'a'; continue; }
        if (!v) { fprintf(stderr, "strata-worker: %s: missing value or unknown flag\n", a); return 2; }
        if (!strcmp(a, "--listen")) w.listen = v;
        else if (!strcmp(a, "--name")) w.name = v;
        else if (!strcmp(a, "--backend")) w.backend_name = v;
        else if (!strcmp(a, "--cache-dir")) w.cache_dir = v;
        else if (!strcmp(a, "--key")) w.key_path = v;
        else if (!strcmp(a, "--threads") || !strcmp(a, "-t")) w.threads = atoi(v);
        else if (!strcmp(a, "--discovery")) {
            if (strcmp(v, "avahi") && strcmp(v, "dnssd")) {
                fprintf(stderr, "strata-worker: --discovery: expected avahi or dnssd, got '%s'\n", v);
                return 2;
            }
            discovery = v;
        } else if (!strcmp(a, "--memory-mb")) {
            char *end;
            unsigned long long mb = strtoull(v, &end, 10);
            if (!*v || *end || *v == '-' || mb < 1 || mb > (1ull << 30)) { /* up to 1 PB: a typo, not a machine */
                fprintf(stderr, "strata-worker: --memory-mb: expected an integer in [1, %llu], got '%s'\n", 1ull << 30, v);
                return 2;
            }
            offer_bytes = (uint64_t)mb << 20;
        } else if (!strcmp(a, "--protocol")) w.protocol = (unsigned)strtoul(v, NULL, 10); /* tests: pretend another version */
        else { fprintf(stderr, "strata-worker: unknown option '%s'\n", a); usage(stderr); return 2; }
        i++;
    }
    if (!w.listen) { usage(stderr); return 2; }
    if (!w.name) {
        char host[64] = "worker";
        gethostname(host, sizeof host - 1);
        snprintf(default_name, sizeof default_name, "%s-%ld", host, (long)getpid());
        w.name = default_name;
    }
    static char cache_default[CACHE_PATH_MAX];
    if (!w.cache_dir) {
        const char *home = getenv("HOME");
        snprintf(cache_default, sizeof cache_default, "%s/.cache/strata/bundles", home ? home : "/tmp");
        w.cache_dir = cache_default;
    }
    strata_err err = {{0}};
    char who[200];
    snprintf(who, sizeof who, "strata-worker[%s]", w.name);
    if (w.insecure && w.key_path) { fprintf(stderr, "strata-worker: --key and --insecure exclude each other\n"); return 2; }
    if (curve_key_resolve(w.key_path, w.insecure, who, &w.key, &err)) { fprintf(stderr, "%s: %s\n", who, err.msg); return 1; }
    if (cache_init(w.cache_dir, &err)) { fprintf(stderr, "strata-worker: cache: %s\n", err.msg); return 1; }
    if (!(w.be = backend_new(w.backend_name, w.threads, &err))) { fprintf(stderr, "strata-worker: %s\n", err.msg); return 1; }
    w.speed = exec_measure_speed(w.be, 30);
    w.zctx = zmq_ctx_new();
    w.router = zmq_socket(w.zctx, ZMQ_ROUTER);
    int one = 1;
    /* a reply to a master that has gone is an error here, not a silent drop */
    zmq_setsockopt(w.router, ZMQ_ROUTER_MANDATORY, &one, sizeof one);
    /* the gatekeeper binds its ZAP handler before the listening socket accepts anyone */
    if (curve_key_set(&w.key) &&
        (curve_server_setup(w.router, &w.key, &err) || !(w.gate = zap_gate_start(w.zctx, &w.key, w.name, &err)) ||
         zap_gate_run(w.gate, w.router, &err))) {
        fprintf(stderr, "%s: %s\n", who, err.msg);
        zap_gate_stop(&w.gate);
        zmq_close(w.router);
        zmq_ctx_term(w.zctx);
        backend_destroy(&w.be);
        return 1;
    }
    if (wire_socket_setup(w.router, 0) || link_heartbeat_setup(w.router) || zmq_bind(w.router, w.listen)) {
        fprintf(stderr, "strata-worker: cannot listen on %s: %s\n", w.listen, zmq_strerror(errno));
        zap_gate_stop(&w.gate);
        zmq_close(w.router);
        zmq_ctx_term(w.zctx);
        backend_destroy(&w.be);
        return 1;
    }
    struct sigaction sa = {0};
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    char fp[KEY_FINGERPRINT_BYTES];
    logf_(&w, "listening on %s (backend %s, cache %s, protocol %u, %.2f G q4 weights/s, %s%s)", w.listen, w.be->ops->name,
          w.cache_dir, w.protocol, w.speed, curve_key_set(&w.key) ? "CurveZMQ key " : "INSECURE: no CurveZMQ",
          curve_key_set(&w.key) ? key_fingerprint(w.key.public_z85, fp) : "");
#ifdef STRATA_HAVE_DISCOVERY
    disc_publisher *advert = advertise_on ? advertise(&w, discovery, offer_bytes) : NULL;
#else
    if (advertise_on && discovery) logf_(&w, "not advertised: built without mDNS discovery (%s)", discovery);
    (void)offer_bytes;
#endif
    while (!stop) {
        zmq_pollitem_t item = {w.router, 0, ZMQ_POLLIN, 0};
        int rc = zmq_poll(&item, 1, 1000);
        if (rc < 0) { if (errno == EINTR) continue; logf_(&w, "poll: %s", zmq_strerror(errno)); break; }
        if (!rc) continue;
        wire_in in;
        int st = wire_recv(w.router, 1, &in, &err);
        if (st == WIRE_OK) handle(&w, &in);
        else if (st > 0) {
            char msg[600];
            snprintf(msg, sizeof msg, "%s message refused: %s", st == WIRE_UNKNOWN ? "unknown" : "malformed", err.msg);
            reply_error(&w, in.identity, in.identity_bytes, (Strata__ErrorCode)st, 0, 0, msg);
        } else if (errno != EINTR) {
            logf_(&w, "%s", err.msg);
        }
        wire_in_close(&in);
    }
    logf_(&w, "shutting down (%llu bundle bytes received in total)", (unsigned long long)w.bytes_received_total);
#ifdef STRATA_HAVE_DISCOVERY
    disc_withdraw(&advert); /* first: a master browsing now must not find a worker that is going */
#endif
    unload(&w);
    free(w.out);
    free(w.in);
    zap_gate_stop(&w.gate);
    zmq_close(w.router);
    zmq_ctx_term(w.zctx);
    backend_destroy(&w.be);
    return 0;
}
