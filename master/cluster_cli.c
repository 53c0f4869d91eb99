#include "master/cluster_cli.h"

#include <stdlib.h>
#include <string.h>

#include "common/curve.h"

#ifdef STRATA_HAVE_DISCOVERY
#include "master/discover.h"
#endif

static int parse_pos(const char *flag, const char *v, long max, long *out) {
    char *end;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || x < 1 || x > max) {
        fprintf(stderr, "strata-master: %s: expected an integer in [1, %ld], got '%s'\n", flag, max, v ? v : "");
        return -1;
    }
    *out = x;
    return 0;
}

int cluster_cli_option(cluster_opts *o, const char *flag, const char *value) {
    long x;
    if (!strcmp(flag, "--strict-topology")) { o->strict = 1; return 1; }
    if (!strcmp(flag, "--topology")) {
        if (!value) { fprintf(stderr, "strata-master: --topology needs a file\n"); return -1; }
        o->topology_path = value;
        return 2;
    }
    if (!strcmp(flag, "--connect-timeout-ms")) {
        if (parse_pos(flag, value, 3600000, &x)) return -1;
        o->connect_timeout_ms = (int)x;
        return 2;
    }
    if (!strcmp(flag, "--reply-timeout-ms")) {
        if (parse_pos(flag, value, 86400000, &x)) return -1;
        o->reply_timeout_ms = (int)x;
        return 2;
    }
    if (!strcmp(flag, "--dry-run")) { o->dry_run = 1; return 1; }
    if (!strcmp(flag, "--local")) { o->local_only = 1; return 1; }
    if (!strcmp(flag, "--keep-layers")) { o->keep_layers = 1; return 1; }
    if (!strcmp(flag, "--discover-seconds")) {
        char *end;
        double sec = value ? strtod(value, &end) : 0;
        if (!value || !*value || *end || !(sec == 0 || (sec >= 0.1 && sec <= 600))) {
            fprintf(stderr, "strata-master: --discover-seconds: expected 0 (no discovery) or seconds in [0.1, 600], "
                            "got '%s'\n", value ? value : "");
            return -1;
        }
        o->discover_ms = (int)(sec * 1000 + 0.5);
        if (sec == 0) o->local_only = 1; /* browsing for no time is not browsing */
        return 2;
    }
    if (!strcmp(flag, "--min-workers")) {
        if (parse_pos(flag, value, 1024, &x)) return -1;
        o->min_workers = (int)x;
        return 2;
    }
    if (!strcmp(flag, "--discovery")) {
        if (!value || (strcmp(value, "avahi") && strcmp(value, "dnssd"))) {
            fprintf(stderr, "strata-master: --discovery: expected avahi or dnssd, got '%s'\n", value ? value : "");
            return -1;
        }
        o->discovery = value;
        return 2;
    }
    if (!strcmp(flag, "--insecure")) { o->insecure = 1; return 1; }
    if (!strcmp(flag, "--key")) {
        if (!value) { fprintf(stderr, "strata-master: --key needs a file (make one with: strata-master keygen --out FILE)\n"); return -1; }
        o->key_path = value;
        return 2;
    }
    if (!strcmp(flag, "--rejoin-ms")) {
        if (!value || !strcmp(value, "0")) { o->rejoin_ms = 0; return value ? 2 : -1; }
        if (parse_pos(flag, value, 3600000, &x)) return -1;
        o->rejoin_ms = (int)x;
        return 2;
    }
    if (!strcmp(flag, "--chunk-kb")) {
        if (parse_pos(flag, value, 16384, &x)) return -1;
        o->chunk_bytes = (uint32_t)x << 10;
        return 2;
    }
    return 0;
}

void cluster_cli_usage(FILE *f) {
    fprintf(f,
            "cluster:\n"
            "  --topology FILE          split the model over the workers named in FILE (topology.yml)\n"
            "  --strict-topology        every layer must be on a worker (else: unassigned layers run here)\n"
            "  --connect-timeout-ms N   workers must answer hello within N ms (default 5000)\n"
            "  --reply-timeout-ms N     a worker's result must come within N ms (default 120000)\n"
            "  --chunk-kb N             bundle chunk size (default 1024)\n"
            "  --key FILE               the cluster key (CurveZMQ; default $STRATA_KEY); make one with\n"
            "                           `strata-master keygen --out FILE` and copy it to every worker\n"
            "  --insecure               no CurveZMQ: no encryption, no authentication (trusted LAN only)\n"
            "  --rejoin-ms N            a lost worker may come back within N ms before the master takes its\n"
            "                           layers (default 2000; 0: take them at once)\n"
            "  (no --topology: workers are found over mDNS, _strata._tcp, and the layers planned automatically)\n"
            "  --discover-seconds S     browse this long (default 3; 0: no discovery, as --local)\n"
            "  --min-workers N          wait (up to 10 s, or S if longer) for N workers, else fail\n"
            "  --discovery avahi|dnssd  mDNS implementation (default: the first built in)\n"
            "  --keep-layers            the master takes a share of the layers too\n"
            "  --local                  no discovery, no cluster: the whole model on this machine\n"
            "  --dry-run                print the plan (and the topology.yml it amounts to) and exit\n");
}

engine *cluster_cli_engine(const cluster_opts *o, const char *model_dir, const char *backend_name, int n_threads,
                           int ctx_len, strata_err *err) {
    if (o->local_only && (o->topology_path || o->min_workers > 0)) {
        err_set(err, "--local (or --discover-seconds 0) runs the whole model here: it excludes %s",
                o->topology_path ? "--topology" : "--min-workers");
        return NULL;
    }
    if (o->dry_run && o->local_only) {
        printf("plan: the whole model on the master (--local)\n");
        exit(0);
    }
#ifdef STRATA_HAVE_DISCOVERY
    /* a dry run prints the plan and that is the whole output: nothing for main() to run */
    if (o->dry_run && o->topology_path) {
        if (discover_dry_run_topology(o, model_dir, err)) return NULL;
        exit(0);
    }
    if (!o->topology_path && !o->local_only) {
        int dry_run_done = 0;
        engine *e = discover_engine(o, model_dir, backend_name, n_threads, ctx_len, &dry_run_done, err);
        if (dry_run_done) exit(0);
        return e;
    }
#else
    if (!o->topology_path && !o->local_only && (o->min_workers > 0 || o->dry_run || o->discovery)) {
        err_set(err, "this program is built without mDNS discovery (no libavahi-client or dns_sd found): name the "
                     "workers with --topology FILE, or run here with --local");
        return NULL;
    }
#endif
    if (!o->topology_path) return engine_local_new(model_dir, backend_name, n_threads, ctx_len, err);
    return engine_cluster_new(model_dir, backend_name, n_threads, ctx_len, o, err);
}

void cluster_cli_report(const engine *e) {
    cluster_stats s;
    if (engine_cluster_stats(e, &s)) return;
    fprintf(stderr, "cluster: %d workers, setup %.2f s, bundle bytes sent %llu of %llu\n", s.n_workers, s.setup_s,
            (unsigned long long)s.bundle_bytes_sent, (unsigned long long)s.bundle_bytes_total);
    if (s.failovers)
        fprintf(stderr, "cluster: failover: %d worker(s) lost, %d rejoined, %.2f s re-planning and replaying\n", s.failovers,
                s.rejoins, s.recover_s);
    static const char *what[2] = {"prefill", "decode"};
    for (int k = 0; k < 2; k++) {
        if (!s.runs[k] || !s.hops) continue;
        double over = s.chain_wall_s[k] - s.chain_compute_s[k];
        fprintf(stderr, "cluster: %s: %llu chain runs, %llu tokens, %d hops a run: %.1f ms wall, %.1f ms worker compute, "
                        "hop overhead %.1f us per token per hop\n", what[k], (unsigned long long)s.runs[k],
                (unsigned long long)s.tokens[k], s.hops, s.chain_wall_s[k] * 1e3, s.chain_compute_s[k] * 1e3,
                over / (double)s.tokens[k] / s.hops * 1e6);
    }
}

int cluster_cli_command(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "keygen")) return -1;
    const char *out = NULL;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--out") && i + 1 < argc) out = argv[++i];
        else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) out = NULL, i = argc;
        else { fprintf(stderr, "strata-master keygen: unknown argument '%s'\n", argv[i]); return 2; }
    }
    if (!out) {
        fprintf(stderr, "usage: strata-master keygen --out FILE\n"
                        "  writes a new cluster key pair (CurveZMQ) to FILE (mode 0600) and its public half to FILE.pub;\n"
                        "  copy FILE to the master and every worker and pass --key FILE (or set $STRATA_KEY)\n");
        return 2;
    }
    strata_err err = {{0}};
    curve_key k;
    if (curve_keygen(out, &k, &err)) { fprintf(stderr, "strata-master keygen: %s\n", err.msg); return 1; }
    char fp[KEY_FINGERPRINT_BYTES];
    printf("%s: cluster key, fingerprint %s (public half in %s.pub)\n", out, key_fingerprint(k.public_z85, fp), out);
    return 0;
}
