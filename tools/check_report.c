/* strata-check-report: validates a validation report (scripts/validate-mac.sh writes one) and
 * recomputes every verdict from the report's own figures, so a hand-edited PASS is caught.
 *
 * usage: strata-check-report REPORT.json
 * exit 0: schema valid and every stated verdict equals the recomputed one (the report may still
 *         say FAIL: that is a valid report of a failure); exit 1: invalid or inconsistent. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#define KERNEL_TOL 1e-3      /* max relative error of a kernel against the cpu reference */
#define RATIO_SLACK 0.01     /* a stated ratio may differ from the recomputed one by 1% */

static int problems;

static void problem(const char *fmt, const char *a, const char *b) {
    fprintf(stderr, "strata-check-report: ");
    fprintf(stderr, fmt, a, b);
    fprintf(stderr, "\n");
    problems++;
}

static const char *str(json_t *o, const char *key, const char *where) {
    json_t *v = json_object_get(o, key);
    if (!json_is_string(v)) { problem("%s: missing string '%s'", where, key); return NULL; }
    return json_string_value(v);
}

static int num(json_t *o, const char *key, const char *where, double *out) {
    json_t *v = json_object_get(o, key);
    if (!json_is_number(v)) { problem("%s: missing number '%s'", where, key); return -1; }
    *out = json_number_value(v);
    if (!isfinite(*out)) { problem("%s: '%s' is not finite", where, key); return -1; }
    return 0;
}

/* two non-empty arrays of integers, equal */
static int same_ids(json_t *a, json_t *b) {
    if (!json_is_array(a) || !json_is_array(b) || json_array_size(a) == 0) return 0;
    return json_equal(a, b);
}

/* PASS iff every op's max_rel_err < KERNEL_TOL, and there is at least one op */
static const char *kernels_verdict(json_t *fig, const char *where) {
    json_t *ops = json_object_get(fig, "ops");
    if (!json_is_array(ops) || json_array_size(ops) == 0) { problem("%s: 'ops' must be a non-empty array", where, ""); return NULL; }
    int pass = 1;
    size_t i;
    json_t *op;
    json_array_foreach(ops, i, op) {
        double e;
        if (!str(op, "op", where) || num(op, "max_rel_err", where, &e)) return NULL;
        if (!(e < KERNEL_TOL)) pass = 0;
    }
    return pass ? "PASS" : "FAIL";
}

/* PASS iff for every run the backend's ids equal the reference ids */
static const char *ids_verdict(json_t *fig, const char *where) {
    json_t *runs = json_object_get(fig, "runs");
    if (!json_is_array(runs) || json_array_size(runs) == 0) { problem("%s: 'runs' must be a non-empty array", where, ""); return NULL; }
    int pass = 1;
    size_t i;
    json_t *r;
    json_array_foreach(runs, i, r) {
        if (!str(r, "model", where)) return NULL;
        json_t *got = json_object_get(r, "ids"), *ref = json_object_get(r, "reference_ids");
        if (!json_is_array(got) || !json_is_array(ref)) { problem("%s: a run lacks 'ids' or 'reference_ids'", where, ""); return NULL; }
        if (!same_ids(got, ref)) pass = 0;
    }
    return pass ? "PASS" : "FAIL";
}

/* PASS iff the figures are positive and the stated bandwidth ratio is the recomputed one */
static const char *perf_verdict(json_t *fig, const char *where) {
    double dec, pre, gbs, bw, ratio;
    if (num(fig, "decode_tok_s", where, &dec) || num(fig, "prefill_tok_s", where, &pre) ||
        num(fig, "matvec_gb_s", where, &gbs) || num(fig, "memory_gb_s", where, &bw) ||
        num(fig, "matvec_bandwidth_ratio", where, &ratio))
        return NULL;
    if (dec <= 0 || pre <= 0 || gbs <= 0 || bw <= 0) return "FAIL";
    if (fabs(ratio - gbs / bw) > RATIO_SLACK * (gbs / bw)) {
        problem("%s: matvec_bandwidth_ratio does not equal matvec_gb_s / memory_gb_s%s", where, "");
        return NULL;
    }
    return "PASS";
}

int main(int argc, char **argv) {
    if (argc != 2) { fprintf(stderr, "usage: strata-check-report REPORT.json\n"); return 2; }
    json_error_t jerr;
    json_t *root = json_load_file(argv[1], JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        fprintf(stderr, "strata-check-report: %s: invalid JSON at line %d: %s\n", argv[1], jerr.line, jerr.text);
        return 1;
    }
    const char *schema = str(root, "schema", "report");
    if (schema && strcmp(schema, "strata-validate/1")) problem("report: schema '%s' is not %s", schema, "strata-validate/1");
    json_t *machine = json_object_get(root, "machine");
    if (!json_is_object(machine)) problem("report: missing object '%s'%s", "machine", "");
    else {
        const char *keys[] = {"model", "chip", "os"};
        double mem;
        for (int i = 0; i < 3; i++) str(machine, keys[i], "machine");
        num(machine, "memory_bytes", "machine", &mem);
    }
    str(root, "commit", "report");
    str(root, "backend", "report");
    json_t *gates = json_object_get(root, "gates");
    static const struct { const char *name; const char *(*verdict)(json_t *, const char *); } kinds[] = {
        {"kernels", kernels_verdict}, {"generation", ids_verdict}, {"cluster", ids_verdict}, {"performance", perf_verdict},
    };
    int all_pass = 1, seen[4] = {0};
    if (!json_is_array(gates)) problem("report: missing array '%s'%s", "gates", "");
    size_t i;
    json_t *g;
    json_array_foreach(gates, i, g) {
        const char *name = str(g, "name", "gate"), *stated = str(g, "verdict", "gate");
        if (!name || !stated) continue;
        int k = -1;
        for (int j = 0; j < 4; j++) if (!strcmp(kinds[j].name, name)) k = j;
        if (k < 0) { problem("gate '%s': unknown gate%s", name, ""); continue; }
        if (seen[k]++) problem("gate '%s': appears twice%s", name, "");
        json_t *fig = json_object_get(g, "figures");
        if (!json_is_object(fig)) { problem("gate '%s': missing 'figures'%s", name, ""); continue; }
        const char *recomputed = kinds[k].verdict(fig, name);
        if (!recomputed) continue;
        if (strcmp(stated, recomputed)) problem("gate '%s': says %s but its figures give the other verdict", name, stated);
        if (strcmp(recomputed, "PASS")) all_pass = 0;
    }
    for (int j = 0; j < 4; j++)
        if (!seen[j]) problem("report: gate '%s' is missing%s", kinds[j].name, "");
    const char *overall = str(root, "verdict", "report");
    if (overall && strcmp(overall, all_pass ? "PASS" : "FAIL"))
        problem("report: overall verdict %s disagrees with its gates%s", overall, "");
    json_decref(root);
    if (problems) return 1;
    printf("strata-check-report: %s is consistent (overall %s)\n", argv[1], all_pass ? "PASS" : "FAIL");
    return 0;
}
