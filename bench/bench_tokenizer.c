/* Tokenizer encoding (and decoding) speed, in MB of UTF-8 text a second, single thread.
 * Prints a table for a person and one JSON line ("bench_tokenizer {...}") for a script.
 *   usage: bench_tokenizer TOKDIR [MB]      TOKDIR holds qwen3/ and llama3/
 * Each text is about MB megabytes (default 4); the time is the best of three runs. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/tokenizer.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static const char *const PROSE =
    "The history of natural language processing generally started in the 1950s, although work can "
    "be found from earlier periods. In 1950, Alan Turing published an article titled \"Computing "
    "Machinery and Intelligence\" which proposed what is now called the Turing test. Don't we all "
    "wonder what it'll be like in 2050? Prices rose 3.5% to $1,234.56 on 2024-01-15.\n\n";
static const char *const CODE =
    "static int parse(const char *s, size_t n, int32_t *out) {\n"
    "    for (size_t i = 0; i < n; ++i) {\n"
    "        if (s[i] == '\\n') { out[i] = -1; continue; }\n"
    "        out[i] = (int32_t)s[i] * 31 + 7;  // hash-ish\n"
    "    }\n    return 0;\n}\n\n";
static const char *const CJK =
    "自然语言处理是计算机科学领域与人工智能领域中的一个重要方向。它研究能实现人与计算机之间用自然语言进行有效通信的各种理论和方法。"
    "日本語の文章も少し混ぜます。한국어 문장도 있습니다。\n";
static const char *const MIXED =
    "Hello 世界! مرحبا بالعالم 😀👍🏽 naïve café — “quotes” <|im_end|> \t\t  spaces   and\n\n\nnewlines 12345 "
    "Привет, мир! नमस्ते e\xcc\x81 <|eot_id|>\n";

static char *repeat(const char *unit, size_t target, size_t *n) {
    size_t u = strlen(unit), k = target / u + 1;
    char *s = malloc(k * u + 1);
    for (size_t i = 0; i < k; i++) memcpy(s + i * u, unit, u);
    s[k * u] = 0;
    *n = k * u;
    return s;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: bench_tokenizer TOKDIR [MB]\n");
        return 2;
    }
    double mb = argc > 2 ? atof(argv[2]) : 4.0;
    const char *names[] = {"qwen3", "llama3"};
    const char *kinds[] = {"english", "code", "cjk", "mixed"};
    const char *units[] = {PROSE, CODE, CJK, MIXED};
    printf("%-7s %-8s %8s %10s %10s %12s %10s\n", "tok", "text", "MB", "tokens", "load_s", "encode_MB/s",
           "decode_MB/s");
    char json[4096];
    size_t jn = (size_t)snprintf(json, sizeof json, "bench_tokenizer {\"mb\":%.1f,\"results\":[", mb);
    int first = 1;
    for (int t = 0; t < 2; t++) {
        char dir[2048];
        snprintf(dir, sizeof dir, "%s/%s", argv[1], names[t]);
        strata_err err = {{0}};
        double t0 = now_s();
        tokenizer *tok = tok_load(dir, &err);
        double load_s = now_s() - t0;
        if (!tok) {
            fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
            return 1;
        }
        for (int k = 0; k < 4; k++) {
            size_t n;
            char *text = repeat(units[k], (size_t)(mb * 1e6), &n);
            double best_enc = 1e30, best_dec = 1e30;
            int32_t *ids = NULL;
            int n_ids = 0;
            for (int rep = 0; rep < 3; rep++) {
                free(ids);
                t0 = now_s();
                if (tok_encode(tok, text, n, 0, &ids, &n_ids, &err) < 0) {
                    fprintf(stderr, "bench_tokenizer: %s\n", err.msg);
                    return 1;
                }
                double dt = now_s() - t0;
                best_enc = dt < best_enc ? dt : best_enc;
                char *out;
                t0 = now_s();
                tok_decode(tok, ids, n_ids, 0, &out, NULL, &err);
                dt = now_s() - t0;
                best_dec = dt < best_dec ? dt : best_dec;
                free(out);
            }
            double enc = n / 1e6 / best_enc, dec = n / 1e6 / best_dec;
            printf("%-7s %-8s %8.2f %10d %10.3f %12.2f %10.1f\n", names[t], kinds[k], n / 1e6, n_ids, load_s, enc, dec);
            jn += (size_t)snprintf(json + jn, sizeof json - jn,
                                   "%s{\"tokenizer\":\"%s\",\"text\":\"%s\",\"bytes\":%zu,\"tokens\":%d,"
                                   "\"load_s\":%.3f,\"encode_mb_s\":%.2f,\"decode_mb_s\":%.1f}",
                                   first ? "" : ",", names[t], kinds[k], n, n_ids, load_s, enc, dec);
            first = 0;
            free(ids);
            free(text);
        }
        tok_free(&tok);
    }
    printf("%s]}\n", json);
    return 0;
}
