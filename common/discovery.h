/* Zero-config: workers advertise `_strata._tcp` over mDNS/DNS-SD and the master browses for them.
 *
 * One interface, two implementations chosen by name at run time:
 *   "avahi"  libavahi-client (Linux), through the avahi-daemon on the D-Bus system bus;
 *   "dnssd"  the dns_sd.h API: Bonjour on macOS/iOS; on Linux Avahi's compatibility library
 *            (libavahi-compat-libdnssd), so the Apple code path is built and tested here too.
 * Both talk to a daemon; when there is none, publishing and browsing fail at once with one line
 * that says so (the caller suggests --topology).
 *
 * TXT record of a worker (every value a decimal or a short string; unknown keys are ignored, so
 * later versions can add keys):
 *   v=1               TXT format version (DISC_TXT_VERSION)
 *   proto=N           wire protocol version (common/wire.h)
 *   backend=cpu       backend name
 *   device=...        device name (truncated to fit a TXT item)
 *   mem=BYTES         memory the worker offers for weights and KV cache
 *   speed=G           q4 matvec throughput in G weights/s, measured by the worker at start
 *                     (exec_measure_speed); the planner only compares it between nodes
 *   key=HEX           the cluster public-key fingerprint; absent until CurveZMQ lands */
#ifndef STRATA_DISCOVERY_H
#define STRATA_DISCOVERY_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

#define DISC_SERVICE_TYPE "_strata._tcp"
#define DISC_TXT_VERSION 1

typedef struct {
    char name[64];            /* service instance name; after a conflict the name in use ("w #2") */
    char address[64];         /* IPv4 address, as resolved (browse results only) */
    uint16_t port;
    unsigned protocol;
    char backend[32];
    char device[208];         /* at most 200 bytes travel in the TXT record */
    uint64_t memory_bytes;
    double speed;             /* G q4 weights/s; 0 = unknown */
    char key_fingerprint[96]; /* empty = none advertised */
} disc_service;

/* "avahi" or "dnssd" when built in, for `--discovery`; the default is the first one built. */
const char *disc_default_impl(void);          /* NULL when no implementation is built */
int disc_impl_available(const char *impl);    /* 1 when built in */
const char *disc_impl_list(void);             /* "avahi, dnssd" (what this build has), for messages */

/* Events of a published service (established, renamed after a conflict, daemon gone), for the
 * caller's log. May be called from the implementation's own thread. */
typedef void (*disc_log_fn)(void *ctx, const char *msg);

typedef struct disc_publisher disc_publisher;

/* Publishes s (name, port and TXT fields; address ignored) and keeps it published (conflicts
 * are answered with the daemon's alternative names: "name #2") until disc_withdraw. Fails at
 * once when no daemon answers. impl NULL: the default. */
disc_publisher *disc_publish(const char *impl, const disc_service *s, disc_log_fn log, void *log_ctx,
                             strata_err *err);
/* The name in use now (the requested one, or its alternative after a conflict). */
void disc_publisher_name(disc_publisher *p, char *out, size_t out_bytes);
/* Withdraws the service (goodbye packets) and frees p; NULL-safe. */
void disc_withdraw(disc_publisher **p);

/* Browses for wait_ms, resolving every worker seen (IPv4 address, port, TXT). With min_found > 0
 * browsing goes on past wait_ms while fewer than min_found are resolved, up to max_wait_ms in all.
 * *out (free() it) holds the resolved services sorted by name, one per name. */
int disc_browse(const char *impl, int wait_ms, int min_found, int max_wait_ms, disc_service **out, int *n_out,
                strata_err *err);

/* What a node offers for weights and KV cache when not told: 90% of the memory available now
 * (Linux MemAvailable; elsewhere half the physical memory), the rest left for the runtime. */
uint64_t disc_default_memory_bytes(void);

/* ---- shared by the implementations (common/discovery.c) ---- */
#define DISC_TXT_MAX_ITEMS 8
#define DISC_TXT_ITEM_BYTES 250
/* key=value items for s; returns how many */
int disc_txt_items(const disc_service *s, char items[DISC_TXT_MAX_ITEMS][DISC_TXT_ITEM_BYTES]);
/* Applies one TXT item (key, value of value_len bytes, not NUL-terminated) to s; bad values are
 * ignored, as an mDNS record is data from anyone on the link. */
void disc_txt_apply(disc_service *s, const char *key, const void *value, size_t value_len);
/* Adds or replaces (by name) a resolved service in a growing array; -1 when out of memory. */
int disc_list_put(disc_service **list, int *n, int *cap, const disc_service *s);
void disc_list_remove(disc_service *list, int *n, const char *name);
void disc_list_sort(disc_service *list, int n);

/* the implementations, as a table (common/discovery.c dispatches on the name) */
typedef struct {
    const char *name;
    void *(*publish)(const disc_service *s, disc_log_fn log, void *log_ctx, strata_err *err);
    void (*publisher_name)(void *state, char *out, size_t out_bytes);
    void (*withdraw)(void *state);
    int (*browse)(int wait_ms, int min_found, int max_wait_ms, disc_service **out, int *n_out, strata_err *err);
} disc_impl;

extern const disc_impl disc_avahi_impl;  /* defined when built with STRATA_HAVE_AVAHI */
extern const disc_impl disc_dnssd_impl;  /* defined when built with STRATA_HAVE_DNSSD */

#endif
