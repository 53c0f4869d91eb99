/* Logits parity with Hugging Face transformers: each case of fixtures/parity/cases.json is
 * generated with strata-gen's library, run through the forward pass (prefill, then one token at a
 * time), and compared row by row with the stored transformers logits:
 * max|strata - hf| / max|hf| < 1e-3 for every position. The same model is also run split into two
 * parts (layers [0, L/2) with the embedding, then [L/2, L) with the head, activations handed over)
 * as the cluster will run it.
 *
 * usage: test_parity FIXTURE_DIR TMP_DIR [backend]      (backend: cpu-ref (default), cpu, ...)
 *        test_parity FIXTURE_DIR TMP_DIR --gen-only     (write the models for the reference script) */
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "common/forward.h"
#include "tools/genmodel.h"

#define TOL 1e-3

static float *read_f32(const char *path, size_t n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    float *x = malloc(n * sizeof *x);
    size_t got = x ? fread(x, sizeof *x, n, f) : 0;
    int extra = fgetc(f) != EOF;
    fclose(f);
    if (got != n || extra) { free(x); return NULL; }
    return x;
}

static double row_rel_err(const float *a, const float *ref, int n) {
    double mx = 0, d = 0;
    for (int i = 0; i < n; i++) {
        if (fabs(ref[i]) > mx) mx = fabs(ref[i]);
        if (fabs((double)a[i] - ref[i]) > d) d = fabs((double)a[i] - ref[i]);
    }
    return d / (mx > 0 ? mx : 1);
}

/* Runs parts in order over the tokens: prefill n_prefill, then one at a time; fills logits [n, vocab]. */
static int run_parts(model **parts, int n_parts, const int32_t *ids, int n, int n_prefill, float *logits,
                     strata_err *err) {
    const model_config *c = &parts[0]->cfg;
    kv_cache *kv[2] = {0};
    fwd_state *fs[2] = {0};
    float *x = malloc(sizeof(float) * (size_t)n * c->hidden_dim);
    int rc = x ? 0 : err_set(err, "out of memory");
    for (int p = 0; p < n_parts && !rc; p++)
        if (!(kv[p] = kv_new(parts[p], 64, err)) || !(fs[p] = fwd_new(parts[p], 4, err))) rc = -1;
    for (int at = 0; at < n && !rc;) {
        int k = at == 0 ? n_prefill : 1;
        for (int p = 0; p < n_parts && !rc; p++)
            rc = fwd_run(fs[p], kv[p], p == 0 ? ids + at : NULL, p == 0 ? NULL : x, k, x,
                         logits + (size_t)at * c->vocab_size, 1, err);
        at += k;
    }
    for (int p = 0; p < n_parts; p++) { kv_free(&kv[p]); fwd_free(&fs[p]); }
    free(x);
    return rc;
}

static void run_case(json_t *cs, const char *fixtures, const char *tmp, const char *backend_name, int gen_only) {
    const char *name = json_string_value(json_object_get(cs, "name"));
    gen_opts o;
    gen_opts_default(&o);
    o.shape = json_string_value(json_object_get(cs, "shape"));
    o.seed = (uint64_t)json_integer_value(json_object_get(cs, "seed"));
    o.bits = (int)json_integer_value(json_object_get(cs, "bits"));
    o.group_size = (int)json_integer_value(json_object_get(cs, "group"));
    const char *dt = json_string_value(json_object_get(cs, "dtype"));
    o.float_dtype = !strcmp(dt, "bf16") ? BK_BF16 : !strcmp(dt, "f32") ? BK_F32 : BK_F16;
    o.tied = (int)json_integer_value(json_object_get(cs, "tied"));
    o.shards = (int)json_integer_value(json_object_get(cs, "shards"));
    o.mixed = (int)json_integer_value(json_object_get(cs, "mixed"));
    char dir[4096], path[4096];
    snprintf(dir, sizeof dir, "%s/%s", tmp, name);
    strata_err err = {{0}};
    int ok = gen_model(dir, &o, &err) == 0;
    CHECK(ok, "%s: generate: %s", name, err.msg);
    if (!ok || gen_only) return;

    json_t *toks = json_object_get(cs, "tokens");
    int n = (int)json_array_size(toks), n_prefill = (int)json_integer_value(json_object_get(cs, "n_prefill"));
    int32_t ids[64];
    for (int i = 0; i < n && i < 64; i++) ids[i] = (int32_t)json_integer_value(json_array_get(toks, (size_t)i));

    model_config cfg;
    st_model *st = NULL;
    backend *be = NULL;
    model *parts[3] = {0};
    float *ref = NULL, *got = NULL;
    if (config_load(dir, &cfg, &err) || !(st = st_model_open(dir, &err)) ||
        !(be = backend_new(backend_name, 0, &err))) {
        CHECK(0, "%s: load: %s", name, err.msg);
        goto out;
    }
    snprintf(path, sizeof path, "%s/%s.f32", fixtures, name);
    ref = read_f32(path, (size_t)n * cfg.vocab_size);
    got = calloc((size_t)n * cfg.vocab_size, sizeof *got);
    CHECK(ref != NULL, "%s: fixture %s missing or of the wrong size", name, path);
    if (!ref || !got) goto out;

    model_part whole = {0, cfg.n_layers, 1, 1};
    model_part front = {0, cfg.n_layers / 2, 1, 0}, back = {cfg.n_layers / 2, cfg.n_layers, 0, 1};
    parts[0] = model_load(st, &cfg, &whole, be, &err);
    CHECK(parts[0] != NULL, "%s: model_load: %s", name, err.msg);
    if (!parts[0]) goto out;
    int rc = run_parts(parts, 1, ids, n, n_prefill, got, &err);
    CHECK(rc == 0, "%s: forward: %s", name, err.msg);
    double worst = 0;
    for (int t = 0; t < n && !rc; t++) {
        double e = row_rel_err(got + (size_t)t * cfg.vocab_size, ref + (size_t)t * cfg.vocab_size, cfg.vocab_size);
        if (e > worst) worst = e;
    }
    CHECK(!rc && worst < TOL, "%s [%s]: max relative error %.3g over %d positions", name, backend_name, worst, n);
    printf("%-28s %-8s whole model: max rel err %.2e\n", name, backend_name, worst);

    parts[1] = model_load(st, &cfg, &front, be, &err);
    parts[2] = model_load(st, &cfg, &back, be, &err);
    CHECK(parts[1] && parts[2], "%s: split load: %s", name, err.msg);
    if (!parts[1] || !parts[2]) goto out;
    rc = run_parts(parts + 1, 2, ids, n, n_prefill, got, &err);
    CHECK(rc == 0, "%s: split forward: %s", name, err.msg);
    worst = 0;
    for (int t = 0; t < n && !rc; t++) {
        double e = row_rel_err(got + (size_t)t * cfg.vocab_size, ref + (size_t)t * cfg.vocab_size, cfg.vocab_size);
        if (e > worst) worst = e;
    }
    CHECK(!rc && worst < TOL, "%s [%s] split: max relative error %.3g", name, backend_name, worst);
    printf("%-28s %-8s two parts:   max rel err %.2e\n", name, backend_name, worst);
out:
    for (int i = 0; i < 3; i++) model_free(&parts[i]);
    backend_destroy(&be);
    st_model_close(&st);
    free(ref);
    free(got);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: test_parity FIXTURE_DIR TMP_DIR [backend|--gen-only]\n");
        return 2;
    }
    const char *backend_name = argc > 3 ? argv[3] : "cpu-ref";
    int gen_only = !strcmp(backend_name, "--gen-only");
    mkdir(argv[2], 0755);
    char path[4096];
    snprintf(path, sizeof path, "%s/cases.json", argv[1]);
    json_error_t jerr;
    json_t *root = json_load_file(path, 0, &jerr);
    CHECK(root != NULL, "%s: %s", path, jerr.text);
    json_t *cases = json_object_get(root, "cases");
    size_t i;
    json_t *cs;
    json_array_foreach(cases, i, cs) run_case(cs, argv[1], argv[2], backend_name, gen_only);
    CHECK(json_array_size(cases) >= 6, "expected at least 6 parity cases");
    json_decref(root);
    return TEST_END();
}
