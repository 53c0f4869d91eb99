/* Chat templates against transformers: every conversation of
 * tests/fixtures/tokenizer/chat_*.json rendered with add_generation_prompt true and false, and
 * (Qwen3) enable_thinking=false, must equal apply_chat_template(..., tokenize=False) byte for
 * byte. Then stop ids and bad inputs.
 *
 * usage: test_chat TOKDIR FIXDIR [TMPDIR]   (as test_tokenizer; env STRATA_TOKENIZERS,
 * STRATA_TOKENIZER_FIXTURES stand in for missing args) */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/chat.h"
#include "tests/check.h"

static void run_renders(const char *tokdir, const char *fixdir, const char *name, chat_format want_kind) {
    char path[1024];
    strata_err err = {{0}};
    snprintf(path, sizeof path, "%s/%s", tokdir, name);
    tokenizer *t = tok_load(path, &err);
    chat_template *c = t ? chat_load(path, t, &err) : NULL;
    CHECK(c != NULL, "%s: load: %s", name, err.msg);
    if (!c) {
        tok_free(&t);
        return;
    }
    CHECK(chat_kind(c) == want_kind, "%s: family %s", name, chat_format_name(chat_kind(c)));
    snprintf(path, sizeof path, "%s/chat_%s.json", fixdir, name);
    json_error_t je;
    json_t *ref = json_load_file(path, 0, &je);
    CHECK(ref != NULL, "%s: %s", path, je.text);
    size_t i, n_ok = 0, n_all = 0;
    json_t *r;
    json_array_foreach(json_object_get(ref, "renders"), i, r) {
        json_t *msgs = json_object_get(r, "messages");
        int n = (int)json_array_size(msgs);
        chat_msg *m = calloc((size_t)n + 1, sizeof *m);
        for (int k = 0; k < n; k++) {
            json_t *o = json_array_get(msgs, (size_t)k);
            m[k].role = json_string_value(json_object_get(o, "role"));
            m[k].content = json_string_value(json_object_get(o, "content"));
        }
        static const struct {
            const char *key;
            chat_opts opts;
        } modes[] = {{"gen", {1, -1}}, {"nogen", {0, -1}}, {"gen_nothink", {1, 0}}};
        for (int k = 0; k < 3; k++) {
            const char *want = json_string_value(json_object_get(r, modes[k].key));
            if (!want) continue;
            char *got = NULL;
            int rc = chat_render(c, m, n, &modes[k].opts, &got, &err);
            int ok = rc == 0 && !strcmp(got, want);
            CHECK(ok, "%s conversation %zu %s differs\n--- got ---\n%s\n--- want ---\n%s", name, i, modes[k].key,
                  got ? got : err.msg, want);
            n_ok += (size_t)ok, n_all++;
            /* The render tokenizes to the ids a model expects: specials cut out as single ids. */
            int32_t *ids;
            int n_ids;
            if (got && tok_encode(t, got, strlen(got), 0, &ids, &n_ids, &err) == 0) {
                const int32_t *stop;
                int n_stop = chat_stop_ids(c, &stop), seen = 0;
                for (int q = 0; q < n_ids; q++) seen += ids[q] == stop[0];
                int in_text = 0;
                const char *eot = n_stop > 0 ? tok_token(t, stop[0]) : NULL;
                for (const char *p = eot ? strstr(got, eot) : NULL; p; p = strstr(p + 1, eot)) in_text++;
                CHECK(eot && seen == in_text && in_text > 0, "%s conversation %zu: %d end-of-turn ids for %d in text",
                      name, i, seen, in_text);
                free(ids);
            }
            free(got);
        }
        free(m);
    }
    printf("%s: %zu/%zu renders equal transformers\n", name, n_ok, n_all);
    json_decref(ref);
    chat_free(&c);
    tok_free(&t);
}

static char g_tmp[512];

static const char *make_dir(const char *name) {
    static char dir[700];
    snprintf(dir, sizeof dir, "%s/%s", g_tmp, name);
    mkdir(g_tmp, 0755);
    mkdir(dir, 0755);
    return dir;
}

static void write_file(const char *dir, const char *name, const char *text) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
}

static void check_stops_and_errors(const char *tokdir) {
    char path[1024];
    strata_err err = {{0}};
    snprintf(path, sizeof path, "%s/qwen3", tokdir);
    tokenizer *q = tok_load(path, &err);
    snprintf(path, sizeof path, "%s/llama3", tokdir);
    tokenizer *l = tok_load(path, &err);
    if (!q || !l) {
        CHECK(0, "load: %s", err.msg);
        tok_free(&q), tok_free(&l);
        return;
    }
    const int32_t *ids;
    /* Qwen3 as shipped: <|im_end|> ends a turn and is the eos_token; generation_config adds
     * <|endoftext|>. */
    snprintf(path, sizeof path, "%s/qwen3", tokdir);
    chat_template *c = chat_load(path, q, &err);
    CHECK(c && chat_stop_ids(c, &ids) == 1 && ids[0] == 151645, "qwen3 stop ids without generation_config");
    chat_free(&c);
    const char *dir = make_dir("qwen3_gen");
    char *cfg_text;
    {
        snprintf(path, sizeof path, "%s/qwen3/tokenizer_config.json", tokdir);
        FILE *f = fopen(path, "rb");
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        rewind(f);
        cfg_text = calloc((size_t)n + 1, 1);
        CHECK(fread(cfg_text, 1, (size_t)n, f) == (size_t)n, "read config");
        fclose(f);
    }
    write_file(dir, "tokenizer_config.json", cfg_text);
    write_file(dir, "generation_config.json", "{\"eos_token_id\": [151645, 151643], \"do_sample\": true}");
    write_file(dir, "config.json", "{\"eos_token_id\": 151643, \"max_position_embeddings\": 40960}");
    c = chat_load(dir, q, &err);
    int n = c ? chat_stop_ids(c, &ids) : 0;
    CHECK(n == 2 && chat_is_stop(c, 151645) && chat_is_stop(c, 151643) && !chat_is_stop(c, 0),
          "qwen3 stop ids with generation_config: %d", n);
    chat_free(&c);
    snprintf(path, sizeof path, "%s/llama3", tokdir);
    c = chat_load(path, l, &err);
    CHECK(c && chat_is_stop(c, 128009) && chat_is_stop(c, 128001), "llama3 stops on <|eot_id|> and <|end_of_text|>");
    chat_msg bad[] = {{.role = NULL, .content = "x"}};
    char *out = NULL;
    CHECK(c && chat_render(c, bad, 1, NULL, &out, &err) == -1 && strstr(err.msg, "no role"), "message without role");
    chat_free(&c);

    /* A ChatML template with a default system prompt (the Qwen2.5 shape). */
    dir = make_dir("chatml_default");
    write_file(dir, "tokenizer_config.json",
               "{\"chat_template\": \"{%- if messages[0]['role'] == 'system' %}{{- '<|im_start|>system\\\\n' + "
               "messages[0]['content'] + '<|im_end|>\\\\n' }}{%- else %}{{- '<|im_start|>system\\\\nYou are Qwen, "
               "created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\\\\n' }}{%- endif %}\", "
               "\"eos_token\": \"<|im_end|>\"}");
    c = chat_load(dir, q, &err);
    chat_msg hi[] = {{.role = "user", .content = "hi"}};
    CHECK(c && chat_kind(c) == CHAT_CHATML && chat_render(c, hi, 1, NULL, &out, &err) == 0 &&
              !strcmp(out, "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful "
                           "assistant.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"),
          "chatml default system: %s", out ? out : err.msg);
    free(out);
    chat_free(&c);

    /* Bad inputs, each with the error it expects. */
    struct {
        const char *name, *config, *want;
    } cases[] = {
        {"no_config", NULL, "tokenizer_config.json: cannot read"},
        {"malformed_config", "{\"chat_template\": ", "malformed JSON"},
        {"no_template", "{\"eos_token\": \"<|im_end|>\"}", "no chat_template"},
        {"unknown_template", "{\"chat_template\": \"{% for m in messages %}[INST] {{ m.content }} [/INST]{% endfor %}\"}",
         "neither ChatML nor Llama 3"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        dir = make_dir(cases[i].name);
        if (cases[i].config) write_file(dir, "tokenizer_config.json", cases[i].config);
        err.msg[0] = 0;
        c = chat_load(dir, q, &err);
        CHECK(!c && strstr(err.msg, cases[i].want), "bad input %s: want \"%s\", got \"%s\"", cases[i].name,
              cases[i].want, c ? "(loaded)" : err.msg);
        if (!c) printf("  bad input %-17s -> %s\n", cases[i].name, err.msg);
        chat_free(&c);
    }
    free(cfg_text);
    tok_free(&q), tok_free(&l);
}

int main(int argc, char **argv) {
    const char *tokdir = argc > 1 ? argv[1] : getenv("STRATA_TOKENIZERS");
    const char *fixdir = argc > 2 ? argv[2] : getenv("STRATA_TOKENIZER_FIXTURES");
    snprintf(g_tmp, sizeof g_tmp, "%s", argc > 3 ? argv[3] : "/tmp/strata_test_chat");
    if (!tokdir || !fixdir) {
        fprintf(stderr, "usage: test_chat TOKDIR FIXDIR [TMPDIR]\n");
        return 2;
    }
    run_renders(tokdir, fixdir, "qwen3", CHAT_QWEN3);
    run_renders(tokdir, fixdir, "llama3", CHAT_LLAMA3);
    check_stops_and_errors(tokdir);
    return TEST_END();
}
