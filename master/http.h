/* The master's HTTP server: an OpenAI-compatible API over libmicrohttpd.
 *
 *   POST /v1/chat/completions, POST /v1/completions   (stream: true -> server-sent events,
 *                                                      "data: {...}\n\n" ..., "data: [DONE]\n\n")
 *   GET  /v1/models, /v1/models/{id}, /health
 *
 * Threads: libmicrohttpd runs a thread per connection (bounded by --max-connections); one
 * scheduler thread owns the engine and drives up to --parallel generations at once through it
 * (master/batch.h: on the cluster they travel the chain together). Requests beyond those wait in
 * a queue of at most --queue; past that a request is answered 429 at once. A client that goes
 * away (socket closed while waiting or streaming) cancels its generation at the next token.
 *
 * Bodies and errors are master/http_api.h. */
#ifndef STRATA_HTTP_H
#define STRATA_HTTP_H

#include <stdio.h>

#include "common/err.h"
#include "master/engine.h"

typedef struct {
    const char *host;        /* listen address (IPv4), default 127.0.0.1 */
    int port;                /* default 8080; 0: any free port (printed) */
    int max_active;          /* generations at once (--parallel), default 4 */
    int max_queue;           /* waiting requests (--queue), default 16 */
    int max_connections;     /* default 64 */
    int default_max_tokens;  /* when a request names none, default 512 */
    int spec_k;              /* speculative drafting (--spec-k), default 0 */
    int ctx_len;             /* the engine's context per session */
    const char *model_id;    /* served model name; default: the model directory's base name */
} http_opts;

void http_opts_default(http_opts *o);

/* Serves e (whose model and tokenizer live in model_dir) until SIGINT or SIGTERM. Prints
 * "strata-master: serving MODEL on http://HOST:PORT" on stderr once listening. 0 after a clean
 * stop, -1 with err (no tokenizer or chat template in model_dir, cannot listen). */
int http_serve(engine *e, const char *model_dir, const http_opts *o, strata_err *err);

/* The whole `strata-master --serve` command line (model, cluster, backend and serving flags):
 * what main.c calls when it sees --serve. Returns the process exit status. */
int http_main(int argc, char **argv);
void http_cli_usage(FILE *f);

#endif
