/* strata-master: runs a model on this machine or across the cluster, from token ids (--tokens),
 * a prompt (-p), or an interactive chat (--chat). Option names follow llama.cpp and mlx-lm. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/chat.h"
#include "common/sampler.h"
#include "common/tokenizer.h"
#include "master/cluster_cli.h"
#include "master/engine.h"
#include "master/generate.h"
#include "master/http.h"

typedef struct {
    const char *model_dir, *tokens, *prompt, *system, *backend_name;
    int threads, ctx, chat, raw, verbose;
    gen_params gp;
    cluster_opts copts;
} master_opts;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void usage(FILE *f) {
    fprintf(f,
            "usage: strata-master --model DIR (-p TEXT | --chat | --tokens ID,ID,... | --serve) [options]\n"
            "       strata-master keygen --out FILE\n"
            "  -p, --prompt TEXT        generate a reply to TEXT (chat template applied when the model has one)\n"
            "  --chat                   interactive multi-turn chat on stdin\n"
            "  --tokens IDS             run comma-separated token ids, print the generated ids\n"
            "  --serve                  the OpenAI-compatible HTTP API (its options: --serve --help)\n"
            "  --system TEXT            system prompt (-p and --chat)\n"
            "  --raw                    use the prompt as is, without the chat template\n"
            "  -n, --max-tokens N       tokens to generate (default 256; 32 with --tokens)\n"
            "  --temp T                 temperature (default 0: greedy)\n"
            "  --top-k N, --top-p P, --min-p P, --repeat-penalty R, --repeat-last-n N, --seed S\n"
            "  --spec-k K               speculative decoding: draft K tokens by prompt lookup (default 0: off)\n"
            "  --backend NAME           cpu (default), cpu-ref, metal, cuda\n"
            "  -t, --threads N          CPU threads (default: all cores)\n"
            "  -c, --ctx N              context length (default 4096)\n"
            "  -v, --verbose            print the prompt's token count and the template used\n");
    cluster_cli_usage(f);
}

/* strict number parsing: the whole string, inside [lo, hi] */
static int parse_long(const char *flag, const char *v, long lo, long hi, long *out) {
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (!*v || *end || errno || x < lo || x > hi) {
        fprintf(stderr, "strata-master: %s: '%s' is not an integer in [%ld, %ld]\n", flag, v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_float(const char *flag, const char *v, double lo, double hi, float *out) {
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (!*v || *end || errno || !(x >= lo && x <= hi)) {
        fprintf(stderr, "strata-master: %s: '%s' is not a number in [%g, %g]\n", flag, v, lo, hi);
        return -1;
    }
    *out = (float)x;
    return 0;
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

/* Parses argv into o; returns 0, 1 after --help, or 2 after printing why an option is bad. */
static int parse_args(int argc, char **argv, master_opts *o) {
    memset(o, 0, sizeof *o);
    o->backend_name = "cpu";
    o->ctx = 4096;
    gen_params_default(&o->gp);
    o->gp.max_tokens = -1; /* set below by mode */
    cluster_opts_default(&o->copts);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        long x;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) { usage(stdout); return 1; }
        int used = cluster_cli_option(&o->copts, a, v);
        if (used < 0) return 2;
        if (used) { i += used - 1; continue; }
        if (!strcmp(a, "--chat")) { o->chat = 1; continue; }
        if (!strcmp(a, "--raw")) { o->raw = 1; continue; }
        if (!strcmp(a, "-v") || !strcmp(a, "--verbose")) { o->verbose = 1; continue; }
        if (!v) { fprintf(stderr, "strata-master: %s: missing value or unknown flag (see --help)\n", a); return 2; }
        sampler_params *sp = &o->gp.sampling;
        if (!strcmp(a, "--model") || !strcmp(a, "-m")) o->model_dir = v;
        else if (!strcmp(a, "--tokens")) o->tokens = v;
        else if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) o->prompt = v;
        else if (!strcmp(a, "--system")) o->system = v;
        else if (!strcmp(a, "--backend")) o->backend_name = v;
        else if (!strcmp(a, "-n") || !strcmp(a, "--max-tokens")) {
            if (parse_long(a, v, 0, 1 << 24, &x)) return 2;
            o->gp.max_tokens = (int)x;
        } else if (!strcmp(a, "-t") || !strcmp(a, "--threads")) {
            if (parse_long(a, v, 0, 1024, &x)) return 2;
            o->threads = (int)x;
        } else if (!strcmp(a, "-c") || !strcmp(a, "--ctx")) {
            if (parse_long(a, v, 1, 1 << 24, &x)) return 2;
            o->ctx = (int)x;
        } else if (!strcmp(a, "--temp")) { if (parse_float(a, v, 0, 100, &sp->temp)) return 2; }
        else if (!strcmp(a, "--top-p")) { if (parse_float(a, v, 0, 1, &sp->top_p)) return 2; }
        else if (!strcmp(a, "--min-p")) { if (parse_float(a, v, 0, 1, &sp->min_p)) return 2; }
        else if (!strcmp(a, "--repeat-penalty")) { if (parse_float(a, v, 0, 100, &sp->repeat_penalty)) return 2; }
        else if (!strcmp(a, "--top-k")) {
            if (parse_long(a, v, 0, 1 << 24, &x)) return 2;
            sp->top_k = (int)x;
        } else if (!strcmp(a, "--repeat-last-n")) {
            if (parse_long(a, v, 0, 1 << 24, &x)) return 2;
            sp->repeat_last_n = (int)x;
        } else if (!strcmp(a, "--seed")) {
            if (parse_long(a, v, 0, 0x7fffffffL, &x)) return 2;
            sp->seed = (uint64_t)x;
        } else if (!strcmp(a, "--spec-k")) {
            if (parse_long(a, v, 0, 64, &x)) return 2;
            o->gp.spec_k = (int)x;
        } else { fprintf(stderr, "strata-master: unknown option '%s' (see --help)\n", a); return 2; }
        i++;
    }
    int modes = !!o->tokens + !!o->prompt + o->chat;
    if (!o->model_dir || modes != 1) {
        fprintf(stderr, "strata-master: need --model DIR and exactly one of -p, --chat, --tokens (see --help)\n");
        return 2;
    }
    if (o->gp.max_tokens < 0) o->gp.max_tokens = o->tokens ? 32 : 256;
    return 0;
}

/* --tokens: greedy ids in, ids out (no tokenizer needed) */
static int run_ids(engine *e, const master_opts *o, strata_err *err) {
    int32_t *ids = NULL;
    int n_ids = 0;
    if (parse_ids(o->tokens, &ids, &n_ids)) {
        free(ids);
        return err_set(err, "--tokens: expected comma-separated token ids, got '%s'", o->tokens);
    }
    int vocab = e->cfg->vocab_size, rc = 0, generated = 0;
    float *logits = malloc(sizeof(float) * (size_t)vocab);
    double t0 = now_s(), t1 = t0;
    if (!logits || e->ops->forward(e, 1, ids, n_ids, logits, 0, err)) { rc = -1; goto out; }
    t1 = now_s();
    for (; generated < o->gp.max_tokens; generated++) {
        int32_t tok = sampler_argmax(logits, vocab);
        printf("%s%d", generated ? "," : "", tok);
        fflush(stdout);
        if (generated + 1 < o->gp.max_tokens && e->ops->forward(e, 1, &tok, 1, logits, 0, err)) { rc = -1; goto out; }
    }
    double t2 = now_s();
    printf("\n");
    fprintf(stderr, "prefill: %d tokens in %.3f s (%.1f tok/s)\n", n_ids, t1 - t0, n_ids / (t1 - t0));
    if (generated > 1)
        fprintf(stderr, "decode: %d tokens in %.3f s (%.1f tok/s)\n", generated - 1, t2 - t1, (generated - 1) / (t2 - t1));
out:
    free(logits);
    free(ids);
    return rc;
}

/* the text of one reply: printed as it comes, kept for the next turn of a chat */
typedef struct {
    char *text;
    size_t len, cap;
} reply;

static int on_piece(const char *text, size_t len, void *user) {
    reply *r = user;
    fwrite(text, 1, len, stdout);
    fflush(stdout);
    if (r->len + len + 1 > r->cap) {
        size_t cap = (r->len + len + 1) * 2;
        char *t = realloc(r->text, cap);
        if (!t) return 1;
        r->text = t;
        r->cap = cap;
    }
    memcpy(r->text + r->len, text, len);
    r->len += len;
    r->text[r->len] = '\0';
    return 0;
}

static void print_stats(const gen_result *r) {
    fprintf(stderr, "\nprefill: %d tokens in %.3f s (%.1f tok/s)\n", r->n_prompt, r->prefill_s,
            r->prefill_s > 0 ? r->n_prompt / r->prefill_s : 0.0);
    if (r->n_generated > 1)
        fprintf(stderr, "decode: %d tokens in %.3f s (%.1f tok/s), finish: %s\n", r->n_generated - 1, r->decode_s,
                r->decode_s > 0 ? (r->n_generated - 1) / r->decode_s : 0.0, gen_finish_name(r->finish));
    if (r->spec_passes)
        fprintf(stderr, "speculative: %d of %d drafted tokens accepted, %.2f per pass\n", r->accepted, r->drafted,
                gen_mean_accepted(r));
}

/* Renders the conversation (or takes the text as is), encodes it and generates one reply. */
static int reply_to(engine *e, const master_opts *o, const tokenizer *t, const chat_template *ct,
                    const chat_msg *msgs, int n_msgs, uint64_t session, reply *out, strata_err *err) {
    char *text = NULL;
    int32_t *ids = NULL;
    int n_ids = 0, rc;
    if (ct) {
        if (chat_render(ct, msgs, n_msgs, NULL, &text, err)) return -1;
        /* the template writes BOS itself: encode without adding special tokens, as transformers */
        rc = tok_encode(t, text, strlen(text), 0, &ids, &n_ids, err);
    } else {
        rc = tok_encode(t, msgs[n_msgs - 1].content, strlen(msgs[n_msgs - 1].content), TOK_ADD_SPECIAL, &ids, &n_ids, err);
    }
    if (!rc && o->verbose)
        fprintf(stderr, "prompt: %d tokens (%s)\n", n_ids, ct ? chat_format_name(chat_kind(ct)) : "raw");
    gen_params p = o->gp;
    const int32_t *stop = NULL;
    if (ct) p.n_stop_ids = chat_stop_ids(ct, &stop);
    else if (tok_eos_id(t) >= 0) { static int32_t eos; eos = tok_eos_id(t); stop = &eos; p.n_stop_ids = 1; }
    p.stop_ids = stop;
    p.ctx_len = o->ctx;
    gen_result r;
    out->len = 0;
    if (!rc) rc = gen_run(e, session, t, ids, n_ids, &p, on_piece, out, &r, err);
    if (!rc) print_stats(&r);
    free(text);
    free(ids);
    return rc;
}

static int run_text(engine *e, const master_opts *o, strata_err *err) {
    tokenizer *t = tok_load(o->model_dir, err);
    if (!t) return err_prefix(err, "%s: the model has no usable tokenizer (use --tokens)", o->model_dir);
    chat_template *ct = NULL;
    if (!o->raw) {
        strata_err cerr = {{0}};
        ct = chat_load(o->model_dir, t, &cerr);
        if (!ct && o->verbose) fprintf(stderr, "no chat template (%s): the prompt is used as is\n", cerr.msg);
    }
    if (tok_vocab_size(t) > e->cfg->vocab_size) {
        err_set(err, "the tokenizer has %d tokens but the model's vocabulary is %d", tok_vocab_size(t), e->cfg->vocab_size);
        chat_free(&ct);
        tok_free(&t);
        return -1;
    }
    int n = 0, cap = 16, rc = 0;
    chat_msg *msgs = calloc((size_t)cap, sizeof *msgs);
    char **owned = calloc((size_t)cap, sizeof *owned);
    reply r = {0};
    if (!msgs || !owned) { rc = err_set(err, "out of memory"); goto out; }
    if (o->system) msgs[n++] = (chat_msg){.role = "system", .content = o->system};
    if (o->prompt) {
        msgs[n++] = (chat_msg){.role = "user", .content = o->prompt};
        rc = reply_to(e, o, t, ct, msgs, n, 1, &r, err);
        goto out;
    }
    /* --chat: one turn per line of stdin, the whole conversation re-rendered each turn */
    int tty = isatty(0);
    char line[16384];
    for (uint64_t turn = 1;; turn++) {
        if (tty) { fputs("> ", stdout); fflush(stdout); }
        if (!fgets(line, sizeof line, stdin)) break;
        line[strcspn(line, "\n")] = '\0';
        if (!line[0]) continue;
        if (n + 2 > cap) {
            cap *= 2;
            chat_msg *m = realloc(msgs, sizeof *msgs * (size_t)cap);
            char **ow = m ? realloc(owned, sizeof *owned * (size_t)cap) : NULL;
            if (m) msgs = m;
            if (!m || !ow) { rc = err_set(err, "out of memory"); goto out; }
            owned = ow;
        }
        owned[n] = strdup(line);
        msgs[n] = (chat_msg){.role = "user", .content = owned[n]};
        n++;
        if ((rc = reply_to(e, o, t, ct, msgs, n, turn, &r, err))) goto out;
        printf("\n");
        owned[n] = strdup(r.text ? r.text : "");
        msgs[n] = (chat_msg){.role = "assistant", .content = owned[n]};
        n++;
    }
out:
    if (o->prompt && !rc) printf("\n");
    for (int i = 0; owned && i < n; i++) free(owned[i]);
    free(owned);
    free(msgs);
    free(r.text);
    chat_free(&ct);
    tok_free(&t);
    return rc;
}

int main(int argc, char **argv) {
    int crc = cluster_cli_command(argc, argv); /* strata-master keygen ... */
    if (crc >= 0) return crc;
    for (int i = 1; i < argc; i++) /* the server has its own command line: master/http_main.c */
        if (!strcmp(argv[i], "--serve")) return http_main(argc, argv);
    master_opts o;
    int prc = parse_args(argc, argv, &o);
    if (prc) return prc == 1 ? 0 : 2;
    strata_err err = {{0}};
    engine *e = cluster_cli_engine(&o.copts, o.model_dir, o.backend_name, o.threads, o.ctx, &err);
    if (!e) {
        fprintf(stderr, "strata-master: %s\n", err.msg);
        return 1;
    }
    int rc = o.tokens ? run_ids(e, &o, &err) : run_text(e, &o, &err);
    if (rc) fprintf(stderr, "strata-master: %s\n", err.msg);
    else cluster_cli_report(e);
    engine_destroy(&e);
    return rc ? 1 : 0;
}
