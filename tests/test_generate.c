/* Generation and speculative decoding (master/generate.h, master/batch.h).
 *   usage: test_generate MODEL_DIR [TOPOLOGY]
 * MODEL_DIR holds a model and a tokenizer (tokenizer.json + tokenizer_config.json with a chat
 * template). With TOPOLOGY the engine is the cluster on the workers named there (loopback).
 *
 * What it shows:
 *   - speculative greedy output equals plain greedy output token for token on 24 prompts
 *     (repetitive code-like, summarisation-like and free text), at k = 2, 4 and 8; also sampled
 *     output with a seed (the draft is deterministic, so the same draws give the same tokens);
 *   - several sequences driven together (batch: sessions in flight at once on the cluster) give
 *     each the same tokens as alone;
 *   - streamed pieces join into the whole decode; stop strings cut the text before them; the
 *     context limit and max_tokens end with "length";
 *   - prompt lookup drafts what followed the latest earlier match. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/chat.h"
#include "master/batch.h"
#include "master/pipeline.h"
#include "tests/check.h"
#include "tests/test_engine.h"

static const char *PROMPTS[] = {
    /* code-like: repeated structure */
    "def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n",
    "for (int i = 0; i < n; i++) {\n    x[i] = y[i] + z[i];\n}\nfor (int i = 0; i < n; i++) {\n",
    "SELECT id, name FROM users WHERE id = 1;\nSELECT id, name FROM users WHERE id = 2;\nSELECT",
    "<li>apple</li>\n<li>banana</li>\n<li>cherry</li>\n<li>",
    "case 1: return \"one\";\ncase 2: return \"two\";\ncase 3: return \"three\";\ncase 4:",
    "import os\nimport sys\nimport json\nimport re\nimport",
    "x = x + 1\ny = y + 1\nz = z + 1\nw = w",
    "{\"a\": 1, \"b\": 2, \"c\": 3, \"d\": 4, \"e\":",
    /* summarisation-like: a passage, then asked to restate it */
    "The cluster splits a model by layers over workers. Each worker runs a contiguous range of "
    "layers and keeps a KV cache per session. Summary: The cluster splits",
    "Alice met Bob at the station. Bob gave Alice a letter. Alice read the letter. Question: who "
    "gave Alice a letter? Answer: Bob gave Alice",
    "Meeting notes: the release moves to Friday; tests must pass on CI; docs need a review. "
    "In short: the release moves to",
    "Rain is expected on Monday and Tuesday, sun on Wednesday. Forecast recap: rain on Monday",
    "The function parses the header, checks every offset against the file size, then maps the "
    "tensors. To summarise, the function parses the header,",
    "Error: file not found. Error: file not found. Error: file not",
    "one two three four five one two three four five one two",
    "abc abc abc abc abc abc",
    /* free text */
    "Once upon a time",
    "The capital of France is",
    "Explain quantum computing in one sentence.",
    "List three colors:",
    "Write a haiku about the sea.",
    "Hello",
    "What is 2 + 2?",
    "Translate to German: good morning",
};
#define N_PROMPTS ((int)(sizeof PROMPTS / sizeof PROMPTS[0]))

typedef struct {
    char *text;
    size_t len, cap;
    int pieces;
} sink;

static int put(const char *t, size_t n, void *user) {
    sink *s = user;
    if (!n) return 0;
    if (s->len + n + 1 > s->cap) {
        s->cap = (s->len + n + 1) * 2;
        s->text = realloc(s->text, s->cap);
    }
    memcpy(s->text + s->len, t, n);
    s->len += n;
    s->text[s->len] = 0;
    s->pieces++;
    return 0;
}

typedef struct {
    int32_t *ids;
    int n;
    char *text;
    gen_result r;
} run_out;

static void run_free(run_out *o) {
    free(o->ids);
    free(o->text);
    memset(o, 0, sizeof *o);
}

static void take_result(gen_seq *s, sink *sk, run_out *o) {
    const int32_t *ids;
    o->n = gen_seq_tokens(s, &ids);
    o->ids = malloc(sizeof *ids * (size_t)(o->n + 1));
    memcpy(o->ids, ids, sizeof *ids * (size_t)o->n);
    o->text = sk->text ? sk->text : strdup("");
    gen_seq_result(s, &o->r);
}

/* one sequence alone on the engine */
static int run_one(engine *e, const tokenizer *t, const int32_t *prompt, int n, const gen_params *p, run_out *o,
                   strata_err *err) {
    sink sk = {0};
    gen_seq *s = gen_seq_new(e, 7, t, prompt, n, p, put, &sk, err);
    if (!s) return -1;
    int rc = gen_seq_run(s, err);
    take_result(s, &sk, o);
    gen_seq_free(&s);
    return rc;
}

static int same_ids(const run_out *a, const run_out *b) {
    return a->n == b->n && !memcmp(a->ids, b->ids, sizeof *a->ids * (size_t)a->n);
}

static void test_draft(void) {
    int32_t h[] = {1, 2, 3, 9, 9, 1, 2, 3, 4, 5, 1, 2, 3}, d[8];
    int n = gen_draft_ngram(h, 13, 1, 3, 4, d);
    /* latest earlier "1 2 3" is at 5: followed by 4 5 1 2 */
    CHECK(n == 4 && d[0] == 4 && d[1] == 5 && d[2] == 1 && d[3] == 2, "draft %d: %d %d %d %d", n, d[0], d[1], d[2], d[3]);
    int32_t h2[] = {5, 6, 7, 8};
    CHECK(gen_draft_ngram(h2, 4, 1, 3, 4, d) == 0, "no earlier match: no draft");
    int32_t h3[] = {4, 7, 1, 2, 7};
    n = gen_draft_ngram(h3, 5, 1, 3, 4, d); /* only the 1-gram "7" matches, at 1 */
    CHECK(n == 3 && d[0] == 1 && d[1] == 2 && d[2] == 7, "1-gram draft %d", n);
    n = gen_draft_ngram(h3, 5, 2, 3, 4, d);
    CHECK(n == 0, "ngram_min 2: no draft (%d)", n);
    int32_t h4[] = {3, 3, 3, 3};
    n = gen_draft_ngram(h4, 4, 1, 3, 2, d);
    CHECK(n == 1 && d[0] == 3, "a run drafts its continuation, as far as it goes (%d)", n);
}

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: test_generate MODEL_DIR [TOPOLOGY]\n"); return 2; }
    const char *dir = argv[1], *topo = argc > 2 ? argv[2] : NULL;
    test_draft();
    strata_err err = {{0}};
    tokenizer *t = tok_load(dir, &err);
    CHECK(t != NULL, "tokenizer: %s", err.msg);
    chat_template *chat = t ? chat_load(dir, t, &err) : NULL;
    CHECK(chat != NULL, "chat template: %s", err.msg);
    engine *e = test_engine_open(dir, topo, 1, &err); /* its loopback workers run --insecure */
    CHECK(e != NULL, "engine: %s", err.msg);
    if (!t || !chat || !e) return TEST_END();
    CHECK(tok_vocab_size(t) <= e->cfg->vocab_size, "tokenizer vocab %d > model vocab %d", tok_vocab_size(t),
          e->cfg->vocab_size);

    const int32_t *stop;
    int n_stop = chat_stop_ids(chat, &stop);
    gen_params base;
    gen_params_default(&base);
    base.max_tokens = 40;
    base.ctx_len = 512;
    base.stop_ids = stop;
    base.n_stop_ids = n_stop;

    int32_t *prompts[N_PROMPTS];
    int n_prompt[N_PROMPTS];
    run_out plain[N_PROMPTS];
    int total_passes[3] = {0}, total_acc[3] = {0}, total_tok[3] = {0}, total_fwd[3] = {0}, plain_fwd = 0;
    static const int KS[3] = {2, 4, 8};
    for (int i = 0; i < N_PROMPTS; i++) {
        /* half raw text (completions), half through the chat template */
        char *text = NULL;
        if (i % 2) {
            chat_msg m = {"user", PROMPTS[i], NULL};
            if (chat_render(chat, &m, 1, NULL, &text, &err)) text = NULL;
        } else {
            text = strdup(PROMPTS[i]);
        }
        CHECK(text && !tok_encode(t, text, strlen(text), 0, &prompts[i], &n_prompt[i], &err), "encode %d: %s", i, err.msg);
        free(text);
        CHECK(!run_one(e, t, prompts[i], n_prompt[i], &base, &plain[i], &err), "plain %d: %s", i, err.msg);
        plain_fwd += plain[i].r.forwards + 1;
        /* the streamed pieces are exactly the decode of the tokens (a stop token has no text) */
        char *whole = NULL;
        int n_text = plain[i].n - (plain[i].r.finish == GEN_FINISH_STOP);
        tok_decode(t, plain[i].ids, n_text, 1, &whole, NULL, &err);
        CHECK(whole && !strcmp(whole, plain[i].text), "prompt %d: streamed text != decode", i);
        free(whole);
        for (int k = 0; k < 3; k++) {
            gen_params p = base;
            p.spec_k = KS[k];
            run_out sp;
            CHECK(!run_one(e, t, prompts[i], n_prompt[i], &p, &sp, &err), "spec %d: %s", i, err.msg);
            CHECK(same_ids(&plain[i], &sp), "prompt %d k %d: speculative greedy differs from plain greedy (%d vs %d tokens)",
                  i, KS[k], sp.n, plain[i].n);
            CHECK(!strcmp(plain[i].text, sp.text), "prompt %d k %d: text differs", i, KS[k]);
            CHECK(sp.r.finish == plain[i].r.finish, "prompt %d: finish differs", i);
            total_passes[k] += sp.r.spec_passes;
            total_acc[k] += sp.r.accepted;
            total_tok[k] += sp.n;
            total_fwd[k] += sp.r.forwards + 1;
            run_free(&sp);
        }
    }
    int total_plain = 0;
    for (int i = 0; i < N_PROMPTS; i++) total_plain += plain[i].n;
    for (int k = 0; k < 3; k++)
        printf("spec k=%d: %d prompts, %d tokens in %d forwards (plain: %d in %d); mean accepted length %.2f over %d "
               "verifying passes\n", KS[k], N_PROMPTS, total_tok[k], total_fwd[k], total_plain, plain_fwd,
               total_passes[k] ? (double)total_acc[k] / total_passes[k] : 0.0, total_passes[k]);
    CHECK(total_acc[1] > 0, "prompt lookup accepted no drafted token at all on repetitive prompts");

    /* sampled, with a seed: the same draws give the same tokens */
    for (int i = 0; i < 6; i++) {
        gen_params p = base;
        p.sampling.temp = 0.9f;
        p.sampling.seed = 1234 + (uint64_t)i;
        p.sampling.repeat_penalty = 1.1f;
        run_out a, b;
        CHECK(!run_one(e, t, prompts[i], n_prompt[i], &p, &a, &err), "sampled %d: %s", i, err.msg);
        p.spec_k = 4;
        CHECK(!run_one(e, t, prompts[i], n_prompt[i], &p, &b, &err), "sampled spec %d: %s", i, err.msg);
        CHECK(same_ids(&a, &b), "prompt %d: sampled speculative output differs from sampled plain", i);
        run_free(&a);
        run_free(&b);
    }

    /* several sequences at once, each equal to its run alone (greedy, with and without spec) */
    {
        gen_batch *b = batch_new(e, &err);
        sink sinks[8] = {{0}};
        gen_seq *seqs[8];
        for (int j = 0; j < 8; j++) {
            gen_params p = base;
            p.spec_k = j % 2 ? 4 : 0;
            seqs[j] = gen_seq_new(e, 100 + (uint64_t)j, t, prompts[j], n_prompt[j], &p, put, &sinks[j], &err);
            CHECK(seqs[j] && !batch_add(b, seqs[j], &err), "batch add %d: %s", j, err.msg);
        }
        int done = 0, guard = 0;
        while (batch_count(b) && guard++ < 100000) {
            gen_seq *out;
            int rc = batch_step(b, &out, &err);
            CHECK(rc >= 0 && rc != BATCH_FAILED, "batch step: %s", err.msg);
            if (rc < 0) break;
            if (out) {
                int j = (int)(gen_seq_session(out) - 100);
                run_out o;
                take_result(out, &sinks[j], &o);
                CHECK(same_ids(&o, &plain[j]), "batched sequence %d differs from its run alone", j);
                run_free(&o);
                gen_seq_free(&out);
                done++;
            }
        }
        CHECK(done == 8, "%d of 8 batched sequences finished", done);
        batch_free(&b);
    }

    /* stop strings: the text ends right before the first occurrence; pieces never show any of it */
    for (int i = 0; i < 4; i++) {
        if (strlen(plain[i].text) < 8) continue;
        char stopstr[4];
        memcpy(stopstr, plain[i].text + strlen(plain[i].text) / 2, 3);
        stopstr[3] = 0;
        const char *first = strstr(plain[i].text, stopstr);
        gen_params p = base;
        const char *stops[2] = {"\x01never", stopstr};
        p.stop_strs = stops;
        p.n_stop_strs = 2;
        p.spec_k = i % 2 ? 4 : 0;
        run_out o;
        CHECK(!run_one(e, t, prompts[i], n_prompt[i], &p, &o, &err), "stop run: %s", err.msg);
        CHECK(o.r.finish == GEN_FINISH_STOP, "prompt %d: stop string '%s' did not stop (finish %d)", i, stopstr, o.r.finish);
        CHECK(strlen(o.text) == (size_t)(first - plain[i].text) && !strncmp(o.text, plain[i].text, strlen(o.text)),
              "prompt %d: text before stop '%s' is '%s'", i, stopstr, o.text);
        run_free(&o);
    }

    /* limits: max_tokens 0 generates nothing; a full context ends with length */
    {
        gen_params p = base;
        p.max_tokens = 0;
        run_out o;
        CHECK(!run_one(e, t, prompts[0], n_prompt[0], &p, &o, &err) && o.n == 0 && o.r.finish == GEN_FINISH_LENGTH,
              "max_tokens 0: %d tokens", o.n);
        run_free(&o);
        p = base;
        p.stop_ids = NULL, p.n_stop_ids = 0;
        p.ctx_len = n_prompt[0] + 5;
        p.spec_k = 4;
        CHECK(!run_one(e, t, prompts[0], n_prompt[0], &p, &o, &err), "ctx run: %s", err.msg);
        CHECK(o.n == 6 && o.r.finish == GEN_FINISH_LENGTH, "context of prompt + 5: %d tokens, finish %d", o.n, o.r.finish);
        run_free(&o);
        p.ctx_len = n_prompt[0];
        CHECK(gen_seq_new(e, 9, t, prompts[0], n_prompt[0], &p, NULL, NULL, &err) == NULL && strstr(err.msg, "context"),
              "prompt as long as the context: refused (%s)", err.msg);
        p = base;
        p.max_tokens = -1;
        CHECK(gen_seq_new(e, 9, t, prompts[0], n_prompt[0], &p, NULL, NULL, &err) == NULL, "negative max_tokens refused");
    }

    for (int i = 0; i < N_PROMPTS; i++) {
        free(prompts[i]);
        run_free(&plain[i]);
    }
    engine_destroy(&e);
    chat_free(&chat);
    tok_free(&t);
    return TEST_END();
}
