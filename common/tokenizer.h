/* Byte-level BPE from a Hugging Face tokenizer.json (Qwen2/2.5/3, Llama 3 and their kin).
 *
 * Encoding follows `tokenizers` step for step, so ids equal HF's:
 *   1. invalid UTF-8 in the input becomes U+FFFD, exactly as Python's
 *      bytes.decode('utf-8', errors='replace') (maximal subparts, Unicode 6.3 practice).
 *      HF takes a str and cannot see invalid bytes; this is the string a Python caller
 *      would hand it.
 *   2. added tokens are cut out first, leftmost-longest, honouring lstrip / rstrip /
 *      single_word; those with normalized=false are matched on the raw text, the others
 *      after normalization.
 *   3. the normalizer (NFC, NFD, NFKC, NFKD via utf8proc) runs on the text between them.
 *   4. Split pre-tokenizers (PCRE2, UTF + UCP) then ByteLevel (optionally its GPT-2 regex).
 *   5. BPE merges by rank (ignore_merges: a word already in the vocab is one token).
 *   6. with TOK_ADD_SPECIAL, the post-processor's tokens (TemplateProcessing, e.g. a BOS),
 *      or a BOS/EOS when tokenizer_config.json says add_bos_token / add_eos_token.
 *      The Llama 3 file in tests adds nothing (its post-processor is ByteLevel alone, and HF
 *      adds nothing either); its chat template writes <|begin_of_text|> itself.
 *
 * A tokenizer is immutable after tok_load: encode and decode may run on many threads.
 */
#ifndef STRATA_TOKENIZER_H
#define STRATA_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"

typedef struct tokenizer tokenizer;

/* Loads DIR/tokenizer.json and, when present, DIR/tokenizer_config.json (bos/eos names,
 * add_bos_token). NULL with the reason on error: missing or malformed file, a model that is
 * not byte-level BPE, an unsupported normalizer/pre-tokenizer/post-processor/decoder, a merge
 * naming an unknown token. */
tokenizer *tok_load(const char *dir, strata_err *err);
/* The same from explicit paths; config_path may be NULL. */
tokenizer *tok_load_files(const char *json_path, const char *config_path, strata_err *err);
void tok_free(tokenizer **t);

enum {
    TOK_ADD_SPECIAL = 1,   /* HF add_special_tokens=True: post-processor tokens (BOS...) */
    TOK_SPLIT_SPECIAL = 2, /* HF encode_special_tokens: special=true added tokens in the text
                              are encoded as plain text (non-special added tokens still match) */
};

/* Encodes len bytes of text. *ids is malloc'd (free it), *n_ids its count; an empty text
 * gives n_ids 0 and a valid pointer. Returns 0, or -1 with err (out of memory, regex failure). */
int tok_encode(const tokenizer *t, const char *text, size_t len, int flags, int32_t **ids,
               int *n_ids, strata_err *err);

/* One more than the largest id (model vocab and added tokens). */
int tok_vocab_size(const tokenizer *t);
/* Id of a token as tokenizer.json spells it (added tokens as written, e.g. "<|im_end|>";
 * vocab entries in the byte-level alphabet, e.g. "Ġthe"); -1 if none. */
int32_t tok_id(const tokenizer *t, const char *token);
/* The tokenizer.json spelling of id, or NULL for an unknown id. */
const char *tok_token(const tokenizer *t, int32_t id);
/* 1 if id is an added token marked special (HF skip_special_tokens skips these). */
int tok_is_special(const tokenizer *t, int32_t id);
/* bos_token / eos_token of tokenizer_config.json, -1 when absent. */
int32_t tok_bos_id(const tokenizer *t);
int32_t tok_eos_id(const tokenizer *t);

/* Streaming decode: push ids one at a time and get back only complete UTF-8 characters,
 * so a caller never prints half a character. Invalid byte sequences become U+FFFD as
 * Rust's String::from_utf8_lossy does (what HF decode returns). Unknown ids decode to
 * nothing, as in HF. */
typedef struct tok_decoder tok_decoder;
/* skip_special: drop special added tokens (HF skip_special_tokens=True). */
tok_decoder *tok_decoder_new(const tokenizer *t, int skip_special);
/* Text made complete by id: a pointer into the decoder, valid until its next call; *len
 * its length (it is also NUL-terminated). NULL only when out of memory. */
const char *tok_decoder_push(tok_decoder *d, int32_t id, size_t *len);
/* Ends the stream: a dangling partial character comes back as U+FFFD. The decoder is
 * then empty and can be reused. */
const char *tok_decoder_flush(tok_decoder *d, size_t *len);
void tok_decoder_free(tok_decoder **d);

/* Whole decode, equal to HF Tokenizer.decode(ids, skip_special_tokens). *out is malloc'd
 * and NUL-terminated; out_len may be NULL. */
int tok_decode(const tokenizer *t, const int32_t *ids, int n, int skip_special, char **out,
               size_t *out_len, strata_err *err);

#endif
