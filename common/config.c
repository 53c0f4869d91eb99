#include "common/config.h"

#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int get_int(json_t *root, const char *key, int required, int dflt, int *out, strata_err *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) {
        if (required) return err_set(err, "config.json: missing required field '%s'", key);
        *out = dflt;
        return 0;
    }
    if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > (1 << 30))
        return err_set(err, "config.json: field '%s' is not a non-negative integer", key);
    *out = (int)json_integer_value(v);
    return 0;
}

static int get_float(json_t *root, const char *key, float dflt, float *out, strata_err *err) {
    json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v)) { *out = dflt; return 0; }
    if (!json_is_number(v)) return err_set(err, "config.json: field '%s' is not a number", key);
    *out = (float)json_number_value(v);
    return 0;
}

static int parse_quant_spec(json_t *v, quant_spec dflt, const char *where, quant_spec *q, strata_err *err) {
    if (json_is_false(v)) { q->bits = 0; q->group_size = 0; return 0; }
    if (!json_is_object(v)) return err_set(err, "config.json: quantization entry '%s' is neither an object nor false", where);
    json_t *b = json_object_get(v, "bits"), *g = json_object_get(v, "group_size");
    q->bits = b ? (int)json_integer_value(b) : dflt.bits;
    q->group_size = g ? (int)json_integer_value(g) : dflt.group_size;
    if ((b && !json_is_integer(b)) || (g && !json_is_integer(g)))
        return err_set(err, "config.json: quantization '%s': bits and group_size must be integers", where);
    if (q->bits != 4 && q->bits != 8)
        return err_set(err, "config.json: quantization '%s': %d bits is not supported (4 or 8)", where, q->bits);
    if (q->group_size != 32 && q->group_size != 64 && q->group_size != 128)
        return err_set(err, "config.json: quantization '%s': group_size %d is not supported (32, 64 or 128)", where, q->group_size);
    return 0;
}

static int parse_quant(json_t *root, model_config *c, strata_err *err) {
    json_t *q = json_object_get(root, "quantization");
    if (!q) q = json_object_get(root, "quantization_config");
    c->quant.bits = 0;
    c->quant.group_size = 0;
    if (!q || json_is_null(q)) return 0;
    if (!json_is_object(q)) return err_set(err, "config.json: 'quantization' is not an object");
    quant_spec dflt = {4, 64};
    if (parse_quant_spec(q, dflt, "(default)", &c->quant, err)) return -1;
    const char *key;
    json_t *v;
    json_object_foreach(q, key, v) {
        if (!json_is_object(v) && !json_is_false(v)) continue; /* bits, group_size, mode, ... */
        if (c->n_overrides == CONFIG_MAX_OVERRIDES)
            return err_set(err, "config.json: more than %d quantization overrides", CONFIG_MAX_OVERRIDES);
        if (strlen(key) >= sizeof c->overrides[0].module)
            return err_set(err, "config.json: quantization override name too long: '%.40s...'", key);
        strcpy(c->overrides[c->n_overrides].module, key);
        if (parse_quant_spec(v, c->quant, key, &c->overrides[c->n_overrides].q, err)) return -1;
        c->n_overrides++;
    }
    return 0;
}

static int parse_rope_scaling(json_t *root, model_config *c, strata_err *err) {
    json_t *rs = json_object_get(root, "rope_scaling");
    if (!rs || json_is_null(rs)) return 0;
    if (!json_is_object(rs)) return err_set(err, "config.json: 'rope_scaling' is not an object");
    json_t *t = json_object_get(rs, "rope_type");
    if (!t) t = json_object_get(rs, "type");
    const char *type = json_is_string(t) ? json_string_value(t) : "";
    if (!strcmp(type, "default")) return 0;
    if (strcmp(type, "llama3"))
        return err_set(err, "config.json: rope_scaling type '%s' is not supported (llama3 or default)", type);
    c->rope_llama3 = 1;
    if (get_float(rs, "factor", 8.0f, &c->rope_factor, err) ||
        get_float(rs, "low_freq_factor", 1.0f, &c->rope_low_freq_factor, err) ||
        get_float(rs, "high_freq_factor", 4.0f, &c->rope_high_freq_factor, err) ||
        get_int(rs, "original_max_position_embeddings", 0, 8192, &c->rope_orig_max_pos, err))
        return -1;
    return 0;
}

static int parse_ids(json_t *v, int *ids, int max, int *n) {
    *n = 0;
    if (json_is_integer(v)) { ids[(*n)++] = (int)json_integer_value(v); return 0; }
    if (!json_is_array(v)) return 0;
    size_t i;
    json_t *e;
    json_array_foreach(v, i, e) if (json_is_integer(e) && *n < max) ids[(*n)++] = (int)json_integer_value(e);
    return 0;
}

int config_parse(const char *text, size_t len, model_config *c, strata_err *err) {
    memset(c, 0, sizeof *c);
    json_error_t jerr;
    json_t *root = json_loadb(text, len, 0, &jerr);
    if (!root) return err_set(err, "config.json: invalid JSON at line %d: %s", jerr.line, jerr.text);
    int rc = -1;
    if (!json_is_object(root)) { err_set(err, "config.json: not a JSON object"); goto out; }
    json_t *mt = json_object_get(root, "model_type");
    if (!json_is_string(mt)) { err_set(err, "config.json: missing required field 'model_type'"); goto out; }
    snprintf(c->model_type, sizeof c->model_type, "%s", json_string_value(mt));
    if (!strcmp(c->model_type, "llama")) c->arch = ARCH_LLAMA;
    else if (!strcmp(c->model_type, "qwen2")) c->arch = ARCH_QWEN2;
    else { err_set(err, "config.json: model_type '%s' is not supported (llama, qwen2)", c->model_type); goto out; }

    if (get_int(root, "hidden_size", 1, 0, &c->hidden_dim, err) ||
        get_int(root, "intermediate_size", 1, 0, &c->ffn_dim, err) ||
        get_int(root, "num_hidden_layers", 1, 0, &c->n_layers, err) ||
        get_int(root, "num_attention_heads", 1, 0, &c->n_heads, err) ||
        get_int(root, "vocab_size", 1, 0, &c->vocab_size, err) ||
        get_int(root, "num_key_value_heads", 0, c->n_heads, &c->n_kv_heads, err) ||
        get_int(root, "max_position_embeddings", 0, 4096, &c->max_seq_len, err) ||
        get_float(root, "rms_norm_eps", 1e-6f, &c->rms_eps, err) ||
        get_float(root, "rope_theta", 10000.0f, &c->rope_theta, err))
        goto out;
    if (c->hidden_dim == 0 || c->n_heads == 0 || c->n_kv_heads == 0 || c->n_layers == 0 ||
        c->vocab_size == 0 || c->ffn_dim == 0) {
        err_set(err, "config.json: hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads and vocab_size must be positive");
        goto out;
    }
    if (get_int(root, "head_dim", 0, c->hidden_dim / c->n_heads, &c->head_dim, err)) goto out;
    if (c->n_heads % c->n_kv_heads || c->head_dim % 2 || c->head_dim == 0) {
        err_set(err, "config.json: %d heads over %d kv heads with head_dim %d is not a valid attention shape",
                c->n_heads, c->n_kv_heads, c->head_dim);
        goto out;
    }
    json_t *tie = json_object_get(root, "tie_word_embeddings");
    c->tie_embeddings = tie && json_is_true(tie); /* transformers defaults it to false for both */
    json_t *ab = json_object_get(root, "attention_bias");
    c->qkv_bias = c->arch == ARCH_QWEN2 ? 1 : (ab && json_is_true(ab));
    if (parse_rope_scaling(root, c, err) || parse_quant(root, c, err)) goto out;
    int nb = 0;
    c->bos_id = -1;
    parse_ids(json_object_get(root, "bos_token_id"), &c->bos_id, 1, &nb);
    parse_ids(json_object_get(root, "eos_token_id"), c->eos_ids, CONFIG_MAX_EOS, &c->n_eos);
    rc = 0;
out:
    json_decref(root);
    return rc;
}

int config_load(const char *dir, model_config *c, strata_err *err) {
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "rb");
    if (!f) return err_set(err, "%s: cannot open", path);
    char *buf = NULL;
    size_t len = 0, cap = 0, got;
    char chunk[65536];
    while ((got = fread(chunk, 1, sizeof chunk, f)) > 0) {
        if (len + got > (16u << 20)) { fclose(f); free(buf); return err_set(err, "%s: larger than 16 MB", path); }
        if (len + got > cap) {
            cap = (len + got) * 2;
            char *nb = realloc(buf, cap);
            if (!nb) { fclose(f); free(buf); return err_set(err, "out of memory"); }
            buf = nb;
        }
        memcpy(buf + len, chunk, got);
        len += got;
    }
    fclose(f);
    int rc = config_parse(buf ? buf : "", len, c, err);
    free(buf);
    return rc;
}

quant_spec config_quant_for(const model_config *c, const char *module) {
    for (int i = 0; i < c->n_overrides; i++)
        if (!strcmp(c->overrides[i].module, module)) return c->overrides[i].q;
    return c->quant;
}

void config_rope_inv_freq(const model_config *c, float *inv_freq) {
    int half = c->head_dim / 2;
    for (int j = 0; j < half; j++) {
        /* transformers computes base ** (arange(0, dim, 2) / dim) in float32 */
        float f = 1.0f / powf(c->rope_theta, (float)(2 * j) / (float)c->head_dim);
        if (c->rope_llama3) {
            float low_wavelen = (float)c->rope_orig_max_pos / c->rope_low_freq_factor;
            float high_wavelen = (float)c->rope_orig_max_pos / c->rope_high_freq_factor;
            float wavelen = 2.0f * (float)M_PI / f;
            if (wavelen > low_wavelen) {
                f = f / c->rope_factor;
            } else if (wavelen >= high_wavelen) {
                float smooth = ((float)c->rope_orig_max_pos / wavelen - c->rope_low_freq_factor) /
                               (c->rope_high_freq_factor - c->rope_low_freq_factor);
                f = (1.0f - smooth) * f / c->rope_factor + smooth * f;
            }
        }
        inv_freq[j] = f;
    }
}
