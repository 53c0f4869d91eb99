/* The worker's gatekeeper: a thread that answers ZAP requests (ZeroMQ's authentication protocol,
 * inproc://zeromq.zap.01) for the worker's CURVE sockets, admitting only clients that present the
 * cluster's public key (and so, by the CURVE handshake, hold its secret), and that logs a clear
 * line for every refused peer: a wrong key (ZAP), another cluster's server key or no CURVE at all
 * (the handshake fails before ZAP is asked; the listening socket's monitor reports it).
 *
 * A thread, because the worker's own thread can be inside a long forward: a new peer's handshake
 * must not wait for it. Refused peers never reach the worker's socket: no message of theirs is
 * ever read. */
#ifndef STRATA_WORKER_ZAP_H
#define STRATA_WORKER_ZAP_H

#include "common/curve.h"
#include "common/err.h"

typedef struct zap_gate zap_gate;

/* Binds the ZAP handler in zctx; call before any CURVE server socket binds. log_name: the
 * worker's name in log lines. */
zap_gate *zap_gate_start(void *zctx, const curve_key *k, const char *log_name, strata_err *err);
/* Starts the thread, watching `listener` (the CURVE server socket, before its bind; may be NULL)
 * for failed handshakes. From here on only the gate's thread touches the gate's sockets. */
int zap_gate_run(zap_gate *g, void *listener, strata_err *err);
/* Peers refused so far (ZAP denials and failed handshakes). */
unsigned zap_gate_refused(const zap_gate *g);
/* Stops the thread and closes the gate's sockets (before zmq_ctx_term). */
void zap_gate_stop(zap_gate **g);

#endif
