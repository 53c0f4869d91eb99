/* The OpenAI-compatible API as data: request bodies in, response bodies out (jansson), with no
 * sockets, so every bad-input case is testable alone. master/http.c does the serving.
 *
 * Requests (POST /v1/chat/completions, /v1/completions), OpenAI's names:
 *   model (must be the served model's id when given), messages [{role, content: string or
 *   [{type: "text", text}]}] | prompt (string, [string], [ids] or [[ids]]), max_tokens (>= 1;
 *   also max_completion_tokens), temperature [0, 2] (default 1), top_p (0, 1] (default 1), seed,
 *   stop (string or up to 4 strings), stream, stream_options.include_usage, n (1 only);
 *   extensions: top_k, min_p, repetition_penalty, chat_template_kwargs.enable_thinking, spec_k
 *   (this request's speculative drafting, [0, 32]; default the server's --spec-k: only speed
 *   depends on it, the tokens do not).
 *   frequency_penalty / presence_penalty / logprobs / user are accepted and ignored when 0/absent.
 * Errors: {"error": {"message", "type", "param", "code"}} with a 4xx/5xx status. */
#ifndef STRATA_HTTP_API_H
#define STRATA_HTTP_API_H

#include <stddef.h>
#include <stdint.h>

#include "common/chat.h"
#include "common/tokenizer.h"
#include "master/generate.h"

typedef struct {
    int status;         /* HTTP status: 400, 404, 405, 413, 429, 500, 503 */
    const char *type;   /* "invalid_request_error", "server_error", ... */
    const char *param;  /* the offending field, or NULL */
    const char *code;   /* "model_not_found", "context_length_exceeded", ... or NULL */
    char message[512];
} api_error;

/* Fills e and returns -1 (for `return api_fail(...)`). */
int api_fail(api_error *e, int status, const char *type, const char *param, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* {"error": {...}} (malloc'd) */
char *api_error_json(const api_error *e);

typedef struct {
    const char *model_id;
    const tokenizer *tok;
    const chat_template *chat;
    int vocab;              /* the model's: token ids in a prompt must be below it */
    int ctx_len;
    int default_max_tokens; /* when the request names none (then also at most what the context leaves) */
    int spec_k;             /* speculative drafting for every request (0: off) */
} api_config;

typedef struct {
    int chat;               /* chat.completion vs text_completion */
    int stream, include_usage;
    int32_t *prompt;
    int n_prompt;
    gen_params gen;         /* stop_strs point into stops */
    char *stops[4];
    const char *stop_ptrs[4];
    int32_t eos;
} api_request;

/* Parses and checks a body, renders the chat and encodes the prompt. 0, or -1 with e (400). */
int api_parse_request(const api_config *c, int chat, const char *body, size_t len, api_request *out, api_error *e);
void api_request_free(api_request *r);

/* Whole response of a finished request (malloc'd JSON). */
char *api_completion_json(const api_config *c, int chat, const char *id, long created, const char *text, size_t len,
                          const gen_result *r);
/* One streamed chunk (the JSON after "data: "): text (may be empty), role on the first chat chunk,
 * finish ("stop"/"length") on the last, usage (r != NULL) for the usage chunk of include_usage. */
char *api_chunk_json(const api_config *c, int chat, const char *id, long created, int with_role, const char *text,
                     size_t len, const char *finish, const gen_result *usage);
/* GET /v1/models */
char *api_models_json(const api_config *c, long created);

#endif
