/* Discovery through libavahi-client (the avahi-daemon over D-Bus). See discovery.h.
 *
 * Publishing runs on an AvahiThreadedPoll (its own thread), so a worker's ZeroMQ loop needs no
 * hook: collisions and daemon restarts are answered there. Browsing runs an AvahiSimplePoll in
 * the caller's thread until the deadline. Only IPv4 addresses are resolved: a ZeroMQ tcp://
 * endpoint with an IPv6 link-local address would also need the interface scope. */
#include "common/discovery.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <avahi-client/client.h>
#include <avahi-client/lookup.h>
#include <avahi-client/publish.h>
#include <avahi-common/alternative.h>
#include <avahi-common/domain.h>
#include <avahi-common/error.h>
#include <avahi-common/malloc.h>
#include <avahi-common/simple-watch.h>
#include <avahi-common/thread-watch.h>
#include <avahi-common/timeval.h>

/* After a collision on the network the new name is probed after a pause drawn per process: two
 * workers that started together with the same name would otherwise both probe "w #2" at the same
 * moment, and Avahi (which tie-breaks record by record: SRV by host, TXT by content) can make both
 * of them lose again, "w #3", ... A probe takes ~0.75-1 s, so the pause is one of RENAME_SLOTS
 * slots RENAME_SLOT_MS apart (two workers meet again only in the same slot) plus a little jitter.
 * Not avahi_elapse_time's jitter: it draws from rand(), which nobody seeds, so every worker drew
 * the same pauses and two that collided once collided on every name after (CI saw 'w #9'). */
#define RENAME_DELAY_MS 150
#define RENAME_SLOT_MS 1250
#define RENAME_SLOTS 4
#define RENAME_JITTER_MS 100

/* the one line for "no daemon", shared by publish and browse */
static int client_error(strata_err *err, int error) {
    if (error == AVAHI_ERR_NO_DAEMON)
        return err_set(err, "discovery (avahi): no avahi-daemon is running; start it (systemctl start "
                            "avahi-daemon), or name the workers with --topology FILE");
    if (error == AVAHI_ERR_DBUS_ERROR) /* no system bus at all: no daemon either */
        return err_set(err, "discovery (avahi): no avahi-daemon is reachable (%s on the D-Bus system bus); start "
                            "it, or name the workers with --topology FILE", avahi_strerror(error));
    return err_set(err, "discovery (avahi): cannot connect to avahi-daemon: %s", avahi_strerror(error));
}

/* ---- publish ---- */

typedef struct {
    AvahiThreadedPoll *poll;
    AvahiClient *client;
    AvahiEntryGroup *group;
    AvahiStringList *txt;
    char *name;                  /* avahi_malloc'd: the name in use */
    uint16_t port;
    pthread_mutex_t name_lock;   /* name is replaced on the poll thread, read by the caller */
    AvahiTimeout *rename_timer;  /* pending re-registration after a collision */
    uint64_t rng;                /* this process's own draws for the rename pause */
    disc_log_fn log;
    void *log_ctx;
} avahi_pub;

static void say(avahi_pub *p, const char *fmt, const char *a, const char *b) {
    char msg[400];
    if (!p->log) return;
    snprintf(msg, sizeof msg, fmt, a, b);
    p->log(p->log_ctx, msg);
}

static void create_service(avahi_pub *p, AvahiClient *c);

static void rename_timer_cb(AvahiTimeout *t, void *ud) {
    (void)t;
    avahi_pub *p = ud;
    create_service(p, p->client);
}

/* splitmix64: seeded from the clock, the pid and this state's address, so workers started in the
 * same millisecond on different hosts (or in one) draw apart */
static uint64_t next_draw(uint64_t *state) {
    uint64_t z = (*state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* later: after a random pause (a network collision), now: a name taken on this very host */
static void rename_after_collision(avahi_pub *p, AvahiClient *c, int later) {
    char *n = avahi_alternative_service_name(p->name);
    if (!n) return;
    say(p, "mDNS name '%s' is taken on the network; advertising as '%s'", p->name, n);
    pthread_mutex_lock(&p->name_lock);
    avahi_free(p->name);
    p->name = n;
    pthread_mutex_unlock(&p->name_lock);
    if (!later) { create_service(p, c); return; }
    if (p->group) avahi_entry_group_reset(p->group);
    const AvahiPoll *api = avahi_threaded_poll_get(p->poll);
    uint64_t r = next_draw(&p->rng);
    struct timeval tv;
    avahi_elapse_time(&tv, RENAME_DELAY_MS + (unsigned)(r % RENAME_SLOTS) * RENAME_SLOT_MS +
                               (unsigned)((r >> 32) % RENAME_JITTER_MS), 0);
    if (p->rename_timer) api->timeout_update(p->rename_timer, &tv);
    else if (!(p->rename_timer = api->timeout_new(api, &tv, rename_timer_cb, p))) create_service(p, c);
}

static void group_cb(AvahiEntryGroup *g, AvahiEntryGroupState state, void *ud) {
    avahi_pub *p = ud;
    p->group = g;
    switch (state) {
    case AVAHI_ENTRY_GROUP_ESTABLISHED: say(p, "advertised as '%s' (%s)", p->name, DISC_SERVICE_TYPE); break;
    case AVAHI_ENTRY_GROUP_COLLISION: rename_after_collision(p, avahi_entry_group_get_client(g), 1); break;
    case AVAHI_ENTRY_GROUP_FAILURE:
        say(p, "mDNS advertisement failed: %s%s", avahi_strerror(avahi_client_errno(avahi_entry_group_get_client(g))), "");
        break;
    default: break;
    }
}

static void create_service(avahi_pub *p, AvahiClient *c) {
    if (!p->group && !(p->group = avahi_entry_group_new(c, group_cb, p))) {
        say(p, "mDNS: cannot create an entry group: %s%s", avahi_strerror(avahi_client_errno(c)), "");
        return;
    }
    avahi_entry_group_reset(p->group);
    int rc = avahi_entry_group_add_service_strlst(p->group, AVAHI_IF_UNSPEC, AVAHI_PROTO_UNSPEC, 0, p->name,
                                                  DISC_SERVICE_TYPE, NULL, NULL, p->port, p->txt);
    if (rc == AVAHI_ERR_COLLISION) { rename_after_collision(p, c, 0); return; } /* a local collision */
    if (rc < 0 || (rc = avahi_entry_group_commit(p->group)) < 0)
        say(p, "mDNS: cannot publish the service: %s%s", avahi_strerror(rc), "");
}

static void pub_client_cb(AvahiClient *c, AvahiClientState state, void *ud) {
    avahi_pub *p = ud;
    switch (state) {
    case AVAHI_CLIENT_S_RUNNING: create_service(p, c); break;
    /* the host name changes or collides: records are withdrawn and published again once running */
    case AVAHI_CLIENT_S_COLLISION:
    case AVAHI_CLIENT_S_REGISTERING:
        if (p->group) avahi_entry_group_reset(p->group);
        break;
    case AVAHI_CLIENT_FAILURE:
        say(p, "mDNS: lost avahi-daemon (%s); this worker is no longer advertised%s",
            avahi_strerror(avahi_client_errno(c)), "");
        break;
    default: break;
    }
}

static void avahi_withdraw(void *state) {
    avahi_pub *p = state;
    if (!p) return;
    if (p->poll) avahi_threaded_poll_stop(p->poll);
    if (p->rename_timer) avahi_threaded_poll_get(p->poll)->timeout_free(p->rename_timer);
    if (p->client) avahi_client_free(p->client); /* frees the group: the records are withdrawn */
    if (p->poll) avahi_threaded_poll_free(p->poll);
    avahi_string_list_free(p->txt);
    avahi_free(p->name);
    pthread_mutex_destroy(&p->name_lock);
    free(p);
}

static void *avahi_publish(const disc_service *s, disc_log_fn log, void *log_ctx, strata_err *err) {
    avahi_pub *p = calloc(1, sizeof *p);
    if (!p) { err_set(err, "out of memory"); return NULL; }
    pthread_mutex_init(&p->name_lock, NULL);
    p->log = log, p->log_ctx = log_ctx, p->port = s->port;
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    p->rng = ((uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec) ^ ((uint64_t)getpid() << 40) ^
             (uint64_t)(uintptr_t)p;
    char items[DISC_TXT_MAX_ITEMS][DISC_TXT_ITEM_BYTES];
    int n = disc_txt_items(s, items);
    for (int i = n - 1; i >= 0; i--) p->txt = avahi_string_list_add(p->txt, items[i]);
    int error = 0;
    if (!avahi_is_valid_service_name(s->name)) {
        err_set(err, "discovery (avahi): '%s' is not a valid service name (1-63 bytes)", s->name);
        goto fail;
    }
    if (!(p->name = avahi_strdup(s->name)) || !(p->poll = avahi_threaded_poll_new())) {
        err_set(err, "out of memory");
        goto fail;
    }
    /* created before the thread starts: the first callbacks run here, with no lock needed */
    if (!(p->client = avahi_client_new(avahi_threaded_poll_get(p->poll), 0, pub_client_cb, p, &error))) {
        client_error(err, error);
        goto fail;
    }
    if (avahi_threaded_poll_start(p->poll) < 0) { err_set(err, "discovery (avahi): cannot start its thread"); goto fail; }
    return p;
fail:
    avahi_withdraw(p);
    return NULL;
}

static void avahi_publisher_name(void *state, char *out, size_t out_bytes) {
    avahi_pub *p = state;
    pthread_mutex_lock(&p->name_lock);
    snprintf(out, out_bytes, "%s", p->name);
    pthread_mutex_unlock(&p->name_lock);
}

/* ---- browse ---- */

typedef struct {
    AvahiClient *client;
    disc_service *list;
    int n, cap, failed;
    char why[200];
} avahi_browse_state;

static void resolve_cb(AvahiServiceResolver *r, AvahiIfIndex iface, AvahiProtocol proto, AvahiResolverEvent event,
                       const char *name, const char *type, const char *domain, const char *host_name,
                       const AvahiAddress *a, uint16_t port, AvahiStringList *txt, AvahiLookupResultFlags flags,
                       void *ud) {
    (void)iface, (void)proto, (void)type, (void)domain, (void)host_name, (void)flags;
    avahi_browse_state *b = ud;
    if (event == AVAHI_RESOLVER_FOUND && a && a->proto == AVAHI_PROTO_INET) {
        disc_service s;
        memset(&s, 0, sizeof s);
        snprintf(s.name, sizeof s.name, "%s", name);
        avahi_address_snprint(s.address, sizeof s.address, a);
        s.port = port;
        for (AvahiStringList *i = txt; i; i = avahi_string_list_get_next(i)) {
            char *key = NULL, *value = NULL;
            size_t len = 0;
            if (avahi_string_list_get_pair(i, &key, &value, &len) == 0) disc_txt_apply(&s, key, value, len);
            avahi_free(key);
            avahi_free(value);
        }
        if (disc_list_put(&b->list, &b->n, &b->cap, &s)) b->failed = 1;
    }
    avahi_service_resolver_free(r);
}

static void browse_cb(AvahiServiceBrowser *sb, AvahiIfIndex iface, AvahiProtocol proto, AvahiBrowserEvent event,
                      const char *name, const char *type, const char *domain, AvahiLookupResultFlags flags, void *ud) {
    (void)sb, (void)flags;
    avahi_browse_state *b = ud;
    switch (event) {
    case AVAHI_BROWSER_NEW:
        /* the resolver frees itself in its callback */
        if (!avahi_service_resolver_new(b->client, iface, proto, name, type, domain, AVAHI_PROTO_INET, 0, resolve_cb, b))
            snprintf(b->why, sizeof b->why, "cannot resolve '%s': %s", name, avahi_strerror(avahi_client_errno(b->client)));
        break;
    case AVAHI_BROWSER_REMOVE: disc_list_remove(b->list, &b->n, name); break;
    case AVAHI_BROWSER_FAILURE:
        b->failed = 1;
        snprintf(b->why, sizeof b->why, "browsing failed: %s", avahi_strerror(avahi_client_errno(b->client)));
        break;
    default: break;
    }
}

static double mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int avahi_browse(int wait_ms, int min_found, int max_wait_ms, disc_service **out, int *n_out, strata_err *err) {
    avahi_browse_state b;
    memset(&b, 0, sizeof b);
    AvahiSimplePoll *sp = avahi_simple_poll_new();
    AvahiServiceBrowser *sb = NULL;
    int error = 0, rc = -1;
    if (!sp) { err_set(err, "out of memory"); return -1; }
    if (!(b.client = avahi_client_new(avahi_simple_poll_get(sp), 0, NULL, NULL, &error))) {
        client_error(err, error);
        goto out;
    }
    if (!(sb = avahi_service_browser_new(b.client, AVAHI_IF_UNSPEC, AVAHI_PROTO_INET, DISC_SERVICE_TYPE, NULL, 0,
                                         browse_cb, &b))) {
        err_set(err, "discovery (avahi): cannot browse: %s", avahi_strerror(avahi_client_errno(b.client)));
        goto out;
    }
    double t0 = mono_ms(), t;
    while (!b.failed && ((t = mono_ms() - t0) < wait_ms || (b.n < min_found && t < max_wait_ms))) {
        double end = t < wait_ms ? wait_ms : max_wait_ms;
        int left = (int)(end - t) + 1;
        /* iterate() waits at most `left` ms for one event; the loop re-checks the deadline */
        if (avahi_simple_poll_iterate(sp, left > 100 ? 100 : left) != 0) break;
    }
    if (b.failed) {
        err_set(err, "discovery (avahi): %s", b.why[0] ? b.why : "out of memory");
        goto out;
    }
    *out = b.list;
    *n_out = b.n;
    b.list = NULL;
    rc = 0;
out:
    if (b.client) avahi_client_free(b.client); /* frees the browser and any resolver still pending */
    avahi_simple_poll_free(sp);
    free(b.list);
    return rc;
}

const disc_impl disc_avahi_impl = {"avahi", avahi_publish, avahi_publisher_name, avahi_withdraw, avahi_browse};
