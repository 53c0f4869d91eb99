#include "worker/zap.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <zmq.h>

#include "common/linkmon.h"

struct zap_gate {
    void *zctx;
    void *rep;                 /* the ZAP handler; used by the thread only after start */
    void *mon;                 /* the listener's monitor (PAIR), read by the thread */
    pthread_t thread;
    int running;
    int stop;                  /* atomic */
    unsigned refused;
    char name[128];
    /* a refused peer that keeps reconnecting (every 100 ms) is logged once per REFUSAL_LOG_S */
    char last_line[512];
    double last_s;
    unsigned repeats;
    char public_z85[CURVE_Z85_BYTES];
    char fp[KEY_FINGERPRINT_BYTES];
};

#define REFUSAL_LOG_S 10.0

static double mono_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void logline(zap_gate *g, const char *fmt, const char *a, const char *b, const char *c) {
    char line[512];
    snprintf(line, sizeof line, fmt, a, b, c);
    double now = mono_s();
    if (!strcmp(line, g->last_line) && now - g->last_s < REFUSAL_LOG_S) { g->repeats++; return; }
    /* one fprintf: stdio locks the stream, so the line never interleaves with the worker's */
    if (g->repeats) fprintf(stderr, "strata-worker[%s]: (the refusal above repeated %u more times)\n", g->name, g->repeats);
    fprintf(stderr, "strata-worker[%s]: %s\n", g->name, line);
    snprintf(g->last_line, sizeof g->last_line, "%s", line);
    g->last_s = now;
    g->repeats = 0;
}

/* one frame into buf (NUL-terminated, truncated); returns its full size, or -1 */
static int recv_part(void *s, char *buf, size_t n, int *more) {
    zmq_msg_t f;
    zmq_msg_init(&f);
    if (zmq_msg_recv(&f, s, 0) < 0) { zmq_msg_close(&f); return -1; }
    size_t sz = zmq_msg_size(&f), k = sz < n - 1 ? sz : n - 1;
    memcpy(buf, zmq_msg_data(&f), k);
    buf[k] = 0;
    *more = zmq_msg_more(&f);
    zmq_msg_close(&f);
    return (int)(sz > 0x7fffffff ? 0x7fffffff : sz);
}

static void answer(zap_gate *g) {
    /* request: version, request id, domain, address, routing id, mechanism, credentials... */
    char part[8][256];
    int sizes[8] = {0}, more = 1, n = 0;
    while (more && n < 8) {
        if ((sizes[n] = recv_part(g->rep, part[n], sizeof part[n], &more)) < 0) return;
        n++;
    }
    while (more) { char skip[8]; if (recv_part(g->rep, skip, sizeof skip, &more) < 0) return; } /* a bound: ignore extra credentials */
    const char *code = "400", *text = "refused";
    char client_z85[CURVE_Z85_BYTES] = "", client_fp[KEY_FINGERPRINT_BYTES] = "";
    if (n >= 6 && !strcmp(part[0], "1.0") && !strcmp(part[5], "CURVE") && n >= 7 && sizes[6] == 32) {
        zmq_z85_encode(client_z85, (const uint8_t *)part[6], 32);
        if (!strcmp(client_z85, g->public_z85)) code = "200", text = "OK";
        else key_fingerprint(client_z85, client_fp);
    }
    if (strcmp(code, "200")) {
        __atomic_fetch_add(&g->refused, 1, __ATOMIC_RELAXED);
        char why[200];
        snprintf(why, sizeof why, "%s", n >= 6 && strcmp(part[5], "CURVE") ? "it does not use CurveZMQ"
                 : client_fp[0] ? "its key is not the cluster key" : "malformed request");
        logline(g, "refused a peer from %s: %s (key fingerprint %s): nothing it sends is read",
                n >= 4 ? part[3] : "?", why, client_fp[0] ? client_fp : "none");
    }
    const char *reply[6] = {"1.0", n >= 2 ? part[1] : "", code, text, "", ""};
    size_t lens[6] = {3, n >= 2 ? (size_t)(sizes[1] < 255 ? sizes[1] : 255) : 0, 3, strlen(text), 0, 0};
    for (int i = 0; i < 6; i++) zmq_send(g->rep, reply[i], lens[i], i < 5 ? ZMQ_SNDMORE : 0);
}

static void monitor_event(zap_gate *g) {
    int ev;
    uint32_t value;
    char addr[256];
    while (link_monitor_read(g->mon, &ev, &value, addr, sizeof addr) == 1) {
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) continue; /* ZAP's refusal, logged by answer() */
        if (ev != ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && ev != ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL) continue;
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && value >= 0x20000000u && value < 0x30000000u) continue; /* ZAP */
        __atomic_fetch_add(&g->refused, 1, __ATOMIC_RELAXED);
        logline(g, "refused a peer on %s: %s; nothing it sends is read%s", addr, link_handshake_reason(ev, value), "");
    }
}

static void *run(void *arg) {
    zap_gate *g = arg;
    while (!__atomic_load_n(&g->stop, __ATOMIC_RELAXED)) {
        zmq_pollitem_t items[2] = {{g->rep, 0, ZMQ_POLLIN, 0}, {g->mon, 0, ZMQ_POLLIN, 0}};
        int rc = zmq_poll(items, g->mon ? 2 : 1, 200);
        if (rc < 0) {
            if (errno == EINTR) continue;
            break; /* ETERM: the context is shutting down */
        }
        if (items[0].revents & ZMQ_POLLIN) answer(g);
        if (g->mon && (items[1].revents & ZMQ_POLLIN)) monitor_event(g);
    }
    return NULL;
}

zap_gate *zap_gate_start(void *zctx, const curve_key *k, const char *log_name, strata_err *err) {
    zap_gate *g = calloc(1, sizeof *g);
    if (!g) { err_set(err, "out of memory"); return NULL; }
    g->zctx = zctx;
    snprintf(g->name, sizeof g->name, "%s", log_name);
    memcpy(g->public_z85, k->public_z85, CURVE_Z85_BYTES);
    key_fingerprint(k->public_z85, g->fp);
    int zero = 0;
    if (!(g->rep = zmq_socket(zctx, ZMQ_REP)) || zmq_setsockopt(g->rep, ZMQ_LINGER, &zero, sizeof zero) ||
        zmq_bind(g->rep, "inproc://zeromq.zap.01")) {
        err_set(err, "ZAP handler: %s", zmq_strerror(errno));
        if (g->rep) zmq_close(g->rep);
        free(g);
        return NULL;
    }
    return g;
}

int zap_gate_run(zap_gate *g, void *listener, strata_err *err) {
    if (g->running) return err_set(err, "ZAP handler: watch before the thread starts");
    if (listener && !(g->mon = link_monitor_open(g->zctx, listener,
                                                  ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                                                      ZMQ_EVENT_HANDSHAKE_FAILED_AUTH, err)))
        return -1;
    /* the sockets were made on this thread; from here on only the gate's thread touches them */
    if (pthread_create(&g->thread, NULL, run, g)) return err_set(err, "ZAP handler: cannot start its thread");
    g->running = 1;
    return 0;
}

unsigned zap_gate_refused(const zap_gate *g) { return g ? __atomic_load_n(&g->refused, __ATOMIC_RELAXED) : 0; }

void zap_gate_stop(zap_gate **pg) {
    zap_gate *g = pg ? *pg : NULL;
    if (!g) return;
    __atomic_store_n(&g->stop, 1, __ATOMIC_RELAXED);
    if (g->running) pthread_join(g->thread, NULL);
    link_monitor_close(&g->mon);
    if (g->rep) zmq_close(g->rep);
    free(g);
    *pg = NULL;
}
