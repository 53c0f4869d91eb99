/* Chat templates by family; see chat.h for what is matched and why there is no Jinja. */
#include "common/chat.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <utf8proc.h>

struct chat_template {
    chat_format format;
    char *bos_text;       /* bos_token as text (Llama 3 writes it into the prompt) */
    char *default_system; /* ChatML: system prompt used when the first message is not one */
    int always_gen;       /* Llama 3.0's template writes the assistant header unconditionally */
    int llama31;          /* Llama 3.1+: a system header with knowledge and today's date */
    char *date;           /* its date: fixed by the template, or today (strftime_now) */
    int32_t stop[16];
    int n_stop;
};

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} sbuf;

static void put(sbuf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (b->n + n + 1 > cap) cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

static void puts_(sbuf *b, const char *s) { put(b, s, strlen(s)); }

/* A view of part of a string, for Python's strip/split without copies. */
typedef struct {
    const char *s;
    size_t n;
} view;

static view V(const char *s) { return (view){s ? s : "", s ? strlen(s) : 0}; }
static void putv(sbuf *b, view v) { put(b, v.s, v.n); }

static view lstrip_nl(view v) {
    while (v.n && v.s[0] == '\n') v.s++, v.n--;
    return v;
}
static view rstrip_nl(view v) {
    while (v.n && v.s[v.n - 1] == '\n') v.n--;
    return v;
}

/* Python's str.isspace, which Jinja's trim (str.strip) uses. */
static int py_space(int32_t c) {
    return (c >= 9 && c <= 13) || (c >= 0x1C && c <= 0x20) || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F ||
           c == 0x3000;
}

static view trim(view v) {
    for (;;) { /* leading */
        utf8proc_int32_t c;
        utf8proc_ssize_t k = v.n ? utf8proc_iterate((const uint8_t *)v.s, (utf8proc_ssize_t)v.n, &c) : 0;
        if (k <= 0 || !py_space(c)) break;
        v.s += k, v.n -= (size_t)k;
    }
    while (v.n) { /* trailing: step back to the last character's first byte */
        size_t i = v.n - 1;
        while (i > 0 && ((uint8_t)v.s[i] & 0xC0) == 0x80) i--;
        utf8proc_int32_t c;
        if (utf8proc_iterate((const uint8_t *)v.s + i, (utf8proc_ssize_t)(v.n - i), &c) <= 0 || !py_space(c)) break;
        v.n = i;
    }
    return v;
}

/* First / last occurrence of needle in v; NULL if none. */
static const char *find_first(view v, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = 0; i + k <= v.n; i++)
        if (!memcmp(v.s + i, needle, k)) return v.s + i;
    return NULL;
}
static const char *find_last(view v, const char *needle) {
    size_t k = strlen(needle);
    for (size_t i = v.n >= k ? v.n - k + 1 : 0; i-- > 0;)
        if (!memcmp(v.s + i, needle, k)) return v.s + i;
    return NULL;
}

static int starts_with(view v, const char *p) { return v.n >= strlen(p) && !memcmp(v.s, p, strlen(p)); }
static int ends_with(view v, const char *p) {
    size_t k = strlen(p);
    return v.n >= k && !memcmp(v.s + v.n - k, p, k);
}

static int is_role(const chat_msg *m, const char *r) { return m->role && !strcmp(m->role, r); }

static void render_qwen3(const chat_template *c, const chat_msg *m, int n, const chat_opts *o, sbuf *b) {
    (void)c;
    if (n > 0 && is_role(&m[0], "system")) {
        puts_(b, "<|im_start|>system\n");
        putv(b, V(m[0].content));
        puts_(b, "<|im_end|>\n");
    }
    /* The last real user query: tool results wrapped as user turns do not count. */
    int last_query = n - 1;
    for (int i = n - 1; i >= 0; i--) {
        view v = V(m[i].content);
        if (is_role(&m[i], "user") && !(starts_with(v, "<tool_response>") && ends_with(v, "</tool_response>"))) {
            last_query = i;
            break;
        }
    }
    for (int i = 0; i < n; i++) {
        view content = V(m[i].content);
        if (is_role(&m[i], "user") || (is_role(&m[i], "system") && i > 0)) {
            puts_(b, "<|im_start|>"), puts_(b, m[i].role), puts_(b, "\n");
            putv(b, content), puts_(b, "<|im_end|>\n");
        } else if (is_role(&m[i], "assistant")) {
            view reasoning = {"", 0};
            if (m[i].reasoning) reasoning = V(m[i].reasoning);
            else if (find_first(content, "</think>")) {
                const char *first = find_first(content, "</think>"), *last = find_last(content, "</think>");
                /* content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') */
                view before = rstrip_nl((view){content.s, (size_t)(first - content.s)});
                const char *open = find_last(before, "<think>");
                if (open) before = (view){open + 7, before.n - (size_t)(open + 7 - before.s)};
                reasoning = lstrip_nl(before);
                /* content.split('</think>')[-1].lstrip('\n') */
                content = lstrip_nl((view){last + 8, content.n - (size_t)(last + 8 - content.s)});
            }
            puts_(b, "<|im_start|>assistant\n");
            if (i > last_query && (i == n - 1 || reasoning.n)) {
                puts_(b, "<think>\n"), putv(b, lstrip_nl(rstrip_nl(reasoning))), puts_(b, "\n</think>\n\n");
                content = lstrip_nl(content);
            }
            putv(b, content), puts_(b, "<|im_end|>\n");
        } else if (is_role(&m[i], "tool")) {
            if (i == 0 || !is_role(&m[i - 1], "tool")) puts_(b, "<|im_start|>user");
            puts_(b, "\n<tool_response>\n"), putv(b, content), puts_(b, "\n</tool_response>");
            if (i == n - 1 || !is_role(&m[i + 1], "tool")) puts_(b, "<|im_end|>\n");
        }
    }
    if (o->add_generation_prompt) {
        puts_(b, "<|im_start|>assistant\n");
        if (o->enable_thinking == 0) puts_(b, "<think>\n\n</think>\n\n");
    }
}

static void render_chatml(const chat_template *c, const chat_msg *m, int n, const chat_opts *o, sbuf *b) {
    if (c->default_system && !(n > 0 && is_role(&m[0], "system")))
        puts_(b, "<|im_start|>system\n"), puts_(b, c->default_system), puts_(b, "<|im_end|>\n");
    for (int i = 0; i < n; i++)
        puts_(b, "<|im_start|>"), puts_(b, m[i].role), puts_(b, "\n"), putv(b, V(m[i].content)),
            puts_(b, "<|im_end|>\n");
    if (o->add_generation_prompt) puts_(b, "<|im_start|>assistant\n");
}

static void header(sbuf *b, const char *role) {
    puts_(b, "<|start_header_id|>"), puts_(b, role), puts_(b, "<|end_header_id|>\n\n");
}

static void render_llama3(const chat_template *c, const chat_msg *m, int n, const chat_opts *o, sbuf *b) {
    puts_(b, c->bos_text ? c->bos_text : "");
    int first = 0;
    if (c->llama31) { /* the system turn is always there, carrying the dates */
        header(b, "system");
        puts_(b, "Cutting Knowledge Date: December 2023\nToday Date: "), puts_(b, c->date), puts_(b, "\n\n");
        if (n > 0 && is_role(&m[0], "system")) putv(b, trim(V(m[0].content))), first = 1;
        puts_(b, "<|eot_id|>");
    }
    for (int i = first; i < n; i++) header(b, m[i].role), putv(b, trim(V(m[i].content))), puts_(b, "<|eot_id|>");
    if (o->add_generation_prompt || c->always_gen) header(b, "assistant");
}

int chat_render(const chat_template *c, const chat_msg *msgs, int n, const chat_opts *opts, char **out,
                strata_err *err) {
    chat_opts dflt = {1, -1};
    const chat_opts *o = opts ? opts : &dflt;
    *out = NULL;
    for (int i = 0; i < n; i++)
        if (!msgs[i].role || !*msgs[i].role) return err_set(err, "chat: message %d has no role", i);
    sbuf b = {0};
    put(&b, "", 0);
    if (c->format == CHAT_QWEN3) render_qwen3(c, msgs, n, o, &b);
    else if (c->format == CHAT_CHATML) render_chatml(c, msgs, n, o, &b);
    else render_llama3(c, msgs, n, o, &b);
    if (b.oom) {
        free(b.p);
        return err_set(err, "chat: out of memory");
    }
    *out = b.p;
    return 0;
}

/* ---- loading --------------------------------------------------------------------------- */

static json_t *load_json(const char *dir, const char *name, int required, strata_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) {
        if (required) err_set(err, "%s: cannot read", path);
        return NULL;
    }
    json_error_t je;
    /* Integers as reals: transformers spells model_max_length as a 31-digit integer. */
    json_t *root = json_loadf(f, JSON_DECODE_INT_AS_REAL, &je);
    fclose(f);
    if (!root) err_set(err, "%s: malformed JSON at line %d column %d: %s", path, je.line, je.column, je.text);
    return root;
}

static char *read_file(const char *dir, const char *name) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    sbuf b = {0};
    char chunk[8192];
    size_t k;
    put(&b, "", 0);
    while ((k = fread(chunk, 1, sizeof chunk, f)) > 0) put(&b, chunk, k);
    fclose(f);
    if (b.oom) free(b.p);
    return b.oom ? NULL : b.p;
}

static const char *token_text(json_t *cfg, const char *key) {
    json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_string_value(v);
}

static void add_stop(chat_template *c, int32_t id) {
    if (id < 0 || c->n_stop == (int)(sizeof c->stop / sizeof c->stop[0])) return;
    for (int i = 0; i < c->n_stop; i++)
        if (c->stop[i] == id) return;
    c->stop[c->n_stop++] = id;
}

static void add_stop_json(chat_template *c, json_t *v) {
    if (json_is_number(v)) add_stop(c, (int32_t)json_number_value(v));
    size_t i;
    json_t *x;
    if (json_is_array(v)) json_array_foreach(v, i, x) if (json_is_number(x)) add_stop(c, (int32_t)json_number_value(x));
}

/* ChatML templates that supply a system prompt spell it as a Jinja string literal,
 * '<|im_start|>system\n...<|im_end|>\n'; one that continues with ' + messages[0]...' has
 * none. Escapes inside the literal are undone. */
static char *default_system(const char *tpl) {
    static const char *const lead[] = {"'<|im_start|>system\\n", "\"<|im_start|>system\\n"};
    for (int k = 0; k < 2; k++) {
        for (const char *p = strstr(tpl, lead[k]); p; p = strstr(p + 1, lead[k])) {
            const char *s = p + strlen(lead[k]), *e = strstr(s, "<|im_end|>");
            char quote = lead[k][0];
            if (!e || e <= s) continue;
            int literal = 1;
            for (const char *q = s; q < e; q++)
                if (*q == quote && q[-1] != '\\') literal = 0;
            if (!literal) continue;
            char *out = malloc((size_t)(e - s) + 1), *w = out;
            if (!out) return NULL;
            for (const char *q = s; q < e; q++) {
                if (*q == '\\' && q + 1 < e) {
                    q++;
                    *w++ = *q == 'n' ? '\n' : *q == 't' ? '\t' : *q;
                } else
                    *w++ = *q;
            }
            *w = '\0';
            return out;
        }
    }
    return NULL;
}

static char *dup(const char *s) {
    if (!s) return NULL;
    char *d = malloc(strlen(s) + 1);
    if (d) strcpy(d, s);
    return d;
}

int chat_template_present(const char *dir) {
    json_t *cfg = load_json(dir, "tokenizer_config.json", 1, NULL);
    int yes = cfg && json_object_get(cfg, "chat_template") != NULL;
    json_decref(cfg);
    if (!yes) {
        char *tpl = read_file(dir, "chat_template.jinja");
        yes = tpl != NULL;
        free(tpl);
    }
    return yes;
}

chat_template *chat_load(const char *dir, const tokenizer *t, strata_err *err) {
    json_t *cfg = load_json(dir, "tokenizer_config.json", 1, err);
    if (!cfg) return NULL;
    chat_template *c = calloc(1, sizeof *c);
    char *tpl = NULL;
    if (!c) {
        err_set(err, "chat: out of memory");
        goto fail;
    }
    json_t *ct = json_object_get(cfg, "chat_template");
    if (json_is_array(ct)) { /* [{"name": "default", "template": ...}, ...] */
        size_t i;
        json_t *v, *pick = NULL;
        json_array_foreach(ct, i, v) {
            const char *name = json_string_value(json_object_get(v, "name"));
            if (!pick || (name && !strcmp(name, "default"))) pick = v;
        }
        ct = json_object_get(pick, "template");
    }
    tpl = json_is_string(ct) ? dup(json_string_value(ct)) : read_file(dir, "chat_template.jinja");
    if (!tpl) {
        err_set(err, "%s: no chat_template in tokenizer_config.json nor chat_template.jinja", dir);
        goto fail;
    }
    const char *eot;
    if (strstr(tpl, "<|im_start|>")) {
        c->format = strstr(tpl, "</think>") && strstr(tpl, "reasoning_content") ? CHAT_QWEN3 : CHAT_CHATML;
        if (c->format == CHAT_CHATML) c->default_system = default_system(tpl);
        eot = "<|im_end|>";
    } else if (strstr(tpl, "<|start_header_id|>")) {
        c->format = CHAT_LLAMA3;
        c->always_gen = !strstr(tpl, "add_generation_prompt");
        c->llama31 = strstr(tpl, "Cutting Knowledge Date") != NULL;
        char today[64] = "26 Jul 2024"; /* the 3.1 template's default date_string */
        if (strstr(tpl, "strftime_now")) {
            time_t now = time(NULL);
            struct tm tm;
            if (localtime_r(&now, &tm)) strftime(today, sizeof today, "%d %b %Y", &tm);
        }
        c->date = dup(today);
        c->bos_text = dup(token_text(cfg, "bos_token"));
        eot = "<|eot_id|>";
    } else {
        err_set(err, "%s: chat_template is not one strata knows (neither ChatML nor Llama 3 headers)", dir);
        goto fail;
    }
    add_stop(c, tok_id(t, eot)); /* first: the end-of-turn token */
    if (c->format == CHAT_LLAMA3) add_stop(c, tok_id(t, "<|eom_id|>")); /* 3.1+: end of a tool message */
    const char *eos = token_text(cfg, "eos_token");
    if (eos) add_stop(c, tok_id(t, eos));
    add_stop(c, tok_eos_id(t));
    static const char *const files[] = {"generation_config.json", "config.json"};
    for (int i = 0; i < 2; i++) {
        strata_err ignore;
        json_t *g = load_json(dir, files[i], 0, &ignore);
        add_stop_json(c, json_object_get(g, "eos_token_id"));
        json_decref(g);
    }
    free(tpl);
    json_decref(cfg);
    return c;
fail:
    free(tpl);
    json_decref(cfg);
    chat_free(&c);
    return NULL;
}

void chat_free(chat_template **c) {
    if (!c || !*c) return;
    free((*c)->bos_text);
    free((*c)->default_system);
    free((*c)->date);
    free(*c);
    *c = NULL;
}

chat_format chat_kind(const chat_template *c) { return c->format; }

const char *chat_format_name(chat_format f) {
    return f == CHAT_QWEN3 ? "qwen3" : f == CHAT_CHATML ? "chatml" : "llama3";
}

int chat_stop_ids(const chat_template *c, const int32_t **ids) {
    *ids = c->stop;
    return c->n_stop;
}

int chat_is_stop(const chat_template *c, int32_t id) {
    for (int i = 0; i < c->n_stop; i++)
        if (c->stop[i] == id) return 1;
    return 0;
}
