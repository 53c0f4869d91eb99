/* CurveZMQ: a peer without the cluster key gets nothing from a worker. A real strata-worker runs
 * with a cluster key; raw clients (no CURVE at all; CURVE with another cluster's key; CURVE with
 * the right server key but a random client key) send hello, assign and forward, and the worker
 * never answers, never assigns, never runs a forward, caches nothing, and logs each refusal. A
 * client holding the key is answered (the control). A master with the wrong key fails setup with
 * a message naming the cause. Plus the key file and fingerprint functions.
 *
 * usage: test_curve STRATA_WORKER TMPDIR */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/curve.h"
#include "common/wire.h"
#include "master/pipeline.h"
#include "tools/genmodel.h"
#include "check.h"

static pid_t worker_pid;
static const char *worker_bin, *tmp;
static char logf[512], cache[512], endpoint[64];


static void on_alarm(int sig) {
    (void)sig;
    if (worker_pid > 0) kill(worker_pid, SIGKILL);
    static const char msg[] = "test_curve: timed out\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

/* runs the worker with extra args; waits for "listening" (or its exit). Returns its pid. */
static pid_t run_worker(const char *log, const char *a1, const char *a2) {
    int seen = check_count_lines(log, "listening on");
    pid_t p = fork();
    if (p == 0) {
        FILE *f = freopen(log, "a", stderr);
        (void)f;
        execl(worker_bin, worker_bin, "--listen", endpoint, "--name", "cw", "--cache-dir", cache, "--backend", "cpu",
              "--threads", "1", a1, a2, (char *)NULL);
        _exit(127);
    }
    for (int t = 0; t < 200 && check_count_lines(log, "listening on") <= seen; t++) {
        if (waitpid(p, NULL, WNOHANG) == p) return -1;
        usleep(50000);
    }
    return p;
}

static void stop(pid_t *p) {
    if (*p > 0) { kill(*p, SIGTERM); waitpid(*p, NULL, 0); }
    *p = 0;
}

/* a client socket: mode 0 no CURVE, 1 CURVE with key k as both server and client key, 2 the
 * server key of k with a fresh random client key */
static void *client(void *zctx, int mode, const curve_key *k) {
    void *s = zmq_socket(zctx, ZMQ_DEALER);
    wire_socket_setup(s, 0);
    if (mode == 1) curve_client_setup(s, k, NULL);
    if (mode == 2) {
        char pub[41], sec[41];
        zmq_curve_keypair(pub, sec);
        zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, k->public_z85, 40);
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, 40);
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, 40);
    }
    zmq_connect(s, endpoint);
    return s;
}

/* hello, assign (a plausible one) and forward; returns how many replies came within ms */
static int knock(void *s, int ms) {
    static const char cfg[] = "{\"model_type\":\"qwen2\",\"hidden_size\":64,\"num_hidden_layers\":2}";
    uint8_t hash[32] = {1, 2, 3};
    float x[64] = {0.5f};
    Strata__Envelope env = STRATA__ENVELOPE__INIT;
    Strata__Hello h = STRATA__HELLO__INIT;
    h.protocol_version = WIRE_PROTOCOL_VERSION;
    h.name = "intruder";
    env.body_case = STRATA__ENVELOPE__BODY_HELLO, env.hello = &h;
    wire_send(s, NULL, 0, &env, NULL, 0, NULL);
    Strata__Assign a = STRATA__ASSIGN__INIT;
    a.config_json = (char *)cfg, a.first_layer = 0, a.last_layer = 1, a.bundle_sha256.data = hash, a.bundle_sha256.len = 32;
    a.bundle_bytes = 4096, a.next_hop = "", a.ctx_len = 64, a.chunk_bytes = 1024, a.credit = 2;
    env.body_case = STRATA__ENVELOPE__BODY_ASSIGN, env.assign = &a;
    wire_send(s, NULL, 0, &env, NULL, 0, NULL);
    Strata__Forward f = STRATA__FORWARD__INIT;
    f.session = 1, f.n_tokens = 1, f.hidden_dim = 64;
    env.body_case = STRATA__ENVELOPE__BODY_FORWARD, env.forward = &f;
    wire_send(s, NULL, 0, &env, x, sizeof x, NULL);
    int replies = 0;
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    while (zmq_poll(&it, 1, ms) == 1) {
        wire_in in;
        if (wire_recv(s, 0, &in, NULL) >= 0) replies++;
        wire_in_close(&in);
    }
    return replies;
}

/* A forward an intruder could mean harm with: session 1 at position 0 (it would roll the real
 * session's KV back), one row of the model's width. Returns how many replies came within ms. */
static int intrude_forward(void *s, int hidden, int ms) {
    float x[4096];
    for (int i = 0; i < hidden && i < 4096; i++) x[i] = (float)(i % 7) * 0.25f - 0.75f;
    Strata__Envelope env = STRATA__ENVELOPE__INIT;
    Strata__Forward f = STRATA__FORWARD__INIT;
    f.session = 1, f.step = 1000, f.pos0 = 0, f.n_tokens = 1, f.hidden_dim = (uint32_t)hidden;
    env.body_case = STRATA__ENVELOPE__BODY_FORWARD, env.forward = &f;
    wire_send(s, NULL, 0, &env, x, sizeof(float) * (size_t)hidden, NULL);
    int replies = 0;
    zmq_pollitem_t it = {s, 0, ZMQ_POLLIN, 0};
    while (zmq_poll(&it, 1, ms) == 1) {
        wire_in in;
        if (wire_recv(s, 0, &in, NULL) >= 0) replies++;
        wire_in_close(&in);
    }
    return replies;
}

static int dir_entries(const char *path) {
    DIR *d = opendir(path);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

static void key_file_tests(void) {
    char p1[600], p2[600], bad[700];
    curve_key k1, k2, l;
    strata_err err = {{0}};
    snprintf(p1, sizeof p1, "%s/one.key", tmp);
    snprintf(p2, sizeof p2, "%s/two.key", tmp);
    CHECK(!curve_keygen(p1, &k1, &err) && !curve_keygen(p2, &k2, &err), "keygen: %s", err.msg);
    CHECK(curve_keygen(p1, NULL, &err) == -1 && strstr(err.msg, "exists already"), "keygen refuses to overwrite: %s", err.msg);
    CHECK(!curve_key_load(p1, &l, &err) && !strcmp(l.public_z85, k1.public_z85) && !strcmp(l.secret_z85, k1.secret_z85),
          "key file round trip: %s", err.msg);
    snprintf(bad, sizeof bad, "%s.pub", p1);
    CHECK(!curve_key_load(bad, &l, &err) && !strcmp(l.public_z85, k1.public_z85) && !l.secret_z85[0], ".pub: public only: %s",
          err.msg);
    CHECK(curve_key_resolve(bad, 0, "test", &l, &err) == -1 && strstr(err.msg, "only a public key"),
          "a node refuses a .pub file: %s", err.msg);
    snprintf(bad, sizeof bad, "%s/mixed.key", tmp);
    FILE *f = fopen(bad, "w");
    if (f) fprintf(f, "public = %s\nsecret = %s\n", k1.public_z85, k2.secret_z85), fclose(f);
    CHECK(curve_key_load(bad, &l, &err) == -1 && strstr(err.msg, "does not belong"), "mismatched pair: %s", err.msg);
    f = fopen(bad, "w");
    if (f) fprintf(f, "public = tooshort\n"), fclose(f);
    CHECK(curve_key_load(bad, &l, &err) == -1 && strstr(err.msg, "line 1"), "bad z85 named: %s", err.msg);
    CHECK(curve_key_resolve(NULL, 0, "test", &l, &err) == -1 && strstr(err.msg, "no cluster key"), "no key, not insecure: %s",
          err.msg);
    char fa[KEY_FINGERPRINT_BYTES], fb[KEY_FINGERPRINT_BYTES], fc[KEY_FINGERPRINT_BYTES];
    key_fingerprint(k1.public_z85, fa);
    key_fingerprint(k2.public_z85, fb);
    key_fingerprint("not a key", fc);
    CHECK(strlen(fa) == 16 && strspn(fa, "0123456789abcdef") == 16 && strcmp(fa, fb) && !fc[0],
          "fingerprints: 16 hex digits, distinct keys differ, junk gives '' (%s %s '%s')", fa, fb, fc);
    char again[KEY_FINGERPRINT_BYTES];
    CHECK(!strcmp(key_fingerprint(k1.public_z85, again), fa), "fingerprint is stable");
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s STRATA_WORKER TMPDIR\n", argv[0]); return 2; }
    worker_bin = argv[1], tmp = argv[2];
    char cmd[1024], key[512], other[512], model[512], topo[512];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", tmp, tmp);
    if (system(cmd)) return 2;
    signal(SIGALRM, on_alarm);
    alarm(120);
    unsetenv(CURVE_KEY_ENV);
    key_file_tests();

    snprintf(key, sizeof key, "%s/cluster.key", tmp);
    snprintf(other, sizeof other, "%s/other.key", tmp);
    snprintf(logf, sizeof logf, "%s/worker.log", tmp);
    snprintf(cache, sizeof cache, "%s/cache", tmp);
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", 20000 + (int)(getpid() * 7 % 40000));
    strata_err err = {{0}};
    curve_key k, ko;
    if (curve_keygen(key, &k, &err) || curve_keygen(other, &ko, &err)) { printf("keygen: %s\n", err.msg); return 1; }

    /* a worker without --key or --insecure does not start */
    char nokey_log[600];
    snprintf(nokey_log, sizeof nokey_log, "%s/nokey.log", tmp);
    pid_t p = run_worker(nokey_log, "--threads", "1");
    CHECK(p == -1 && check_count_lines(nokey_log, "no cluster key: pass --key FILE"), "no key: the worker refuses to start");
    if (p > 0) stop(&p);
    /* --insecure is loud */
    char insecure_log[600];
    snprintf(insecure_log, sizeof insecure_log, "%s/insecure.log", tmp);
    p = run_worker(insecure_log, "--insecure", "--insecure");
    CHECK(p > 0 && check_count_lines(insecure_log, "WARNING: --insecure: CurveZMQ is OFF") == 1 &&
              check_count_lines(insecure_log, "INSECURE: no CurveZMQ") == 1, "--insecure: a warning on start");
    stop(&p);

    worker_pid = run_worker(logf, "--key", key);
    CHECK(worker_pid > 0, "worker with the cluster key starts");
    void *zctx = zmq_ctx_new();
    static const char *what[3] = {"no CURVE at all", "CURVE with another cluster's key", "CURVE, right server key, random client key"};
    for (int mode = 0; mode < 3; mode++) {
        int before = check_count_lines(logf, "refused a peer");
        void *s = client(zctx, mode, mode == 1 ? &ko : &k);
        int replies = knock(s, 1500);
        zmq_close(s);
        CHECK(replies == 0, "%s: no reply to hello/assign/forward (got %d)", what[mode], replies);
        CHECK(check_count_lines(logf, "refused a peer") > before, "%s: the worker logs the refusal", what[mode]);
    }
    CHECK(check_count_lines(logf, "assigned layers") == 0 && check_count_lines(logf, "error:") == 0 && check_count_lines(logf, "hello") == 0,
          "nothing an intruder sent was read: no assign, no forward, no error reply");
    CHECK(dir_entries(cache) == 0, "nothing cached (%d entries)", dir_entries(cache));
    /* the control: the key holder is answered (hello, then errors for the fake assign/forward) */
    void *s = client(zctx, 1, &k);
    int replies = knock(s, 1500);
    zmq_close(s);
    CHECK(replies >= 1, "a client with the cluster key is answered (%d replies)", replies);
    zmq_ctx_term(zctx);

    /* a master with another key fails setup naming why */
    snprintf(model, sizeof model, "%s/m2", tmp);
    snprintf(topo, sizeof topo, "%s/one.yml", tmp);
    gen_opts go;
    gen_opts_default(&go);
    go.shape = "tiny-qwen", go.n_layers = 2, go.seed = 3;
    FILE *f = fopen(topo, "w");
    if (f) fprintf(f, "cw:\n  host: '%s'\n  layers: ['model.layers.0-1']\n", endpoint + 6), fclose(f);
    CHECK(!gen_model(model, &go, &err), "model: %s", err.msg);
    cluster_opts o;
    cluster_opts_default(&o);
    o.topology_path = topo, o.connect_timeout_ms = 2000;
    for (int mode = 0; mode < 2; mode++) {
        o.key_path = mode ? other : NULL, o.insecure = !mode;
        engine *e = engine_cluster_new(model, "cpu", 1, 64, &o, &err);
        CHECK(!e && strstr(err.msg, "'cw'") &&
                  strstr(err.msg, "refused this master") && (strstr(err.msg, "cluster keys") || strstr(err.msg, "--insecure")),
              "master %s: setup fails naming the cause: %s", mode ? "with another key" : "--insecure", err.msg);
        if (e) engine_destroy(&e);
    }

    /* A worker serving a real session: intruders' forwards into that session do not run. Had one
     * run, the session's KV on the worker would be rolled back to position 0 and the master's next
     * forward would fail (a gap) or give other logits than the same steps run locally. */
    o.key_path = key, o.insecure = 0;
    engine *e = engine_cluster_new(model, "cpu", 1, 64, &o, &err);
    engine *local = engine_local_new(model, "cpu", 1, 64, &err);
    CHECK(e && local, "master with the cluster key and a local reference: %s", err.msg);
    if (e && local) {
        int vocab = e->cfg->vocab_size, hidden = e->cfg->hidden_dim;
        float *lc = malloc(sizeof(float) * (size_t)vocab), *ll = malloc(sizeof(float) * (size_t)vocab);
        int32_t prompt[9] = {5, 17, 3, 99, 42, 7, 250, 11, 64}, next = 123;
        CHECK(lc && ll && !e->ops->forward(e, 1, prompt, 9, lc, 0, &err) && !local->ops->forward(local, 1, prompt, 9, ll, 0, &err),
              "prefill of session 1 on the cluster and locally: %s", err.msg);
        void *zc = zmq_ctx_new();
        for (int mode = 0; mode < 3; mode++) {
            int before = check_count_lines(logf, "refused a peer");
            void *sk = client(zc, mode, mode == 1 ? &ko : &k);
            int replies = intrude_forward(sk, hidden, 1000);
            zmq_close(sk);
            CHECK(replies == 0 && check_count_lines(logf, "refused a peer") > before,
                  "%s: a forward into the live session gets no reply and is refused", what[mode]);
        }
        zmq_ctx_term(zc);
        int rc = e->ops->forward(e, 1, &next, 1, lc, 0, &err);
        CHECK(rc == 0, "the master's next forward of session 1 still runs (no intruder rolled it back): %s", err.msg);
        local->ops->forward(local, 1, &next, 1, ll, 0, &err);
        CHECK(rc == 0 && !memcmp(lc, ll, sizeof(float) * (size_t)vocab),
              "its logits equal the local run's bit for bit: no intruder's forward touched the session");
        e->ops->end_session(e, 1);
        free(lc);
        free(ll);
    }
    if (e) engine_destroy(&e);
    if (local) engine_destroy(&local);
    stop(&worker_pid);
    /* a sanitizer build's worker reports into its log, which no one else reads */
    int bad = check_count_lines(logf, "Sanitizer") + check_count_lines(logf, "runtime error:");
    CHECK(bad == 0, "no sanitizer report in the worker's log (%d lines)", bad);
    return TEST_END();
}
