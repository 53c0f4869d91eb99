/* Discovery units (no network): the automatic planner (plan_auto), the TXT record format, and the
 * one-line answer when no mDNS daemon runs, for both implementations. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/discovery.h"
#include "master/planner.h"
#include "tests/check.h"

#define MBYTES 1000000ull

static uint32_t rng = 2463534242u;
static uint32_t next_rand(void) {
    rng ^= rng << 13;
    rng ^= rng >> 17;
    rng ^= rng << 5;
    return rng;
}

/* ranges in node order, contiguous, covering every layer once; each within its node's memory */
static int ranges_valid(const plan_node *nodes, int n, const plan_model *m, const plan_range *r) {
    int at = 0;
    uint64_t max_layer = 0;
    for (int l = 0; l < m->n_layers; l++) max_layer = m->layer_bytes[l] > max_layer ? m->layer_bytes[l] : max_layer;
    for (int i = 0; i < n; i++) {
        if (r[i].first != at || r[i].last < r[i].first) return 0;
        uint64_t bytes = 0;
        for (int l = r[i].first; l < r[i].last; l++) bytes += m->layer_bytes[l] + m->kv_bytes_per_layer;
        if (bytes > nodes[i].memory_bytes) return 0;
        at = r[i].last;
    }
    return at == m->n_layers;
}

static int count(const plan_range *r) { return r->last - r->first; }

static void test_heterogeneous(void) {
    uint64_t lb[24];
    for (int l = 0; l < 24; l++) lb[l] = 9 * MBYTES;
    plan_model m = {24, lb, 1 * MBYTES, 1024}; /* a layer costs 10 MB */
    /* memory shares 1/7, 3/7, 3/7; speed shares 1/5, 1/5, 3/5; min: 0.143, 0.2, 0.429 -> 4.4, 6.2, 13.3 */
    plan_node nodes[3] = {{"a", "10.0.0.1:1", NULL, 100 * MBYTES, 1.0},
                          {"b", "10.0.0.2:1", NULL, 300 * MBYTES, 1.0},
                          {"c", "10.0.0.3:1", NULL, 300 * MBYTES, 3.0}};
    plan_range r[3];
    char notes[512];
    strata_err err = {{0}};
    CHECK(plan_auto_ranges(nodes, 3, &m, r, notes, sizeof notes, &err) == 0, "%s", err.msg);
    CHECK(ranges_valid(nodes, 3, &m, r), "ranges invalid");
    CHECK(count(&r[0]) == 5 && count(&r[1]) == 6 && count(&r[2]) == 13, "got %d %d %d, want 5 6 13", count(&r[0]),
          count(&r[1]), count(&r[2]));
    CHECK(notes[0] == 0, "unexpected notes: %s", notes);

    /* a fast node with little memory is filled to its memory, the rest shared by the others */
    plan_node fast[3] = {{"a", "h:1", NULL, 25 * MBYTES, 100.0}, /* 2 layers fit */
                         {"b", "h:2", NULL, 400 * MBYTES, 1.0},
                         {"c", "h:3", NULL, 400 * MBYTES, 1.0}};
    CHECK(plan_auto_ranges(fast, 3, &m, r, notes, sizeof notes, &err) == 0, "%s", err.msg);
    CHECK(ranges_valid(fast, 3, &m, r), "ranges invalid (capped)");
    CHECK(count(&r[0]) == 2 && count(&r[1]) == 11 && count(&r[2]) == 11, "capped: got %d %d %d, want 2 11 11",
          count(&r[0]), count(&r[1]), count(&r[2]));

    /* unknown speed counts as the mean of the known ones */
    plan_node unk[2] = {{"a", "h:1", NULL, 500 * MBYTES, 0}, {"b", "h:2", NULL, 500 * MBYTES, 2.0}};
    CHECK(plan_auto_ranges(unk, 2, &m, r, notes, sizeof notes, &err) == 0, "%s", err.msg);
    CHECK(count(&r[0]) == 12 && count(&r[1]) == 12, "unknown speed: got %d %d", count(&r[0]), count(&r[1]));

    /* memory 1:2, equal speed: min(1/3, 1/2) and min(2/3, 1/2) -> 0.4 : 0.6 -> 9.6, 14.4 -> 10, 14 (a full) */
    plan_node mem[2] = {{"a", "h:1", NULL, 100 * MBYTES, 5}, {"b", "h:2", NULL, 200 * MBYTES, 5}};
    CHECK(plan_auto_ranges(mem, 2, &m, r, notes, sizeof notes, &err) == 0, "%s", err.msg);
    CHECK(count(&r[0]) == 10 && count(&r[1]) == 14, "memory 1:2: got %d %d", count(&r[0]), count(&r[1]));
}

static void test_too_small(void) {
    uint64_t lb[6];
    for (int l = 0; l < 6; l++) lb[l] = 4 * MBYTES;
    plan_model m = {6, lb, 1 * MBYTES, 512}; /* 5 MB a layer */
    plan_node nodes[3] = {{"big", "h:1", NULL, 40 * MBYTES, 1},
                          {"tiny", "h:2", NULL, 3 * MBYTES, 50},
                          {"mid", "h:3", NULL, 20 * MBYTES, 1}};
    plan_range r[3];
    char notes[512];
    strata_err err = {{0}};
    CHECK(plan_auto_ranges(nodes, 3, &m, r, notes, sizeof notes, &err) == 0, "%s", err.msg);
    CHECK(ranges_valid(nodes, 3, &m, r), "ranges invalid");
    CHECK(count(&r[1]) == 0, "tiny got %d layers", count(&r[1]));
    CHECK(strstr(notes, "worker 'tiny' skipped: it offers 3.0 MB, one layer needs 5.0 MB (weights 4.0 + KV cache 1.0 "
                        "for 512 positions)") != NULL, "notes: %s", notes);
    CHECK(count(&r[0]) + count(&r[2]) == 6, "the others hold all");
}

static void test_more_nodes_than_layers(void) {
    uint64_t lb[3] = {MBYTES, MBYTES, MBYTES};
    plan_model m = {3, lb, 0, 128};
    plan_node nodes[5];
    char names[5][8];
    for (int i = 0; i < 5; i++) {
        snprintf(names[i], sizeof names[i], "w%d", i);
        nodes[i] = (plan_node){names[i], "h:1", NULL, 100 * MBYTES, 1.0};
    }
    plan_range r[5];
    char notes[1024];
    strata_err err = {{0}};
    CHECK(plan_auto_ranges(nodes, 5, &m, r, notes, sizeof notes, &err) == 0, "%s", err.msg);
    CHECK(ranges_valid(nodes, 5, &m, r), "ranges invalid");
    int with = 0, idle = 0;
    for (int i = 0; i < 5; i++) {
        with += count(&r[i]) == 1;
        idle += count(&r[i]) == 0;
    }
    CHECK(with == 3 && idle == 2, "%d nodes with one layer, %d idle", with, idle);
    int idle_notes = 0;
    for (const char *p = notes; (p = strstr(p, "gets no layer")); p++) idle_notes++;
    CHECK(idle_notes == 2, "notes: %s", notes);

    /* and as a plan: idle workers are not in the topology; the chain has 3 worker segments */
    topology *t = NULL;
    plan p;
    CHECK(plan_auto(nodes, 5, &m, r, &t, &p, notes, sizeof notes, &err) == 0, "%s", err.msg);
    if (t) {
        CHECK(t->n_workers == 3, "topology has %d workers", t->n_workers);
        CHECK(p.n_segments == 5 && p.n_master_layers == 0, "%d segments, %d master layers", p.n_segments, p.n_master_layers);
        plan_free(&p);
        topo_free(&t);
    }
}

static void test_short(void) {
    uint64_t lb[10];
    for (int l = 0; l < 10; l++) lb[l] = MBYTES;
    plan_model m = {10, lb, MBYTES / 2, 2048}; /* 1.5 MB a layer, 15 MB in all */
    plan_node nodes[2] = {{"a", "h:1", NULL, 4500000, 1}, {"b", "h:2", NULL, 6 * MBYTES, 1}};
    plan_range r[2];
    strata_err err = {{0}};
    CHECK(plan_auto_ranges(nodes, 2, &m, r, NULL, 0, &err) != 0, "a plan for a model that does not fit");
    CHECK(!strcmp(err.msg, "not enough memory for the model: its 10 layers need 15.0 MB (weights 10.0 MB + KV cache "
                           "5.0 MB for 2048 positions); 2 nodes offer 10.5 MB, enough for 7 whole layers (10.5 MB): "
                           "4.5 MB short"), "message: %s", err.msg);
    /* fits in bytes but not in whole layers: the shortfall is what whole layers miss */
    plan_node frag[2] = {{"a", "h:1", NULL, 7400000, 1}, {"b", "h:2", NULL, 7400000, 1}};
    CHECK(plan_auto_ranges(frag, 2, &m, r, NULL, 0, &err) != 0, "fragmented memory accepted");
    CHECK(strstr(err.msg, "enough for 8 whole layers (12.0 MB): 3.0 MB short") != NULL, "message: %s", err.msg);
    /* nothing to plan on */
    CHECK(plan_auto_ranges(nodes, 0, &m, r, NULL, 0, &err) != 0 && strstr(err.msg, "no node"), "message: %s", err.msg);
}

static void test_master_keeps_layers(void) {
    uint64_t lb[8];
    for (int l = 0; l < 8; l++) lb[l] = 2 * MBYTES;
    plan_model m = {8, lb, 0, 64};
    plan_node nodes[2] = {{"master", NULL, NULL, 100 * MBYTES, 1}, {"w", "10.1.1.1:5601", "a box", 100 * MBYTES, 1}};
    plan_range r[2];
    topology *t = NULL;
    plan p;
    strata_err err = {{0}};
    CHECK(plan_auto(nodes, 2, &m, r, &t, &p, NULL, 0, &err) == 0, "%s", err.msg);
    if (!t) return;
    CHECK(count(&r[0]) == 4 && count(&r[1]) == 4, "got %d %d", count(&r[0]), count(&r[1]));
    CHECK(t->n_workers == 1 && !strcmp(t->workers[0].host, "10.1.1.1:5601") && !strcmp(t->workers[0].description, "a box"),
          "topology");
    /* master embed + layers 0-3, worker 4-7, master head */
    CHECK(p.n_segments == 3 && p.segments[0].worker == PLAN_MASTER && p.segments[0].embed &&
          p.segments[0].last_layer == 4 && p.segments[1].worker == 0 && p.segments[2].head && p.n_master_layers == 4,
          "segments");
    plan_free(&p);
    topo_free(&t);

    /* a master far faster than its one worker keeps every layer: a topology with no worker, which
     * master/discover.c runs as the whole model here */
    plan_node fast[2] = {{"master", NULL, NULL, 100 * MBYTES, 50}, {"w", "10.1.1.1:5601", NULL, 100 * MBYTES, 1}};
    CHECK(plan_auto(fast, 2, &m, r, &t, &p, NULL, 0, &err) == 0, "%s", err.msg);
    if (!t) return;
    CHECK(count(&r[0]) == 8 && count(&r[1]) == 0 && t->n_workers == 0 && p.n_master_layers == 8,
          "fast master: %d %d, %d workers", count(&r[0]), count(&r[1]), t->n_workers);
    plan_free(&p);
    topo_free(&t);
}

/* random nodes: a plan is valid whenever the whole layers fit, and refused otherwise */
static void test_random(void) {
    int bad = 0, planned = 0, refused = 0;
    for (int iter = 0; iter < 2000; iter++) {
        int n_layers = 1 + (int)(next_rand() % 40), n = 1 + (int)(next_rand() % 7);
        uint64_t lb[40];
        uint64_t max_layer = 0;
        for (int l = 0; l < n_layers; l++) {
            lb[l] = MBYTES + next_rand() % (3 * MBYTES); /* ragged: mixed quantization */
            if (lb[l] > max_layer) max_layer = lb[l];
        }
        plan_model m = {n_layers, lb, next_rand() % MBYTES, 100};
        plan_node nodes[7];
        long cap = 0;
        for (int i = 0; i < n; i++) {
            nodes[i] = (plan_node){"n", "h:1", NULL, next_rand() % (60 * MBYTES), (double)(next_rand() % 5)};
            cap += (long)(nodes[i].memory_bytes / (max_layer + m.kv_bytes_per_layer));
        }
        plan_range r[7];
        strata_err err = {{0}};
        int rc = plan_auto_ranges(nodes, n, &m, r, NULL, 0, &err);
        if (rc == 0) planned++, bad += !ranges_valid(nodes, n, &m, r) || cap < n_layers;
        else refused++, bad += cap >= n_layers || !strstr(err.msg, "MB short");
    }
    CHECK(bad == 0, "%d of 2000 random cases wrong", bad);
    CHECK(planned > 100 && refused > 100, "coverage: %d planned, %d refused", planned, refused);
}

static void test_txt(void) {
    disc_service s, d;
    memset(&s, 0, sizeof s);
    memset(&d, 0, sizeof d);
    snprintf(s.name, sizeof s.name, "w1");
    s.protocol = 7;
    snprintf(s.backend, sizeof s.backend, "cuda");
    memset(s.device, 'x', sizeof s.device - 1); /* longer than a TXT item may carry */
    s.memory_bytes = 123456789012ull;
    s.speed = 12.345;
    char items[DISC_TXT_MAX_ITEMS][DISC_TXT_ITEM_BYTES];
    int n = disc_txt_items(&s, items);
    CHECK(n == 6, "%d items (no key fingerprint)", n);
    for (int i = 0; i < n; i++) {
        CHECK(strlen(items[i]) <= 255, "item %d is %zu bytes", i, strlen(items[i]));
        char *eq = strchr(items[i], '=');
        *eq = 0;
        disc_txt_apply(&d, items[i], eq + 1, strlen(eq + 1));
    }
    CHECK(d.protocol == 7 && !strcmp(d.backend, "cuda") && d.memory_bytes == 123456789012ull && d.speed > 12.34 &&
          d.speed < 12.35 && strlen(d.device) == 200, "round trip");
    /* values from the network: garbage is ignored, control bytes are not printed */
    disc_txt_apply(&d, "mem", "12x", 3);
    disc_txt_apply(&d, "mem", "-5", 2);
    disc_txt_apply(&d, "speed", "nan", 3);
    disc_txt_apply(&d, "speed", "1e99", 4);
    disc_txt_apply(&d, "proto", "", 0);
    disc_txt_apply(&d, "unknown", "1", 1);
    CHECK(d.memory_bytes == 123456789012ull && d.speed > 12.34 && d.protocol == 7, "bad values ignored");
    disc_txt_apply(&d, "device", "a\nb\x1b", 4);
    CHECK(!strcmp(d.device, "a b "), "control bytes: '%s'", d.device);
    s.key_fingerprint[0] = 'f';
    CHECK(disc_txt_items(&s, items) == 7 && !strcmp(items[6], "key=f"), "key item");

    /* lists: one entry per name, sorted */
    disc_service *list = NULL;
    int len = 0, cap = 0;
    const char *names[] = {"c", "a", "b", "a"};
    for (int i = 0; i < 4; i++) {
        snprintf(s.name, sizeof s.name, "%s", names[i]);
        s.port = (uint16_t)i;
        disc_list_put(&list, &len, &cap, &s);
    }
    disc_list_sort(list, len);
    CHECK(len == 3 && !strcmp(list[0].name, "a") && list[0].port == 3 && !strcmp(list[2].name, "c"), "list");
    disc_list_remove(list, &len, "b");
    CHECK(len == 2 && !strcmp(list[1].name, "c"), "remove");
    free(list);
}

/* No daemon: one line that says so and suggests --topology, for browse and publish alike. */
static void test_no_daemon(void) {
    setenv("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/strata-test-bus", 1);
    const char *impls[] = {"avahi", "dnssd"};
    for (int i = 0; i < 2; i++) {
        if (!disc_impl_available(impls[i])) { printf("skip: %s not built in\n", impls[i]); continue; }
        disc_service *found = (disc_service *)1;
        int n = -1;
        strata_err err = {{0}};
        CHECK(disc_browse(impls[i], 200, 0, 200, &found, &n, &err) != 0, "%s: browse without a daemon", impls[i]);
        CHECK(strstr(err.msg, "no ") && strstr(err.msg, "daemon") && strstr(err.msg, "--topology") &&
              !strchr(err.msg, '\n'), "%s: message: %s", impls[i], err.msg);
        CHECK(found == NULL && n == 0, "%s: outputs cleared", impls[i]);
        printf("%s, no daemon: %s\n", impls[i], err.msg);
        disc_service s;
        memset(&s, 0, sizeof s);
        snprintf(s.name, sizeof s.name, "w");
        s.port = 5601;
        disc_publisher *p = disc_publish(impls[i], &s, NULL, NULL, &err);
        CHECK(p == NULL && strstr(err.msg, "--topology"), "%s: publish: %s", impls[i], err.msg);
        disc_withdraw(&p);
    }
    strata_err err = {{0}};
    CHECK(!disc_impl_available("bonjour"), "unknown implementation");
    disc_service *found;
    int n;
    CHECK(disc_browse("bonjour", 10, 0, 10, &found, &n, &err) != 0 && strstr(err.msg, "unknown implementation 'bonjour'"),
          "message: %s", err.msg);
}

int main(void) {
    test_heterogeneous();
    test_too_small();
    test_more_nodes_than_layers();
    test_short();
    test_master_keeps_layers();
    test_random();
    test_txt();
    test_no_daemon();
    return TEST_END();
}
