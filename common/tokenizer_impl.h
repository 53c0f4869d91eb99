/* The tokenizer's insides, shared by tokenizer.c (encode, decode) and tokenizer_load.c.
 * Not a public header. */
#ifndef STRATA_TOKENIZER_IMPL_H
#define STRATA_TOKENIZER_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stdint.h>
#include <string.h>

#include "common/tokenizer.h"

typedef struct {
    char *data;
    size_t len, cap;
} tok_buf;

/* One merge rule: the pair (a, b), packed in key as a << 32 | b, becomes new_id; lower
 * rank merges first. key == TOK_NO_KEY marks an empty slot. */
typedef struct {
    uint64_t key;
    int32_t rank, new_id;
} tok_merge;
#define TOK_NO_KEY UINT64_MAX

typedef struct {
    pcre2_code *re;
    int removed; /* behaviour "Removed": matches are dropped, not kept as pieces */
} tok_split;

typedef struct {
    char *content;
    size_t len;
    int32_t id;
    uint8_t special, lstrip, rstrip, normalized, single_word;
} tok_added;

/* Added tokens by first byte, longest first, so a scan finds the longest match first. */
typedef struct {
    int *idx;
    int n;
} tok_added_bucket;

struct tokenizer {
    int vocab_size;
    /* Per id: the bytes it decodes to (pieces + piece_off, piece_len; -1 when no token
     * has that id) and its tokenizer.json spelling (spell + spell_off, NUL-terminated). */
    char *pieces, *spell;
    int64_t *piece_off, *spell_off;
    int32_t *piece_len;
    uint8_t *is_special;
    /* Model vocab keyed by the raw bytes a token stands for: open addressing of ids. */
    int32_t *vocab_table;
    uint32_t vocab_mask;
    tok_merge *merges;
    uint64_t merge_mask;
    int32_t byte_id[256]; /* the one-byte token of each byte: where BPE starts */
    int16_t cp_to_byte[324]; /* byte-level alphabet back to bytes; -1 outside it */
    int ignore_merges;
    tok_added *added;
    int n_added, n_added_norm;
    tok_added_bucket added_by_byte[256];
    int norm_options; /* utf8proc_map options; 0: no normalizer */
    tok_split *splits;
    int n_splits;
    int prefix_space;
    int32_t *prefix_ids, *suffix_ids; /* what TOK_ADD_SPECIAL adds around the text */
    int n_prefix, n_suffix;
    int32_t bos_id, eos_id;
};

int tok_utf8_step(const uint8_t *p, size_t n);
int tok_buf_put(tok_buf *b, const void *p, size_t n);

static inline uint64_t tok_hash_bytes(const uint8_t *p, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

static inline uint64_t tok_hash_u64(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

/* Model-vocab id of the token standing for bytes p[0..n), or -1. */
static inline int32_t tok_vocab_find(const tokenizer *t, const uint8_t *p, size_t n) {
    for (uint32_t i = (uint32_t)tok_hash_bytes(p, n) & t->vocab_mask;; i = (i + 1) & t->vocab_mask) {
        int32_t id = t->vocab_table[i];
        if (id < 0) return -1;
        if ((size_t)t->piece_len[id] == n && memcmp(t->pieces + t->piece_off[id], p, n) == 0) return id;
    }
}

static inline const tok_merge *tok_merge_find(const tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint64_t i = tok_hash_u64(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
        const tok_merge *m = &t->merges[i];
        if (m->key == key) return m;
        if (m->key == TOK_NO_KEY) return NULL;
    }
}

#endif
