/* The wire: ZeroMQ multipart messages of one protobuf-c Envelope (frame 1) and, for Forward,
 * Result and BundleChunk, the raw bytes they describe (frame 2, never protobuf-encoded).
 *
 * wire_decode() is a pure function over byte ranges (no sockets), so that it can be fuzzed in
 * isolation: every length and count is checked against a bound before anything is allocated or
 * trusted. The socket helpers (wire_recv, wire_send) call it and never abort on what a peer sends. */
#ifndef STRATA_WIRE_H
#define STRATA_WIRE_H

#include <stddef.h>
#include <stdint.h>
#include <zmq.h>

#include "common/err.h"
#include "proto/strata.pb-c.h"

#define WIRE_PROTOCOL_VERSION 1u

#define WIRE_MAX_CTRL_BYTES (1u << 20)            /* an Envelope (the config JSON is the bulk) */
#define WIRE_MAX_CHUNK_BYTES (16u << 20)          /* one bundle chunk */
#define WIRE_MAX_TOKENS 65536u                    /* rows of one Forward */
#define WIRE_MAX_HIDDEN 65536u                    /* columns of one Forward */
#define WIRE_MAX_PAYLOAD_BYTES (1024ull << 20)    /* frame 2; also the sockets' ZMQ_MAXMSGSIZE */
#define WIRE_MAX_BUNDLE_BYTES (1ull << 40)
#define WIRE_MAX_LAYERS 65536u
#define WIRE_MAX_CREDIT 256u
#define WIRE_MAX_IDENTITY 255u                    /* ZeroMQ's own limit for routing ids */

/* Why a message was refused; mirrors Strata__ErrorCode for the reply. */
typedef enum {
    WIRE_OK = 0,
    WIRE_MALFORMED = STRATA__ERROR_CODE__ERR_MALFORMED,
    WIRE_UNKNOWN = STRATA__ERROR_CODE__ERR_UNKNOWN_MESSAGE,
} wire_status;

typedef struct {
    Strata__Envelope *env;      /* owned; NULL when decoding failed */
    const uint8_t *payload;     /* frame 2 (borrowed), NULL when absent */
    size_t payload_bytes;
} wire_msg;

/* Decodes frame 1 (ctrl) and checks frame 2 (has_payload, payload) against the body: which bodies
 * carry a frame 2, its exact size, every numeric bound above. Returns WIRE_OK, or WIRE_MALFORMED /
 * WIRE_UNKNOWN with err saying which field broke which bound. */
wire_status wire_decode(const uint8_t *ctrl, size_t ctrl_bytes, int has_payload, const uint8_t *payload,
                        size_t payload_bytes, wire_msg *out, strata_err *err);
void wire_msg_free(wire_msg *m);

/* bytes of one element of a wire dtype; 0 for an unknown one */
size_t wire_dtype_size(int dtype);
const char *wire_body_name(int body_case);

/* One received message with the frames that back it. */
typedef struct {
    uint8_t identity[WIRE_MAX_IDENTITY];
    size_t identity_bytes;      /* 0 on a DEALER */
    int n_frames;               /* after the identity */
    zmq_msg_t payload_frame;    /* kept open while msg.payload points into it */
    int payload_open;
    wire_msg msg;
} wire_in;

/* Receives one multipart message (blocking; poll first). with_identity: the socket is a ROUTER.
 * Returns WIRE_OK, WIRE_MALFORMED/WIRE_UNKNOWN (the message was consumed; identity is set so the
 * caller can answer), or -1 on a socket error (errno from ZeroMQ, e.g. EINTR). Close with
 * wire_in_close() in every case. */
int wire_recv(void *sock, int with_identity, wire_in *in, strata_err *err);
void wire_in_close(wire_in *in);

/* Sends env (+ frame 2 when payload != NULL). identity != NULL on a ROUTER. 0 or -1. */
int wire_send(void *sock, const uint8_t *identity, size_t identity_bytes, const Strata__Envelope *env,
              const void *payload, size_t payload_bytes, strata_err *err);
int wire_send_error(void *sock, const uint8_t *identity, size_t identity_bytes, Strata__ErrorCode code,
                    uint64_t session, uint64_t step, const char *from, const char *message);

/* Socket options every strata socket uses: bounded inbound size, no linger past close (at most
 * linger_ms), so that a dead peer never hangs a process on exit. */
int wire_socket_setup(void *sock, int linger_ms);

#endif
