/* Chat templates: render a conversation into the prompt text a checkpoint was trained on,
 * equal byte for byte to transformers' apply_chat_template(messages, tokenize=False).
 *
 * strata does not run Jinja. It recognizes the family from the content of the checkpoint's
 * chat_template (tokenizer_config.json, or chat_template.jinja beside it), never from a file
 * name, and renders that family's format in C:
 *   CHAT_QWEN3   ChatML with Qwen3's <think> handling (reasoning kept only after the last
 *                user query; enable_thinking=false adds an empty think block)
 *   CHAT_CHATML  plain ChatML (Qwen2, Qwen2.5), with the template's default system prompt
 *   CHAT_LLAMA3  Llama 3 headers; Llama 3.1+ templates (Cutting Knowledge Date system
 *                header) are rendered too
 * Tests compare CHAT_QWEN3 and CHAT_LLAMA3 (3.0) with transformers' renders; CHAT_CHATML and
 * the 3.1+ header are written from the published templates without a fixture.
 * Tools and tool calls are not rendered; "tool" role messages are (Qwen3).
 *
 * The rendered text already holds the BOS where the family wants one (Llama 3's template
 * writes <|begin_of_text|>): encode it with tok_encode(..., flags = 0), as transformers does
 * (apply_chat_template tokenizes with add_special_tokens=False). */
#ifndef STRATA_CHAT_H
#define STRATA_CHAT_H

#include <stdint.h>

#include "common/err.h"
#include "common/tokenizer.h"

typedef enum { CHAT_CHATML, CHAT_QWEN3, CHAT_LLAMA3 } chat_format;

typedef struct {
    const char *role;      /* "system", "user", "assistant", "tool" */
    const char *content;   /* NULL counts as "" */
    const char *reasoning; /* Qwen3 reasoning_content; NULL: taken from <think> in content */
} chat_msg;

typedef struct {
    int add_generation_prompt; /* end with the assistant header, ready for the reply */
    int enable_thinking;       /* Qwen3: -1 as transformers' default (undefined), 0 false, 1 true */
} chat_opts;

typedef struct chat_template chat_template;

/* Reads DIR/tokenizer_config.json (chat_template, bos_token, eos_token), and the stop ids:
 * the family's end-of-turn token plus every EOS named by DIR/generation_config.json,
 * DIR/config.json (eos_token_id, an int or a list) and the tokenizer config. t resolves
 * token names to ids. NULL with the reason: no config, no chat_template, or one that is
 * neither ChatML nor Llama 3. */
chat_template *chat_load(const char *dir, const tokenizer *t, strata_err *err);
/* whether DIR names a chat template at all (tokenizer_config.json's chat_template or
 * chat_template.jinja): a base model has none, which is no error where only completions run */
int chat_template_present(const char *dir);
void chat_free(chat_template **c);

chat_format chat_kind(const chat_template *c);
const char *chat_format_name(chat_format f);

/* Renders msgs[0..n) into *out (malloc'd, NUL-terminated). opts NULL: add_generation_prompt
 * 1, enable_thinking -1. Returns 0, or -1 with err (a message without a role). */
int chat_render(const chat_template *c, const chat_msg *msgs, int n, const chat_opts *opts, char **out,
                strata_err *err);

/* Ids that end a reply; *ids points into c. Returns the count. */
int chat_stop_ids(const chat_template *c, const int32_t **ids);
int chat_is_stop(const chat_template *c, int32_t id);

#endif
