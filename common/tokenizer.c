/* Byte-level BPE encode and decode; loading tokenizer.json lives in tokenizer_load.c.
 * The pipeline and its HF equivalences are described in tokenizer.h. */
#include "common/tokenizer_impl.h"

#include <stdlib.h>
#include <string.h>

#include <utf8proc.h>

/* ---- UTF-8 -------------------------------------------------------------------------- */

/* Classifies the sequence at p[0..n): > 0 a valid character of that many bytes; < 0 an
 * invalid maximal subpart of -ret bytes (one U+FFFD replaces it, the Unicode practice that
 * both Python's errors='replace' and Rust's from_utf8_lossy follow); 0 a prefix that is
 * valid so far but cut off by the end of the buffer. */
int tok_utf8_step(const uint8_t *p, size_t n) {
    uint8_t b = p[0];
    if (b < 0x80) return 1;
    int need;
    uint8_t lo = 0x80, hi = 0xBF;
    if (b >= 0xC2 && b <= 0xDF) need = 1;
    else if (b >= 0xE0 && b <= 0xEF) {
        need = 2;
        if (b == 0xE0) lo = 0xA0;      /* no overlongs */
        else if (b == 0xED) hi = 0x9F; /* no surrogates */
    } else if (b >= 0xF0 && b <= 0xF4) {
        need = 3;
        if (b == 0xF0) lo = 0x90;
        else if (b == 0xF4) hi = 0x8F; /* nothing past U+10FFFF */
    } else
        return -1;
    for (int k = 1; k <= need; k++) {
        if ((size_t)k >= n) return 0;
        uint8_t c = p[k];
        if (k == 1 ? (c < lo || c > hi) : (c < 0x80 || c > 0xBF)) return -k;
    }
    return need + 1;
}

/* Appends to a growing byte buffer; -1 when out of memory. */
int tok_buf_put(tok_buf *b, const void *p, size_t n) {
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (b->len + n + 1 > cap) cap *= 2;
        char *d = realloc(b->data, cap);
        if (!d) return -1;
        b->data = d;
        b->cap = cap;
    }
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

static const char REPLACEMENT[3] = {(char)0xEF, (char)0xBF, (char)0xBD};

/* Moves the complete part of p[0..n) into out, invalid subparts as U+FFFD. With final=0 a
 * trailing cut-off character is left unconsumed; returns bytes consumed, or -1 (memory). */
static long utf8_lossy(const uint8_t *p, size_t n, int final, tok_buf *out) {
    size_t i = 0, run = 0; /* run: start of the pending valid stretch */
    while (i < n) {
        int k = tok_utf8_step(p + i, n - i);
        if (k > 0) {
            i += (size_t)k;
            continue;
        }
        if (tok_buf_put(out, p + run, i - run) < 0) return -1;
        if (k == 0 && !final) return (long)i;
        if (tok_buf_put(out, REPLACEMENT, 3) < 0) return -1;
        i += k == 0 ? n - i : (size_t)-k;
        run = i;
    }
    if (tok_buf_put(out, p + run, i - run) < 0) return -1;
    return (long)i;
}

/* ---- int vector ---------------------------------------------------------------------- */

typedef struct {
    int32_t *v;
    int n, cap;
} ivec;

static int ivec_push(ivec *a, int32_t x) {
    if (a->n == a->cap) {
        int cap = a->cap ? a->cap * 2 : 64;
        int32_t *v = realloc(a->v, (size_t)cap * sizeof *v);
        if (!v) return -1;
        a->v = v;
        a->cap = cap;
    }
    a->v[a->n++] = x;
    return 0;
}

/* ---- BPE on one pre-token ------------------------------------------------------------- */

/* A pending merge: the pair starting at symbol pos, with its rank. Ties go to the lower
 * position, as in HF's BinaryHeap ordering, so "aaa" becomes "aa"+"a". */
typedef struct {
    int32_t rank, pos;
} merge_item;

static int item_less(merge_item a, merge_item b) {
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

typedef struct {
    int32_t id, prev, next, len; /* len 0: merged away */
} symbol;

typedef struct {
    symbol *sym;
    merge_item *heap;
    int sym_cap, heap_cap, heap_n;
} bpe_work;

static void heap_push(bpe_work *w, merge_item it) {
    int i = w->heap_n++;
    while (i > 0) {
        int parent = (i - 1) / 2;
        if (!item_less(it, w->heap[parent])) break;
        w->heap[i] = w->heap[parent];
        i = parent;
    }
    w->heap[i] = it;
}

static merge_item heap_pop(bpe_work *w) {
    merge_item top = w->heap[0], last = w->heap[--w->heap_n];
    int i = 0, n = w->heap_n;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && item_less(w->heap[c + 1], w->heap[c])) c++;
        if (!item_less(w->heap[c], last)) break;
        w->heap[i] = w->heap[c];
        i = c;
    }
    if (n) w->heap[i] = last;
    return top;
}

static void try_pair(const tokenizer *t, bpe_work *w, int pos) {
    if (pos < 0 || w->sym[pos].next < 0) return;
    const tok_merge *m = tok_merge_find(t, w->sym[pos].id, w->sym[w->sym[pos].next].id);
    if (m) heap_push(w, (merge_item){m->rank, pos});
}

static int bpe_piece(const tokenizer *t, bpe_work *w, const uint8_t *p, int n, ivec *out) {
    if (n == 0) return 0;
    if (t->ignore_merges) {
        int32_t id = tok_vocab_find(t, p, (size_t)n);
        if (id >= 0) return ivec_push(out, id);
    }
    if (n > w->sym_cap) {
        int cap = n < 64 ? 64 : n;
        symbol *s = realloc(w->sym, (size_t)cap * sizeof *s);
        if (!s) return -1;
        w->sym = s;
        w->sym_cap = cap;
        /* n - 1 pairs at first, then at most n - 1 merges each pushing two: 3n bounds it. */
        merge_item *h = realloc(w->heap, ((size_t)cap * 3 + 4) * sizeof *h);
        if (!h) return -1;
        w->heap = h;
        w->heap_cap = cap * 3 + 4;
    }
    for (int i = 0; i < n; i++)
        w->sym[i] = (symbol){t->byte_id[p[i]], i - 1, i + 1 < n ? i + 1 : -1, 1};
    w->heap_n = 0;
    for (int i = 0; i + 1 < n; i++) try_pair(t, w, i);
    while (w->heap_n > 0) {
        merge_item it = heap_pop(w);
        symbol *a = &w->sym[it.pos];
        if (a->len == 0 || a->next < 0) continue;
        symbol *b = &w->sym[a->next];
        const tok_merge *m = tok_merge_find(t, a->id, b->id);
        if (!m || m->rank != it.rank) continue; /* stale: a neighbour changed since */
        a->id = m->new_id;
        a->len += b->len;
        b->len = 0;
        a->next = b->next;
        if (a->next >= 0) w->sym[a->next].prev = it.pos;
        try_pair(t, w, a->prev);
        try_pair(t, w, it.pos);
    }
    for (int i = 0; i >= 0; i = w->sym[i].next)
        if (ivec_push(out, w->sym[i].id) < 0) return -1;
    return 0;
}

/* ---- pre-tokenization ----------------------------------------------------------------- */

typedef struct {
    const tokenizer *t;
    bpe_work work;
    pcre2_match_data *md;
    pcre2_match_context *mctx;
    pcre2_jit_stack *jit;
    ivec *out;
    strata_err *err;
} enc_state;

/* Splits p[0..n) by regex level k (Isolated: matches and the gaps between them are both
 * pieces; Removed: only the gaps), then hands each piece to level k + 1, and the last
 * level's pieces to BPE. */
static int split_level(enc_state *st, int k, const uint8_t *p, size_t n) {
    const tokenizer *t = st->t;
    if (n == 0) return 0;
    if (k == t->n_splits) {
        if (n > (size_t)INT32_MAX / 4) return err_set(st->err, "tokenizer: pre-token too long");
        if (bpe_piece(t, &st->work, p, (int)n, st->out) < 0)
            return err_set(st->err, "tokenizer: out of memory");
        return 0;
    }
    const tok_split *sp = &t->splits[k];
    size_t at = 0, gap = 0;
    while (at <= n) {
        int rc = pcre2_match(sp->re, p, n, at, PCRE2_NO_UTF_CHECK, st->md, st->mctx);
        if (rc == PCRE2_ERROR_NOMATCH) break;
        if (rc < 0) {
            char msg[128];
            pcre2_get_error_message(rc, (PCRE2_UCHAR *)msg, sizeof msg);
            return err_set(st->err, "tokenizer: regex match failed: %s", msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(st->md);
        size_t s = ov[0], e = ov[1];
        if (e == s) { /* empty match: no piece; step one character */
            at = s + 1;
            while (at < n && (p[at] & 0xC0) == 0x80) at++;
            continue;
        }
        if (s > gap && split_level(st, k + 1, p + gap, s - gap) < 0) return -1;
        if (!sp->removed && split_level(st, k + 1, p + s, e - s) < 0) return -1;
        gap = at = e;
    }
    if (gap < n) return split_level(st, k + 1, p + gap, n - gap);
    return 0;
}

/* ByteLevel's add_prefix_space, then the split levels and BPE. */
static int pretokenize(enc_state *st, const uint8_t *p, size_t n) {
    if (n == 0) return 0;
    if (!st->t->prefix_space || p[0] == ' ') return split_level(st, 0, p, n);
    uint8_t *q = malloc(n + 1);
    if (!q) return err_set(st->err, "tokenizer: out of memory");
    q[0] = ' ';
    memcpy(q + 1, p, n);
    int rc = split_level(st, 0, q, n + 1);
    free(q);
    return rc;
}

static int is_word_cp(int32_t c) {
    if (c == '_') return 1;
    utf8proc_category_t cat = utf8proc_category(c);
    return cat >= UTF8PROC_CATEGORY_LU && cat <= UTF8PROC_CATEGORY_LO ? 1
           : cat >= UTF8PROC_CATEGORY_ND && cat <= UTF8PROC_CATEGORY_NO;
}

static int32_t cp_before(const uint8_t *p, size_t at) {
    size_t i = at;
    while (i > 0 && (p[--i] & 0xC0) == 0x80) {}
    utf8proc_int32_t c = -1;
    utf8proc_iterate(p + i, (utf8proc_ssize_t)(at - i), &c);
    return c;
}

static int32_t cp_at(const uint8_t *p, size_t n, size_t at, int *len) {
    utf8proc_int32_t c = -1;
    utf8proc_ssize_t k = utf8proc_iterate(p + at, (utf8proc_ssize_t)(n - at), &c);
    *len = k > 0 ? (int)k : 1;
    return c;
}

static int is_space_cp(int32_t c) {
    return (c >= 9 && c <= 13) || c == ' ' || c == 0x85 || c == 0xA0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200A) || c == 0x2028 || c == 0x2029 || c == 0x202F ||
           c == 0x205F || c == 0x3000;
}

/* Finds the leftmost-longest added token of the given kind in p[from..n). On success sets
 * the span to cut [*cut_s, *cut_e) (wider than the token when lstrip/rstrip eat spaces). */
static const tok_added *find_added(const tokenizer *t, const uint8_t *p, size_t n, size_t from,
                                   int normalized, int split_special, size_t *cut_s, size_t *cut_e) {
    for (size_t i = from; i < n; i++) {
        const tok_added_bucket *b = &t->added_by_byte[p[i]];
        for (int j = 0; j < b->n; j++) { /* longest first */
            const tok_added *a = &t->added[b->idx[j]];
            if (a->normalized != normalized || (split_special && a->special)) continue;
            if (a->len > n - i || memcmp(p + i, a->content, a->len) != 0) continue;
            size_t s = i, e = i + a->len;
            if (a->single_word) {
                int k;
                if ((s > 0 && is_word_cp(cp_before(p, s))) || (e < n && is_word_cp(cp_at(p, n, e, &k))))
                    continue;
            }
            if (a->lstrip)
                while (s > from && is_space_cp(cp_before(p, s))) {
                    size_t q = s;
                    while (q > 0 && (p[--q] & 0xC0) == 0x80) {}
                    s = q;
                }
            if (a->rstrip) {
                int k;
                while (e < n && is_space_cp(cp_at(p, n, e, &k))) e += (size_t)k;
            }
            *cut_s = s;
            *cut_e = e;
            return a;
        }
    }
    return NULL;
}

/* Cuts out added tokens of one kind, handing the stretches between them to `next`. */
static int encode_added(enc_state *st, const uint8_t *p, size_t n, int normalized, int flags,
                        int (*next)(enc_state *, const uint8_t *, size_t, int)) {
    size_t at = 0;
    for (;;) {
        size_t s, e;
        const tok_added *a = find_added(st->t, p, n, at, normalized, flags & TOK_SPLIT_SPECIAL, &s, &e);
        if (!a) break;
        if (s > at && next(st, p + at, s - at, flags) < 0) return -1;
        if (ivec_push(st->out, a->id) < 0) return err_set(st->err, "tokenizer: out of memory");
        at = e;
    }
    return next(st, p + at, n - at, flags);
}

static int pretokenize_flags(enc_state *st, const uint8_t *p, size_t n, int flags) {
    (void)flags;
    return pretokenize(st, p, n);
}

/* Normalizes one stretch between raw-matched added tokens; HF then looks for the
 * normalized=true added tokens in the normalized text, and pre-tokenizes the rest. */
static int encode_plain(enc_state *st, const uint8_t *p, size_t n, int flags) {
    const tokenizer *t = st->t;
    if (n == 0) return 0;
    uint8_t *norm = NULL;
    if (t->norm_options) {
        utf8proc_ssize_t m = utf8proc_map(p, (utf8proc_ssize_t)n, &norm, t->norm_options);
        if (m < 0) return err_set(st->err, "tokenizer: normalize: %s", utf8proc_errmsg(m));
        p = norm;
        n = (size_t)m;
    }
    int rc = t->n_added_norm ? encode_added(st, p, n, 1, flags, pretokenize_flags)
                             : pretokenize(st, p, n);
    free(norm);
    return rc;
}

int tok_encode(const tokenizer *t, const char *text, size_t len, int flags, int32_t **ids,
               int *n_ids, strata_err *err) {
    *ids = NULL;
    *n_ids = 0;
    if (len > (size_t)INT32_MAX) return err_set(err, "tokenizer: text of %zu bytes is too long", len);
    tok_buf clean = {0};
    ivec out = {0};
    enc_state st = {.t = t, .out = &out, .err = err};
    int rc = -1;
    /* Invalid UTF-8 becomes U+FFFD first: PCRE2 and utf8proc then see valid text only. */
    if (utf8_lossy((const uint8_t *)text, len, 1, &clean) < 0) goto oom;
    st.md = pcre2_match_data_create(2, NULL);
    st.mctx = pcre2_match_context_create(NULL);
    st.jit = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, NULL);
    if (!st.md || !st.mctx || !st.jit) goto oom;
    pcre2_jit_stack_assign(st.mctx, NULL, st.jit);
    if (ivec_push(&out, 0) < 0) goto oom; /* keeps out.v non-NULL for empty results */
    out.n = 0;
    if (flags & TOK_ADD_SPECIAL)
        for (int i = 0; i < t->n_prefix; i++)
            if (ivec_push(&out, t->prefix_ids[i]) < 0) goto oom;
    if (encode_added(&st, (const uint8_t *)clean.data, clean.len, 0, flags, encode_plain) < 0)
        goto done;
    if (flags & TOK_ADD_SPECIAL)
        for (int i = 0; i < t->n_suffix; i++)
            if (ivec_push(&out, t->suffix_ids[i]) < 0) goto oom;
    *ids = out.v;
    *n_ids = out.n;
    out.v = NULL;
    rc = 0;
    goto done;
oom:
    rc = err_set(err, "tokenizer: out of memory");
done:
    free(out.v);
    free(clean.data);
    free(st.work.sym);
    free(st.work.heap);
    pcre2_jit_stack_free(st.jit);
    pcre2_match_context_free(st.mctx);
    pcre2_match_data_free(st.md);
    return rc;
}

/* ---- decoding -------------------------------------------------------------------------- */

struct tok_decoder {
    const tokenizer *t;
    int skip_special;
    tok_buf pending; /* bytes of a character not yet complete */
    tok_buf out;
};

tok_decoder *tok_decoder_new(const tokenizer *t, int skip_special) {
    tok_decoder *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->t = t;
    d->skip_special = skip_special;
    return d;
}

static const char *decoder_run(tok_decoder *d, int final, size_t *len) {
    d->out.len = 0;
    if (tok_buf_put(&d->out, "", 0) < 0) return NULL;
    long used = d->pending.len ? utf8_lossy((const uint8_t *)d->pending.data, d->pending.len, final, &d->out) : 0;
    if (used < 0) return NULL;
    if (used > 0) memmove(d->pending.data, d->pending.data + used, d->pending.len - (size_t)used);
    d->pending.len -= (size_t)used;
    *len = d->out.len;
    return d->out.data;
}

const char *tok_decoder_push(tok_decoder *d, int32_t id, size_t *len) {
    const tokenizer *t = d->t;
    *len = 0;
    if (id >= 0 && id < t->vocab_size && t->piece_len[id] >= 0 &&
        !(d->skip_special && tok_is_special(t, id))) {
        if (tok_buf_put(&d->pending, t->pieces + t->piece_off[id], (size_t)t->piece_len[id]) < 0)
            return NULL;
    }
    return decoder_run(d, 0, len);
}

const char *tok_decoder_flush(tok_decoder *d, size_t *len) { return decoder_run(d, 1, len); }

void tok_decoder_free(tok_decoder **d) {
    if (!d || !*d) return;
    free((*d)->pending.data);
    free((*d)->out.data);
    free(*d);
    *d = NULL;
}

int tok_decode(const tokenizer *t, const int32_t *ids, int n, int skip_special, char **out,
               size_t *out_len, strata_err *err) {
    *out = NULL;
    tok_buf raw = {0}, text = {0};
    if (tok_buf_put(&raw, "", 0) < 0) return err_set(err, "tokenizer: out of memory");
    for (int i = 0; i < n; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->vocab_size || t->piece_len[id] < 0) continue;
        if (skip_special && tok_is_special(t, id)) continue;
        if (tok_buf_put(&raw, t->pieces + t->piece_off[id], (size_t)t->piece_len[id]) < 0) {
            free(raw.data);
            return err_set(err, "tokenizer: out of memory");
        }
    }
    int bad = tok_buf_put(&text, "", 0) < 0 || utf8_lossy((const uint8_t *)raw.data, raw.len, 1, &text) < 0;
    free(raw.data);
    if (bad) {
        free(text.data);
        return err_set(err, "tokenizer: out of memory");
    }
    *out = text.data;
    if (out_len) *out_len = text.len;
    return 0;
}
