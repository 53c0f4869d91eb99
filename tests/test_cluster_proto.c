/* The worker's side of the protocol, driven by a fake master over a real socket: bad frames get
 * error replies and the worker keeps serving, a version mismatch is named, a bundle whose hash
 * does not match is rejected with nothing loaded or cached, and forwards of interleaved sessions
 * equal the forward pass run here on the same layers (bit for bit, both on cpu-ref). The link is
 * CurveZMQ with a cluster key made here (secure by default, as a real cluster).
 *
 * usage: test_cluster_proto STRATA_WORKER TMPDIR */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/curve.h"
#include "common/forward.h"
#include "common/wire.h"
#include "master/bundler.h"
#include "tools/genmodel.h"
#include "check.h"

static pid_t worker_pid;
static void *sock;

static void kill_worker(void) {
    if (worker_pid > 0) {
        kill(worker_pid, SIGTERM);
        waitpid(worker_pid, NULL, 0);
        worker_pid = 0;
    }
}

static void on_alarm(int sig) {
    (void)sig;
    if (worker_pid > 0) kill(worker_pid, SIGKILL);
    static const char msg[] = "test_cluster_proto: timed out\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

static int send_env(const Strata__Envelope *e, const void *payload, size_t n) {
    strata_err err = {{0}};
    int rc = wire_send(sock, NULL, 0, e, payload, n, &err);
    if (rc) printf("send: %s\n", err.msg);
    return rc;
}

/* 1 while the worker process runs (a worker that exited answers nothing: fail at once, not
 * after every wait's timeout) */
static int worker_alive(void) {
    if (worker_pid <= 0) return 0;
    if (waitpid(worker_pid, NULL, WNOHANG) == worker_pid) {
        printf("the worker exited (see its log)\n");
        worker_pid = 0;
        return 0;
    }
    return 1;
}

/* next message from the worker within 20 s; 0 or -1 */
static int recv_msg(wire_in *in) {
    zmq_pollitem_t it = {sock, 0, ZMQ_POLLIN, 0};
    strata_err err = {{0}};
    int got = 0;
    for (int waited = 0; !got && waited < 20000 && worker_alive(); waited += 200) got = zmq_poll(&it, 1, 200) == 1;
    if (!got) { printf("no reply within 20 s\n"); memset(in, 0, sizeof *in); return -1; }
    int st = wire_recv(sock, 0, in, &err);
    if (st != WIRE_OK) { printf("bad reply: %s\n", err.msg); wire_in_close(in); return -1; }
    return 0;
}

/* expects an Error of `code` whose message contains `want` */
static void expect_error(const char *what, Strata__ErrorCode code, const char *want) {
    wire_in in;
    if (recv_msg(&in)) { CHECK(0, "%s: no reply", what); return; }
    const Strata__Envelope *e = in.msg.env;
    CHECK(e->body_case == STRATA__ENVELOPE__BODY_ERROR && e->error->code == code && strstr(e->error->message, want),
          "%s: expected error %d containing \"%s\", got %s %d \"%s\"", what, code, want, wire_body_name(e->body_case),
          e->body_case == STRATA__ENVELOPE__BODY_ERROR ? (int)e->error->code : -1,
          e->body_case == STRATA__ENVELOPE__BODY_ERROR ? e->error->message : "");
    wire_in_close(&in);
}

static void hello(unsigned version) {
    Strata__Envelope env = STRATA__ENVELOPE__INIT;
    Strata__Hello h = STRATA__HELLO__INIT;
    h.protocol_version = version;
    h.name = "test";
    env.body_case = STRATA__ENVELOPE__BODY_HELLO;
    env.hello = &h;
    send_env(&env, NULL, 0);
}

static void expect_hello(const char *what) {
    wire_in in;
    int ok = !recv_msg(&in);
    CHECK(ok && in.msg.env->body_case == STRATA__ENVELOPE__BODY_HELLO && in.msg.env->hello->protocol_version == WIRE_PROTOCOL_VERSION &&
              !strcmp(in.msg.env->hello->name, "pw") && in.msg.env->hello->memory_bytes > 0,
          "%s: hello reply", what);
    if (ok) wire_in_close(&in);
}

static void forward(uint64_t session, uint64_t step, int pos0, const float *x, int n, int hidden) {
    Strata__Envelope env = STRATA__ENVELOPE__INIT;
    Strata__Forward f = STRATA__FORWARD__INIT;
    f.session = session, f.step = step, f.pos0 = (uint32_t)pos0, f.n_tokens = (uint32_t)n, f.hidden_dim = (uint32_t)hidden;
    env.body_case = STRATA__ENVELOPE__BODY_FORWARD;
    env.forward = &f;
    send_env(&env, x, sizeof(float) * (size_t)n * (size_t)hidden);
}

/* expects a Result for (session, step) equal to want [n, hidden] */
static void expect_result(const char *what, uint64_t session, uint64_t step, const float *want, int n, int hidden) {
    wire_in in;
    if (recv_msg(&in)) { CHECK(0, "%s: no reply", what); return; }
    const Strata__Envelope *e = in.msg.env;
    int ok = e->body_case == STRATA__ENVELOPE__BODY_RESULT && e->result->session == session && e->result->step == step &&
             (int)e->result->n_tokens == n && in.msg.payload_bytes == sizeof(float) * (size_t)n * (size_t)hidden &&
             !memcmp(in.msg.payload, want, in.msg.payload_bytes);
    CHECK(ok, "%s: result equals the local forward (got %s%s%s)", what, wire_body_name(e->body_case),
          e->body_case == STRATA__ENVELOPE__BODY_ERROR ? ": " : "", e->body_case == STRATA__ENVELOPE__BODY_ERROR ? e->error->message : "");
    wire_in_close(&in);
}

/* Serves the worker's fetches from b; flip >= 0 corrupts that byte of the stream. Returns the
 * first non-fetch reply's body case (the Ready or Error is left in *last). */
static int serve(const bundle *b, long flip, wire_in *last, uint64_t *sent) {
    static uint8_t chunk[WIRE_MAX_CHUNK_BYTES];
    *sent = 0;
    for (;;) {
        if (recv_msg(last)) return -1;
        const Strata__Envelope *e = last->msg.env;
        if (e->body_case != STRATA__ENVELOPE__BODY_FETCH) return e->body_case;
        uint64_t off = e->fetch->offset;
        uint32_t n = e->fetch->size;
        bundle_read(b, off, chunk, n, NULL);
        if (flip >= 0 && (uint64_t)flip >= off && (uint64_t)flip < off + n) chunk[flip - (long)off] ^= 0x40;
        wire_in_close(last);
        Strata__Envelope env = STRATA__ENVELOPE__INIT;
        Strata__BundleChunk ch = STRATA__BUNDLE_CHUNK__INIT;
        ch.offset = off;
        env.body_case = STRATA__ENVELOPE__BODY_CHUNK;
        env.chunk = &ch;
        send_env(&env, chunk, n);
        *sent += n;
    }
}

static void assign(const char *cfg_text, int first, int last, const uint8_t hash[32], uint64_t bytes) {
    Strata__Envelope env = STRATA__ENVELOPE__INIT;
    Strata__Assign a = STRATA__ASSIGN__INIT;
    a.config_json = (char *)cfg_text, a.first_layer = (uint32_t)first, a.last_layer = (uint32_t)last;
    a.bundle_sha256.data = (uint8_t *)hash, a.bundle_sha256.len = 32, a.bundle_bytes = bytes;
    a.next_hop = "", a.ctx_len = 256, a.chunk_bytes = 7000, a.credit = 3; /* ragged chunks */
    env.body_case = STRATA__ENVELOPE__BODY_ASSIGN;
    env.assign = &a;
    send_env(&env, NULL, 0);
}

static int cache_entries(const char *dir) {
    DIR *d = opendir(dir);
    int n = 0;
    struct dirent *de;
    while (d && (de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) n++;
    if (d) closedir(d);
    return n;
}

static void fill(float *x, size_t n, uint64_t seed) {
    for (size_t i = 0; i < n; i++) {
        seed = seed * 6364136223846793005ull + 1442695040888963407ull;
        x[i] = (float)((int)(seed >> 40 & 0xffff) - 32768) / 16384.0f;
    }
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s STRATA_WORKER TMPDIR\n", argv[0]); return 2; }
    signal(SIGALRM, on_alarm);
    alarm(240);
    char model_dir[1024], cache_dir[1024], endpoint[64], log[1100], cfg_path[1100];
    mkdir(argv[2], 0755);
    snprintf(model_dir, sizeof model_dir, "%s/model", argv[2]);
    snprintf(cache_dir, sizeof cache_dir, "%s/cache", argv[2]);
    snprintf(log, sizeof log, "%s/worker.log", argv[2]);
    snprintf(cfg_path, sizeof cfg_path, "%s/config.json", model_dir);
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", cache_dir);
    if (system(cmd)) return 2;
    gen_opts o;
    gen_opts_default(&o);
    o.n_layers = 4;
    strata_err err = {{0}};
    if (gen_model(model_dir, &o, &err)) { printf("gen: %s\n", err.msg); return 1; }
    int port = 20000 + (int)(getpid() * 7 % 40000);
    snprintf(endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
    char key_path[1100];
    curve_key key;
    snprintf(key_path, sizeof key_path, "%s/cluster.key", argv[2]);
    unlink(key_path);
    snprintf(cmd, sizeof cmd, "%s.pub", key_path);
    unlink(cmd);
    if (curve_keygen(key_path, &key, &err)) { printf("keygen: %s\n", err.msg); return 1; }
    worker_pid = fork();
    if (worker_pid == 0) {
        if (!freopen(log, "w", stderr)) _exit(127);
        execl(argv[1], argv[1], "--listen", endpoint, "--name", "pw", "--backend", "cpu-ref", "--cache-dir", cache_dir,
              "--key", key_path, (char *)NULL);
        _exit(127);
    }
    atexit(kill_worker);
    void *zctx = zmq_ctx_new();
    sock = zmq_socket(zctx, ZMQ_DEALER);
    wire_socket_setup(sock, 0);
    if (curve_client_setup(sock, &key, &err)) { printf("curve: %s\n", err.msg); return 1; }
    zmq_connect(sock, endpoint);

    /* bad frames: each gets an error reply, and the next request is still served */
    zmq_send(sock, "\xff\xff\xff", 3, 0);
    expect_error("garbage frame", STRATA__ERROR_CODE__ERR_MALFORMED, "not a valid Envelope");
    zmq_send(sock, "a", 1, ZMQ_SNDMORE), zmq_send(sock, "b", 1, ZMQ_SNDMORE), zmq_send(sock, "c", 1, 0);
    expect_error("three frames", STRATA__ERROR_CODE__ERR_MALFORMED, "more than 2 frames");
    zmq_send(sock, "\x98\x06\x01", 3, 0); /* field 99: a message from a future protocol */
    expect_error("unknown message", STRATA__ERROR_CODE__ERR_UNKNOWN_MESSAGE, "unknown message");
    hello(99);
    expect_error("protocol version mismatch", STRATA__ERROR_CODE__ERR_VERSION, "protocol version mismatch: master speaks 99, worker 'pw' speaks 1");
    hello(WIRE_PROTOCOL_VERSION);
    expect_hello("after four bad messages");
    {
        Strata__Envelope env = STRATA__ENVELOPE__INIT;
        Strata__Ready r = STRATA__READY__INIT;
        env.body_case = STRATA__ENVELOPE__BODY_READY, env.ready = &r;
        send_env(&env, NULL, 0);
        expect_error("a master-only message", STRATA__ERROR_CODE__ERR_UNKNOWN_MESSAGE, "unexpected message 'ready'");
    }

    model_config cfg;
    st_model *st = st_model_open(model_dir, &err);
    FILE *cf = fopen(cfg_path, "rb");
    static char cfg_text[1 << 16];
    size_t cn = cf ? fread(cfg_text, 1, sizeof cfg_text - 1, cf) : 0;
    if (cf) fclose(cf);
    cfg_text[cn] = 0;
    if (!st || config_load(model_dir, &cfg, &err)) { printf("model: %s\n", err.msg); return 1; }
    int hidden = cfg.hidden_dim;
    float x[8 * 128];
    fill(x, sizeof x / sizeof x[0], 1);
    forward(1, 1, 0, x, 2, hidden);
    expect_error("forward before assign", STRATA__ERROR_CODE__ERR_NOT_READY, "before a model is loaded");

    /* a bundle whose bytes do not hash to the announced SHA-256: rejected, nothing kept */
    model_part part = {1, 3, 0, 0};
    bundle *b = bundle_new(st, &cfg, cfg_text, &part, &err);
    uint8_t hash[32];
    if (!b || bundle_hash(b, hash, NULL, &err)) { printf("bundle: %s\n", err.msg); return 1; }
    wire_in in;
    uint64_t sent;
    assign(cfg_text, 1, 3, hash, bundle_size(b));
    int got = serve(b, (long)(bundle_size(b) / 2), &in, &sent);
    CHECK(got == STRATA__ENVELOPE__BODY_ERROR && in.msg.env->error->code == STRATA__ERROR_CODE__ERR_HASH_MISMATCH &&
              strstr(in.msg.env->error->message, "hash mismatch") && strstr(in.msg.env->error->message, "nothing loaded"),
          "corrupted bundle rejected with a hash mismatch (%s)", got == STRATA__ENVELOPE__BODY_ERROR ? in.msg.env->error->message : "no error");
    if (got >= 0) wire_in_close(&in);
    CHECK(sent == bundle_size(b), "the whole bundle was streamed (%llu bytes)", (unsigned long long)sent);
    CHECK(cache_entries(cache_dir) == 0, "nothing left in the cache after a mismatch (%d entries)", cache_entries(cache_dir));
    forward(1, 1, 0, x, 2, hidden);
    expect_error("nothing loaded after a mismatch", STRATA__ERROR_CODE__ERR_NOT_READY, "before a model is loaded");
    hello(WIRE_PROTOCOL_VERSION);
    expect_hello("after a rejected bundle");

    /* the real bundle: received, verified, cached, loaded */
    assign(cfg_text, 1, 3, hash, bundle_size(b));
    got = serve(b, -1, &in, &sent);
    CHECK(got == STRATA__ENVELOPE__BODY_READY && !in.msg.env->ready->cached && in.msg.env->ready->bytes_received == bundle_size(b),
          "bundle received and ready (%s)", got == STRATA__ENVELOPE__BODY_ERROR ? in.msg.env->error->message : wire_body_name(got));
    if (got >= 0) wire_in_close(&in);
    CHECK(cache_entries(cache_dir) == 1, "one bundle in the cache");

    /* the same layers here, on the same backend */
    backend *be = backend_cpu_ref_new();
    model *m = model_load(st, &cfg, &part, be, &err);
    fwd_state *fs = m ? fwd_new(m, 64, &err) : NULL;
    kv_cache *kv1 = fs ? kv_new(m, 256, &err) : NULL, *kv2 = kv1 ? kv_new(m, 256, &err) : NULL;
    if (!kv2) { printf("local model: %s\n", err.msg); return 1; }
    float want[8 * 128], y[8 * 128];
    /* interleaved sessions: 1 prefills 5, 2 prefills 3, 1 decodes one */
    forward(1, 1, 0, x, 5, hidden);
    forward(2, 1, 0, x + 5 * hidden, 3, hidden);
    fwd_run(fs, kv1, NULL, x, 5, want, NULL, 0, &err);
    expect_result("session 1 prefill", 1, 1, want, 5, hidden);
    fwd_run(fs, kv2, NULL, x + 5 * hidden, 3, want, NULL, 0, &err);
    expect_result("session 2 prefill", 2, 1, want, 3, hidden);
    fill(y, (size_t)hidden, 2);
    forward(1, 2, 5, y, 1, hidden);
    fwd_run(fs, kv1, NULL, y, 1, want, NULL, 0, &err);
    expect_result("session 1 decode", 1, 2, want, 1, hidden);
    /* rollback: a forward at pos0 5 again replaces position 5 (a rejected speculation) */
    fill(y, (size_t)hidden * 2, 3);
    forward(1, 3, 5, y, 2, hidden);
    kv_trim(kv1, 5, &err);
    fwd_run(fs, kv1, NULL, y, 2, want, NULL, 0, &err);
    expect_result("session 1 after rollback to 5", 1, 3, want, 2, hidden);
    /* KvTrim then forward */
    {
        Strata__Envelope env = STRATA__ENVELOPE__INIT;
        Strata__KvTrim t = STRATA__KV_TRIM__INIT;
        t.session = 2, t.len = 2;
        env.body_case = STRATA__ENVELOPE__BODY_TRIM, env.trim = &t;
        send_env(&env, NULL, 0);
        forward(2, 2, 2, y, 1, hidden);
        kv_trim(kv2, 2, &err);
        fwd_run(fs, kv2, NULL, y, 1, want, NULL, 0, &err);
        expect_result("session 2 after KvTrim to 2", 2, 2, want, 1, hidden);
        t.session = 77;
        send_env(&env, NULL, 0);
        expect_error("trim of an unknown session", STRATA__ERROR_CODE__ERR_SESSION, "no session 77");
    }
    forward(1, 4, 100, y, 1, hidden);
    expect_error("forward leaving a gap", STRATA__ERROR_CODE__ERR_FORWARD, "leaves a gap");
    {
        Strata__Envelope env = STRATA__ENVELOPE__INIT;
        Strata__Forward f = STRATA__FORWARD__INIT;
        f.session = 1, f.step = 5, f.pos0 = 7, f.n_tokens = 1, f.hidden_dim = (uint32_t)hidden + 1;
        env.body_case = STRATA__ENVELOPE__BODY_FORWARD, env.forward = &f;
        send_env(&env, x, sizeof(float) * (size_t)(hidden + 1));
        expect_error("forward of the wrong width", STRATA__ERROR_CODE__ERR_FORWARD, "hidden_dim");
        send_env(&env, x, 8);
        expect_error("forward whose frame 2 has the wrong size", STRATA__ERROR_CODE__ERR_MALFORMED, "expected in frame 2");
        Strata__SessionEnd se = STRATA__SESSION_END__INIT;
        se.session = 1;
        env.body_case = STRATA__ENVELOPE__BODY_END, env.end = &se;
        send_env(&env, NULL, 0);
        forward(1, 6, 7, y, 1, hidden);
        expect_error("forward of an ended session", STRATA__ERROR_CODE__ERR_FORWARD, "unknown here");
    }
    /* the same assignment again: found in the cache, nothing fetched */
    assign(cfg_text, 1, 3, hash, bundle_size(b));
    got = serve(b, -1, &in, &sent);
    CHECK(got == STRATA__ENVELOPE__BODY_READY && in.msg.env->ready->cached && sent == 0, "re-assign: cached, %llu bytes fetched",
          (unsigned long long)sent);
    if (got >= 0) wire_in_close(&in);
    hello(WIRE_PROTOCOL_VERSION);
    expect_hello("at the end");

    kv_free(&kv1);
    kv_free(&kv2);
    fwd_free(&fs);
    model_free(&m);
    backend_destroy(&be);
    bundle_free(&b);
    st_model_close(&st);
    zmq_close(sock);
    zmq_ctx_term(zctx);
    kill_worker();
    return TEST_END();
}
