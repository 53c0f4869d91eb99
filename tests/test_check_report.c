/* test_check_report: strata-check-report accepts a consistent validation report and rejects a
 * hand-edited one, each with the message that names what is wrong.
 *
 *   test_check_report CHECKER FIXTURE.json TMPDIR
 *
 * FIXTURE is a report written by scripts/validate-mac.sh --backend cpu (all gates PASS). Each case
 * loads it, edits it the way a person might (a PASS left over a failing figure, a field removed,
 * a wrong type), writes it to TMPDIR, runs the checker and compares its exit status and stderr
 * with what the case expects. */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

static const char *checker, *tmpdir;
static int passed, failed;

/* ---- the report's parts ---- */

static json_t *gate(json_t *r, const char *name) {
    size_t i;
    json_t *g;
    json_array_foreach(json_object_get(r, "gates"), i, g) if (!strcmp(json_string_value(json_object_get(g, "name")), name)) return g;
    return NULL;
}

static json_t *figures(json_t *r, const char *name) { return json_object_get(gate(r, name), "figures"); }

static void set_verdict(json_t *r, const char *name, const char *v) { json_object_set_new(gate(r, name), "verdict", json_string(v)); }

static json_t *first_run(json_t *r, const char *name) { return json_array_get(json_object_get(figures(r, name), "runs"), 0); }

static json_t *op_of(json_t *r, const char *op) {
    json_t *ops = json_object_get(json_array_get(json_object_get(figures(r, "kernels"), "backends"), 0), "ops");
    size_t i;
    json_t *o;
    json_array_foreach(ops, i, o) if (!strcmp(json_string_value(json_object_get(o, "op")), op)) return o;
    return NULL;
}

/* a different id in place of ids[k] */
static void bump_id(json_t *run, const char *key, size_t k) {
    json_t *a = json_object_get(run, key);
    json_array_set_new(a, k, json_integer(json_integer_value(json_array_get(a, k)) + 1));
}

/* ---- running the checker ---- */

static char *slurp(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return strdup("");
    static char buf[65536];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    return strdup(buf);
}

/* runs the checker with ARGS; returns its exit status, its stderr in *err (caller frees) */
static int run_checker(const char *args, char **err) {
    char cmd[4096], errpath[1024];
    snprintf(errpath, sizeof errpath, "%s/stderr.txt", tmpdir);
    snprintf(cmd, sizeof cmd, "'%s' %s > '%s/stdout.txt' 2> '%s'", checker, args, tmpdir, errpath);
    int st = system(cmd);
    *err = slurp(errpath);
    return st == -1 || !WIFEXITED(st) ? -1 : WEXITSTATUS(st);
}

static void expect(const char *name, int rc, int want_rc, const char *err, const char *want_msg) {
    if (rc == want_rc && (!want_msg || strstr(err, want_msg))) {
        printf("ok   %s\n", name);
        passed++;
    } else {
        printf("FAIL %s: exit %d (want %d), stderr:\n%s  (want a line containing \"%s\")\n", name, rc, want_rc, err,
               want_msg ? want_msg : "");
        failed++;
    }
}

/* writes R to TMPDIR/case.json and checks it: exit WANT_RC with WANT_MSG on stderr */
static void check_case(const char *name, json_t *r, int want_rc, const char *want_msg) {
    char path[1024], args[1100];
    snprintf(path, sizeof path, "%s/case.json", tmpdir);
    if (json_dump_file(r, path, JSON_INDENT(2))) {
        printf("FAIL %s: cannot write %s\n", name, path);
        failed++;
        return;
    }
    snprintf(args, sizeof args, "'%s'", path);
    char *err;
    int rc = run_checker(args, &err);
    expect(name, rc, want_rc, err, want_msg);
    free(err);
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    if (f) {
        fputs(text, f);
        fclose(f);
    }
}

/* ---- the cases: each edits a fresh copy of the fixture ---- */

typedef void (*edit_fn)(json_t *r);

/* hand-edited PASS over failing figures */
static void e_kernel_err(json_t *r) { json_object_set_new(op_of(r, "matmul"), "max_rel_err", json_real(0.02)); }
static void e_gen_ids(json_t *r) { bump_id(first_run(r, "generation"), "ids", 0); }
static void e_cluster_ids(json_t *r) {
    json_t *run = first_run(r, "cluster");
    bump_id(run, "ids", json_array_size(json_object_get(run, "ids")) - 1);
}
static void e_perf_zero(json_t *r) { json_object_set_new(figures(r, "performance"), "decode_tok_s", json_real(0)); }
static void e_overall(json_t *r) {
    /* the last run: the first is also the cluster gate's single-node reference */
    json_t *runs = json_object_get(figures(r, "generation"), "runs");
    bump_id(json_array_get(runs, json_array_size(runs) - 1), "ids", 1);
    set_verdict(r, "generation", "FAIL");
}
static void e_fail_honest(json_t *r) {
    e_overall(r);
    json_object_set_new(r, "verdict", json_string("FAIL"));
}
static void e_fail_gate_but_passes(json_t *r) { set_verdict(r, "kernels", "FAIL"); }

/* schema breaks */
static void e_schema(json_t *r) { json_object_set_new(r, "schema", json_string("strata-validate/2")); }
static void e_no_machine(json_t *r) { json_object_del(r, "machine"); }
static void e_mem_string(json_t *r) { json_object_set_new(json_object_get(r, "machine"), "memory_bytes", json_string("16 GB")); }
static void e_no_commit(json_t *r) { json_object_del(r, "commit"); }
static void e_mode(json_t *r) { json_object_set_new(r, "mode", json_string("fast")); }
static void e_no_gate(json_t *r) {
    json_t *gl = json_object_get(r, "gates");
    for (size_t i = 0; i < json_array_size(gl); i++)
        if (!strcmp(json_string_value(json_object_get(json_array_get(gl, i), "name")), "performance")) json_array_remove(gl, i);
}
static void e_maybe(json_t *r) { set_verdict(r, "cluster", "MAYBE"); }
static void e_no_op(json_t *r) {
    json_t *ops = json_object_get(json_array_get(json_object_get(figures(r, "kernels"), "backends"), 0), "ops");
    for (size_t i = 0; i < json_array_size(ops); i++)
        if (!strcmp(json_string_value(json_object_get(json_array_get(ops, i), "op")), "attention")) json_array_remove(ops, i);
}
static void e_neg_err(json_t *r) { json_object_set_new(op_of(r, "rope"), "max_rel_err", json_real(-1)); }
static void e_id_string(json_t *r) { json_array_set_new(json_object_get(first_run(r, "generation"), "ids"), 0, json_string("157")); }
static void e_ratio(json_t *r) { json_object_set_new(figures(r, "performance"), "matvec_bandwidth_ratio", json_real(0.5)); }
static void e_weight_gbs(json_t *r) {
    json_t *f = figures(r, "performance");
    json_object_set_new(f, "decode_weight_bytes", json_integer(100000000));
    json_object_set_new(f, "decode_weight_gb_s", json_real(999));
}
static void e_unknown_gate(json_t *r) {
    json_t *g = json_object();
    json_object_set_new(g, "name", json_string("vibes"));
    json_object_set_new(g, "verdict", json_string("PASS"));
    json_object_set_new(g, "figures", json_object());
    json_array_append_new(json_object_get(r, "gates"), g);
}
static void e_no_7b(json_t *r) {
    json_t *runs = json_object_get(figures(r, "generation"), "runs");
    for (size_t i = json_array_size(runs); i-- > 0;)
        if (!strcmp(json_string_value(json_object_get(json_array_get(runs, i), "shape")), "qwen2.5-7b")) json_array_remove(runs, i);
}
static void e_cluster_ref(json_t *r) {
    /* ids and reference_ids still agree, but neither is what single-node produced */
    json_t *run = first_run(r, "cluster");
    bump_id(run, "ids", 0);
    bump_id(run, "reference_ids", 0);
}
static void e_self_ref(json_t *r) { json_object_set_new(first_run(r, "generation"), "reference_backend", json_string("cpu")); }
static void e_other_backend(json_t *r) { json_object_set_new(r, "backend", json_string("metal")); }
static void e_one_worker(json_t *r) {
    json_t *ws = json_object_get(first_run(r, "cluster"), "workers");
    while (json_array_size(ws) > 1) json_array_remove(ws, 1);
}

static const struct {
    const char *name;
    edit_fn edit;
    int want_rc;
    const char *want_msg;
} cases[] = {
    {"kernels: matmul error 0.02 (tolerance 1e-3) left as PASS", e_kernel_err, 1, "gate 'kernels': says PASS but its figures give FAIL"},
    {"generation: one id changed, left as PASS", e_gen_ids, 1, "gate 'generation': says PASS but its figures give FAIL"},
    {"cluster: one id changed, left as PASS", e_cluster_ids, 1, "gate 'cluster': says PASS but its figures give FAIL"},
    {"performance: decode 0 tok/s left as PASS", e_perf_zero, 1, "gate 'performance': says PASS but its figures give FAIL"},
    {"overall PASS over a failing gate", e_overall, 1, "overall verdict PASS disagrees with its gates (FAIL)"},
    {"a passing gate marked FAIL", e_fail_gate_but_passes, 1, "gate 'kernels': says FAIL but its figures give PASS"},
    {"an honest FAIL report is accepted", e_fail_honest, 0, NULL},
    {"schema: another version", e_schema, 1, "schema 'strata-validate/2' is not strata-validate/1"},
    {"schema: no machine", e_no_machine, 1, "missing object 'machine'"},
    {"schema: memory as a string", e_mem_string, 1, "machine: missing number 'memory_bytes'"},
    {"schema: no commit", e_no_commit, 1, "report: missing string 'commit'"},
    {"schema: an unknown mode", e_mode, 1, "mode 'fast' is none of quick, default, full"},
    {"schema: a gate removed", e_no_gate, 1, "gate 'performance' is missing"},
    {"schema: verdict MAYBE", e_maybe, 1, "verdict 'MAYBE' is neither PASS nor FAIL"},
    {"schema: an op removed", e_no_op, 1, "op 'attention' is missing"},
    {"schema: a negative error", e_neg_err, 1, "op 'rope' has a negative error"},
    {"schema: an id as a string", e_id_string, 1, "'ids'[0] is not a token id"},
    {"schema: a ratio that is not matvec/bandwidth", e_ratio, 1, "does not equal matvec_gb_s / memory_gb_s"},
    {"schema: an unknown gate", e_unknown_gate, 1, "gate 'vibes': unknown gate"},
    {"performance: a decode bandwidth that is not bytes x tok/s", e_weight_gbs, 1, "decode_weight_gb_s 999 is not decode_weight_bytes x decode_tok_s"},
    {"generation: the 7b shape dropped", e_no_7b, 1, "no run of the generated shape 'qwen2.5-7b'"},
    {"cluster: reference ids not the single-node ones", e_cluster_ref, 1, "reference_ids are not the generation gate's single-node ids"},
    {"generation: a backend compared with itself", e_self_ref, 1, "compares backend 'cpu' with itself"},
    {"kernels: the backend under validation has no ops", e_other_backend, 1, "no ops of the backend under validation 'metal'"},
    {"cluster: one worker", e_one_worker, 1, "needs at least two workers"},
};

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: test_check_report CHECKER FIXTURE.json TMPDIR\n");
        return 2;
    }
    checker = argv[1], tmpdir = argv[3];
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "mkdir -p '%s'", tmpdir);
    if (system(cmd)) return 2;
    json_error_t jerr;
    json_t *fixture = json_load_file(argv[2], 0, &jerr);
    if (!fixture) {
        fprintf(stderr, "test_check_report: %s: %s\n", argv[2], jerr.text);
        return 1;
    }

    /* the fixture itself, and its summary */
    char args[4096], path[1024], md[1024];
    char *err;
    snprintf(path, sizeof path, "%s/report.json", tmpdir);
    snprintf(md, sizeof md, "%s/summary.md", tmpdir);
    json_dump_file(fixture, path, JSON_INDENT(2));
    snprintf(args, sizeof args, "'%s'", path);
    int rc = run_checker(args, &err);
    expect("the fixture is accepted", rc, 0, err, NULL);
    free(err);
    snprintf(args, sizeof args, "'%s' --write-markdown '%s'", path, md);
    rc = run_checker(args, &err);
    expect("its summary is written", rc, 0, err, NULL);
    free(err);
    snprintf(args, sizeof args, "'%s' --markdown '%s'", path, md);
    rc = run_checker(args, &err);
    expect("its summary matches it", rc, 0, err, NULL);
    free(err);
    char *text = slurp(md);
    char *verdict = strstr(text, "| generation | PASS |");
    if (verdict) memcpy(verdict, "| generation | FAIL |", 20);
    write_text(md, text);
    free(text);
    rc = run_checker(args, &err);
    expect("a hand-edited summary is rejected", rc, 1, err, "is not the summary of");
    free(err);

    /* a gate's figures alone, as the script asks for its verdicts */
    snprintf(path, sizeof path, "%s/figures.json", tmpdir);
    json_t *copy = json_deep_copy(fixture);
    json_dump_file(figures(copy, "kernels"), path, 0);
    snprintf(args, sizeof args, "--gate kernels '%s' --backend cpu", path);
    rc = run_checker(args, &err);
    text = slurp(strcat(strcpy(md, tmpdir), "/stdout.txt"));
    expect("--gate kernels prints PASS", rc == 0 && !strcmp(text, "PASS\n") ? 0 : 1, 0, err, NULL);
    free(text), free(err);
    e_kernel_err(copy);
    json_dump_file(figures(copy, "kernels"), path, 0);
    rc = run_checker(args, &err);
    text = slurp(md);
    expect("--gate kernels prints FAIL for a failing error", rc == 0 && !strcmp(text, "FAIL\n") ? 0 : 1, 0, err, NULL);
    free(text), free(err);
    json_decref(copy);

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        json_t *r = json_deep_copy(fixture);
        cases[i].edit(r);
        check_case(cases[i].name, r, cases[i].want_rc, cases[i].want_msg);
        json_decref(r);
    }

    /* bytes a person might leave behind */
    snprintf(path, sizeof path, "%s/case.json", tmpdir);
    char *dump = json_dumps(fixture, 0);
    size_t n = strlen(dump);
    char *dup = malloc(n + 32);
    snprintf(dup, n + 32, "{\"verdict\": \"PASS\", %s", dump + 1);
    write_text(path, dup);
    snprintf(args, sizeof args, "'%s'", path);
    rc = run_checker(args, &err);
    expect("a duplicated key is rejected", rc, 1, err, "duplicate object key");
    free(err);
    dump[n / 2] = 0;
    write_text(path, dump);
    rc = run_checker(args, &err);
    expect("a truncated report is rejected", rc, 1, err, "invalid JSON");
    free(err), free(dup), free(dump);
    rc = run_checker("--gate kernels", &err);
    expect("bad usage exits 2", rc, 2, err, "usage:");
    free(err);

    json_decref(fixture);
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
