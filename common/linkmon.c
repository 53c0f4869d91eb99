#include "common/linkmon.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

int link_heartbeat_setup(void *sock) {
    int ivl = LINK_HEARTBEAT_IVL_MS, timeout = LINK_HEARTBEAT_TIMEOUT_MS, ttl = LINK_HEARTBEAT_TTL_MS;
    if (zmq_setsockopt(sock, ZMQ_HEARTBEAT_IVL, &ivl, sizeof ivl) ||
        zmq_setsockopt(sock, ZMQ_HEARTBEAT_TIMEOUT, &timeout, sizeof timeout) ||
        zmq_setsockopt(sock, ZMQ_HEARTBEAT_TTL, &ttl, sizeof ttl))
        return -1;
    return 0;
}

void *link_monitor_open(void *zctx, void *sock, int events, strata_err *err) {
    static unsigned counter;
    char ep[96];
    /* unique per socket within the process */
    snprintf(ep, sizeof ep, "inproc://strata-monitor-%p-%u", sock, __atomic_fetch_add(&counter, 1, __ATOMIC_RELAXED));
    if (zmq_socket_monitor(sock, ep, events)) { err_set(err, "socket monitor: %s", zmq_strerror(errno)); return NULL; }
    void *mon = zmq_socket(zctx, ZMQ_PAIR);
    int zero = 0;
    if (!mon || zmq_setsockopt(mon, ZMQ_LINGER, &zero, sizeof zero) || zmq_connect(mon, ep)) {
        err_set(err, "socket monitor: %s", zmq_strerror(errno));
        if (mon) zmq_close(mon);
        return NULL;
    }
    return mon;
}

int link_monitor_read(void *mon, int *event, uint32_t *value, char *addr, size_t addr_bytes) {
    zmq_msg_t f;
    zmq_msg_init(&f);
    if (zmq_msg_recv(&f, mon, ZMQ_DONTWAIT) < 0) {
        zmq_msg_close(&f);
        return errno == EAGAIN ? 0 : -1;
    }
    int ok = zmq_msg_size(&f) == 6 && zmq_msg_more(&f);
    if (ok) {
        const uint8_t *d = zmq_msg_data(&f);
        uint16_t ev;
        memcpy(&ev, d, 2);
        memcpy(value, d + 2, 4);
        *event = ev;
    }
    int more = zmq_msg_more(&f);
    zmq_msg_close(&f);
    if (addr && addr_bytes) addr[0] = 0;
    while (more) { /* the endpoint frame (libzmq always sends it, blocking is safe) */
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, mon, 0) < 0) { zmq_msg_close(&f); return -1; }
        if (addr && addr_bytes) {
            size_t n = zmq_msg_size(&f) < addr_bytes - 1 ? zmq_msg_size(&f) : addr_bytes - 1;
            memcpy(addr, zmq_msg_data(&f), n);
            addr[n] = 0;
        }
        more = zmq_msg_more(&f);
        zmq_msg_close(&f);
    }
    return ok ? 1 : -1;
}

void link_monitor_close(void **mon) {
    if (mon && *mon) zmq_close(*mon);
    if (mon) *mon = NULL;
}

const char *link_event_name(int event) {
    switch (event) {
    case ZMQ_EVENT_CONNECTED: return "connected";
    case ZMQ_EVENT_CONNECT_DELAYED: return "connect delayed";
    case ZMQ_EVENT_CONNECT_RETRIED: return "connect retried";
    case ZMQ_EVENT_ACCEPTED: return "accepted";
    case ZMQ_EVENT_CLOSED: return "closed";
    case ZMQ_EVENT_DISCONNECTED: return "disconnected";
    case ZMQ_EVENT_HANDSHAKE_SUCCEEDED: return "handshake succeeded";
    case ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL: return "handshake failed";
    case ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL: return "handshake failed (protocol)";
    case ZMQ_EVENT_HANDSHAKE_FAILED_AUTH: return "handshake failed (authentication)";
    default: return "event";
    }
}

const char *link_handshake_reason(int event, uint32_t value) {
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)
        return "the peer's key was refused (it does not hold the cluster key)";
    if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
        if (value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH)
            return "security mechanism mismatch (one side runs CurveZMQ, the other --insecure)";
        if (value == ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC)
            return "CurveZMQ handshake did not decrypt (the two sides hold different cluster keys)";
        if (value >= 0x20000000u && value < 0x30000000u) return "the ZAP handler refused the peer";
        return "malformed handshake";
    }
    return "the secure handshake failed (different cluster keys, or one side runs --insecure)";
}
