/* Unit tests of the cluster's pieces that need no network: topology parsing, the planner's
 * checks, the frame decoder on valid, truncated and garbage input, and reduced bundles.
 *
 * usage: test_cluster_units TMPDIR
 *        test_cluster_units check-bundle FILE MODEL_DIR FIRST LAST   (used by test_cluster.sh) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/safetensors.h"
#include "common/topology.h"
#include "common/wire.h"
#include "master/bundler.h"
#include "master/planner.h"
#include "tools/genmodel.h"
#include "check.h"


/* ---- topology ---- */

static topology *parse(const char *text, strata_err *err) {
    memset(err, 0, sizeof *err);
    return topo_parse(text, strlen(text), "topo.yml", err);
}

static void expect_topo_error(const char *name, const char *text, const char *want) {
    strata_err err;
    topology *t = parse(text, &err);
    CHECK(!t && strstr(err.msg, want), "topology %s: expected an error containing \"%s\", got \"%s\"", name, want,
          t ? "(parsed)" : err.msg);
    topo_free(&t);
}

static void test_topology(void) {
    strata_err err;
    topology *t = parse("# Cake's format\n"
                        "mac:\n  host: '192.168.1.10:5601'\n  description: 'the desk Mac'\n"
                        "  layers:\n    - 'model.layers.0-5'\n    - 'model.layers.6'\n"
                        "pc:\n  host: tcp://10.0.0.2:7000\n  layers: ['model.layers.7-9']\n"
                        "one:\n  host: 'h:1'\n  layers: model.layers.10\n",
                        &err);
    CHECK(t && t->n_workers == 3, "valid topology parses: %s", err.msg);
    if (t && t->n_workers == 3) {
        topo_worker *w = &t->workers[0];
        CHECK(!strcmp(w->name, "mac") && !strcmp(w->host, "192.168.1.10:5601") && !strcmp(w->description, "the desk Mac"),
              "worker fields");
        CHECK(w->n_ranges == 2 && w->ranges[0].first == 0 && w->ranges[0].last == 6 && w->ranges[1].first == 6 &&
                  w->ranges[1].last == 7, "ranges are inclusive 'A-B' and single 'N'");
        CHECK(w->ranges[0].line == 6, "range line %d", w->ranges[0].line);
        char ep[64];
        CHECK(!topo_endpoint(w, ep, sizeof ep) && !strcmp(ep, "tcp://192.168.1.10:5601"), "endpoint %s", ep);
        CHECK(!topo_endpoint(&t->workers[1], ep, sizeof ep) && !strcmp(ep, "tcp://10.0.0.2:7000"), "endpoint %s", ep);
        CHECK(!t->workers[1].description, "description is optional");
        CHECK(t->workers[2].n_ranges == 1 && t->workers[2].ranges[0].first == 10, "a plain string layers entry");
    }
    topo_free(&t);
    expect_topo_error("no host", "a:\n  layers: ['model.layers.0']\n", "worker 'a' has no host");
    expect_topo_error("no layers", "a:\n  host: 'h:1'\n", "worker 'a' has no layers");
    expect_topo_error("empty layers", "a:\n  host: 'h:1'\n  layers: []\n", "worker 'a' has no layers");
    expect_topo_error("bad port", "a:\n  host: 'h:99999'\n  layers: ['model.layers.0']\n", "port '99999'");
    expect_topo_error("no port", "a:\n  host: 'hostonly'\n  layers: ['model.layers.0']\n", "is not 'address:port'");
    expect_topo_error("unknown key", "a:\n  hots: 'h:1'\n  layers: ['model.layers.0']\n", "unknown key 'hots'");
    expect_topo_error("duplicate name", "a:\n  host: 'h:1'\n  layers: ['model.layers.0']\na:\n  host: 'h:2'\n  layers: ['model.layers.1']\n",
                      "worker 'a' is listed twice");
    expect_topo_error("bad layer prefix", "a:\n  host: 'h:1'\n  layers: ['model.layer.0']\n", "does not start with 'model.layers.'");
    expect_topo_error("backwards range", "a:\n  host: 'h:1'\n  layers: ['model.layers.5-2']\n", "range runs backwards");
    expect_topo_error("trailing junk", "a:\n  host: 'h:1'\n  layers: ['model.layers.1-2x']\n", "unexpected 'x'");
    expect_topo_error("no number", "a:\n  host: 'h:1'\n  layers: ['model.layers.']\n", "expected a layer number");
    expect_topo_error("empty file", "", "expected a map of worker names");
    expect_topo_error("a list", "- a\n- b\n", "expected a map of worker names");
    expect_topo_error("worker not a map", "a: 3\n", "worker 'a' must be a mapping");
    expect_topo_error("YAML syntax", "a:\n  host: 'h:1\n  layers: [\n", "topo.yml:");
    expect_topo_error("no workers", "{}\n", "no workers");
}

/* ---- planner ---- */

static topology *topo_of(const char *text) {
    strata_err err;
    topology *t = parse(text, &err);
    if (!t) printf("topology did not parse: %s\n", err.msg);
    return t;
}

/* segments as "M:e0-0,a:0-2,M:2-2h" */
static void describe(const plan *p, const topology *t, char *out, size_t n) {
    size_t k = 0;
    out[0] = 0;
    for (int i = 0; i < p->n_segments && k < n; i++) {
        const plan_segment *s = &p->segments[i];
        k += (size_t)snprintf(out + k, n - k, "%s%s:%s%d-%d%s", i ? "," : "", s->worker == PLAN_MASTER ? "M" : t->workers[s->worker].name,
                              s->embed ? "e" : "", s->first_layer, s->last_layer, s->head ? "h" : "");
    }
}

static void expect_plan(const char *name, const char *text, int n_layers, int strict, const char *want) {
    topology *t = topo_of(text);
    plan p;
    strata_err err = {{0}};
    char got[512] = "";
    int rc = t ? plan_from_topology(t, n_layers, strict, &p, &err) : -1;
    if (!rc) { describe(&p, t, got, sizeof got); plan_free(&p); }
    if (want[0] == '!') CHECK(rc && strstr(err.msg, want + 1), "plan %s: expected error \"%s\", got \"%s\"", name, want + 1, rc ? err.msg : got);
    else CHECK(!rc && !strcmp(got, want), "plan %s: expected %s, got %s", name, want, rc ? err.msg : got);
    topo_free(&t);
}

#define W(name, port, layers) name ":\n  host: 'h:" port "'\n  layers: " layers "\n"

static void test_planner(void) {
    expect_plan("three workers", W("a", "1", "['model.layers.0-1']") W("b", "2", "['model.layers.2', 'model.layers.3']") W("c", "3", "['model.layers.4-5']"),
                6, 0, "M:e0-0,a:0-2,b:2-4,c:4-6,M:6-6h");
    expect_plan("order follows layers, not the file", W("c", "3", "['model.layers.4-5']") W("a", "1", "['model.layers.0-3']"), 6, 1,
                "M:e0-0,a:0-4,c:4-6,M:6-6h");
    expect_plan("gap in the middle runs on the master", W("a", "1", "['model.layers.0-1']") W("c", "3", "['model.layers.4-5']"), 6, 0,
                "M:e0-0,a:0-2,M:2-4,c:4-6,M:6-6h");
    expect_plan("leading and trailing layers on the master", W("b", "2", "['model.layers.2-3']"), 6, 0, "M:e0-2,b:2-4,M:4-6h");
    expect_plan("single layer workers", W("a", "1", "['model.layers.0']") W("b", "2", "['model.layers.1']"), 2, 1, "M:e0-0,a:0-1,b:1-2,M:2-2h");
    expect_plan("missing layers are an error when strict", W("a", "1", "['model.layers.0-1']") W("c", "3", "['model.layers.4-5']"), 6, 1,
                "!layers 2-3 are missing");
    expect_plan("one missing layer", W("a", "1", "['model.layers.0-4']"), 6, 1, "!layer 5 is missing");
    expect_plan("duplicated layer", W("a", "1", "['model.layers.0-3']") W("b", "2", "['model.layers.3-5']"), 6, 0,
                "!layer 3 is duplicated: assigned to both 'a' and 'b'");
    expect_plan("same worker lists a layer twice", W("a", "1", "['model.layers.0-3', 'model.layers.2']"), 6, 0,
                "!worker 'a' (line 3): layer 2 is listed twice");
    expect_plan("out of range", W("a", "1", "['model.layers.0-3']") W("b", "2", "['model.layers.4-7']"), 6, 0,
                "!worker 'b' (line 6): layer 6 is out of range: the model has 6 layers (0-5)");
    expect_plan("wholly out of range", W("a", "1", "['model.layers.9']"), 6, 0, "!layer 9 is out of range");
    expect_plan("not contiguous", W("a", "1", "['model.layers.0-1', 'model.layers.4-5']"), 6, 0,
                "!worker 'a': layers 0-1 and 4-5 are not contiguous (layers 2-3 between them are on no worker)");
    expect_plan("interleaved", W("a", "1", "['model.layers.0', 'model.layers.2']") W("b", "2", "['model.layers.1']"), 3, 0,
                "!worker 'a': layers 0 and 2 are not contiguous (layer 1 between them belong to another worker)");
}

/* ---- wire ---- */

static size_t pack(const Strata__Envelope *e, uint8_t *buf) { return strata__envelope__pack(e, buf); }

static wire_status decode(const uint8_t *b, size_t n, const void *payload, size_t pn, int has, wire_msg *m, strata_err *err) {
    memset(err, 0, sizeof *err);
    return wire_decode(b, n, has, payload, pn, m, err);
}

static void test_wire(void) {
    static uint8_t buf[1 << 16];
    static float x[3 * 8];
    strata_err err;
    wire_msg m;
    /* a forward round trip */
    Strata__Envelope env = STRATA__ENVELOPE__INIT;
    Strata__Forward f = STRATA__FORWARD__INIT;
    f.session = 42, f.step = 7, f.pos0 = 100, f.n_tokens = 3, f.hidden_dim = 8, f.dtype = STRATA__DTYPE__DTYPE_F32;
    env.body_case = STRATA__ENVELOPE__BODY_FORWARD;
    env.forward = &f;
    size_t n = pack(&env, buf);
    CHECK(decode(buf, n, x, sizeof x, 1, &m, &err) == WIRE_OK && m.env->forward->session == 42 && m.env->forward->pos0 == 100 &&
              m.payload_bytes == sizeof x, "forward round trip: %s", err.msg);
    wire_msg_free(&m);
    CHECK(decode(buf, n, x, sizeof x - 4, 1, &m, &err) == WIRE_MALFORMED && strstr(err.msg, "expected in frame 2"),
          "forward with a short frame 2: %s", err.msg);
    CHECK(decode(buf, n, NULL, 0, 0, &m, &err) == WIRE_MALFORMED && strstr(err.msg, "frame 2"), "forward without frame 2: %s", err.msg);
    f.n_tokens = 0;
    n = pack(&env, buf);
    CHECK(decode(buf, n, x, 0, 1, &m, &err) == WIRE_MALFORMED && strstr(err.msg, "n_tokens 0"), "n_tokens 0: %s", err.msg);
    f.n_tokens = 1, f.hidden_dim = WIRE_MAX_HIDDEN + 1;
    n = pack(&env, buf);
    CHECK(decode(buf, n, x, 4, 1, &m, &err) == WIRE_MALFORMED && strstr(err.msg, "hidden_dim"), "hidden bound: %s", err.msg);
    f.hidden_dim = 8, f.dtype = 9;
    n = pack(&env, buf);
    CHECK(decode(buf, n, x, 32, 1, &m, &err) == WIRE_MALFORMED && strstr(err.msg, "dtype"), "unknown dtype: %s", err.msg);

    /* hello must not carry a frame 2 */
    Strata__Hello h = STRATA__HELLO__INIT;
    h.protocol_version = 1, h.name = "w";
    env.body_case = STRATA__ENVELOPE__BODY_HELLO, env.hello = &h;
    n = pack(&env, buf);
    CHECK(decode(buf, n, NULL, 0, 0, &m, &err) == WIRE_OK && !strcmp(m.env->hello->name, "w"), "hello: %s", err.msg);
    wire_msg_free(&m);
    CHECK(decode(buf, n, x, 4, 1, &m, &err) == WIRE_MALFORMED && strstr(err.msg, "unexpected data frame"), "hello + frame 2: %s", err.msg);

    /* assign bounds */
    uint8_t sha[32] = {1};
    Strata__Assign a = STRATA__ASSIGN__INIT;
    a.config_json = "{}", a.first_layer = 2, a.last_layer = 4, a.bundle_sha256.data = sha, a.bundle_sha256.len = 32;
    a.bundle_bytes = 1000, a.ctx_len = 128, a.chunk_bytes = 4096, a.credit = 4, a.next_hop = "tcp://h:1";
    env.body_case = STRATA__ENVELOPE__BODY_ASSIGN, env.assign = &a;
    n = pack(&env, buf);
    CHECK(decode(buf, n, NULL, 0, 0, &m, &err) == WIRE_OK && m.env->assign->last_layer == 4, "assign: %s", err.msg);
    wire_msg_free(&m);
    size_t good_n = n;
    static uint8_t good[1 << 16];
    memcpy(good, buf, n);
    a.bundle_sha256.len = 31;
    n = pack(&env, buf);
    CHECK(decode(buf, n, NULL, 0, 0, &m, &err) == WIRE_MALFORMED && strstr(err.msg, "bundle_sha256 has 31 bytes"), "sha length: %s", err.msg);
    a.bundle_sha256.len = 32, a.credit = 0;
    n = pack(&env, buf);
    CHECK(decode(buf, n, NULL, 0, 0, &m, &err) == WIRE_MALFORMED && strstr(err.msg, "credit 0"), "credit 0: %s", err.msg);
    a.credit = 4, a.last_layer = 2;
    n = pack(&env, buf);
    CHECK(decode(buf, n, NULL, 0, 0, &m, &err) == WIRE_MALFORMED && strstr(err.msg, "layer range"), "empty range: %s", err.msg);

    /* every truncation of a valid assign: an error or a valid message, never a crash */
    int trunc_ok = 1;
    for (size_t k = 0; k < good_n; k++) {
        wire_status st = decode(good, k, NULL, 0, 0, &m, &err);
        if (st == WIRE_OK) wire_msg_free(&m);
        else if (!err.msg[0]) trunc_ok = 0;
    }
    CHECK(trunc_ok, "truncated assigns are refused with a message");

    /* garbage: random bytes, random lengths, with and without frame 2 */
    uint64_t s = 0x9e3779b97f4a7c15ull;
    int refused = 0, accepted = 0;
    for (int it = 0; it < 20000; it++) {
        size_t len = (size_t)(s % 200);
        for (size_t i = 0; i < len; i++) { s = s * 6364136223846793005ull + 1442695040888963407ull; buf[i] = (uint8_t)(s >> 56); }
        /* mutate a valid message too: flips in a known structure reach deeper than noise */
        if (it & 1) { memcpy(buf, good, good_n); len = good_n; buf[s % good_n] ^= (uint8_t)(1u << (s >> 60 & 7)); }
        wire_status st = decode(buf, len, x, (size_t)(s >> 40) % sizeof x, (int)(s >> 33 & 1), &m, &err);
        if (st == WIRE_OK) { accepted++; wire_msg_free(&m); }
        else refused++;
    }
    CHECK(refused > 0, "garbage: %d refused, %d accepted", refused, accepted);

    /* an envelope with only a field this side does not know: unknown message */
    uint8_t unknown[] = {0x98, 0x06, 0x01}; /* field 99, varint 1 */
    CHECK(decode(unknown, sizeof unknown, NULL, 0, 0, &m, &err) == WIRE_UNKNOWN && strstr(err.msg, "unknown message"),
          "unknown field: %s", err.msg);
    CHECK(decode(buf, WIRE_MAX_CTRL_BYTES + 1, NULL, 0, 0, &m, &err) == WIRE_MALFORMED && strstr(err.msg, "exceeds"),
          "oversized control frame refused before reading: %s", err.msg);
    uint8_t notproto[] = {0xff, 0xff, 0xff};
    CHECK(decode(notproto, sizeof notproto, NULL, 0, 0, &m, &err) == WIRE_MALFORMED && strstr(err.msg, "not a valid Envelope"),
          "invalid protobuf: %s", err.msg);
}

/* ---- bundles ---- */

typedef struct {
    const st_file *f;
    const st_model *src;
    int missing, differ;
} name_check;

static void check_name(const char *name, void *user) {
    name_check *c = user;
    const st_tensor *t = st_find(c->f, name), *s = st_model_find(c->src, name);
    if (!t) { c->missing++; printf("  bundle lacks '%s'\n", name); return; }
    if (t->nbytes != s->nbytes || t->dtype != s->dtype || t->ndim != s->ndim || memcmp(t->data, s->data, t->nbytes) ||
        memcmp(t->shape, s->shape, sizeof t->shape))
        c->differ++, printf("  '%s' differs from the source\n", name);
}

/* The bundle file holds exactly the part's tensors, byte for byte, and the model's config. */
static int check_bundle(const char *file, const char *model_dir, int first, int last, char *why, size_t n) {
    strata_err err = {{0}};
    model_config cfg;
    st_model *src = NULL;
    st_file *f = NULL;
    int rc = -1;
    if (config_load(model_dir, &cfg, &err) || !(src = st_model_open(model_dir, &err)) || !(f = st_open(file, &err))) {
        snprintf(why, n, "%s", err.msg);
        goto out;
    }
    model_part part = {first, last, 0, 0};
    name_check c = {f, src, 0, 0};
    int want = model_part_tensors(&cfg, src, &part, check_name, &c);
    const char *meta = st_meta(f, "config");
    model_config mc;
    if (st_count(f) != want || c.missing || c.differ)
        snprintf(why, n, "%d tensors, %d expected (%d missing, %d differ)", st_count(f), want, c.missing, c.differ);
    else if (!meta || config_parse(meta, strlen(meta), &mc, &err) || mc.n_layers != cfg.n_layers)
        snprintf(why, n, "__metadata__ config missing or wrong: %.400s", err.msg);
    else if (st_at(f, 0)->file_offset % 64)
        snprintf(why, n, "data section starts at %zu, not 64-aligned", st_at(f, 0)->file_offset);
    else rc = 0;
out:
    st_close(&f);
    st_model_close(&src);
    return rc;
}

static void test_bundles(const char *tmp) {
    char dir[1024], file[1100], why[512] = "";
    snprintf(dir, sizeof dir, "%s/sharded", tmp);
    gen_opts o;
    gen_opts_default(&o);
    o.shape = "tiny-llama";
    o.n_layers = 5;
    o.shards = 3;
    o.mixed = 1;
    strata_err err = {{0}};
    CHECK(!gen_model(dir, &o, &err), "gen: %s", err.msg);
    model_config cfg;
    st_model *st = st_model_open(dir, &err);
    CHECK(st && !config_load(dir, &cfg, &err), "open: %s", err.msg);
    if (!st) return;
    const char *cfg_text = "{\"note\": \"any text: the bundle carries it verbatim\"}";
    int ranges[][2] = {{0, 1}, {1, 4}, {4, 5}, {0, 5}};
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        model_part part = {ranges[r][0], ranges[r][1], 0, 0};
        bundle *b = bundle_new(st, &cfg, cfg_text, &part, &err);
        CHECK(b, "bundle_new: %s", err.msg);
        if (!b) continue;
        snprintf(file, sizeof file, "%s/bundle%zu.safetensors", tmp, r);
        CHECK(!bundle_write(b, file, &err), "bundle_write: %s", err.msg);
        /* a real config in the file for check_bundle: rebuild with the model's own */
        FILE *cf = NULL;
        char cpath[1200], ctext[1 << 15];
        snprintf(cpath, sizeof cpath, "%s/config.json", dir);
        size_t cn = (cf = fopen(cpath, "rb")) ? fread(ctext, 1, sizeof ctext - 1, cf) : 0;
        if (cf) fclose(cf);
        ctext[cn] = 0;
        bundle *b2 = bundle_new(st, &cfg, ctext, &part, &err);
        CHECK(b2 && !bundle_write(b2, file, &err), "bundle with config: %s", err.msg);
        CHECK(b2 && !check_bundle(file, dir, part.first_layer, part.last_layer, why, sizeof why),
              "bundle layers %d-%d: %s", part.first_layer, part.last_layer - 1, why);
        /* the hash of the stream is the hash of the file, and ranges read back equal the file */
        uint8_t h1[32], h2[32];
        sha256_ctx hc;
        struct stat sb;
        FILE *f = fopen(file, "rb");
        uint8_t *all = NULL;
        if (b2 && f && !stat(file, &sb) && (uint64_t)sb.st_size == bundle_size(b2) && (all = malloc((size_t)sb.st_size)) &&
            fread(all, 1, (size_t)sb.st_size, f) == (size_t)sb.st_size) {
            bundle_hash(b2, h1, NULL, &err);
            sha256_init(&hc);
            sha256_update(&hc, all, (size_t)sb.st_size);
            sha256_final(&hc, h2);
            CHECK(!memcmp(h1, h2, 32), "bundle_hash equals the file's SHA-256");
            uint64_t s = 12345 + r;
            int same = 1;
            uint8_t tmpb[4096];
            for (int i = 0; i < 200; i++) {
                s = s * 6364136223846793005ull + 1;
                uint64_t off = (s >> 20) % bundle_size(b2);
                size_t len = (size_t)((s >> 8) % sizeof tmpb);
                if (len > bundle_size(b2) - off) len = (size_t)(bundle_size(b2) - off);
                if (bundle_read(b2, off, tmpb, len, NULL) || memcmp(tmpb, all + off, len)) same = 0;
            }
            CHECK(same, "random bundle_read ranges equal the file");
            CHECK(bundle_read(b2, bundle_size(b2) - 1, tmpb, 2, &err) && strstr(err.msg, "outside"), "read past the end refused");
            /* the same part gives the same bytes: what lets workers cache by hash */
            bundle *b3 = bundle_new(st, &cfg, ctext, &part, &err);
            uint8_t h3[32];
            CHECK(b3 && !bundle_hash(b3, h3, NULL, &err) && !memcmp(h1, h3, 32), "bundles are deterministic");
            bundle_free(&b3);
        } else {
            CHECK(0, "bundle file readable with the announced size");
        }
        free(all);
        if (f) fclose(f);
        bundle_free(&b);
        bundle_free(&b2);
    }
    st_model_close(&st);
}

int main(int argc, char **argv) {
    if (argc == 6 && !strcmp(argv[1], "check-bundle")) {
        char why[512] = "";
        if (check_bundle(argv[2], argv[3], atoi(argv[4]), atoi(argv[5]), why, sizeof why)) {
            printf("%s: %s\n", argv[2], why);
            return 1;
        }
        printf("%s: exactly layers %s-%d\n", argv[2], argv[4], atoi(argv[5]) - 1);
        return 0;
    }
    if (argc != 2) { fprintf(stderr, "usage: %s TMPDIR | check-bundle FILE MODEL_DIR FIRST LAST\n", argv[0]); return 2; }
    mkdir(argv[1], 0755);
    test_topology();
    test_planner();
    test_wire();
    test_bundles(argv[1]);
    return TEST_END();
}
