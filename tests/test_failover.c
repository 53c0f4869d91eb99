/* Failover on a 3-worker loopback cluster (worker processes, the master's engine in this process):
 * a worker is SIGKILLed (or frozen with SIGSTOP) in the middle of a 64-token greedy generation
 * and the generation completes with exactly the tokens of the undisturbed run (engine_local, and
 * the cluster run with no fault).
 *
 *   kill the middle worker, it stays dead: its layers move to the master, the worker before it
 *     is re-assigned (cached: nothing sent), two sessions in flight both replay
 *   kill the first worker and restart it at once with its cache dir: it rejoins, nothing is sent
 *   freeze the last worker (SIGSTOP): the heartbeat timeout finds it, the master takes its layers
 *
 * usage: test_failover STRATA_WORKER TMPDIR */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/curve.h"
#include "master/engine.h"
#include "master/pipeline.h"
#include "tools/genmodel.h"
#include "check.h"

#define N_GEN 64
#define N_PROMPT 112
#define KILL_AT 20   /* tokens generated before the fault */

static const char *worker_bin, *tmp;
static pid_t pids[3];
static int ports[3];
static const char *names[3] = {"fa", "fb", "fc"};


static void kill_all(void) {
    for (int i = 0; i < 3; i++)
        if (pids[i] > 0) {
            kill(pids[i], SIGKILL);
            waitpid(pids[i], NULL, 0);
            pids[i] = 0;
        }
}

static void on_alarm(int sig) {
    (void)sig;
    for (int i = 0; i < 3; i++)
        if (pids[i] > 0) kill(pids[i], SIGKILL);
    static const char msg[] = "test_failover: timed out\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(1);
}

static void start_worker(int i) {
    char listen[64], cache[512], logf[512], key[512];
    snprintf(listen, sizeof listen, "tcp://127.0.0.1:%d", ports[i]);
    snprintf(cache, sizeof cache, "%s/cache_%s", tmp, names[i]);
    snprintf(logf, sizeof logf, "%s/%s.log", tmp, names[i]);
    snprintf(key, sizeof key, "%s/cluster.key", tmp);
    int seen = check_count_lines(logf, "listening on");
    pid_t p = fork();
    if (p == 0) {
        FILE *f = freopen(logf, "a", stderr);
        (void)f;
        execl(worker_bin, worker_bin, "--listen", listen, "--name", names[i], "--cache-dir", cache, "--backend", "cpu",
              "--threads", "1", "--key", key, (char *)NULL);
        _exit(127);
    }
    pids[i] = p;
    /* listening once its log says so */
    for (int t = 0; t < 200 && check_count_lines(logf, "listening on") <= seen; t++) usleep(50000);
}

static void lcg_tokens(int32_t *ids, int n, uint32_t seed, int vocab) {
    for (int i = 0; i < n; i++) ids[i] = (int32_t)((seed = seed * 1103515245u + 12345u) % 2147483648u % (uint32_t)vocab);
}

static int32_t argmax(const float *x, int n) {
    int32_t b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

typedef void (*fault_fn)(void);

/* Greedy generation of N_GEN tokens for each of n_sessions prompts, interleaved token by token;
 * fault() runs once after KILL_AT tokens of every session. 0 or -1 (err says why). */
static int generate(engine *e, int n_sessions, int32_t prompts[][N_PROMPT], int32_t out[][N_GEN], fault_fn fault,
                    strata_err *err) {
    int vocab = e->cfg->vocab_size;
    float *logits = malloc(sizeof(float) * (size_t)vocab);
    int rc = -1;
    if (!logits) return err_set(err, "out of memory");
    for (int s = 0; s < n_sessions; s++) {
        if (e->ops->forward(e, (uint64_t)s + 1, prompts[s], N_PROMPT, logits, 0, err)) goto out;
        out[s][0] = argmax(logits, vocab);
    }
    for (int t = 1; t < N_GEN; t++) {
        if (t == KILL_AT && fault) fault();
        for (int s = 0; s < n_sessions; s++) {
            if (e->ops->forward(e, (uint64_t)s + 1, &out[s][t - 1], 1, logits, 0, err)) goto out;
            out[s][t] = argmax(logits, vocab);
        }
    }
    rc = 0;
out:
    free(logits);
    for (int s = 0; s < n_sessions; s++) e->ops->end_session(e, (uint64_t)s + 1);
    return rc;
}

static char model_dir[512], topo_path[512], key_path[512];

static engine *cluster_engine(int rejoin_ms, strata_err *err) {
    cluster_opts o;
    cluster_opts_default(&o);
    o.topology_path = topo_path;
    o.key_path = key_path;
    o.rejoin_ms = rejoin_ms;
    o.reply_timeout_ms = 60000;
    return engine_cluster_new(model_dir, "cpu", 1, 512, &o, err);
}

static void kill_b(void) { kill(pids[1], SIGKILL); waitpid(pids[1], NULL, 0); pids[1] = 0; }
static void kill_a_and_restart(void) { kill(pids[0], SIGKILL); waitpid(pids[0], NULL, 0); pids[0] = 0; start_worker(0); }
static void freeze_c(void) { kill(pids[2], SIGSTOP); }

static void run_case(const char *what, int n_sessions, int32_t prompts[][N_PROMPT], int32_t ref[][N_GEN], fault_fn fault,
                     int rejoin_ms, int want_rejoins) {
    strata_err err = {{0}};
    int32_t got[2][N_GEN];
    memset(got, 0, sizeof got);
    engine *e = cluster_engine(rejoin_ms, &err);
    CHECK(e != NULL, "%s: cluster engine: %s", what, err.msg);
    if (!e) return;
    cluster_stats before, after;
    engine_cluster_stats(e, &before);
    int rc = generate(e, n_sessions, prompts, got, fault, &err);
    CHECK(rc == 0, "%s: generation completes: %s", what, err.msg);
    for (int s = 0; s < n_sessions; s++)
        CHECK(!memcmp(got[s], ref[s], sizeof got[s]), "%s: session %d: the %d tokens equal the undisturbed run's", what, s + 1,
              N_GEN);
    engine_cluster_stats(e, &after);
    if (fault) {
        CHECK(after.failovers == 1, "%s: one failover (got %d)", what, after.failovers);
        CHECK(after.rejoins == want_rejoins, "%s: %d rejoin(s) (got %d)", what, want_rejoins, after.rejoins);
        CHECK(after.bundle_bytes_sent == before.bundle_bytes_sent, "%s: no bundle bytes re-sent (%llu then %llu)", what,
              (unsigned long long)before.bundle_bytes_sent, (unsigned long long)after.bundle_bytes_sent);
    }
    printf("     %s: failovers %d, rejoins %d, %.2f s recovering\n", what, after.failovers, after.rejoins, after.recover_s);
    engine_destroy(&e);
}

static void write_topology(void) {
    FILE *f = fopen(topo_path, "w");
    const char *layers[3] = {"0-1", "2-3", "4-5"};
    for (int i = 0; f && i < 3; i++)
        fprintf(f, "%s:\n  host: '127.0.0.1:%d'\n  layers: ['model.layers.%s']\n", names[i], ports[i], layers[i]);
    if (f) fclose(f);
}

int main(int argc, char **argv) {
    if (argc != 3) { fprintf(stderr, "usage: %s STRATA_WORKER TMPDIR\n", argv[0]); return 2; }
    worker_bin = argv[1], tmp = argv[2];
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", tmp, tmp);
    if (system(cmd)) return 2;
    signal(SIGALRM, on_alarm);
    alarm(300);
    signal(SIGPIPE, SIG_IGN);
    int base = 20000 + (int)(getpid() * 7 % 40000);
    for (int i = 0; i < 3; i++) ports[i] = base + i;
    snprintf(model_dir, sizeof model_dir, "%s/m6", tmp);
    snprintf(topo_path, sizeof topo_path, "%s/three.yml", tmp);
    snprintf(key_path, sizeof key_path, "%s/cluster.key", tmp);
    strata_err err = {{0}};
    gen_opts go;
    gen_opts_default(&go);
    go.shape = "tiny-qwen", go.n_layers = 6, go.seed = 7;
    if (gen_model(model_dir, &go, &err) || curve_keygen(key_path, NULL, &err)) { printf("setup: %s\n", err.msg); return 1; }
    write_topology();

    /* the undisturbed reference: the whole model here */
    engine *local = engine_local_new(model_dir, "cpu", 1, 512, &err);
    if (!local) { printf("engine_local: %s\n", err.msg); return 1; }
    int vocab = local->cfg->vocab_size;
    int32_t prompts[2][N_PROMPT], ref[2][N_GEN];
    lcg_tokens(prompts[0], N_PROMPT, 7, vocab);
    lcg_tokens(prompts[1], N_PROMPT, 1234, vocab);
    CHECK(!generate(local, 2, prompts, ref, NULL, &err), "reference generation: %s", err.msg);
    engine_destroy(&local);

    for (int i = 0; i < 3; i++) start_worker(i);
    run_case("no fault", 2, prompts, ref, NULL, 2000, 0);
    run_case("middle worker SIGKILLed, stays dead (2 sessions)", 2, prompts, ref, kill_b, 300, 0);
    start_worker(1);
    run_case("first worker SIGKILLed and restarted with its cache", 1, prompts, ref, kill_a_and_restart, 5000, 1);
    run_case("last worker frozen (SIGSTOP): heartbeat timeout", 1, prompts, ref, freeze_c, 0, 0);
    kill_all();
    /* a sanitizer build's workers report into their logs, which no one else reads */
    for (int i = 0; i < 3; i++) {
        char logf[512];
        snprintf(logf, sizeof logf, "%s/%s.log", tmp, names[i]);
        int bad = check_count_lines(logf, "Sanitizer") + check_count_lines(logf, "runtime error:");
        CHECK(bad == 0, "worker %s: no sanitizer report in its log (%d lines)", names[i], bad);
    }
    return TEST_END();
}
