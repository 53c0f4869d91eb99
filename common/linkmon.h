/* Liveness of strata's links: ZMTP heartbeats on every socket and a socket monitor to hear about
 * them.
 *
 * Heartbeats are ZeroMQ's own (ZMQ_HEARTBEAT_IVL/TIMEOUT/TTL, ZMTP 3.1 PING/PONG). They are sent
 * and answered by libzmq's I/O thread, not by the application thread: a worker busy in a long
 * prefill still answers every PING, so a long forward is never taken for a death, while a process
 * that is killed, frozen (SIGSTOP, a sleeping laptop) or cut off (Wi-Fi gone) stops answering and
 * its peer drops the connection after LINK_HEARTBEAT_TIMEOUT_MS. A killed process is seen at once
 * (the kernel closes its TCP connections). Either way the peer's monitor reports
 * ZMQ_EVENT_DISCONNECTED, which is what the master's failover (master/failover.c) acts on.
 * A worker that is alive but stuck in its own thread forever is caught by the master's bounded
 * reply timeout instead (--reply-timeout-ms). */
#ifndef STRATA_LINKMON_H
#define STRATA_LINKMON_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define LINK_HEARTBEAT_IVL_MS 1000      /* a PING after this long without traffic */
#define LINK_HEARTBEAT_TIMEOUT_MS 3000  /* no traffic at all for this long after a PING: the link is dead */
#define LINK_HEARTBEAT_TTL_MS 6000      /* tells the peer to drop us after this long without traffic */

/* Sets the heartbeat options (before connect/bind). */
int link_heartbeat_setup(void *sock);

/* Starts a monitor on sock for `events` (ZMQ_EVENT_* mask) and returns the PAIR socket that
 * receives them (created in zctx; read it from one thread only), or NULL with err. */
void *link_monitor_open(void *zctx, void *sock, int events, strata_err *err);
/* Reads one pending event without blocking: 1 and the fields, 0 when none is pending, -1 on
 * error. addr (may be NULL) receives the endpoint the event is about. */
int link_monitor_read(void *mon, int *event, uint32_t *value, char *addr, size_t addr_bytes);
/* Closes the PAIR socket (the monitored socket's monitor is stopped by its own close). */
void link_monitor_close(void **mon);

const char *link_event_name(int event);
/* A reason for a failed handshake in words (value of a HANDSHAKE_FAILED_* event). */
const char *link_handshake_reason(int event, uint32_t value);

#endif
