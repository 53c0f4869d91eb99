/* `strata-master --serve`: the command line of the HTTP server (main.c hands over when it sees
 * --serve). Model, backend and cluster flags are the CLI's; the rest are the server's. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "master/cluster_cli.h"
#include "master/http.h"

void http_cli_usage(FILE *f) {
    fprintf(f,
            "usage: strata-master --model DIR --serve [--topology FILE] [options]\n"
            "  --host ADDR              listen address (default 127.0.0.1)\n"
            "  --port N                 listen port (default 8080; 0: any free port, printed)\n"
            "  --parallel N             requests generating at once (default 4)\n"
            "  --queue N                requests waiting beyond those; more get 429 (default 16)\n"
            "  --max-connections N      open connections at most (default 64)\n"
            "  -n, --max-tokens N       a request's max_tokens when it names none (default 512)\n"
            "  --spec-k K               speculative decoding: draft K tokens by prompt lookup (default 0: off)\n"
            "  --draft ngram            the drafter (prompt lookup; the only one)\n"
            "  --model-name NAME        the model id clients use (default: the model directory's name)\n"
            "  --backend NAME, -t/--threads N, -c/--ctx N   as without --serve\n");
    cluster_cli_usage(f);
}

static int parse_int(const char *flag, const char *v, long lo, long hi, int *out) {
    char *end;
    errno = 0;
    long x = v ? strtol(v, &end, 10) : 0;
    if (!v || !*v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "strata-master: %s: '%s' is not an integer in [%ld, %ld]\n", flag, v ? v : "", lo, hi);
        return -1;
    }
    *out = (int)x;
    return 0;
}

int http_main(int argc, char **argv) {
    const char *model_dir = NULL, *backend_name = "cpu";
    int threads = 0;
    http_opts ho;
    http_opts_default(&ho);
    cluster_opts co;
    cluster_opts_default(&co);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { http_cli_usage(stdout); return 0; }
        if (!strcmp(a, "--serve")) continue;
        int used = cluster_cli_option(&co, a, v);
        if (used < 0) return 2;
        if (used) { i += used - 1; continue; }
        if (!v) { fprintf(stderr, "strata-master: %s: missing value or unknown flag (see --serve --help)\n", a); return 2; }
        int bad = 0;
        if (!strcmp(a, "--model") || !strcmp(a, "-m")) model_dir = v;
        else if (!strcmp(a, "--backend")) backend_name = v;
        else if (!strcmp(a, "--host")) ho.host = v;
        else if (!strcmp(a, "--model-name")) ho.model_id = v;
        else if (!strcmp(a, "--port")) bad = parse_int(a, v, 0, 65535, &ho.port);
        else if (!strcmp(a, "--parallel")) bad = parse_int(a, v, 1, 1024, &ho.max_active);
        else if (!strcmp(a, "--queue")) bad = parse_int(a, v, 0, 1 << 20, &ho.max_queue);
        else if (!strcmp(a, "--max-connections")) bad = parse_int(a, v, 1, 1 << 16, &ho.max_connections);
        else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) bad = parse_int(a, v, 1, 1 << 24, &ho.default_max_tokens);
        else if (!strcmp(a, "--spec-k")) bad = parse_int(a, v, 0, 64, &ho.spec_k);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) bad = parse_int(a, v, 0, 1024, &threads);
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) bad = parse_int(a, v, 2, 1 << 24, &ho.ctx_len);
        else if (!strcmp(a, "--draft")) {
            if (strcmp(v, "ngram")) { fprintf(stderr, "strata-master: --draft: only 'ngram' (prompt lookup) exists\n"); return 2; }
        } else { fprintf(stderr, "strata-master: unknown option '%s' with --serve (see --serve --help)\n", a); return 2; }
        if (bad) return 2;
        i++;
    }
    if (!model_dir) { fprintf(stderr, "strata-master: --serve needs --model DIR\n"); return 2; }
    strata_err err = {{0}};
    engine *e = cluster_cli_engine(&co, model_dir, backend_name, threads, ho.ctx_len, &err);
    if (!e) {
        fprintf(stderr, "strata-master: %s\n", err.msg);
        return 1;
    }
    if (ho.ctx_len > e->cfg->max_seq_len) ho.ctx_len = e->cfg->max_seq_len;
    int rc = http_serve(e, model_dir, &ho, &err);
    if (rc) fprintf(stderr, "strata-master: %s\n", err.msg);
    cluster_cli_report(e);
    engine_destroy(&e);
    return rc ? 1 : 0;
}
