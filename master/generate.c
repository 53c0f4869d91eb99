/* Generation and speculative decoding by prompt lookup; see generate.h. */
#include "master/generate.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

struct gen_seq {
    engine *e;
    uint64_t session;
    int session_used;      /* a forward was made: end_session on free */
    const tokenizer *t;
    gen_params p;
    int32_t *stop_ids;
    char **stop_strs;
    gen_piece_fn on_piece;
    void *user;
    int vocab, ctx_len;

    int32_t *hist;         /* prompt then generated tokens */
    int n_hist, n_prompt;
    int kv_len;            /* positions the engine holds for this session */
    int32_t *input;        /* the pending forward: the prompt, or [cur, drafts...] */
    int n_input, n_draft, all_logits;
    int k_cur;             /* drafted tokens the next pass may carry, in [1, spec_k] (see plan_next) */
    float *logits;         /* [1 + spec_k, vocab] */

    sampler *smp;
    tok_decoder *dec;
    char *pending;         /* decoded text held back while it may start a stop string */
    size_t pend_len, pend_cap;

    gen_result r;
    double t0, t1;
};

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

void gen_params_default(gen_params *p) {
    memset(p, 0, sizeof *p);
    sampler_params_default(&p->sampling);
    p->max_tokens = 256;
    p->ngram_min = 1;
    p->ngram_max = 3;
    p->skip_special = 1;
}

const char *gen_finish_name(gen_finish f) {
    switch (f) {
    case GEN_FINISH_STOP: return "stop";
    case GEN_FINISH_LENGTH: return "length";
    case GEN_FINISH_CANCELLED: return "cancelled";
    default: return NULL;
    }
}

double gen_mean_accepted(const gen_result *r) {
    return r->spec_passes ? (double)r->accepted / r->spec_passes : 0.0;
}

int gen_draft_ngram(const int32_t *hist, int n, int ngram_min, int ngram_max, int k, int32_t *draft) {
    if (ngram_min < 1) ngram_min = 1;
    for (int m = ngram_max; m >= ngram_min; m--) {
        if (m >= n) continue;
        const int32_t *tail = hist + n - m;
        /* the most recent earlier occurrence: recent text predicts best (loops, repeated code) */
        for (int start = n - m - 1; start >= 0; start--) {
            if (memcmp(hist + start, tail, sizeof *tail * (size_t)m)) continue;
            int got = 0;
            for (int j = start + m; j < n && got < k; j++) draft[got++] = hist[j];
            if (got) return got;
        }
    }
    return 0;
}

void gen_seq_free(gen_seq **ps) {
    gen_seq *s = ps ? *ps : NULL;
    if (!s) return;
    if (s->session_used && s->e) s->e->ops->end_session(s->e, s->session);
    for (int i = 0; s->stop_strs && i < s->p.n_stop_strs; i++) free(s->stop_strs[i]);
    free(s->stop_strs);
    free(s->stop_ids);
    free(s->hist);
    free(s->input);
    free(s->logits);
    free(s->pending);
    sampler_free(&s->smp);
    tok_decoder_free(&s->dec);
    free(s);
    *ps = NULL;
}

gen_seq *gen_seq_new(engine *e, uint64_t session, const tokenizer *t, const int32_t *prompt, int n,
                     const gen_params *p, gen_piece_fn on_piece, void *user, strata_err *err) {
    if (n <= 0) { err_set(err, "empty prompt"); return NULL; }
    if (p->max_tokens < 0) { err_set(err, "max_tokens must be >= 0, got %d", p->max_tokens); return NULL; }
    if (p->spec_k < 0 || p->spec_k > 64) { err_set(err, "spec_k must be in [0, 64], got %d", p->spec_k); return NULL; }
    int ctx = p->ctx_len > 0 && p->ctx_len < e->cfg->max_seq_len ? p->ctx_len : e->cfg->max_seq_len;
    if (n >= ctx) {
        err_set(err, "the prompt has %d tokens; the context holds %d (prompt and reply together)", n, ctx);
        return NULL;
    }
    gen_seq *s = calloc(1, sizeof *s);
    if (!s) { err_set(err, "out of memory"); return NULL; }
    s->e = e, s->session = session, s->t = t, s->p = *p, s->on_piece = on_piece, s->user = user;
    s->k_cur = p->spec_k; /* optimistic at first: prompts often repeat themselves */
    s->vocab = e->cfg->vocab_size;
    s->ctx_len = ctx;
    s->p.stop_ids = NULL, s->p.stop_strs = NULL;
    int hist_cap = n + (p->max_tokens < ctx ? p->max_tokens : ctx) + p->spec_k + 1;
    int in_cap = n > p->spec_k + 1 ? n : p->spec_k + 1;
    s->hist = malloc(sizeof *s->hist * (size_t)hist_cap);
    s->input = malloc(sizeof *s->input * (size_t)in_cap);
    s->logits = malloc(sizeof *s->logits * (size_t)s->vocab * (size_t)(p->spec_k + 1));
    s->smp = sampler_new(&p->sampling, s->vocab);
    s->dec = tok_decoder_new(t, p->skip_special);
    if (p->n_stop_ids > 0 && (s->stop_ids = malloc(sizeof *s->stop_ids * (size_t)p->n_stop_ids)))
        memcpy(s->stop_ids, p->stop_ids, sizeof *s->stop_ids * (size_t)p->n_stop_ids);
    if (p->n_stop_strs > 0 && (s->stop_strs = calloc((size_t)p->n_stop_strs, sizeof *s->stop_strs)))
        for (int i = 0; i < p->n_stop_strs; i++)
            if (!(s->stop_strs[i] = strdup(p->stop_strs[i]))) { free(s->stop_strs[i]); s->stop_strs[i] = NULL; break; }
    int ok = s->hist && s->input && s->logits && s->smp && s->dec && (p->n_stop_ids <= 0 || s->stop_ids) &&
             (p->n_stop_strs <= 0 || (s->stop_strs && s->stop_strs[p->n_stop_strs - 1]));
    if (!ok) {
        gen_seq_free(&s);
        err_set(err, "out of memory");
        return NULL;
    }
    s->p.stop_ids = s->stop_ids;
    s->p.stop_strs = (const char *const *)s->stop_strs;
    memcpy(s->hist, prompt, sizeof *prompt * (size_t)n);
    memcpy(s->input, prompt, sizeof *prompt * (size_t)n);
    s->n_hist = s->n_prompt = s->n_input = n;
    s->r.n_prompt = n;
    if (p->max_tokens == 0) s->r.finish = GEN_FINISH_LENGTH;
    return s;
}

void gen_seq_input(gen_seq *s, const int32_t **ids, int *n, int *all_logits, float **logits) {
    if (!s->t0) s->t0 = now_s();
    *ids = s->input;
    *n = s->r.finish ? 0 : s->n_input;
    *all_logits = s->all_logits;
    *logits = s->logits;
    s->session_used = 1;
}

int gen_seq_finished(const gen_seq *s) { return s->r.finish != GEN_FINISH_NONE; }
int gen_seq_tokens(const gen_seq *s, const int32_t **ids) {
    *ids = s->hist + s->n_prompt;
    return s->n_hist - s->n_prompt;
}
uint64_t gen_seq_session(const gen_seq *s) { return s->session; }
void *gen_seq_user(const gen_seq *s) { return s->user; }

void gen_seq_result(const gen_seq *s, gen_result *out) {
    *out = s->r;
    if (!s->t1 && s->t0) out->prefill_s = now_s() - s->t0;
}

static int emit_text(gen_seq *s, const char *text, size_t len) {
    if (!len) return 0;
    if (s->on_piece && s->on_piece(text, len, s->user)) {
        s->r.finish = GEN_FINISH_CANCELLED;
        return -1;
    }
    return 0;
}

/* Adds decoded text; emits what can no longer be the start of a stop string. final: emit all. */
static int add_text(gen_seq *s, const char *text, size_t len, int final, strata_err *err) {
    if (s->pend_len + len + 1 > s->pend_cap) {
        size_t cap = (s->pend_len + len + 1) * 2;
        char *g = realloc(s->pending, cap);
        if (!g) return err_set(err, "out of memory");
        s->pending = g, s->pend_cap = cap;
    }
    memcpy(s->pending + s->pend_len, text, len);
    s->pend_len += len;
    s->pending[s->pend_len] = 0;
    size_t cut = s->pend_len, hold = 0;
    for (int i = 0; i < s->p.n_stop_strs; i++) {
        const char *stop = s->p.stop_strs[i];
        size_t sl = strlen(stop);
        if (!sl) continue;
        for (size_t at = 0; at + sl <= s->pend_len && at < cut; at++)
            if (!memcmp(s->pending + at, stop, sl)) { cut = at; break; }
        /* the longest suffix of pending that is a proper prefix of this stop */
        for (size_t h = sl - 1 < s->pend_len ? sl - 1 : s->pend_len; h > hold; h--)
            if (!memcmp(s->pending + s->pend_len - h, stop, h)) { hold = h; break; }
    }
    if (cut < s->pend_len) {
        s->r.finish = GEN_FINISH_STOP;
        emit_text(s, s->pending, cut);
        s->pend_len = 0;
        return 0;
    }
    size_t out = final ? s->pend_len : s->pend_len - hold;
    if (emit_text(s, s->pending, out)) return 0;
    memmove(s->pending, s->pending + out, s->pend_len - out);
    s->pend_len -= out;
    return 0;
}

static int is_stop_id(const gen_seq *s, int32_t id) {
    for (int i = 0; i < s->p.n_stop_ids; i++)
        if (s->p.stop_ids[i] == id) return 1;
    return 0;
}

/* The reply ends with `why`: whatever the decoder and the stop-string check still hold goes out. */
static int finish_text(gen_seq *s, gen_finish why, strata_err *err) {
    size_t len;
    const char *rest = tok_decoder_flush(s->dec, &len);
    if (!rest) return err_set(err, "out of memory");
    if (add_text(s, rest, len, 1, err)) return -1;
    if (!s->r.finish) s->r.finish = why;
    return 0;
}

/* A token was decided: record it, stream its text, and see whether the reply ends here. */
static int take_token(gen_seq *s, int32_t id, strata_err *err) {
    s->hist[s->n_hist++] = id;
    s->r.n_generated++;
    if (is_stop_id(s, id)) return finish_text(s, GEN_FINISH_STOP, err);
    size_t len;
    const char *piece = tok_decoder_push(s->dec, id, &len);
    if (!piece) return err_set(err, "out of memory");
    if (add_text(s, piece, len, 0, err)) return -1;
    if (!s->r.finish && s->r.n_generated >= s->p.max_tokens) return finish_text(s, GEN_FINISH_LENGTH, err);
    return 0;
}

/* Sets up the next forward: [cur] plus up to spec_k drafted tokens that fit. */
static int plan_next(gen_seq *s, strata_err *err) {
    int room = s->ctx_len - s->kv_len - 1; /* positions left after cur */
    if (room < 0) return finish_text(s, GEN_FINISH_LENGTH, err); /* the context is full */
    int k = s->k_cur;
    if (k > room) k = room;
    if (k > s->p.max_tokens - s->r.n_generated - 1) k = s->p.max_tokens - s->r.n_generated - 1;
    s->input[0] = s->hist[s->n_hist - 1];
    s->n_draft = k > 0 ? gen_draft_ngram(s->hist, s->n_hist, s->p.ngram_min, s->p.ngram_max, k, s->input + 1) : 0;
    s->n_input = 1 + s->n_draft;
    s->all_logits = s->n_draft > 0;
    return 0;
}

int gen_seq_feed(gen_seq *s, strata_err *err) {
    if (s->r.finish) return 1;
    if (s->on_piece && s->on_piece("", 0, s->user)) {
        s->r.finish = GEN_FINISH_CANCELLED;
        return 1;
    }
    if (s->kv_len == 0) { /* the prefill's logits: the first token */
        s->t1 = now_s();
        s->r.prefill_s = s->t1 - s->t0;
        s->kv_len = s->n_prompt;
        if (take_token(s, sampler_sample(s->smp, s->logits, s->hist, s->n_hist), err)) return -1;
    } else {
        int held = s->kv_len + s->n_input, accepted = 0;
        s->r.forwards++;
        for (int i = 0; i <= s->n_draft && !s->r.finish; i++) {
            int32_t id = sampler_sample(s->smp, s->logits + (size_t)i * (size_t)s->vocab, s->hist, s->n_hist);
            if (take_token(s, id, err)) return -1;
            if (i == s->n_draft || id != s->input[1 + i]) break;
            accepted++;
        }
        if (s->n_draft) {
            s->r.spec_passes++;
            s->r.drafted += s->n_draft;
            s->r.accepted += accepted;
            /* Draft as far as drafts have lately come true: every drafted token costs a position
             * of the verifying forward (and a row of the head), and a rejected one is wasted.
             * All accepted: reach further; else: one past what was accepted. Only speed
             * depends on it; the tokens are the same whatever is drafted. */
            s->k_cur = accepted == s->n_draft ? s->k_cur + 1 : accepted + 1;
            if (s->k_cur > s->p.spec_k) s->k_cur = s->p.spec_k;
        }
        /* the engine holds cur and every draft; keep cur and the accepted ones */
        s->kv_len += 1 + accepted;
        if (!s->r.finish && s->kv_len < held && s->e->ops->trim(s->e, s->session, s->kv_len, err)) return -1;
        s->r.decode_s = now_s() - s->t1;
    }
    if (!s->r.finish && plan_next(s, err)) return -1;
    return s->r.finish ? 1 : 0;
}

int gen_seq_step(gen_seq *s, strata_err *err) {
    const int32_t *ids;
    int n_ids, all;
    float *logits;
    gen_seq_input(s, &ids, &n_ids, &all, &logits);
    if (s->e->ops->forward(s->e, s->session, ids, n_ids, logits, all, err)) return -1;
    return gen_seq_feed(s, err);
}

int gen_seq_run(gen_seq *s, strata_err *err) {
    while (!gen_seq_finished(s))
        if (gen_seq_step(s, err) < 0) return -1;
    return 0;
}

int gen_run(engine *e, uint64_t session, const tokenizer *t, const int32_t *prompt, int n, const gen_params *p,
            gen_piece_fn on_piece, void *user, gen_result *out, strata_err *err) {
    gen_seq *s = gen_seq_new(e, session, t, prompt, n, p, on_piece, user, err);
    if (!s) return -1;
    int rc = gen_seq_run(s, err);
    if (out) gen_seq_result(s, out);
    gen_seq_free(&s);
    return rc;
}
