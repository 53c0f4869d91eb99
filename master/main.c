/* strata-master: runs a model on this machine (and, with workers, across the cluster). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "master/cluster_cli.h"
#include "master/engine.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: strata-master --model DIR --tokens ID,ID,... [options]\n"
            "  -n, --max-tokens N   tokens to generate (default 32)\n"
            "  --backend NAME       cpu (default), cpu-ref, metal, cuda\n"
            "  -t, --threads N      CPU threads (default: all cores)\n"
            "  -c, --ctx N          context length (default 4096)\n");
    cluster_cli_usage(f);
}

/* "1,2,3" -> ids; returns -1 on anything that is not a comma-separated list of integers */
static int parse_ids(const char *s, int32_t **ids, int *n) {
    int cap = 16;
    *n = 0;
    *ids = malloc(sizeof **ids * (size_t)cap);
    if (!*ids) return -1;
    while (*s) {
        char *end;
        long v = strtol(s, &end, 10);
        if (end == s || v < 0 || v > 0x7fffffff) return -1;
        if (*n == cap) {
            int32_t *g = realloc(*ids, sizeof **ids * (size_t)(cap *= 2));
            if (!g) return -1;
            *ids = g;
        }
        (*ids)[(*n)++] = (int32_t)v;
        s = end;
        if (*s == ',') s++;
        else if (*s) return -1;
    }
    return *n > 0 ? 0 : -1;
}

static int32_t argmax(const float *x, int n) {
    int32_t best = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return best;
}

int main(int argc, char **argv) {
    const char *model_dir = NULL, *tokens = NULL, *backend_name = "cpu";
    int max_tokens = 32, threads = 0, ctx = 4096;
    cluster_opts copts;
    cluster_opts_default(&copts);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 0; }
        int used = cluster_cli_option(&copts, a, v);
        if (used < 0) return 2;
        if (used) { i += used - 1; continue; }
        if (!v) { fprintf(stderr, "strata-master: %s: missing value or unknown flag\n", a); return 2; }
        if (!strcmp(a, "--model") || !strcmp(a, "-m")) model_dir = v;
        else if (!strcmp(a, "--tokens")) tokens = v;
        else if (!strcmp(a, "--backend")) backend_name = v;
        else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) max_tokens = atoi(v);
        else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) threads = atoi(v);
        else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) ctx = atoi(v);
        else { fprintf(stderr, "strata-master: unknown option '%s' (see --help)\n", a); return 2; }
        i++;
    }
    if (!model_dir || !tokens) { usage(stderr); return 2; }
    if (max_tokens < 0 || ctx <= 0) { fprintf(stderr, "strata-master: --max-tokens and --ctx must be positive\n"); return 2; }
    int32_t *ids = NULL;
    int n_ids = 0;
    if (parse_ids(tokens, &ids, &n_ids)) {
        fprintf(stderr, "strata-master: --tokens: expected comma-separated token ids, got '%s'\n", tokens);
        free(ids);
        return 2;
    }
    strata_err err = {{0}};
    engine *e = cluster_cli_engine(&copts, model_dir, backend_name, threads, ctx, &err);
    if (!e) {
        fprintf(stderr, "strata-master: %s\n", err.msg);
        free(ids);
        return 1;
    }
    int vocab = e->cfg->vocab_size, rc = 0;
    float *logits = malloc(sizeof(float) * (size_t)vocab);
    double t0 = now_s();
    if (!logits || e->ops->forward(e, 1, ids, n_ids, logits, 0, &err)) { rc = 1; goto out; }
    double t1 = now_s();
    int generated = 0;
    for (; generated < max_tokens; generated++) {
        int32_t tok = argmax(logits, vocab);
        printf("%s%d", generated ? "," : "", tok);
        fflush(stdout);
        if (generated + 1 < max_tokens && e->ops->forward(e, 1, &tok, 1, logits, 0, &err)) { rc = 1; goto out; }
    }
    double t2 = now_s();
    printf("\n");
    fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tok/s)\n", n_ids, t1 - t0, n_ids / (t1 - t0));
    if (generated > 1)
        fprintf(stderr, "decode: %d tokens in %.3f s (%.1f tok/s)\n", generated - 1, t2 - t1, (generated - 1) / (t2 - t1));
    cluster_cli_report(e);
out:
    if (rc) fprintf(stderr, "strata-master: %s\n", err.msg);
    free(logits);
    free(ids);
    engine_destroy(&e);
    return rc;
}
