/* Tokenizer against Hugging Face: every corpus string of tests/fixtures/tokenizer/ref_*.json
 * must give HF tokenizers' exact ids (plain, add_special_tokens, encode_special_tokens),
 * decode to HF's text (whole and streamed), and round-trip where HF does. Then bad inputs,
 * each a named case with the error it expects.
 *
 * usage: test_tokenizer TOKDIR FIXDIR [TMPDIR]
 *   TOKDIR holds qwen3/ and llama3/ (tests/fetch_tokenizers.sh), FIXDIR the ref_*.json.
 *   Environment STRATA_TOKENIZERS / STRATA_TOKENIZER_FIXTURES stand in for missing args. */
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/tokenizer.h"
#include "tests/check.h"

static uint8_t *unhex(const char *h, size_t *n) {
    size_t len = strlen(h) / 2;
    uint8_t *b = malloc(len + 1);
    for (size_t i = 0; i < len; i++) {
        unsigned v;
        sscanf(h + 2 * i, "%2x", &v);
        b[i] = (uint8_t)v;
    }
    b[len] = 0;
    *n = len;
    return b;
}

/* A printable excerpt of a string for failure messages. */
static const char *show(const uint8_t *p, size_t n) {
    static char buf[256];
    size_t k = 0;
    for (size_t i = 0; i < n && k < sizeof buf - 8; i++)
        k += (size_t)snprintf(buf + k, sizeof buf - k, p[i] >= 32 && p[i] < 127 ? "%c" : "\\x%02x", p[i]);
    buf[k] = 0;
    return buf;
}

static int ids_equal(const int32_t *a, int na, json_t *want) {
    if (!json_is_array(want) || (size_t)na != json_array_size(want)) return 0;
    for (int i = 0; i < na; i++)
        if (a[i] != json_integer_value(json_array_get(want, (size_t)i))) return 0;
    return 1;
}

static int valid_utf8(const char *s, size_t n) {
    const uint8_t *p = (const uint8_t *)s;
    for (size_t i = 0; i < n;) {
        int len = p[i] < 0x80 ? 1 : p[i] < 0xE0 ? 2 : p[i] < 0xF0 ? 3 : 4;
        if (i + (size_t)len > n) return 0;
        for (int k = 1; k < len; k++)
            if ((p[i + k] & 0xC0) != 0x80) return 0;
        i += (size_t)len;
    }
    return 1;
}

static void run_reference(const char *tokdir, const char *fixdir, const char *name) {
    char path[1024];
    strata_err err = {{0}};
    snprintf(path, sizeof path, "%s/%s", tokdir, name);
    tokenizer *t = tok_load(path, &err);
    CHECK(t != NULL, "%s: load: %s", name, err.msg);
    if (!t) return;
    snprintf(path, sizeof path, "%s/ref_%s.json", fixdir, name);
    json_error_t je;
    json_t *ref = json_load_file(path, 0, &je);
    CHECK(ref != NULL, "%s: %s", path, je.text);
    json_t *cases = json_object_get(ref, "cases");
    CHECK(json_array_size(cases) >= 300, "%s: only %zu cases", name, json_array_size(cases));
    size_t i;
    json_t *c;
    int n_enc = 0, n_rt = 0, shown = 0;
    json_array_foreach(cases, i, c) {
        size_t n, n_dec, n_skip;
        uint8_t *text = unhex(json_string_value(json_object_get(c, "hex")), &n);
        uint8_t *want_dec = unhex(json_string_value(json_object_get(c, "decode_hex")), &n_dec);
        uint8_t *want_skip = unhex(json_string_value(json_object_get(c, "decode_skip_hex")), &n_skip);
        static const struct {
            const char *key;
            int flags;
        } modes[] = {{"ids", 0}, {"ids_special", TOK_ADD_SPECIAL}, {"ids_split_special", TOK_SPLIT_SPECIAL}};
        int32_t *plain = NULL;
        int n_plain = 0;
        for (int m = 0; m < 3; m++) {
            int32_t *ids;
            int n_ids;
            int rc = tok_encode(t, (const char *)text, n, modes[m].flags, &ids, &n_ids, &err);
            int ok = rc == 0 && ids_equal(ids, n_ids, json_object_get(c, modes[m].key));
            CHECK(ok, "%s case %zu %s \"%s\": ids differ from HF (%d ids%s)", name, i, modes[m].key, show(text, n),
                  n_ids, rc ? err.msg : "");
            if (!ok && shown++ < 5) {
                fprintf(stderr, "  got :");
                for (int k = 0; k < n_ids && k < 40; k++) fprintf(stderr, " %d", ids[k]);
                fprintf(stderr, "\n  want: %s\n", json_dumps(json_object_get(c, modes[m].key), JSON_COMPACT));
            }
            n_enc += ok;
            if (m == 0) plain = ids, n_plain = n_ids;
            else free(ids);
        }
        /* Decode HF's own ids, so a decode check does not hang on the encode check. */
        json_t *hf_ids = json_object_get(c, "ids");
        int n_hf = (int)json_array_size(hf_ids);
        int32_t *hf = malloc(((size_t)n_hf + 1) * sizeof *hf);
        for (int k = 0; k < n_hf; k++) hf[k] = (int32_t)json_integer_value(json_array_get(hf_ids, (size_t)k));
        char *dec = NULL;
        size_t n_out = 0;
        CHECK(tok_decode(t, hf, n_hf, 0, &dec, &n_out, &err) == 0 && n_out == n_dec && !memcmp(dec, want_dec, n_dec),
              "%s case %zu \"%s\": decode differs from HF", name, i, show(text, n));
        free(dec);
        CHECK(tok_decode(t, hf, n_hf, 1, &dec, &n_out, &err) == 0 && n_out == n_skip && !memcmp(dec, want_skip, n_skip),
              "%s case %zu: decode(skip_special) differs from HF", name, i);
        free(dec);
        /* Streamed: same text, and never half a character in any chunk. */
        tok_decoder *d = tok_decoder_new(t, 0);
        char *acc = malloc(n_dec + 64);
        size_t n_acc = 0;
        int chunks_ok = 1;
        for (int k = 0; k <= n_hf; k++) {
            size_t len;
            const char *s = k < n_hf ? tok_decoder_push(d, hf[k], &len) : tok_decoder_flush(d, &len);
            chunks_ok &= s != NULL && valid_utf8(s, len) && n_acc + len <= n_dec + 63;
            if (s && n_acc + len <= n_dec + 63) memcpy(acc + n_acc, s, len), n_acc += len;
        }
        CHECK(chunks_ok && n_acc == n_dec && !memcmp(acc, want_dec, n_dec),
              "%s case %zu \"%s\": streamed decode differs or split a character", name, i, show(text, n));
        tok_decoder_free(&d);
        free(acc);
        if (json_is_true(json_object_get(c, "roundtrip"))) {
            CHECK(tok_decode(t, plain, n_plain, 0, &dec, &n_out, &err) == 0 && n_out == n && !memcmp(dec, text, n),
                  "%s case %zu \"%s\": decode(encode(s)) != s", name, i, show(text, n));
            free(dec);
            n_rt++;
        }
        free(plain);
        free(hf);
        free(text);
        free(want_dec);
        free(want_skip);
    }
    printf("%s: %zu strings, %d/%zu encodings equal HF, %d round-trips checked\n", name, json_array_size(cases),
           n_enc, 3 * json_array_size(cases), n_rt);
    json_decref(ref);
    tok_free(&t);
}

static void check_lookups(const char *tokdir) {
    char path[1024];
    strata_err err = {{0}};
    snprintf(path, sizeof path, "%s/qwen3", tokdir);
    tokenizer *q = tok_load(path, &err);
    snprintf(path, sizeof path, "%s/llama3", tokdir);
    tokenizer *l = tok_load(path, &err);
    if (!q || !l) {
        CHECK(0, "load for lookups: %s", err.msg);
        tok_free(&q), tok_free(&l);
        return;
    }
    CHECK(tok_id(q, "<|im_end|>") == 151645, "qwen3 <|im_end|> id %d", tok_id(q, "<|im_end|>"));
    CHECK(tok_is_special(q, 151645) && !tok_is_special(q, tok_id(q, "<think>")), "qwen3 special flags");
    CHECK(tok_vocab_size(q) == 151669, "qwen3 vocab size %d", tok_vocab_size(q));
    CHECK(tok_vocab_size(l) == 128256, "llama3 vocab size %d", tok_vocab_size(l));
    CHECK(tok_eos_id(q) == 151645 && tok_bos_id(q) == -1, "qwen3 eos %d bos %d", tok_eos_id(q), tok_bos_id(q));
    CHECK(tok_bos_id(l) == 128000 && tok_eos_id(l) == 128001, "llama3 bos %d eos %d", tok_bos_id(l), tok_eos_id(l));
    int32_t the = tok_id(l, "\xc4\xa0the"); /* "Ġthe" */
    CHECK(the >= 0 && tok_token(l, the) && !strcmp(tok_token(l, the), "\xc4\xa0the"), "llama3 Ġthe lookup");
    CHECK(tok_id(l, "no such token at all") == -1 && tok_token(l, -1) == NULL && tok_token(l, 1 << 30) == NULL,
          "unknown lookups");
    /* Unknown ids decode to nothing, as in HF. */
    int32_t ids[] = {9906, 999999, -5, 1917};
    char *out;
    CHECK(tok_decode(l, ids, 4, 0, &out, NULL, &err) == 0 && !strcmp(out, "Hello world"), "unknown ids skipped");
    free(out);
    /* A 4-byte emoji split over byte tokens streams out only when complete. */
    int32_t *e;
    int n_e;
    tok_encode(q, "\xf0\xaa\x9a\xb2", 4, 0, &e, &n_e, &err); /* U+2A6B2, a rare CJK ideograph */
    tok_decoder *d = tok_decoder_new(q, 0);
    size_t len = 0, total = 0;
    for (int i = 0; i < n_e; i++) {
        const char *s = tok_decoder_push(d, e[i], &len);
        CHECK(s && (i + 1 < n_e ? len == 0 : len == 4), "emoji chunk %d of %d: %zu bytes", i, n_e, len);
        total += len;
    }
    CHECK(n_e > 1 && total == 4, "emoji came in %d tokens", n_e);
    tok_decoder_flush(d, &len);
    tok_decoder_free(&d);
    free(e);
    /* A long run exercises the merge heap and the regex JIT stack. */
    size_t big = 200000;
    char *s = malloc(big);
    for (size_t i = 0; i < big; i++) s[i] = i % 1000 == 999 ? '\n' : (i / 7 % 3 ? 'a' : ' ');
    CHECK(tok_encode(q, s, big, 0, &e, &n_e, &err) == 0 && n_e > 1000, "200 kB text: %s", err.msg);
    free(e);
    memset(s, 'z', big);
    CHECK(tok_encode(l, s, big, 0, &e, &n_e, &err) == 0 && n_e > 10, "one 200 kB word: %s", err.msg);
    free(e);
    memset(s, ' ', big);
    CHECK(tok_encode(l, s, big, 0, &e, &n_e, &err) == 0 && n_e > 10, "200 kB of spaces: %s", err.msg);
    free(e);
    free(s);
    tok_free(&q), tok_free(&l);
}

/* ---- bad input ----------------------------------------------------------------------- */

static char g_tmp[512];

/* A tiny valid byte-level tokenizer.json: the 256 byte tokens, "ab" and the merge a+b. */
static json_t *tiny(void) {
    json_t *vocab = json_object();
    int n = 0;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
        int cp = printable ? b : 256 + n++;
        char s[4] = {0};
        if (cp < 0x80) s[0] = (char)cp;
        else s[0] = (char)(0xC0 | cp >> 6), s[1] = (char)(0x80 | (cp & 0x3F));
        json_object_set_new(vocab, s, json_integer(b));
    }
    json_object_set_new(vocab, "ab", json_integer(256));
    return json_pack("{s:{s:s, s:o, s:[s]}, s:{s:s, s:b}, s:{s:s}, s:[]}", "model", "type", "BPE", "vocab", vocab,
                     "merges", "a b", "pre_tokenizer", "type", "ByteLevel", "use_regex", 1, "decoder", "type",
                     "ByteLevel", "added_tokens");
}

static const char *write_case(const char *name, json_t *root, const char *raw) {
    static char dir[700];
    char path[800];
    snprintf(dir, sizeof dir, "%s/%s", g_tmp, name);
    mkdir(g_tmp, 0755);
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/tokenizer.json", dir);
    if (root) json_dump_file(root, path, 0), json_decref(root);
    else if (raw) {
        FILE *f = fopen(path, "w");
        fputs(raw, f);
        fclose(f);
    }
    return dir;
}

static void expect_error(const char *name, const char *dir, const char *want) {
    strata_err err = {{0}};
    tokenizer *t = tok_load(dir, &err);
    CHECK(t == NULL && strstr(err.msg, want) != NULL, "bad input %s: want error containing \"%s\", got \"%s\"",
          name, want, t ? "(loaded)" : err.msg);
    if (!t) printf("  bad input %-22s -> %s\n", name, err.msg);
    tok_free(&t);
}

static void check_bad_inputs(void) {
    json_t *j;
    strata_err err = {{0}};
    tokenizer *t = tok_load(write_case("tiny_ok", tiny(), NULL), &err);
    int32_t *ids = NULL;
    int n = 0;
    CHECK(t && tok_encode(t, "abc", 3, 0, &ids, &n, &err) == 0 && n == 2 && ids[0] == 256 && ids[1] == 'c',
          "tiny tokenizer merges a+b: %s", err.msg);
    free(ids);
    tok_free(&t);
    j = tiny(); /* the ["a","b"] array form of merges */
    json_object_set_new(json_object_get(j, "model"), "merges", json_pack("[[s,s]]", "a", "b"));
    t = tok_load(write_case("merge_array_form", j, NULL), &err);
    CHECK(t && tok_encode(t, "ab", 2, 0, &ids, &n, &err) == 0 && n == 1 && ids[0] == 256, "array-form merges");
    free(ids);
    tok_free(&t);

    expect_error("missing_file", write_case("missing", NULL, NULL), "cannot read");
    expect_error("malformed_json", write_case("malformed", NULL, "{\"model\": {\"type\": \"BPE\",,}"), "malformed JSON");
    expect_error("not_an_object", write_case("array", NULL, "[1,2]"), "not a JSON object");
    j = tiny();
    json_object_set_new(json_object_get(j, "model"), "type", json_string("WordPiece"));
    expect_error("model_type_wordpiece", write_case("wordpiece", j, NULL), "model type \"WordPiece\" is not supported");
    j = tiny();
    json_object_set_new(json_object_get(j, "model"), "type", json_string("Unigram"));
    expect_error("model_type_unigram", write_case("unigram", j, NULL), "model type \"Unigram\" is not supported");
    j = tiny();
    json_object_set_new(json_object_get(j, "model"), "merges", json_pack("[s]", "a zz"));
    expect_error("merge_unknown_token", write_case("merge_unknown", j, NULL), "token \"zz\" is not in the vocab");
    j = tiny();
    json_object_set_new(json_object_get(j, "model"), "merges", json_pack("[s]", "b c"));
    expect_error("merge_result_unknown", write_case("merge_result", j, NULL), "token \"bc\" is not in the vocab");
    j = tiny();
    json_object_set_new(json_object_get(j, "model"), "merges", json_pack("[s]", "abc"));
    expect_error("merge_not_a_pair", write_case("merge_pair", j, NULL), "not two tokens");
    j = tiny();
    json_object_set_new(j, "pre_tokenizer", json_pack("{s:s}", "type", "Whitespace"));
    expect_error("pretokenizer_unsupported", write_case("pretok", j, NULL), "pre_tokenizer type \"Whitespace\"");
    j = tiny();
    json_object_set_new(j, "pre_tokenizer", json_null());
    expect_error("not_byte_level", write_case("no_bytelevel", j, NULL), "no ByteLevel pre_tokenizer");
    j = tiny();
    json_object_set_new(j, "pre_tokenizer", json_pack("{s:s,s:{s:s},s:s}", "type", "Split", "pattern", "Regex",
                                                      "(unclosed", "behavior", "Isolated"));
    expect_error("bad_regex", write_case("bad_regex", j, NULL), "pre_tokenizer regex");
    j = tiny();
    json_object_set_new(j, "normalizer", json_pack("{s:s}", "type", "Lowercase"));
    expect_error("normalizer_unsupported", write_case("normalizer", j, NULL), "normalizer \"Lowercase\"");
    j = tiny();
    json_object_del(json_object_get(json_object_get(j, "model"), "vocab"), "a");
    expect_error("vocab_missing_byte", write_case("vocab_byte", j, NULL), "no token for byte 0x61");
    j = tiny();
    json_object_set_new(json_object_get(json_object_get(j, "model"), "vocab"), "x", json_integer(-3));
    expect_error("negative_id", write_case("negative_id", j, NULL), "id must be an integer");
    j = tiny();
    json_object_set_new(json_object_get(j, "model"), "byte_fallback", json_true());
    expect_error("byte_fallback", write_case("byte_fallback", j, NULL), "byte_fallback");
    j = tiny();
    json_object_set_new(j, "decoder", json_pack("{s:s}", "type", "WordPiece"));
    expect_error("decoder_unsupported", write_case("decoder", j, NULL), "decoder \"WordPiece\"");
}

int main(int argc, char **argv) {
    const char *tokdir = argc > 1 ? argv[1] : getenv("STRATA_TOKENIZERS");
    const char *fixdir = argc > 2 ? argv[2] : getenv("STRATA_TOKENIZER_FIXTURES");
    snprintf(g_tmp, sizeof g_tmp, "%s", argc > 3 ? argv[3] : "/tmp/strata_test_tokenizer");
    if (!tokdir || !fixdir) {
        fprintf(stderr, "usage: test_tokenizer TOKDIR FIXDIR [TMPDIR]\n");
        return 2;
    }
    run_reference(tokdir, fixdir, "qwen3");
    run_reference(tokdir, fixdir, "llama3");
    check_lookups(tokdir);
    check_bad_inputs();
    return TEST_END();
}
