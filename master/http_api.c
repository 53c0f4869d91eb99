/* OpenAI request/response bodies; see http_api.h. */
#include "master/http_api.h"

#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MESSAGES 4096

int api_fail(api_error *e, int status, const char *type, const char *param, const char *code, const char *fmt, ...) {
    e->status = status;
    e->type = type;
    e->param = param;
    e->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(e->message, sizeof e->message, fmt, ap);
    va_end(ap);
    return -1;
}

static json_t *str_or_null(const char *s) { return s ? json_string(s) : json_null(); }

char *api_error_json(const api_error *e) {
    json_t *o = json_pack("{s:{s:s, s:s, s:o, s:o}}", "error", "message", e->message, "type", e->type ? e->type : "error",
                          "param", str_or_null(e->param), "code", str_or_null(e->code));
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

void api_request_free(api_request *r) {
    free(r->prompt);
    for (int i = 0; i < 4; i++) free(r->stops[i]);
    memset(r, 0, sizeof *r);
}

/* a number field in [lo, hi] (absent or null: keeps *out) */
static int get_number(json_t *o, const char *name, double lo, double hi, int lo_open, double *out, api_error *e) {
    json_t *v = json_object_get(o, name);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_number(v)) return api_fail(e, 400, "invalid_request_error", name, "invalid_type", "'%s' must be a number", name);
    double x = json_number_value(v);
    if (!isfinite(x) || x < lo || x > hi || (lo_open && x == lo))
        return api_fail(e, 400, "invalid_request_error", name, "invalid_value", "'%s' must be in %c%g, %g], got %g", name,
                        lo_open ? '(' : '[', lo, hi, x);
    *out = x;
    return 0;
}

static int get_int(json_t *o, const char *name, long long lo, long long hi, long long *out, api_error *e) {
    json_t *v = json_object_get(o, name);
    if (!v || json_is_null(v)) return 0;
    if (!json_is_integer(v)) return api_fail(e, 400, "invalid_request_error", name, "invalid_type", "'%s' must be an integer", name);
    long long x = json_integer_value(v);
    if (x < lo || x > hi)
        return api_fail(e, 400, "invalid_request_error", name, "invalid_value",
                        "Invalid '%s': expected a value in [%lld, %lld], got %lld", name, lo, hi, x);
    *out = x;
    return 0;
}

/* message content: a string, or an array of {type: "text", text} parts (joined) */
static int content_text(json_t *c, char **out, api_error *e) {
    if (!c || json_is_null(c)) { *out = strdup(""); return *out ? 0 : -1; }
    if (json_is_string(c)) { *out = strdup(json_string_value(c)); return *out ? 0 : -1; }
    if (!json_is_array(c)) return api_fail(e, 400, "invalid_request_error", "messages", "invalid_type",
                                           "message content must be a string or an array of text parts");
    size_t total = 1, i;
    json_t *part;
    json_array_foreach(c, i, part) {
        json_t *ty = json_object_get(part, "type"), *tx = json_object_get(part, "text");
        if (!json_is_string(ty) || strcmp(json_string_value(ty), "text") || !json_is_string(tx))
            return api_fail(e, 400, "invalid_request_error", "messages", "unsupported_content",
                            "only text content parts ({\"type\": \"text\", \"text\": ...}) are supported");
        total += json_string_length(tx);
    }
    if (!(*out = malloc(total))) return -1;
    (*out)[0] = 0;
    json_array_foreach(c, i, part) strcat(*out, json_string_value(json_object_get(part, "text")));
    return 0;
}

static int chat_prompt(const api_config *c, json_t *root, char **text, api_error *e) {
    if (!c->chat)
        return api_fail(e, 400, "invalid_request_error", "messages", "model_not_supported",
                        "this model has no chat template (a base model): use /v1/completions");
    json_t *msgs = json_object_get(root, "messages");
    if (!json_is_array(msgs) || json_array_size(msgs) == 0)
        return api_fail(e, 400, "invalid_request_error", "messages", "missing_required_parameter",
                        "'messages' must be a non-empty array");
    size_t n = json_array_size(msgs);
    if (n > MAX_MESSAGES) return api_fail(e, 400, "invalid_request_error", "messages", "invalid_value", "too many messages (%zu)", n);
    chat_msg *m = calloc(n, sizeof *m);
    char **content = calloc(n, sizeof *content);
    int rc = -1;
    if (!m || !content) { api_fail(e, 500, "server_error", NULL, NULL, "out of memory"); goto out; }
    for (size_t i = 0; i < n; i++) {
        json_t *msg = json_array_get(msgs, i), *role = json_object_get(msg, "role");
        if (!json_is_object(msg) || !json_is_string(role)) {
            api_fail(e, 400, "invalid_request_error", "messages", "invalid_value", "messages[%zu] needs a 'role' string", i);
            goto out;
        }
        const char *r = json_string_value(role);
        if (strcmp(r, "system") && strcmp(r, "user") && strcmp(r, "assistant") && strcmp(r, "tool") && strcmp(r, "developer")) {
            api_fail(e, 400, "invalid_request_error", "messages", "invalid_value",
                     "messages[%zu].role '%s' is not one of system, developer, user, assistant, tool", i, r);
            goto out;
        }
        if (content_text(json_object_get(msg, "content"), &content[i], e)) {
            if (!content[i] && e->status == 0) api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
            goto out;
        }
        m[i].role = strcmp(r, "developer") ? r : "system";
        m[i].content = content[i];
        json_t *rs = json_object_get(msg, "reasoning_content");
        m[i].reasoning = json_is_string(rs) ? json_string_value(rs) : NULL;
    }
    chat_opts opts = {1, -1};
    json_t *kw = json_object_get(root, "chat_template_kwargs"), *think = json_object_get(kw, "enable_thinking");
    if (json_is_boolean(think)) opts.enable_thinking = json_is_true(think);
    strata_err err;
    if (chat_render(c->chat, m, (int)n, &opts, text, &err)) {
        api_fail(e, 400, "invalid_request_error", "messages", "invalid_value", "%s", err.msg);
        goto out;
    }
    rc = 0;
out:
    for (size_t i = 0; content && i < n; i++) free(content[i]);
    free(content);
    free(m);
    return rc;
}

/* completions prompt: a string, [string], [ids] or [[ids]] */
static int completion_prompt(const api_config *c, json_t *root, api_request *r, api_error *e) {
    json_t *p = json_object_get(root, "prompt");
    if (json_is_array(p) && json_array_size(p) == 1 && !json_is_integer(json_array_get(p, 0))) p = json_array_get(p, 0);
    if (json_is_string(p)) {
        strata_err err;
        if (tok_encode(c->tok, json_string_value(p), json_string_length(p), TOK_ADD_SPECIAL, &r->prompt, &r->n_prompt, &err))
            return api_fail(e, 500, "server_error", NULL, NULL, "tokenizer: %s", err.msg);
        return 0;
    }
    if (json_is_array(p) && json_array_size(p) > 0) {
        size_t n = json_array_size(p), i;
        if (!(r->prompt = malloc(sizeof *r->prompt * n))) return api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        json_t *v;
        json_array_foreach(p, i, v) {
            if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= c->vocab)
                return api_fail(e, 400, "invalid_request_error", "prompt", "invalid_value",
                                "prompt[%zu] is not a token id in [0, %d)", i, c->vocab);
            r->prompt[i] = (int32_t)json_integer_value(v);
        }
        r->n_prompt = (int)n;
        return 0;
    }
    return api_fail(e, 400, "invalid_request_error", "prompt", "missing_required_parameter",
                    "'prompt' must be a string, an array of one string, or an array of token ids (one prompt per request)");
}

static int parse_stop(json_t *root, api_request *r, api_error *e) {
    json_t *s = json_object_get(root, "stop");
    if (!s || json_is_null(s)) return 0;
    json_t *one[1] = {s};
    size_t n = json_is_string(s) ? 1 : json_is_array(s) ? json_array_size(s) : 0;
    if (!json_is_string(s) && (!json_is_array(s) || n > 4))
        return api_fail(e, 400, "invalid_request_error", "stop", "invalid_value", "'stop' must be a string or up to 4 strings");
    for (size_t i = 0; i < n; i++) {
        json_t *v = json_is_string(s) ? one[0] : json_array_get(s, i);
        if (!json_is_string(v) || json_string_length(v) == 0)
            return api_fail(e, 400, "invalid_request_error", "stop", "invalid_value", "stop[%zu] must be a non-empty string", i);
        if (!(r->stops[i] = strdup(json_string_value(v)))) return api_fail(e, 500, "server_error", NULL, NULL, "out of memory");
        r->stop_ptrs[i] = r->stops[i];
    }
    r->gen.stop_strs = r->stop_ptrs;
    r->gen.n_stop_strs = (int)n;
    return 0;
}

int api_parse_request(const api_config *c, int chat, const char *body, size_t len, api_request *r, api_error *e) {
    memset(r, 0, sizeof *r);
    memset(e, 0, sizeof *e);
    r->chat = chat;
    json_error_t je;
    json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
    if (!root) return api_fail(e, 400, "invalid_request_error", NULL, "invalid_json",
                               "We could not parse the JSON body of your request: %s (line %d, column %d)", je.text, je.line, je.column);
    int rc = -1;
    if (!json_is_object(root)) { api_fail(e, 400, "invalid_request_error", NULL, "invalid_json", "the body must be a JSON object"); goto out; }
    json_t *model = json_object_get(root, "model");
    if (model && !json_is_null(model)) {
        if (!json_is_string(model)) { api_fail(e, 400, "invalid_request_error", "model", "invalid_type", "'model' must be a string"); goto out; }
        if (strcmp(json_string_value(model), c->model_id)) {
            api_fail(e, 400, "invalid_request_error", "model", "model_not_found",
                     "The model '%s' does not exist: this server serves '%s'", json_string_value(model), c->model_id);
            goto out;
        }
    }
    gen_params_default(&r->gen);
    sampler_params *sp = &r->gen.sampling;
    /* OpenAI's defaults, not llama.cpp's: temperature 1, nucleus off */
    sp->temp = 1.0f, sp->top_p = 1.0f, sp->top_k = 0, sp->min_p = 0.0f;
    double temp = 1.0, top_p = 1.0, min_p = 0.0, rep = 1.0, ignored = 0.0;
    long long top_k = 0, seed = -1, max_tokens = -1, n = 1, spec_k = c->spec_k;
    if (get_number(root, "temperature", 0, 2, 0, &temp, e) || get_number(root, "top_p", 0, 1, 1, &top_p, e) ||
        get_number(root, "min_p", 0, 1, 0, &min_p, e) || get_number(root, "repetition_penalty", 0, 10, 1, &rep, e) ||
        get_number(root, "frequency_penalty", -2, 2, 0, &ignored, e) || get_number(root, "presence_penalty", -2, 2, 0, &ignored, e) ||
        get_int(root, "top_k", -1, 1 << 30, &top_k, e) || get_int(root, "seed", -(1LL << 62), 1LL << 62, &seed, e) ||
        get_int(root, "n", 1, 1, &n, e) || get_int(root, "max_completion_tokens", 1, 1 << 30, &max_tokens, e) ||
        get_int(root, "max_tokens", 1, 1 << 30, &max_tokens, e) || get_int(root, "spec_k", 0, 32, &spec_k, e))
        goto out;
    sp->temp = (float)temp, sp->top_p = (float)top_p, sp->min_p = (float)min_p, sp->top_k = (int)top_k;
    sp->repeat_penalty = (float)rep;
    sp->seed = seed >= 0 ? (uint64_t)seed : (uint64_t)seed ^ (uint64_t)(uintptr_t)r ^ 0x5eedull;
    json_t *st = json_object_get(root, "stream");
    if (st && !json_is_null(st) && !json_is_boolean(st)) { api_fail(e, 400, "invalid_request_error", "stream", "invalid_type", "'stream' must be a boolean"); goto out; }
    r->stream = json_is_true(st);
    r->include_usage = json_is_true(json_object_get(json_object_get(root, "stream_options"), "include_usage"));
    if (parse_stop(root, r, e)) goto out;
    if (chat) {
        char *text = NULL;
        if (chat_prompt(c, root, &text, e)) goto out;
        strata_err err;
        int bad = tok_encode(c->tok, text, strlen(text), 0, &r->prompt, &r->n_prompt, &err);
        free(text);
        if (bad) { api_fail(e, 500, "server_error", NULL, NULL, "tokenizer: %s", err.msg); goto out; }
        const int32_t *stop;
        r->gen.n_stop_ids = chat_stop_ids(c->chat, &stop);
        r->gen.stop_ids = stop;
    } else {
        if (completion_prompt(c, root, r, e)) goto out;
        /* a completion ends where the model's reply would: end of turn or EOS */
        if (c->chat) {
            const int32_t *stop;
            r->gen.n_stop_ids = chat_stop_ids(c->chat, &stop);
            r->gen.stop_ids = stop;
        } else if ((r->eos = tok_eos_id(c->tok)) >= 0) {
            r->gen.stop_ids = &r->eos;
            r->gen.n_stop_ids = 1;
        }
    }
    if (r->n_prompt == 0) { api_fail(e, 400, "invalid_request_error", chat ? "messages" : "prompt", "invalid_value", "the prompt is empty"); goto out; }
    if (r->n_prompt >= c->ctx_len) {
        api_fail(e, 400, "invalid_request_error", chat ? "messages" : "prompt", "context_length_exceeded",
                 "This model's maximum context length is %d tokens. However, your prompt has %d tokens (at least one more "
                 "is needed for the reply).", c->ctx_len, r->n_prompt);
        goto out;
    }
    int room = c->ctx_len - r->n_prompt;
    r->gen.max_tokens = max_tokens > 0 ? (int)max_tokens : c->default_max_tokens;
    if (r->gen.max_tokens > room) r->gen.max_tokens = room;
    r->gen.ctx_len = c->ctx_len;
    r->gen.spec_k = (int)spec_k;
    rc = 0;
out:
    json_decref(root);
    if (rc) api_request_free(r);
    return rc;
}

static json_t *usage_json(const gen_result *r) {
    return json_pack("{s:i, s:i, s:i}", "prompt_tokens", r->n_prompt, "completion_tokens", r->n_generated, "total_tokens",
                     r->n_prompt + r->n_generated);
}

static char *dump(json_t *o) {
    char *s = o ? json_dumps(o, JSON_COMPACT) : NULL;
    json_decref(o);
    return s;
}

char *api_completion_json(const api_config *c, int chat, const char *id, long created, const char *text, size_t len,
                          const gen_result *r) {
    const char *finish = gen_finish_name(r->finish);
    json_t *choice = chat ? json_pack("{s:i, s:{s:s, s:s%}, s:n, s:s}", "index", 0, "message", "role", "assistant", "content",
                                      text, len, "logprobs", "finish_reason", finish ? finish : "stop")
                          : json_pack("{s:i, s:s%, s:n, s:s}", "index", 0, "text", text, len, "logprobs", "finish_reason",
                                      finish ? finish : "stop");
    return dump(json_pack("{s:s, s:s, s:i, s:s, s:[o], s:o}", "id", id, "object", chat ? "chat.completion" : "text_completion",
                          "created", (json_int_t)created, "model", c->model_id, "choices", choice, "usage", usage_json(r)));
}

char *api_chunk_json(const api_config *c, int chat, const char *id, long created, int with_role, const char *text,
                     size_t len, const char *finish, const gen_result *usage) {
    json_t *choices = json_array();
    if (!usage) {
        json_t *fin = finish ? json_string(finish) : json_null(), *choice;
        if (chat) {
            json_t *delta = json_object();
            if (with_role) json_object_set_new(delta, "role", json_string("assistant"));
            if (len || with_role) json_object_set_new(delta, "content", json_stringn(text, len));
            choice = json_pack("{s:i, s:o, s:n, s:o}", "index", 0, "delta", delta, "logprobs", "finish_reason", fin);
        } else {
            choice = json_pack("{s:i, s:s%, s:n, s:o}", "index", 0, "text", text, len, "logprobs", "finish_reason", fin);
        }
        json_array_append_new(choices, choice);
    }
    json_t *o = json_pack("{s:s, s:s, s:i, s:s, s:o}", "id", id, "object", chat ? "chat.completion.chunk" : "text_completion",
                          "created", (json_int_t)created, "model", c->model_id, "choices", choices);
    if (o && usage) json_object_set_new(o, "usage", usage_json(usage));
    return dump(o);
}

char *api_models_json(const api_config *c, long created) {
    return dump(json_pack("{s:s, s:[{s:s, s:s, s:i, s:s, s:i}]}", "object", "list", "data", "id", c->model_id, "object",
                          "model", "created", (json_int_t)created, "owned_by", "strata", "max_model_len", c->ctx_len));
}
