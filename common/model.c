#include "common/model.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static bk_buf *wrap(model *m, const st_tensor *t, strata_err *err) {
    bk_buf **bufs = realloc(m->bufs, sizeof *bufs * (size_t)(m->n_bufs + 1));
    if (!bufs) { err_set(err, "out of memory"); return NULL; }
    m->bufs = bufs;
    bk_buf *b = m->be->ops->buf_wrap(m->be, t->data, t->nbytes);
    if (!b) { err_set(err, "backend %s: cannot wrap tensor '%s' (%zu bytes)", m->be->ops->name, t->name, t->nbytes); return NULL; }
    m->bufs[m->n_bufs++] = b;
    return b;
}

static const st_tensor *need(const st_model *st, const char *name, strata_err *err) {
    const st_tensor *t = st_model_find(st, name);
    if (!t) err_set(err, "missing tensor '%s'", name);
    return t;
}

static int is_float(bk_dtype t) { return t == BK_F32 || t == BK_F16 || t == BK_BF16; }

static int check_shape(const st_tensor *t, int64_t d0, int64_t d1, strata_err *err) {
    if (t->ndim != 2 || t->shape[0] != d0 || t->shape[1] != d1)
        return err_set(err, "tensor '%s': shape [%lld, %lld] expected, file has %d dims [%lld, %lld]", t->name,
                       (long long)d0, (long long)d1, t->ndim, (long long)(t->ndim > 0 ? t->shape[0] : 0),
                       (long long)(t->ndim > 1 ? t->shape[1] : 0));
    return 0;
}

static int load_vec(model *m, const st_model *st, const char *name, int n, bk_vec *v, strata_err *err) {
    const st_tensor *t = need(st, name, err);
    if (!t) return -1;
    if (!is_float(t->dtype)) return err_set(err, "tensor '%s': dtype %s, expected a float type", name, bk_dtype_name(t->dtype));
    if (t->ndim != 1 || t->shape[0] != n)
        return err_set(err, "tensor '%s': shape [%d] expected", name, n);
    v->dtype = t->dtype;
    v->n = n;
    v->data = wrap(m, t, err);
    return v->data ? 0 : -1;
}

/* A linear module `mod` of [rows, cols]: quantized per the config, or float. */
static int load_linear(model *m, const st_model *st, const char *mod, int rows, int cols, int with_bias,
                       bk_weight *w, strata_err *err) {
    char name[256];
    quant_spec q = config_quant_for(&m->cfg, mod);
    memset(w, 0, sizeof *w);
    w->rows = rows;
    w->cols = cols;
    w->bits = q.bits;
    w->group_size = q.group_size;
    snprintf(name, sizeof name, "%s.weight", mod);
    const st_tensor *tw = need(st, name, err);
    if (!tw) return -1;
    if (q.bits == 0) {
        if (!is_float(tw->dtype))
            return err_set(err, "tensor '%s': dtype %s but the config does not quantize '%s'", name, bk_dtype_name(tw->dtype), mod);
        if (check_shape(tw, rows, cols, err)) return -1;
        w->wdtype = tw->dtype;
    } else {
        if (tw->dtype != BK_U32)
            return err_set(err, "tensor '%s': dtype %s, expected U32 for a %d-bit module", name, bk_dtype_name(tw->dtype), q.bits);
        if (cols % q.group_size)
            return err_set(err, "module '%s': %d input features are not a multiple of group size %d", mod, cols, q.group_size);
        if (check_shape(tw, rows, (int64_t)cols * q.bits / 32, err)) return -1;
        w->wdtype = BK_U32;
        const st_tensor *ts, *tb;
        snprintf(name, sizeof name, "%s.scales", mod);
        if (!(ts = need(st, name, err))) return -1;
        snprintf(name, sizeof name, "%s.biases", mod);
        if (!(tb = need(st, name, err))) return -1;
        if (!is_float(ts->dtype) || ts->dtype != tb->dtype)
            return err_set(err, "module '%s': scales (%s) and biases (%s) must share one float dtype", mod,
                           bk_dtype_name(ts->dtype), bk_dtype_name(tb->dtype));
        if (check_shape(ts, rows, cols / q.group_size, err) || check_shape(tb, rows, cols / q.group_size, err))
            return err_prefix(err, "module '%s' with group size %d", mod, q.group_size);
        w->sdtype = ts->dtype;
        if (!(w->scales = wrap(m, ts, err)) || !(w->biases = wrap(m, tb, err))) return -1;
    }
    if (!(w->w = wrap(m, tw, err))) return -1;
    if (with_bias) {
        snprintf(name, sizeof name, "%s.bias", mod);
        if (load_vec(m, st, name, rows, &w->bias, err)) return -1;
    }
    return 0;
}

static int load_layer(model *m, const st_model *st, int l, layer_weights *lw, strata_err *err) {
    const model_config *c = &m->cfg;
    char p[200], name[256];
    int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    snprintf(p, sizeof p, "model.layers.%d", l);
#define MOD(suffix) (snprintf(name, sizeof name, "%s.%s", p, suffix), name)
    if (load_vec(m, st, MOD("input_layernorm.weight"), c->hidden_dim, &lw->attn_norm, err) ||
        load_vec(m, st, MOD("post_attention_layernorm.weight"), c->hidden_dim, &lw->ffn_norm, err) ||
        load_linear(m, st, MOD("self_attn.q_proj"), q_dim, c->hidden_dim, c->qkv_bias, &lw->wq, err) ||
        load_linear(m, st, MOD("self_attn.k_proj"), kv_dim, c->hidden_dim, c->qkv_bias, &lw->wk, err) ||
        load_linear(m, st, MOD("self_attn.v_proj"), kv_dim, c->hidden_dim, c->qkv_bias, &lw->wv, err) ||
        load_linear(m, st, MOD("self_attn.o_proj"), c->hidden_dim, q_dim, 0, &lw->wo, err) ||
        load_linear(m, st, MOD("mlp.gate_proj"), c->ffn_dim, c->hidden_dim, 0, &lw->w_gate, err) ||
        load_linear(m, st, MOD("mlp.up_proj"), c->ffn_dim, c->hidden_dim, 0, &lw->w_up, err) ||
        load_linear(m, st, MOD("mlp.down_proj"), c->hidden_dim, c->ffn_dim, 0, &lw->w_down, err))
        return -1;
#undef MOD
    return 0;
}

model *model_load(const st_model *st, const model_config *cfg, const model_part *part, backend *be,
                  strata_err *err) {
    if (part->first_layer < 0 || part->last_layer > cfg->n_layers || part->first_layer > part->last_layer) {
        err_set(err, "layer range [%d, %d) is outside the model's %d layers", part->first_layer, part->last_layer, cfg->n_layers);
        return NULL;
    }
    model *m = calloc(1, sizeof *m);
    if (!m) { err_set(err, "out of memory"); return NULL; }
    m->cfg = *cfg;
    m->be = be;
    m->first_layer = part->first_layer;
    m->last_layer = part->last_layer;
    m->has_embed = part->embed;
    m->has_head = part->head;
    int n = part->last_layer - part->first_layer;
    m->layers = calloc((size_t)(n ? n : 1), sizeof *m->layers);
    if (!m->layers) { err_set(err, "out of memory"); goto fail; }
    if ((part->embed || (part->head && cfg->tie_embeddings)) &&
        load_linear(m, st, "model.embed_tokens", cfg->vocab_size, cfg->hidden_dim, 0, &m->embed, err))
        goto fail;
    for (int l = part->first_layer; l < part->last_layer; l++)
        if (load_layer(m, st, l, &m->layers[l - part->first_layer], err)) goto fail;
    if (part->head) {
        if (load_vec(m, st, "model.norm.weight", cfg->hidden_dim, &m->final_norm, err)) goto fail;
        if (cfg->tie_embeddings) m->lm_head = m->embed;
        else if (load_linear(m, st, "lm_head", cfg->vocab_size, cfg->hidden_dim, 0, &m->lm_head, err)) goto fail;
    }
    float *inv_freq = malloc(sizeof(float) * (size_t)(cfg->head_dim / 2));
    m->inv_freq = be->ops->buf_alloc(be, sizeof(float) * (size_t)(cfg->head_dim / 2));
    if (!inv_freq || !m->inv_freq) { free(inv_freq); err_set(err, "out of memory"); goto fail; }
    config_rope_inv_freq(cfg, inv_freq);
    be->ops->buf_write(be, m->inv_freq, 0, inv_freq, sizeof(float) * (size_t)(cfg->head_dim / 2));
    free(inv_freq);
    return m;
fail:
    model_free(&m);
    return NULL;
}

void model_free(model **pm) {
    model *m = pm ? *pm : NULL;
    if (!m) return;
    for (int i = 0; i < m->n_bufs; i++) m->be->ops->buf_free(m->be, m->bufs[i]);
    if (m->inv_freq) m->be->ops->buf_free(m->be, m->inv_freq);
    free(m->bufs);
    free(m->layers);
    free(m);
    *pm = NULL;
}

static int starts_with(const char *s, const char *prefix) { return !strncmp(s, prefix, strlen(prefix)); }

int model_part_tensors(const model_config *cfg, const st_model *st, const model_part *part,
                       void (*fn)(const char *name, void *user), void *user) {
    int count = 0;
    for (int i = 0; i < st_model_count(st); i++) {
        const char *name = st_model_at(st, i)->name;
        int take = 0;
        int layer;
        if (sscanf(name, "model.layers.%d.", &layer) == 1)
            take = layer >= part->first_layer && layer < part->last_layer;
        else if (starts_with(name, "model.embed_tokens."))
            take = part->embed || (part->head && cfg->tie_embeddings);
        else if (starts_with(name, "model.norm.") || starts_with(name, "lm_head."))
            take = part->head;
        if (take) {
            if (fn) fn(name, user);
            count++;
        }
    }
    return count;
}
