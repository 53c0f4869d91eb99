#include "master/cluster_cli.h"

#include <stdlib.h>
#include <string.h>

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
            "  --chunk-kb N             bundle chunk size (default 1024)\n");
}

engine *cluster_cli_engine(const cluster_opts *o, const char *model_dir, const char *backend_name, int n_threads,
                           int ctx_len, strata_err *err) {
    if (!o->topology_path) return engine_local_new(model_dir, backend_name, n_threads, ctx_len, err);
    return engine_cluster_new(model_dir, backend_name, n_threads, ctx_len, o, err);
}

void cluster_cli_report(const engine *e) {
    cluster_stats s;
    if (engine_cluster_stats(e, &s)) return;
    fprintf(stderr, "cluster: %d workers, setup %.2f s, bundle bytes sent %llu of %llu\n", s.n_workers, s.setup_s,
            (unsigned long long)s.bundle_bytes_sent, (unsigned long long)s.bundle_bytes_total);
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
