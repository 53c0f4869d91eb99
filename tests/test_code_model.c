/* strata-code-4m (tests/fixtures/code-model, a small model trained to write code) against the
 * reference of Hugging Face transformers (reference.json, made with the model by
 * tools/train_code_model.py).
 *   usage: test_code_model MODEL_DIR REFERENCE_JSON [TOPOLOGY]
 *          test_code_model --dump REFERENCE_JSON DIR
 * With TOPOLOGY the engine is the cluster on the workers named there (the cluster key from
 * $STRATA_KEY, as strata-master finds it). --dump writes each case for tests/test_code_model.sh,
 * which runs the strata-master CLI on them: DIR/caseN.prompt (the text), caseN.prompt_ids,
 * caseN.n (greedy tokens in the reference), caseN.ids (the reference greedy ids up to the first
 * near tie, comma-separated) and caseN.text (the reference text, only when no step is a near tie).
 *
 * For every reference case:
 *   - strata's tokenizer gives the reference prompt ids (encoded as the CLI and the HTTP API
 *     encode a raw prompt);
 *   - greedy decoding gives the reference greedy ids, plain and with speculative decoding (prompt
 *     lookup, k = 4 and 8), each sequence through generate's step-wise form, as the server runs it.
 * Near-tie rule: where the reference's top-1/top-2 logit margin at a step is below 1e-3, float
 * rounding may legitimately pick the other token; a case whose first difference is at such a step
 * is not compared after it (reported). A first difference at any other step fails. (The shell
 * test's CLI checks compare each case up to its first near-tie step.) */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/tokenizer.h"
#include "master/generate.h"
#include "master/pipeline.h"
#include "tests/check.h"
#include "tests/test_engine.h"

#define NEAR_TIE 1e-3

/* ids of a JSON array of integers into out[0..cap); returns the count, -1 when not such an array */
static int json_ids(json_t *a, int32_t *out, int cap) {
    size_t i;
    json_t *v;
    if (!json_is_array(a) || json_array_size(a) > (size_t)cap) return -1;
    json_array_foreach(a, i, v) {
        if (!json_is_integer(v)) return -1;
        out[i] = (int32_t)json_integer_value(v);
    }
    return (int)json_array_size(a);
}

/* greedy (or speculative greedy) generation of n tokens; ids into out, counters into *r */
static int generate(engine *e, uint64_t session, const tokenizer *t, const int32_t *prompt, int n_prompt, int n,
                    int spec_k, int32_t *out, gen_result *r, strata_err *err) {
    gen_params p;
    gen_params_default(&p);
    p.max_tokens = n;
    p.spec_k = spec_k;
    gen_seq *s = gen_seq_new(e, session, t, prompt, n_prompt, &p, NULL, NULL, err);
    if (!s) return -1;
    int rc = gen_seq_run(s, err);
    const int32_t *ids;
    int got = gen_seq_tokens(s, &ids);
    if (!rc) {
        memcpy(out, ids, sizeof *ids * (size_t)(got < n ? got : n));
        gen_seq_result(s, r);
        if (got != n) rc = -1, err_set(err, "%d tokens generated, %d asked for", got, n);
    }
    gen_seq_free(&s);
    return rc;
}

/* 1 when got equals want, or differs first at a step whose reference margin is a near tie (*tie:
 * that step, after which the two may go apart); 0 with *first_diff otherwise */
static int same_greedy(const int32_t *got, const int32_t *want, const double *margin, int n, int *tie, int *first_diff) {
    *tie = -1, *first_diff = -1;
    for (int i = 0; i < n; i++) {
        if (got[i] == want[i]) continue;
        if (margin[i] < NEAR_TIE) { *tie = i; return 1; }
        *first_diff = i;
        return 0;
    }
    return 1;
}

static int write_file(const char *dir, size_t c, const char *ext, const char *text, size_t len) {
    char path[4096];
    snprintf(path, sizeof path, "%s/case%zu.%s", dir, c, ext);
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    int bad = fwrite(text, 1, len, f) != len;
    return fclose(f) || bad ? -1 : 0;
}

/* "a,b,c" of ids[0..n) */
static int write_ids(const char *dir, size_t c, const char *ext, const int32_t *ids, int n) {
    char *s = malloc((size_t)n * 12 + 1), *p = s;
    if (!s) return -1;
    *p = '\0';
    for (int i = 0; i < n; i++) p += sprintf(p, "%s%d", i ? "," : "", ids[i]);
    int rc = write_file(dir, c, ext, s, (size_t)(p - s));
    free(s);
    return rc;
}

static int dump(const char *ref_path, const char *dir) {
    json_error_t jerr;
    json_t *ref = json_load_file(ref_path, 0, &jerr);
    if (!ref) { fprintf(stderr, "%s: %s (line %d)\n", ref_path, jerr.text, jerr.line); return 1; }
    enum { MAX_IDS = 1024 };
    static int32_t ids[MAX_IDS];
    json_t *cases = json_object_get(ref, "cases"), *cs;
    size_t c;
    int rc = json_array_size(cases) ? 0 : 1;
    json_array_foreach(cases, c, cs) {
        const char *text = json_string_value(json_object_get(cs, "prompt"));
        const char *reply = json_string_value(json_object_get(cs, "text"));
        json_t *margins = json_object_get(cs, "margins");
        int n_prompt = json_ids(json_object_get(cs, "prompt_ids"), ids, MAX_IDS);
        if (!text || !reply || n_prompt <= 0 || write_file(dir, c, "prompt", text, strlen(text)) ||
            write_ids(dir, c, "prompt_ids", ids, n_prompt)) { rc = 1; break; }
        int n = json_ids(json_object_get(cs, "greedy_ids"), ids, MAX_IDS), upto = 0;
        if (n <= 0 || json_array_size(margins) != (size_t)n) { rc = 1; break; }
        while (upto < n && json_number_value(json_array_get(margins, (size_t)upto)) >= NEAR_TIE) upto++;
        char count[16];
        snprintf(count, sizeof count, "%d", n);
        if (write_file(dir, c, "n", count, strlen(count)) || write_ids(dir, c, "ids", ids, upto) ||
            (upto == n && write_file(dir, c, "text", reply, strlen(reply)))) { rc = 1; break; }
    }
    if (rc) fprintf(stderr, "%s: a case is malformed, or %s is not writable\n", ref_path, dir);
    else printf("%zu\n", json_array_size(cases));
    json_decref(ref);
    return rc;
}

int main(int argc, char **argv) {
    if (argc == 4 && !strcmp(argv[1], "--dump")) return dump(argv[2], argv[3]);
    if (argc < 3) {
        fprintf(stderr, "usage: test_code_model MODEL_DIR REFERENCE_JSON [TOPOLOGY]\n"
                        "       test_code_model --dump REFERENCE_JSON DIR\n");
        return 2;
    }
    const char *dir = argv[1], *ref_path = argv[2], *topo = argc > 3 ? argv[3] : NULL;
    strata_err err = {{0}};
    json_error_t jerr;
    json_t *ref = json_load_file(ref_path, 0, &jerr);
    CHECK(ref != NULL, "%s: %s (line %d)", ref_path, jerr.text, jerr.line);
    json_t *cases = json_object_get(ref, "cases");
    CHECK(json_array_size(cases) > 0, "%s: no cases", ref_path);
    tokenizer *t = tok_load(dir, &err);
    CHECK(t != NULL, "tokenizer: %s", err.msg);
    engine *e = test_engine_open(dir, topo, 0, &err);
    CHECK(e != NULL, "engine: %s", err.msg);
    if (!ref || !t || !e || !json_array_size(cases)) return TEST_END();

    enum { MAX_IDS = 1024 };
    static int32_t want_prompt[MAX_IDS], want[MAX_IDS], got[MAX_IDS];
    static double margin[MAX_IDS];
    const int spec_ks[] = {0, 4, 8};
    uint64_t session = 1;
    int drafted = 0, accepted = 0, passes = 0;
    size_t c;
    json_t *cs;
    json_array_foreach(cases, c, cs) {
        const char *text = json_string_value(json_object_get(cs, "prompt"));
        int n_want_prompt = json_ids(json_object_get(cs, "prompt_ids"), want_prompt, MAX_IDS);
        int n = json_ids(json_object_get(cs, "greedy_ids"), want, MAX_IDS);
        json_t *margins = json_object_get(cs, "margins");
        CHECK(text && n_want_prompt > 0 && n > 0 && json_array_size(margins) == (size_t)n,
              "case %zu: prompt, prompt_ids, greedy_ids and margins (as many as greedy_ids)", c);
        if (!text || n_want_prompt <= 0 || n <= 0 || json_array_size(margins) != (size_t)n) continue;
        for (int i = 0; i < n; i++) margin[i] = json_number_value(json_array_get(margins, (size_t)i));

        /* the prompt, encoded as the CLI and the HTTP API encode a raw prompt */
        int32_t *ids = NULL;
        int n_prompt = 0;
        int rc = tok_encode(t, text, strlen(text), TOK_ADD_SPECIAL, &ids, &n_prompt, &err);
        CHECK(rc == 0, "case %zu: encode: %s", c, err.msg);
        CHECK(!rc && n_prompt == n_want_prompt && !memcmp(ids, want_prompt, sizeof *ids * (size_t)n_prompt),
              "case %zu: %d prompt ids, the reference has %d (or they differ)", c, n_prompt, n_want_prompt);
        free(ids);
        if (rc || n_prompt != n_want_prompt) continue;

        for (size_t k = 0; k < sizeof spec_ks / sizeof spec_ks[0]; k++) {
            gen_result r = {0};
            rc = generate(e, session++, t, want_prompt, n_want_prompt, n, spec_ks[k], got, &r, &err);
            CHECK(rc == 0, "case %zu, spec_k %d: generate: %s", c, spec_ks[k], err.msg);
            if (rc) continue;
            int tie, diff;
            int same = same_greedy(got, want, margin, n, &tie, &diff);
            CHECK(same, "case %zu, spec_k %d: token %d is %d, the reference's is %d (margin %.5f)", c, spec_ks[k], diff,
                  diff >= 0 ? got[diff] : -1, diff >= 0 ? want[diff] : -1, diff >= 0 ? margin[diff] : 0.0);
            if (tie >= 0)
                printf("case %zu, spec_k %d: token %d is %d, the reference's %d, at a near tie (margin %.5f < %g): "
                       "the rest is not compared\n", c, spec_ks[k], tie, got[tie], want[tie], margin[tie], NEAR_TIE);
            if (spec_ks[k] == 4) drafted += r.drafted, accepted += r.accepted, passes += r.spec_passes;
        }
    }
    /* what speculative decoding gains on this model (information, not a check: the ids are) */
    printf("speculative k=4: %d of %d drafted tokens accepted, %.2f per verifying pass (%d passes)\n", accepted,
           drafted, passes ? (double)accepted / passes : 0.0, passes);
    engine_destroy(&e);
    tok_free(&t);
    json_decref(ref);
    return TEST_END();
}
