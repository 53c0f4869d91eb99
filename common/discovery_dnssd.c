/* Discovery through the dns_sd.h API: Bonjour on macOS/iOS, Avahi's compatibility library on
 * Linux (which is how this file is tested). See discovery.h.
 *
 * Only calls both provide: Register, Browse, Resolve, QueryRecord (the compatibility library has
 * no DNSServiceGetAddrInfo), all with flags 0 and an explicit "local." domain (it asserts one).
 * A dns_sd reference delivers its callbacks only from DNSServiceProcessResult, so a publisher
 * keeps a small thread that waits on the reference's socket, and browsing polls all its
 * references in the caller's thread until the deadline. */
#include "common/discovery.h"

#include <arpa/inet.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <dns_sd.h>

#define DNSSD_DOMAIN "local."
#define DNSSD_ERR_NOT_RUNNING (-65563) /* kDNSServiceErr_ServiceNotRunning (Bonjour) */
#define DNSSD_MAX_LOOKUPS 256

/* Avahi's library prints a warning on every program that links it, unless told not to */
static void quiet_compat(void) { setenv("AVAHI_COMPAT_NOWARN", "1", 0); }

static int daemon_error(strata_err *err, const char *what, DNSServiceErrorType e) {
    /* Avahi's library maps "no daemon" to kDNSServiceErr_Unknown; Bonjour says NotRunning */
    if (e == kDNSServiceErr_Unknown || e == DNSSD_ERR_NOT_RUNNING)
        return err_set(err, "discovery (dnssd): %s failed (error %d): no mDNS daemon is answering (avahi-daemon on "
                            "Linux, mDNSResponder on Apple); start it, or name the workers with --topology FILE",
                       what, (int)e);
    return err_set(err, "discovery (dnssd): %s failed (error %d)", what, (int)e);
}

/* ---- publish ---- */

typedef struct {
    DNSServiceRef ref;
    pthread_t thread;
    int thread_started;
    int wake[2];                  /* written once by withdraw: the thread returns */
    pthread_mutex_t name_lock;
    char requested[64], name[64];
    disc_log_fn log;
    void *log_ctx;
} dnssd_pub;

static void DNSSD_API register_cb(DNSServiceRef ref, DNSServiceFlags flags, DNSServiceErrorType e, const char *name,
                                  const char *type, const char *domain, void *ctx) {
    (void)ref, (void)flags, (void)type, (void)domain;
    dnssd_pub *p = ctx;
    char msg[300];
    if (e != kDNSServiceErr_NoError) {
        snprintf(msg, sizeof msg, "mDNS advertisement failed (dns_sd error %d)", (int)e);
    } else if (name && strcmp(name, p->requested)) {
        /* the responder picked an alternative name after a conflict ("w #2", or "w (2)" on Apple) */
        pthread_mutex_lock(&p->name_lock);
        snprintf(p->name, sizeof p->name, "%s", name);
        pthread_mutex_unlock(&p->name_lock);
        snprintf(msg, sizeof msg, "mDNS name '%s' is taken on the network; advertising as '%s'", p->requested, name);
        if (p->log) p->log(p->log_ctx, msg);
        snprintf(msg, sizeof msg, "advertised as '%s' (%s)", name, DISC_SERVICE_TYPE);
    } else {
        snprintf(msg, sizeof msg, "advertised as '%s' (%s)", p->requested, DISC_SERVICE_TYPE);
    }
    if (p->log) p->log(p->log_ctx, msg);
}

static void *pub_thread(void *arg) {
    dnssd_pub *p = arg;
    struct pollfd fds[2] = {{DNSServiceRefSockFD(p->ref), POLLIN, 0}, {p->wake[0], POLLIN, 0}};
    for (;;) {
        int n = poll(fds, 2, -1);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 || fds[1].revents) break;
        if (fds[0].revents & (POLLHUP | POLLERR)) break;
        if ((fds[0].revents & POLLIN) && DNSServiceProcessResult(p->ref) != kDNSServiceErr_NoError) {
            if (p->log) p->log(p->log_ctx, "mDNS: lost the mDNS daemon; this worker is no longer advertised");
            break;
        }
    }
    return NULL;
}

static void dnssd_withdraw(void *state) {
    dnssd_pub *p = state;
    if (!p) return;
    if (p->thread_started) {
        ssize_t w = write(p->wake[1], "q", 1);
        (void)w;
        pthread_join(p->thread, NULL);
    }
    if (p->ref) DNSServiceRefDeallocate(p->ref); /* unregisters: goodbye packets */
    for (int i = 0; i < 2; i++)
        if (p->wake[i] >= 0) close(p->wake[i]);
    pthread_mutex_destroy(&p->name_lock);
    free(p);
}

static void *dnssd_publish(const disc_service *s, disc_log_fn log, void *log_ctx, strata_err *err) {
    dnssd_pub *p = calloc(1, sizeof *p);
    if (!p) { err_set(err, "out of memory"); return NULL; }
    p->wake[0] = p->wake[1] = -1;
    pthread_mutex_init(&p->name_lock, NULL);
    p->log = log, p->log_ctx = log_ctx;
    snprintf(p->requested, sizeof p->requested, "%s", s->name);
    snprintf(p->name, sizeof p->name, "%s", s->name);
    quiet_compat();
    if (pipe(p->wake)) { err_set(err, "pipe: %s", strerror(errno)); goto fail; }

    char items[DISC_TXT_MAX_ITEMS][DISC_TXT_ITEM_BYTES], txt_buf[DISC_TXT_MAX_ITEMS * DISC_TXT_ITEM_BYTES];
    TXTRecordRef txt;
    TXTRecordCreate(&txt, sizeof txt_buf, txt_buf);
    int n = disc_txt_items(s, items);
    for (int i = 0; i < n; i++) {
        char *eq = strchr(items[i], '=');
        *eq = 0;
        TXTRecordSetValue(&txt, items[i], (uint8_t)strlen(eq + 1), eq + 1);
    }
    DNSServiceErrorType e = DNSServiceRegister(&p->ref, 0, 0, s->name, DISC_SERVICE_TYPE, NULL, NULL, htons(s->port),
                                               TXTRecordGetLength(&txt), TXTRecordGetBytesPtr(&txt), register_cb, p);
    TXTRecordDeallocate(&txt);
    if (e != kDNSServiceErr_NoError) {
        p->ref = NULL;
        daemon_error(err, "DNSServiceRegister", e);
        goto fail;
    }
    if (pthread_create(&p->thread, NULL, pub_thread, p)) { err_set(err, "discovery (dnssd): cannot start its thread"); goto fail; }
    p->thread_started = 1;
    return p;
fail:
    dnssd_withdraw(p);
    return NULL;
}

static void dnssd_publisher_name(void *state, char *out, size_t out_bytes) {
    dnssd_pub *p = state;
    pthread_mutex_lock(&p->name_lock);
    snprintf(out, out_bytes, "%s", p->name);
    pthread_mutex_unlock(&p->name_lock);
}

/* ---- browse: browse -> resolve (host, port, TXT) -> query the host's A record ---- */

enum { LK_RESOLVE, LK_QUERY, LK_DONE };

typedef struct {
    DNSServiceRef ref;
    int stage, advance;         /* advance: the callback finished this stage (acted on after it) */
    uint32_t ifindex;
    char host[1025];
    disc_service s;
} lookup;

typedef struct {
    lookup *lk[DNSSD_MAX_LOOKUPS];
    int n_lk;
    disc_service *list;
    int n, cap, failed;
    DNSServiceErrorType browse_error;
} dnssd_browse_state;

static void DNSSD_API query_cb(DNSServiceRef ref, DNSServiceFlags flags, uint32_t ifindex, DNSServiceErrorType e,
                               const char *fullname, uint16_t rrtype, uint16_t rrclass, uint16_t rdlen,
                               const void *rdata, uint32_t ttl, void *ctx) {
    (void)ref, (void)ifindex, (void)fullname, (void)rrclass, (void)ttl;
    lookup *l = ctx;
    if (e != kDNSServiceErr_NoError || !(flags & kDNSServiceFlagsAdd) || rrtype != kDNSServiceType_A || rdlen != 4)
        return;
    inet_ntop(AF_INET, rdata, l->s.address, sizeof l->s.address);
    l->advance = 1;
}

static void DNSSD_API resolve_cb(DNSServiceRef ref, DNSServiceFlags flags, uint32_t ifindex, DNSServiceErrorType e,
                                 const char *fullname, const char *host, uint16_t port, uint16_t txt_len,
                                 const unsigned char *txt, void *ctx) {
    (void)ref, (void)flags, (void)ifindex, (void)fullname;
    lookup *l = ctx;
    if (e != kDNSServiceErr_NoError || !host) { l->stage = LK_DONE; return; }
    snprintf(l->host, sizeof l->host, "%s", host);
    l->s.port = ntohs(port);
    uint16_t count = TXTRecordGetCount(txt_len, txt);
    for (uint16_t i = 0; i < count; i++) {
        char key[256];
        uint8_t vlen = 0;
        const void *value = NULL;
        if (TXTRecordGetItemAtIndex(txt_len, txt, i, sizeof key, key, &vlen, &value) == kDNSServiceErr_NoError)
            disc_txt_apply(&l->s, key, value, vlen);
    }
    l->advance = 1;
}

static void DNSSD_API browse_cb(DNSServiceRef ref, DNSServiceFlags flags, uint32_t ifindex, DNSServiceErrorType e,
                                const char *name, const char *type, const char *domain, void *ctx) {
    (void)ref;
    dnssd_browse_state *b = ctx;
    if (e != kDNSServiceErr_NoError) { b->failed = 1; b->browse_error = e; return; }
    if (!(flags & kDNSServiceFlagsAdd)) {
        disc_list_remove(b->list, &b->n, name);
        for (int i = 0; i < b->n_lk; i++)
            if (!strcmp(b->lk[i]->s.name, name)) b->lk[i]->stage = LK_DONE;
        return;
    }
    if (b->n_lk == DNSSD_MAX_LOOKUPS) return;
    lookup *l = calloc(1, sizeof *l);
    if (!l) { b->failed = 1; return; }
    snprintf(l->s.name, sizeof l->s.name, "%s", name);
    l->ifindex = ifindex;
    l->stage = LK_RESOLVE;
    if (DNSServiceResolve(&l->ref, 0, ifindex, name, type, domain, resolve_cb, l) != kDNSServiceErr_NoError) {
        free(l);
        return;
    }
    b->lk[b->n_lk++] = l;
}

/* moves a lookup on after its callback ran (never inside the callback: the reference is freed) */
static void advance(dnssd_browse_state *b, lookup *l) {
    if (l->stage != LK_DONE && !l->advance) return;
    l->advance = 0;
    if (l->ref) DNSServiceRefDeallocate(l->ref);
    l->ref = NULL;
    if (l->stage == LK_RESOLVE) {
        l->stage = LK_QUERY;
        if (DNSServiceQueryRecord(&l->ref, 0, l->ifindex, l->host, kDNSServiceType_A, kDNSServiceClass_IN, query_cb,
                                  l) != kDNSServiceErr_NoError) {
            l->ref = NULL;
            l->stage = LK_DONE;
        }
    } else if (l->stage == LK_QUERY) {
        l->stage = LK_DONE;
        if (disc_list_put(&b->list, &b->n, &b->cap, &l->s)) b->failed = 1;
    }
}

static double mono_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + ts.tv_nsec * 1e-6;
}

static int dnssd_browse(int wait_ms, int min_found, int max_wait_ms, disc_service **out, int *n_out, strata_err *err) {
    dnssd_browse_state b;
    memset(&b, 0, sizeof b);
    DNSServiceRef browse = NULL;
    int rc = -1;
    quiet_compat();
    DNSServiceErrorType e = DNSServiceBrowse(&browse, 0, 0, DISC_SERVICE_TYPE, DNSSD_DOMAIN, browse_cb, &b);
    if (e != kDNSServiceErr_NoError) return daemon_error(err, "DNSServiceBrowse", e);
    double t0 = mono_ms(), t;
    while (!b.failed && ((t = mono_ms() - t0) < wait_ms || (b.n < min_found && t < max_wait_ms))) {
        struct pollfd fds[1 + DNSSD_MAX_LOOKUPS];
        lookup *owner[1 + DNSSD_MAX_LOOKUPS];
        int nf = 0;
        fds[nf] = (struct pollfd){DNSServiceRefSockFD(browse), POLLIN, 0};
        owner[nf++] = NULL;
        for (int i = 0; i < b.n_lk; i++)
            if (b.lk[i]->ref) {
                fds[nf] = (struct pollfd){DNSServiceRefSockFD(b.lk[i]->ref), POLLIN, 0};
                owner[nf++] = b.lk[i];
            }
        double end = t < wait_ms ? wait_ms : max_wait_ms;
        int left = (int)(end - t) + 1;
        int n = poll(fds, (nfds_t)nf, left > 100 ? 100 : left);
        if (n < 0 && errno != EINTR) { err_set(err, "discovery (dnssd): poll: %s", strerror(errno)); goto out; }
        for (int i = 0; n > 0 && i < nf; i++) {
            if (!(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
            DNSServiceRef ref = owner[i] ? owner[i]->ref : browse;
            if (DNSServiceProcessResult(ref) != kDNSServiceErr_NoError) {
                if (!owner[i]) { b.failed = 1; break; }
                owner[i]->stage = LK_DONE;
            }
        }
        for (int i = 0; i < b.n_lk; i++) advance(&b, b.lk[i]);
    }
    if (b.failed) {
        if (b.browse_error) daemon_error(err, "browsing", b.browse_error);
        else err_set(err, "discovery (dnssd): browsing failed (lost the daemon, or out of memory)");
        goto out;
    }
    *out = b.list;
    *n_out = b.n;
    b.list = NULL;
    rc = 0;
out:
    for (int i = 0; i < b.n_lk; i++) {
        if (b.lk[i]->ref) DNSServiceRefDeallocate(b.lk[i]->ref);
        free(b.lk[i]);
    }
    DNSServiceRefDeallocate(browse);
    free(b.list);
    return rc;
}

const disc_impl disc_dnssd_impl = {"dnssd", dnssd_publish, dnssd_publisher_name, dnssd_withdraw, dnssd_browse};
