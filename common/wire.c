#include "common/wire.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t wire_dtype_size(int dtype) {
    switch (dtype) {
    case STRATA__DTYPE__DTYPE_F32: return 4;
    case STRATA__DTYPE__DTYPE_F16: case STRATA__DTYPE__DTYPE_BF16: return 2;
    default: return 0;
    }
}

const char *wire_body_name(int body_case) {
    static const char *names[] = {"(none)", "hello", "assign", "ready", "fetch", "chunk",
                                  "forward", "result", "trim", "end", "error"};
    return body_case >= 0 && (size_t)body_case < sizeof names / sizeof names[0] ? names[body_case] : "(unknown)";
}

static int body_has_payload(int body_case) {
    return body_case == STRATA__ENVELOPE__BODY_FORWARD || body_case == STRATA__ENVELOPE__BODY_RESULT ||
           body_case == STRATA__ENVELOPE__BODY_CHUNK;
}

/* Forward and Result share their fields: rows x cols of dtype must be exactly frame 2. */
static wire_status check_tensor(const char *what, uint32_t n_tokens, uint32_t hidden, int dtype,
                                size_t payload_bytes, strata_err *err) {
    if (n_tokens < 1 || n_tokens > WIRE_MAX_TOKENS)
        return err_set(err, "%s: n_tokens %u outside [1, %u]", what, n_tokens, WIRE_MAX_TOKENS), WIRE_MALFORMED;
    if (hidden < 1 || hidden > WIRE_MAX_HIDDEN)
        return err_set(err, "%s: hidden_dim %u outside [1, %u]", what, hidden, WIRE_MAX_HIDDEN), WIRE_MALFORMED;
    size_t esz = wire_dtype_size(dtype);
    if (!esz) return err_set(err, "%s: unknown dtype %d", what, dtype), WIRE_MALFORMED;
    uint64_t want = (uint64_t)n_tokens * hidden * esz; /* < 2^34: no overflow */
    if (want != payload_bytes)
        return err_set(err, "%s: %u x %u x %zu bytes = %llu expected in frame 2, got %zu", what, n_tokens, hidden, esz,
                       (unsigned long long)want, payload_bytes), WIRE_MALFORMED;
    return WIRE_OK;
}

static wire_status check_body(const Strata__Envelope *e, size_t payload_bytes, strata_err *err) {
    switch (e->body_case) {
    case STRATA__ENVELOPE__BODY_HELLO:
        if (!e->hello) break;
        return WIRE_OK;
    case STRATA__ENVELOPE__BODY_ASSIGN: {
        const Strata__Assign *a = e->assign;
        if (!a) break;
        if (a->bundle_sha256.len != 32)
            return err_set(err, "assign: bundle_sha256 has %zu bytes, expected 32", a->bundle_sha256.len), WIRE_MALFORMED;
        if (a->first_layer >= a->last_layer || a->last_layer > WIRE_MAX_LAYERS)
            return err_set(err, "assign: layer range [%u, %u) is empty or beyond %u", a->first_layer, a->last_layer,
                           WIRE_MAX_LAYERS), WIRE_MALFORMED;
        if (a->bundle_bytes < 8 || a->bundle_bytes > WIRE_MAX_BUNDLE_BYTES)
            return err_set(err, "assign: bundle_bytes %llu outside [8, %llu]", (unsigned long long)a->bundle_bytes,
                           (unsigned long long)WIRE_MAX_BUNDLE_BYTES), WIRE_MALFORMED;
        if (a->chunk_bytes < 1 || a->chunk_bytes > WIRE_MAX_CHUNK_BYTES)
            return err_set(err, "assign: chunk_bytes %u outside [1, %u]", a->chunk_bytes, WIRE_MAX_CHUNK_BYTES), WIRE_MALFORMED;
        if (a->credit < 1 || a->credit > WIRE_MAX_CREDIT)
            return err_set(err, "assign: credit %u outside [1, %u]", a->credit, WIRE_MAX_CREDIT), WIRE_MALFORMED;
        if (a->ctx_len < 1 || a->ctx_len > (1u << 24))
            return err_set(err, "assign: ctx_len %u outside [1, %u]", a->ctx_len, 1u << 24), WIRE_MALFORMED;
        if (!a->config_json || !*a->config_json) return err_set(err, "assign: empty config_json"), WIRE_MALFORMED;
        if (a->next_hop && strlen(a->next_hop) > 255)
            return err_set(err, "assign: next_hop longer than 255 bytes"), WIRE_MALFORMED;
        return WIRE_OK;
    }
    case STRATA__ENVELOPE__BODY_READY:
        if (!e->ready) break;
        return WIRE_OK;
    case STRATA__ENVELOPE__BODY_FETCH:
        if (!e->fetch) break;
        if (e->fetch->size < 1 || e->fetch->size > WIRE_MAX_CHUNK_BYTES)
            return err_set(err, "fetch: size %u outside [1, %u]", e->fetch->size, WIRE_MAX_CHUNK_BYTES), WIRE_MALFORMED;
        if (e->fetch->offset > WIRE_MAX_BUNDLE_BYTES)
            return err_set(err, "fetch: offset %llu beyond any bundle", (unsigned long long)e->fetch->offset), WIRE_MALFORMED;
        return WIRE_OK;
    case STRATA__ENVELOPE__BODY_CHUNK:
        if (!e->chunk) break;
        if (payload_bytes < 1 || payload_bytes > WIRE_MAX_CHUNK_BYTES)
            return err_set(err, "chunk: %zu bytes outside [1, %u]", payload_bytes, WIRE_MAX_CHUNK_BYTES), WIRE_MALFORMED;
        if (e->chunk->offset > WIRE_MAX_BUNDLE_BYTES)
            return err_set(err, "chunk: offset %llu beyond any bundle", (unsigned long long)e->chunk->offset), WIRE_MALFORMED;
        return WIRE_OK;
    case STRATA__ENVELOPE__BODY_FORWARD:
        if (!e->forward) break;
        return check_tensor("forward", e->forward->n_tokens, e->forward->hidden_dim, e->forward->dtype, payload_bytes, err);
    case STRATA__ENVELOPE__BODY_RESULT:
        if (!e->result) break;
        return check_tensor("result", e->result->n_tokens, e->result->hidden_dim, e->result->dtype, payload_bytes, err);
    case STRATA__ENVELOPE__BODY_TRIM:
        if (!e->trim) break;
        return WIRE_OK;
    case STRATA__ENVELOPE__BODY_END:
        if (!e->end) break;
        return WIRE_OK;
    case STRATA__ENVELOPE__BODY_ERROR:
        if (!e->error) break;
        return WIRE_OK;
    case STRATA__ENVELOPE__BODY__NOT_SET:
    default:
        return err_set(err, "unknown message: the envelope carries no body this side knows (protocol %u)",
                       WIRE_PROTOCOL_VERSION), WIRE_UNKNOWN;
    }
    return err_set(err, "%s: empty body", wire_body_name(e->body_case)), WIRE_MALFORMED;
}

wire_status wire_decode(const uint8_t *ctrl, size_t ctrl_bytes, int has_payload, const uint8_t *payload,
                        size_t payload_bytes, wire_msg *out, strata_err *err) {
    memset(out, 0, sizeof *out);
    if (ctrl_bytes > WIRE_MAX_CTRL_BYTES)
        return err_set(err, "control frame of %zu bytes exceeds %u", ctrl_bytes, WIRE_MAX_CTRL_BYTES), WIRE_MALFORMED;
    if (has_payload && payload_bytes > WIRE_MAX_PAYLOAD_BYTES)
        return err_set(err, "data frame of %zu bytes exceeds %llu", payload_bytes, WIRE_MAX_PAYLOAD_BYTES), WIRE_MALFORMED;
    if (!ctrl && ctrl_bytes) return err_set(err, "control frame missing"), WIRE_MALFORMED;
    /* protobuf-c sizes every allocation from the bytes it has read, so a bounded frame bounds
     * what unpacking can allocate */
    Strata__Envelope *e = strata__envelope__unpack(NULL, ctrl_bytes, ctrl ? ctrl : (const uint8_t *)"");
    if (!e) return err_set(err, "control frame of %zu bytes is not a valid Envelope", ctrl_bytes), WIRE_MALFORMED;
    wire_status st = check_body(e, payload_bytes, err);
    if (st == WIRE_OK && body_has_payload(e->body_case) != !!has_payload)
        st = (err_set(err, "%s: %s", wire_body_name(e->body_case),
                      has_payload ? "unexpected data frame" : "data frame missing"), WIRE_MALFORMED);
    if (st != WIRE_OK) {
        strata__envelope__free_unpacked(e, NULL);
        return st;
    }
    out->env = e;
    out->payload = has_payload ? payload : NULL;
    out->payload_bytes = has_payload ? payload_bytes : 0;
    return WIRE_OK;
}

void wire_msg_free(wire_msg *m) {
    if (m && m->env) strata__envelope__free_unpacked(m->env, NULL);
    if (m) memset(m, 0, sizeof *m);
}

/* receives one frame into f (opened); returns whether more frames follow, or -1 */
static int recv_frame(void *sock, zmq_msg_t *f, strata_err *err) {
    zmq_msg_init(f);
    if (zmq_msg_recv(f, sock, 0) < 0) {
        int e = errno;
        zmq_msg_close(f);
        errno = e;
        return err_set(err, "receive: %s", zmq_strerror(e));
    }
    return zmq_msg_more(f);
}

static void drain(void *sock) {
    int more = 1;
    while (more) {
        zmq_msg_t f;
        zmq_msg_init(&f);
        if (zmq_msg_recv(&f, sock, 0) < 0) { zmq_msg_close(&f); return; }
        more = zmq_msg_more(&f);
        zmq_msg_close(&f);
    }
}

int wire_recv(void *sock, int with_identity, wire_in *in, strata_err *err) {
    memset(in, 0, sizeof *in);
    zmq_msg_t f;
    int more;
    if (with_identity) {
        if ((more = recv_frame(sock, &f, err)) < 0) return -1;
        size_t n = zmq_msg_size(&f);
        in->identity_bytes = n < WIRE_MAX_IDENTITY ? n : WIRE_MAX_IDENTITY;
        memcpy(in->identity, zmq_msg_data(&f), in->identity_bytes);
        zmq_msg_close(&f);
        if (!more) return err_set(err, "message with a routing id and no frames"), WIRE_MALFORMED;
    }
    zmq_msg_t ctrl;
    if ((more = recv_frame(sock, &ctrl, err)) < 0) return -1;
    in->n_frames = 1;
    if (more) {
        if ((more = recv_frame(sock, &in->payload_frame, err)) < 0) { zmq_msg_close(&ctrl); return -1; }
        in->payload_open = 1;
        in->n_frames = 2;
        if (more) {
            drain(sock);
            zmq_msg_close(&ctrl);
            return err_set(err, "more than 2 frames in one message"), WIRE_MALFORMED;
        }
    }
    int st = wire_decode(zmq_msg_data(&ctrl), zmq_msg_size(&ctrl), in->payload_open,
                         in->payload_open ? zmq_msg_data(&in->payload_frame) : NULL,
                         in->payload_open ? zmq_msg_size(&in->payload_frame) : 0, &in->msg, err);
    zmq_msg_close(&ctrl);
    return st;
}

void wire_in_close(wire_in *in) {
    wire_msg_free(&in->msg);
    if (in->payload_open) zmq_msg_close(&in->payload_frame);
    in->payload_open = 0;
}

int wire_send(void *sock, const uint8_t *identity, size_t identity_bytes, const Strata__Envelope *env,
              const void *payload, size_t payload_bytes, strata_err *err) {
    size_t n = strata__envelope__get_packed_size(env);
    if (n > WIRE_MAX_CTRL_BYTES) return err_set(err, "envelope of %zu bytes exceeds %u", n, WIRE_MAX_CTRL_BYTES);
    zmq_msg_t ctrl;
    if (zmq_msg_init_size(&ctrl, n ? n : 1)) return err_set(err, "out of memory");
    strata__envelope__pack(env, zmq_msg_data(&ctrl));
    if (!n) zmq_msg_close(&ctrl), zmq_msg_init(&ctrl);
    if (identity && zmq_send(sock, identity, identity_bytes, ZMQ_SNDMORE) < 0) goto fail;
    if (zmq_msg_send(&ctrl, sock, payload ? ZMQ_SNDMORE : 0) < 0) goto fail;
    /* frame 2 goes out from the caller's memory: zmq_send copies it once into the message */
    if (payload && zmq_send(sock, payload, payload_bytes, 0) < 0) return err_set(err, "send: %s", zmq_strerror(errno));
    return 0;
fail:;
    int e = errno;
    zmq_msg_close(&ctrl);
    return err_set(err, "send: %s", zmq_strerror(e));
}

int wire_send_error(void *sock, const uint8_t *identity, size_t identity_bytes, Strata__ErrorCode code,
                    uint64_t session, uint64_t step, const char *from, const char *message) {
    Strata__Envelope env = STRATA__ENVELOPE__INIT;
    Strata__Error e = STRATA__ERROR__INIT;
    e.code = code;
    e.message = (char *)message;
    e.session = session;
    e.step = step;
    e.protocol_version = WIRE_PROTOCOL_VERSION;
    e.from = (char *)(from ? from : "");
    env.body_case = STRATA__ENVELOPE__BODY_ERROR;
    env.error = &e;
    return wire_send(sock, identity, identity_bytes, &env, NULL, 0, NULL);
}

int wire_socket_setup(void *sock, int linger_ms) {
    int64_t max = (int64_t)WIRE_MAX_PAYLOAD_BYTES;
    if (zmq_setsockopt(sock, ZMQ_MAXMSGSIZE, &max, sizeof max)) return -1;
    if (zmq_setsockopt(sock, ZMQ_LINGER, &linger_ms, sizeof linger_ms)) return -1;
    return 0;
}
