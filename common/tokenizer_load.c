/* Loading a Hugging Face tokenizer.json (+ tokenizer_config.json) into a tokenizer.
 * Everything read from the files is checked; an unsupported component is an error that
 * names it, never a silent approximation. */
#include "common/tokenizer_impl.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <utf8proc.h>

/* GPT-2's byte-level alphabet: printable Latin-1 bytes stand for themselves, the other 68
 * bytes take the code points 256.. in byte order. */
static void byte_tables(tokenizer *t) {
    int n = 0;
    for (int i = 0; i < 324; i++) t->cp_to_byte[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        t->cp_to_byte[printable ? b : 256 + n++] = (int16_t)b;
    }
}

/* The bytes a token spelled in the byte-level alphabet stands for; -1 if some character
 * is outside the alphabet (HF's decoder then takes the spelling's own UTF-8). */
static long spelling_bytes(const tokenizer *t, const char *s, size_t n, uint8_t *out) {
    size_t i = 0, k = 0;
    while (i < n) {
        utf8proc_int32_t c;
        utf8proc_ssize_t m = utf8proc_iterate((const uint8_t *)s + i, (utf8proc_ssize_t)(n - i), &c);
        if (m <= 0 || c < 0 || c >= 324 || t->cp_to_byte[c] < 0) return -1;
        out[k++] = (uint8_t)t->cp_to_byte[c];
        i += (size_t)m;
    }
    return (long)k;
}

typedef struct {
    tokenizer *t;
    tok_buf pieces, spell;
    const char *path;
    strata_err *err;
} loader;

#define MAX_ID (1 << 24)

/* Records id's spelling and the bytes it decodes to. */
static int set_token(loader *L, int32_t id, const char *s, size_t n) {
    tokenizer *t = L->t;
    uint8_t tmp[1024];
    uint8_t *raw = n <= sizeof tmp ? tmp : malloc(n);
    if (!raw) return err_set(L->err, "out of memory");
    long k = spelling_bytes(t, s, n, raw);
    t->piece_off[id] = (int64_t)L->pieces.len;
    t->piece_len[id] = k >= 0 ? (int32_t)k : (int32_t)n;
    t->spell_off[id] = (int64_t)L->spell.len;
    int bad = tok_buf_put(&L->pieces, k >= 0 ? (const void *)raw : s, k >= 0 ? (size_t)k : n) < 0 ||
              tok_buf_put(&L->spell, s, n + 1) < 0;
    if (raw != tmp) free(raw);
    return bad ? err_set(L->err, "out of memory") : (k >= 0 ? 1 : 0);
}

static int get_id(loader *L, json_t *v, const char *what, int32_t *id) {
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) >= MAX_ID)
        return err_set(L->err, "%s: %s: id must be an integer in [0, %d)", L->path, what, MAX_ID);
    *id = (int32_t)json_integer_value(v);
    return 0;
}

static int32_t spelling_id(const tokenizer *t, const char *s, size_t n) {
    uint8_t tmp[1024];
    if (n > sizeof tmp) return -1;
    long k = spelling_bytes(t, s, n, tmp);
    return k < 0 ? -1 : tok_vocab_find(t, tmp, (size_t)k);
}

static int load_vocab(loader *L, json_t *model, json_t *added) {
    tokenizer *t = L->t;
    json_t *vocab = json_object_get(model, "vocab");
    if (!json_is_object(vocab)) return err_set(L->err, "%s: model.vocab is missing or not an object", L->path);
    int32_t max_id = -1, id = 0;
    const char *key;
    json_t *v;
    json_object_foreach(vocab, key, v) {
        if (get_id(L, v, "model.vocab", &id) < 0) return -1;
        if (id > max_id) max_id = id;
    }
    size_t i;
    json_array_foreach(added, i, v) {
        if (get_id(L, json_object_get(v, "id"), "added_tokens", &id) < 0) return -1;
        if (id > max_id) max_id = id;
    }
    if (max_id < 0) return err_set(L->err, "%s: model.vocab is empty", L->path);
    int n = t->vocab_size = max_id + 1;
    t->piece_off = malloc((size_t)n * sizeof *t->piece_off);
    t->spell_off = malloc((size_t)n * sizeof *t->spell_off);
    t->piece_len = malloc((size_t)n * sizeof *t->piece_len);
    t->is_special = calloc((size_t)n, 1);
    uint32_t cap = 1;
    while (cap < 2 * json_object_size(vocab) + 2) cap *= 2;
    t->vocab_table = malloc(cap * sizeof *t->vocab_table);
    if (!t->piece_off || !t->spell_off || !t->piece_len || !t->is_special || !t->vocab_table)
        return err_set(L->err, "out of memory");
    t->vocab_mask = cap - 1;
    for (uint32_t j = 0; j < cap; j++) t->vocab_table[j] = -1;
    for (int j = 0; j < n; j++) t->piece_len[j] = -1, t->spell_off[j] = -1;
    json_object_foreach(vocab, key, v) {
        id = (int32_t)json_integer_value(v);
        int mapped = set_token(L, id, key, strlen(key));
        if (mapped < 0) return -1;
        if (!mapped) continue; /* never produced by byte-level BPE */
        t->pieces = L->pieces.data; /* the arena may have moved */
        const uint8_t *p = (const uint8_t *)L->pieces.data + t->piece_off[id];
        if (tok_vocab_find(t, p, (size_t)t->piece_len[id]) >= 0) continue;
        uint32_t h = (uint32_t)tok_hash_bytes(p, (size_t)t->piece_len[id]) & t->vocab_mask;
        while (t->vocab_table[h] >= 0) h = (h + 1) & t->vocab_mask;
        t->vocab_table[h] = id;
    }
    t->pieces = L->pieces.data;
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        if ((t->byte_id[b] = tok_vocab_find(t, &c, 1)) < 0)
            return err_set(L->err, "%s: model.vocab has no token for byte 0x%02x (not a byte-level BPE vocab)",
                           L->path, b);
    }
    return 0;
}

static int load_merges(loader *L, json_t *model) {
    tokenizer *t = L->t;
    json_t *merges = json_object_get(model, "merges");
    if (!json_is_array(merges)) return err_set(L->err, "%s: model.merges is missing or not an array", L->path);
    size_t n = json_array_size(merges), cap = 2;
    while (cap < 2 * n + 2) cap *= 2;
    t->merges = malloc(cap * sizeof *t->merges);
    if (!t->merges) return err_set(L->err, "out of memory");
    t->merge_mask = cap - 1;
    for (size_t i = 0; i < cap; i++) t->merges[i].key = TOK_NO_KEY;
    char joined[2048];
    for (size_t i = 0; i < n; i++) {
        json_t *m = json_array_get(merges, i);
        const char *a, *b;
        size_t na, nb;
        if (json_is_string(m)) { /* "a b": exactly one space, as HF requires */
            const char *s = json_string_value(m), *sp = strchr(s, ' ');
            if (!sp || strchr(sp + 1, ' '))
                return err_set(L->err, "%s: model.merges[%zu]: \"%s\" is not two tokens joined by one space",
                               L->path, i, s);
            a = s, na = (size_t)(sp - s), b = sp + 1, nb = strlen(sp + 1);
        } else if (json_is_array(m) && json_array_size(m) == 2 && json_is_string(json_array_get(m, 0)) &&
                   json_is_string(json_array_get(m, 1))) {
            a = json_string_value(json_array_get(m, 0)), na = strlen(a);
            b = json_string_value(json_array_get(m, 1)), nb = strlen(b);
        } else
            return err_set(L->err, "%s: model.merges[%zu]: expected \"a b\" or [\"a\", \"b\"]", L->path, i);
        if (na + nb >= sizeof joined)
            return err_set(L->err, "%s: model.merges[%zu]: token too long", L->path, i);
        memcpy(joined, a, na);
        memcpy(joined + na, b, nb);
        joined[na + nb] = '\0';
        int32_t ia = spelling_id(t, a, na), ib = spelling_id(t, b, nb), ij = spelling_id(t, joined, na + nb);
        if (ia < 0 || ib < 0 || ij < 0)
            return err_set(L->err, "%s: model.merges[%zu]: token \"%.*s\" is not in the vocab", L->path, i,
                           (int)(ia < 0 ? na : ib < 0 ? nb : na + nb), ia < 0 ? a : ib < 0 ? b : joined);
        uint64_t key = (uint64_t)(uint32_t)ia << 32 | (uint32_t)ib, h = tok_hash_u64(key) & t->merge_mask;
        while (t->merges[h].key != TOK_NO_KEY && t->merges[h].key != key) h = (h + 1) & t->merge_mask;
        /* A repeated pair keeps its later rank, as HF's map collect does. */
        t->merges[h] = (tok_merge){key, (int32_t)i, ij};
    }
    return 0;
}

static int flag(json_t *o, const char *k) { return json_is_true(json_object_get(o, k)); }

static int load_added(loader *L, json_t *added) {
    tokenizer *t = L->t;
    size_t n = json_array_size(added), i;
    t->added = calloc(n ? n : 1, sizeof *t->added);
    if (!t->added) return err_set(L->err, "out of memory");
    json_t *v;
    json_array_foreach(added, i, v) {
        json_t *c = json_object_get(v, "content");
        if (!json_is_string(c) || json_string_length(c) == 0)
            return err_set(L->err, "%s: added_tokens[%zu]: content must be a non-empty string", L->path, i);
        tok_added *a = &t->added[t->n_added++];
        a->len = json_string_length(c);
        if (!(a->content = malloc(a->len + 1))) return err_set(L->err, "out of memory");
        memcpy(a->content, json_string_value(c), a->len + 1);
        a->id = (int32_t)json_integer_value(json_object_get(v, "id"));
        a->special = (uint8_t)flag(v, "special");
        a->lstrip = (uint8_t)flag(v, "lstrip");
        a->rstrip = (uint8_t)flag(v, "rstrip");
        a->single_word = (uint8_t)flag(v, "single_word");
        a->normalized = (uint8_t)flag(v, "normalized");
        t->n_added_norm += a->normalized;
        t->is_special[a->id] = a->special;
        if (set_token(L, a->id, a->content, a->len) < 0) return -1;
    }
    t->pieces = L->pieces.data;
    for (int k = 0; k < t->n_added; k++) {
        tok_added_bucket *b = &t->added_by_byte[(uint8_t)t->added[k].content[0]];
        int *idx = realloc(b->idx, (size_t)(b->n + 1) * sizeof *idx);
        if (!idx) return err_set(L->err, "out of memory");
        b->idx = idx;
        b->idx[b->n++] = k;
    }
    /* Longest first within a bucket (insertion sort: buckets are small, and stable). */
    for (int c = 0; c < 256; c++) {
        tok_added_bucket *b = &t->added_by_byte[c];
        for (int j = 1; j < b->n; j++) {
            int x = b->idx[j], k = j;
            for (; k > 0 && t->added[b->idx[k - 1]].len < t->added[x].len; k--) b->idx[k] = b->idx[k - 1];
            b->idx[k] = x;
        }
    }
    return 0;
}

static int add_split(loader *L, const char *pattern, int literal, int removed) {
    tokenizer *t = L->t;
    int errcode;
    PCRE2_SIZE erroff;
    uint32_t opts = PCRE2_UTF | PCRE2_UCP | (literal ? PCRE2_LITERAL : 0);
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)pattern, PCRE2_ZERO_TERMINATED, opts, &errcode, &erroff, NULL);
    if (!re) {
        char msg[128];
        pcre2_get_error_message(errcode, (PCRE2_UCHAR *)msg, sizeof msg);
        return err_set(L->err, "%s: pre_tokenizer regex /%s/: %s at offset %zu", L->path, pattern, msg,
                       (size_t)erroff);
    }
    pcre2_jit_compile(re, PCRE2_JIT_COMPLETE); /* falls back to the interpreter if JIT is absent */
    tok_split *s = realloc(t->splits, (size_t)(t->n_splits + 1) * sizeof *s);
    if (!s) {
        pcre2_code_free(re);
        return err_set(L->err, "out of memory");
    }
    t->splits = s;
    t->splits[t->n_splits++] = (tok_split){re, removed};
    return 0;
}

/* GPT-2's split, which ByteLevel applies itself when use_regex is true. */
static const char GPT2_REGEX[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

static int load_pretok(loader *L, json_t *pt, int *saw_bytelevel) {
    const char *type = json_string_value(json_object_get(pt, "type"));
    if (!type) return err_set(L->err, "%s: pre_tokenizer without a type", L->path);
    if (*saw_bytelevel) return err_set(L->err, "%s: pre_tokenizer %s after ByteLevel is not supported", L->path, type);
    if (!strcmp(type, "Sequence")) {
        json_t *list = json_object_get(pt, "pretokenizers"), *v;
        size_t i;
        json_array_foreach(list, i, v) if (load_pretok(L, v, saw_bytelevel) < 0) return -1;
        return 0;
    }
    if (!strcmp(type, "Split")) {
        json_t *pat = json_object_get(pt, "pattern");
        const char *behavior = json_string_value(json_object_get(pt, "behavior"));
        const char *re = json_string_value(json_object_get(pat, "Regex"));
        const char *lit = json_string_value(json_object_get(pat, "String"));
        if (!re && !lit) return err_set(L->err, "%s: Split pre_tokenizer without a Regex or String pattern", L->path);
        if (flag(pt, "invert")) return err_set(L->err, "%s: Split pre_tokenizer with invert=true is not supported", L->path);
        if (!behavior || (strcmp(behavior, "Isolated") && strcmp(behavior, "Removed")))
            return err_set(L->err, "%s: Split behavior \"%s\" is not supported (Isolated, Removed)", L->path,
                           behavior ? behavior : "(none)");
        return add_split(L, re ? re : lit, !re, !strcmp(behavior, "Removed"));
    }
    if (!strcmp(type, "ByteLevel")) {
        *saw_bytelevel = 1;
        if (flag(pt, "add_prefix_space")) {
            if (L->t->n_splits)
                return err_set(L->err, "%s: ByteLevel add_prefix_space after a Split is not supported", L->path);
            L->t->prefix_space = 1;
        }
        json_t *ur = json_object_get(pt, "use_regex"); /* HF's default is true */
        return ur && !json_is_true(ur) ? 0 : add_split(L, GPT2_REGEX, 0, 0);
    }
    return err_set(L->err, "%s: pre_tokenizer type \"%s\" is not supported", L->path, type);
}

static int load_normalizer(loader *L, json_t *nz) {
    if (!nz || json_is_null(nz)) return 0;
    const char *type = json_string_value(json_object_get(nz, "type"));
    if (type && !strcmp(type, "Sequence")) {
        json_t *list = json_object_get(nz, "normalizers");
        if (json_array_size(list) > 1)
            return err_set(L->err, "%s: normalizer Sequence of %zu is not supported", L->path, json_array_size(list));
        return json_array_size(list) ? load_normalizer(L, json_array_get(list, 0)) : 0;
    }
    static const struct {
        const char *name;
        int options;
    } forms[] = {{"NFC", UTF8PROC_STABLE | UTF8PROC_COMPOSE},
                 {"NFD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE},
                 {"NFKC", UTF8PROC_STABLE | UTF8PROC_COMPOSE | UTF8PROC_COMPAT},
                 {"NFKD", UTF8PROC_STABLE | UTF8PROC_DECOMPOSE | UTF8PROC_COMPAT}};
    for (size_t i = 0; type && i < sizeof forms / sizeof forms[0]; i++)
        if (!strcmp(type, forms[i].name)) return L->t->norm_options = forms[i].options, 0;
    return err_set(L->err, "%s: normalizer \"%s\" is not supported (NFC, NFD, NFKC, NFKD)", L->path,
                   type ? type : "(no type)");
}

static int push_ids(loader *L, int32_t **arr, int *n, json_t *ids) {
    size_t i;
    json_t *v;
    json_array_foreach(ids, i, v) {
        int32_t id = 0;
        if (get_id(L, v, "post_processor special_tokens", &id) < 0) return -1;
        if (id >= L->t->vocab_size) return err_set(L->err, "%s: post_processor id %d is past the vocab", L->path, id);
        int32_t *a = realloc(*arr, (size_t)(*n + 1) * sizeof *a);
        if (!a) return err_set(L->err, "out of memory");
        *arr = a;
        a[(*n)++] = id;
    }
    return 0;
}

static int load_post(loader *L, json_t *pp) {
    tokenizer *t = L->t;
    if (!pp || json_is_null(pp)) return 0;
    const char *type = json_string_value(json_object_get(pp, "type"));
    if (!type) return err_set(L->err, "%s: post_processor without a type", L->path);
    if (!strcmp(type, "ByteLevel")) return 0; /* offsets only */
    if (!strcmp(type, "Sequence")) {
        json_t *v;
        size_t i;
        json_array_foreach(json_object_get(pp, "processors"), i, v) if (load_post(L, v) < 0) return -1;
        return 0;
    }
    if (strcmp(type, "TemplateProcessing"))
        return err_set(L->err, "%s: post_processor \"%s\" is not supported", L->path, type);
    json_t *single = json_object_get(pp, "single"), *specials = json_object_get(pp, "special_tokens"), *v;
    int after = 0;
    size_t i;
    json_array_foreach(single, i, v) {
        if (json_object_get(v, "Sequence")) {
            after = 1;
            continue;
        }
        const char *name = json_string_value(json_object_get(json_object_get(v, "SpecialToken"), "id"));
        json_t *ids = json_object_get(json_object_get(specials, name ? name : ""), "ids");
        if (!name || !json_is_array(ids))
            return err_set(L->err, "%s: post_processor.single[%zu] names no known special token", L->path, i);
        if (push_ids(L, after ? &t->suffix_ids : &t->prefix_ids, after ? &t->n_suffix : &t->n_prefix, ids) < 0)
            return -1;
    }
    return 0;
}

static char *read_text(const char *path, size_t *n) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    tok_buf b = {0};
    char chunk[65536];
    size_t k;
    int bad = tok_buf_put(&b, "", 0) < 0;
    while (!bad && (k = fread(chunk, 1, sizeof chunk, f)) > 0) bad = tok_buf_put(&b, chunk, k) < 0;
    fclose(f);
    if (bad) {
        free(b.data);
        return NULL;
    }
    *n = b.len;
    return b.data;
}

static json_t *tok_json_load(const char *path, int required, size_t flags, strata_err *err) {
    size_t n = 0;
    char *text = read_text(path, &n);
    if (!text) {
        if (required) err_set(err, "%s: cannot read", path);
        return NULL;
    }
    json_error_t je;
    json_t *root = json_loadb(text, n, JSON_ALLOW_NUL | flags, &je);
    free(text);
    if (!root) err_set(err, "%s: malformed JSON at line %d column %d: %s", path, je.line, je.column, je.text);
    else if (!json_is_object(root)) {
        json_decref(root);
        root = NULL;
        err_set(err, "%s: top level is not a JSON object", path);
    }
    return root;
}

/* tokenizer_config.json spells special tokens as a string or as {"content": ...}. */
static int32_t config_token(const tokenizer *t, json_t *cfg, const char *key) {
    json_t *v = json_object_get(cfg, key);
    if (json_is_object(v)) v = json_object_get(v, "content");
    return json_is_string(v) ? tok_id(t, json_string_value(v)) : -1;
}

static int load_config(loader *L, const char *config_path) {
    tokenizer *t = L->t;
    t->bos_id = t->eos_id = -1;
    if (!config_path) return 0;
    strata_err e2;
    /* Integers as reals: transformers writes model_max_length as 1e30 spelled out, past
     * what jansson's integers hold; only strings and booleans are read here. */
    json_t *cfg = tok_json_load(config_path, 0, JSON_DECODE_INT_AS_REAL, &e2);
    if (!cfg) {
        FILE *f = fopen(config_path, "rb");
        if (!f) return 0; /* optional */
        fclose(f);
        return err_set(L->err, "%s", e2.msg);
    }
    t->bos_id = config_token(t, cfg, "bos_token");
    t->eos_id = config_token(t, cfg, "eos_token");
    /* transformers' Llama tokenizers rebuild the post-processor from these switches. */
    int rc = 0;
    json_t *one;
    if (flag(cfg, "add_bos_token") && t->bos_id >= 0 && !(t->n_prefix && t->prefix_ids[0] == t->bos_id)) {
        int32_t *a = realloc(t->prefix_ids, (size_t)(t->n_prefix + 1) * sizeof *a);
        if (!a) rc = err_set(L->err, "out of memory");
        else {
            memmove(a + 1, a, (size_t)t->n_prefix * sizeof *a);
            a[0] = t->bos_id;
            t->prefix_ids = a;
            t->n_prefix++;
        }
    }
    if (!rc && flag(cfg, "add_eos_token") && t->eos_id >= 0 &&
        !(t->n_suffix && t->suffix_ids[t->n_suffix - 1] == t->eos_id) && (one = json_array()) != NULL) {
        json_array_append_new(one, json_integer(t->eos_id));
        rc = push_ids(L, &t->suffix_ids, &t->n_suffix, one);
        json_decref(one);
    }
    json_decref(cfg);
    return rc;
}

static int load_all(loader *L, json_t *root, const char *config_path) {
    tokenizer *t = L->t;
    json_t *model = json_object_get(root, "model"), *added = json_object_get(root, "added_tokens");
    if (!json_is_object(model)) return err_set(L->err, "%s: no \"model\" object", L->path);
    const char *type = json_string_value(json_object_get(model, "type"));
    if (type ? strcmp(type, "BPE") != 0 : !json_object_get(model, "merges"))
        return err_set(L->err, "%s: model type \"%s\" is not supported (only byte-level BPE)", L->path,
                       type ? type : "(none)");
    if (flag(model, "byte_fallback"))
        return err_set(L->err, "%s: BPE byte_fallback (sentencepiece-style) is not supported", L->path);
    const char *affix[] = {"continuing_subword_prefix", "end_of_word_suffix"};
    for (int i = 0; i < 2; i++) {
        const char *s = json_string_value(json_object_get(model, affix[i]));
        if (s && *s) return err_set(L->err, "%s: BPE %s \"%s\" is not supported", L->path, affix[i], s);
    }
    if (added && !json_is_array(added)) return err_set(L->err, "%s: added_tokens is not an array", L->path);
    t->ignore_merges = flag(model, "ignore_merges");
    json_t *dec = json_object_get(root, "decoder");
    const char *dec_type = json_string_value(json_object_get(dec, "type"));
    if (!dec_type || strcmp(dec_type, "ByteLevel"))
        return err_set(L->err, "%s: decoder \"%s\" is not supported (only ByteLevel)", L->path,
                       dec_type ? dec_type : "(none)");
    int saw_bytelevel = 0;
    json_t *pt = json_object_get(root, "pre_tokenizer");
    if (!pt || json_is_null(pt) || load_pretok(L, pt, &saw_bytelevel) < 0 || !saw_bytelevel)
        return L->err && L->err->msg[0] ? -1
                                        : err_set(L->err, "%s: no ByteLevel pre_tokenizer (only byte-level BPE is supported)",
                                                  L->path);
    if (load_vocab(L, model, added) < 0 || load_added(L, added) < 0 || load_merges(L, model) < 0 ||
        load_normalizer(L, json_object_get(root, "normalizer")) < 0 ||
        load_post(L, json_object_get(root, "post_processor")) < 0)
        return -1;
    t->spell = L->spell.data;
    return load_config(L, config_path);
}

tokenizer *tok_load_files(const char *json_path, const char *config_path, strata_err *err) {
    if (err) err->msg[0] = '\0';
    json_t *root = tok_json_load(json_path, 1, 0, err);
    if (!root) return NULL;
    loader L = {.t = calloc(1, sizeof(tokenizer)), .path = json_path, .err = err};
    if (L.t) byte_tables(L.t);
    int rc = L.t ? load_all(&L, root, config_path) : err_set(err, "out of memory");
    json_decref(root);
    if (L.t) {
        L.t->pieces = L.pieces.data;
        L.t->spell = L.spell.data;
    }
    if (rc < 0) {
        tok_free(&L.t);
        return NULL;
    }
    return L.t;
}

tokenizer *tok_load(const char *dir, strata_err *err) {
    size_t n = strlen(dir);
    char *a = malloc(n + 32), *b = malloc(n + 32);
    tokenizer *t = NULL;
    if (!a || !b) err_set(err, "out of memory");
    else {
        snprintf(a, n + 32, "%s/tokenizer.json", dir);
        snprintf(b, n + 32, "%s/tokenizer_config.json", dir);
        t = tok_load_files(a, b, err);
    }
    free(a);
    free(b);
    return t;
}

void tok_free(tokenizer **tp) {
    if (!tp || !*tp) return;
    tokenizer *t = *tp;
    free(t->pieces), free(t->spell), free(t->piece_off), free(t->spell_off), free(t->piece_len);
    free(t->is_special), free(t->vocab_table), free(t->merges);
    for (int i = 0; i < t->n_added; i++) free(t->added[i].content);
    free(t->added);
    for (int c = 0; c < 256; c++) free(t->added_by_byte[c].idx);
    for (int i = 0; i < t->n_splits; i++) pcre2_code_free(t->splits[i].re);
    free(t->splits), free(t->prefix_ids), free(t->suffix_ids);
    free(t);
    *tp = NULL;
}

int tok_vocab_size(const tokenizer *t) { return t->vocab_size; }

int32_t tok_id(const tokenizer *t, const char *token) {
    size_t n = strlen(token);
    for (int i = 0; i < t->n_added; i++)
        if (t->added[i].len == n && !memcmp(t->added[i].content, token, n)) return t->added[i].id;
    int32_t id = spelling_id(t, token, n);
    return id >= 0 && !strcmp(t->spell + t->spell_off[id], token) ? id : -1;
}

const char *tok_token(const tokenizer *t, int32_t id) {
    return id >= 0 && id < t->vocab_size && t->spell_off[id] >= 0 ? t->spell + t->spell_off[id] : NULL;
}

int tok_is_special(const tokenizer *t, int32_t id) {
    return id >= 0 && id < t->vocab_size && t->is_special[id];
}

int32_t tok_bos_id(const tokenizer *t) { return t->bos_id; }
int32_t tok_eos_id(const tokenizer *t) { return t->eos_id; }
