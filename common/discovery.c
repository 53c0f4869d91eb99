/* Discovery: dispatch by implementation name, and the TXT record format both share. */
#include "common/discovery.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct disc_publisher {
    const disc_impl *impl;
    void *state;
};

static const disc_impl *const impls[] = {
#ifdef STRATA_HAVE_AVAHI
    &disc_avahi_impl,
#endif
#ifdef STRATA_HAVE_DNSSD
    &disc_dnssd_impl,
#endif
    NULL,
};

static const disc_impl *find_impl(const char *name, strata_err *err) {
    if (!impls[0]) {
        err_set(err, "discovery: this build has no mDNS implementation (neither libavahi-client nor dns_sd); "
                     "name the workers with --topology FILE");
        return NULL;
    }
    if (!name) return impls[0];
    for (int i = 0; impls[i]; i++)
        if (!strcmp(impls[i]->name, name)) return impls[i];
    err_set(err, "discovery: unknown implementation '%s' (this build has: %s)", name, disc_impl_list());
    return NULL;
}

const char *disc_default_impl(void) { return impls[0] ? impls[0]->name : NULL; }

int disc_impl_available(const char *impl) { return find_impl(impl, NULL) != NULL; }

const char *disc_impl_list(void) {
    static char list[64];
    list[0] = 0;
    for (int i = 0; impls[i]; i++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", i ? ", " : "", impls[i]->name);
    return impls[0] ? list : "none";
}

disc_publisher *disc_publish(const char *impl, const disc_service *s, disc_log_fn log, void *log_ctx,
                             strata_err *err) {
    const disc_impl *d = find_impl(impl, err);
    if (!d) return NULL;
    disc_publisher *p = calloc(1, sizeof *p);
    if (!p) { err_set(err, "out of memory"); return NULL; }
    p->impl = d;
    if (!(p->state = d->publish(s, log, log_ctx, err))) { free(p); return NULL; }
    return p;
}

void disc_publisher_name(disc_publisher *p, char *out, size_t out_bytes) {
    p->impl->publisher_name(p->state, out, out_bytes);
}

void disc_withdraw(disc_publisher **pp) {
    disc_publisher *p = pp ? *pp : NULL;
    if (!p) return;
    p->impl->withdraw(p->state);
    free(p);
    *pp = NULL;
}

int disc_browse(const char *impl, int wait_ms, int min_found, int max_wait_ms, disc_service **out, int *n_out,
                strata_err *err) {
    *out = NULL;
    *n_out = 0;
    const disc_impl *d = find_impl(impl, err);
    if (!d) return -1;
    if (max_wait_ms < wait_ms) max_wait_ms = wait_ms;
    if (d->browse(wait_ms, min_found, max_wait_ms, out, n_out, err)) return -1;
    disc_list_sort(*out, *n_out);
    return 0;
}

uint64_t disc_default_memory_bytes(void) {
    uint64_t avail = 0;
    FILE *f = fopen("/proc/meminfo", "r");
    char line[256];
    while (f && fgets(line, sizeof line, f))
        if (!strncmp(line, "MemAvailable:", 13)) { avail = strtoull(line + 13, NULL, 10) * 1024; break; }
    if (f) fclose(f);
    if (!avail) {
        long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
        if (pages > 0 && page > 0) avail = (uint64_t)pages * (uint64_t)page / 2;
    }
    return avail / 10 * 9;
}

/* ---- TXT ---- */

int disc_txt_items(const disc_service *s, char items[DISC_TXT_MAX_ITEMS][DISC_TXT_ITEM_BYTES]) {
    int n = 0;
    snprintf(items[n++], DISC_TXT_ITEM_BYTES, "v=%d", DISC_TXT_VERSION);
    snprintf(items[n++], DISC_TXT_ITEM_BYTES, "proto=%u", s->protocol);
    snprintf(items[n++], DISC_TXT_ITEM_BYTES, "backend=%.40s", s->backend);
    /* a TXT item is at most 255 bytes; the device name is the only long field */
    snprintf(items[n++], DISC_TXT_ITEM_BYTES, "device=%.200s", s->device);
    snprintf(items[n++], DISC_TXT_ITEM_BYTES, "mem=%llu", (unsigned long long)s->memory_bytes);
    snprintf(items[n++], DISC_TXT_ITEM_BYTES, "speed=%.3f", s->speed);
    if (s->key_fingerprint[0]) snprintf(items[n++], DISC_TXT_ITEM_BYTES, "key=%.90s", s->key_fingerprint);
    return n;
}

/* copies a TXT value into a C string, replacing control bytes (it is printed in tables) */
static void copy_value(char *dst, size_t cap, const void *value, size_t len) {
    const unsigned char *v = value;
    size_t n = len < cap - 1 ? len : cap - 1;
    for (size_t i = 0; i < n; i++) dst[i] = v[i] < 0x20 || v[i] == 0x7f ? ' ' : (char)v[i];
    dst[n] = 0;
}

void disc_txt_apply(disc_service *s, const char *key, const void *value, size_t value_len) {
    char buf[256];
    if (!value) return;
    copy_value(buf, sizeof buf, value, value_len);
    char *end;
    if (!strcmp(key, "proto")) {
        unsigned long v = strtoul(buf, &end, 10);
        if (*buf && !*end && v < 1000000) s->protocol = (unsigned)v;
    } else if (!strcmp(key, "backend")) {
        copy_value(s->backend, sizeof s->backend, value, value_len); /* truncated to fit */
    } else if (!strcmp(key, "device")) {
        copy_value(s->device, sizeof s->device, value, value_len);
    } else if (!strcmp(key, "mem")) {
        unsigned long long v = strtoull(buf, &end, 10);
        if (*buf >= '0' && *buf <= '9' && !*end) s->memory_bytes = v;
    } else if (!strcmp(key, "speed")) {
        double v = strtod(buf, &end);
        if (*buf && !*end && v >= 0 && v < 1e9) s->speed = v;
    } else if (!strcmp(key, "key")) {
        copy_value(s->key_fingerprint, sizeof s->key_fingerprint, value, value_len);
    }
}

/* ---- lists of resolved services ---- */

int disc_list_put(disc_service **list, int *n, int *cap, const disc_service *s) {
    for (int i = 0; i < *n; i++)
        if (!strcmp((*list)[i].name, s->name)) { (*list)[i] = *s; return 0; }
    if (*n == *cap) {
        int c = *cap ? *cap * 2 : 8;
        disc_service *g = realloc(*list, sizeof *g * (size_t)c);
        if (!g) return -1;
        *list = g;
        *cap = c;
    }
    (*list)[(*n)++] = *s;
    return 0;
}

void disc_list_remove(disc_service *list, int *n, const char *name) {
    for (int i = 0; i < *n; i++)
        if (!strcmp(list[i].name, name)) {
            memmove(&list[i], &list[i + 1], sizeof *list * (size_t)(*n - i - 1));
            (*n)--;
            return;
        }
}

static int by_name(const void *a, const void *b) {
    return strcmp(((const disc_service *)a)->name, ((const disc_service *)b)->name);
}

void disc_list_sort(disc_service *list, int n) {
    if (n > 1) qsort(list, (size_t)n, sizeof *list, by_name);
}
