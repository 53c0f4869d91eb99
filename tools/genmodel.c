#include "tools/genmodel.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

typedef struct {
    const char *name, *model_type;
    int hidden, ffn, layers, heads, kv_heads, head_dim, vocab, tied, max_pos;
    float theta, eps;
    int llama3; /* rope_scaling: factor, low, high, original max position */
    float factor, low, high;
    int orig_max;
} shape;

static const shape shapes[] = {
    {"qwen2.5-0.5b", "qwen2", 896, 4864, 24, 14, 2, 64, 151936, 1, 32768, 1e6f, 1e-6f, 0, 0, 0, 0, 0},
    {"qwen2.5-7b", "qwen2", 3584, 18944, 28, 28, 4, 128, 152064, 0, 32768, 1e6f, 1e-6f, 0, 0, 0, 0, 0},
    {"llama-3.2-1b", "llama", 2048, 8192, 16, 32, 8, 64, 128256, 1, 131072, 500000.f, 1e-5f, 1, 32, 1, 4, 8192},
    {"llama-3.1-8b", "llama", 4096, 14336, 32, 32, 8, 128, 128256, 0, 131072, 500000.f, 1e-5f, 1, 8, 1, 4, 8192},
    {"tiny-qwen", "qwen2", 128, 256, 4, 4, 2, 32, 512, 0, 4096, 1e6f, 1e-6f, 0, 0, 0, 0, 0},
    /* original max 64 so that all three llama3 frequency bands occur at head_dim 16 */
    {"tiny-llama", "llama", 128, 384, 4, 8, 2, 16, 384, 0, 4096, 500000.f, 1e-5f, 1, 8, 1, 4, 64},
};

const char *const gen_shape_names[] = {"qwen2.5-0.5b", "qwen2.5-7b", "llama-3.2-1b", "llama-3.1-8b",
                                       "tiny-qwen", "tiny-llama", NULL};

void gen_opts_default(gen_opts *o) {
    memset(o, 0, sizeof *o);
    o->shape = "tiny-qwen";
    o->seed = 1;
    o->bits = 4;
    o->group_size = 64;
    o->float_dtype = BK_F16;
    o->tied = -1;
    o->shards = 1;
}

/* ---- deterministic values ---- */

static uint64_t splitmix(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t name_seed(uint64_t seed, const char *name) {
    uint64_t h = 1469598103934665603ull ^ seed;
    for (const char *p = name; *p; p++) h = (h ^ (uint8_t)*p) * 1099511628211ull;
    return h;
}

static float uniform(uint64_t *s) { return (float)(splitmix(s) >> 40) / (float)(1ull << 24); } /* [0,1) */

/* ---- the tensor list ---- */

typedef enum { K_Q, K_SCALES, K_BIASES, K_DENSE, K_NORM, K_BIAS } kind;

typedef struct {
    char name[160];
    kind kind;
    bk_dtype dtype;
    int64_t rows, cols;  /* cols in stored elements (words for K_Q) */
    int in_features, bits, group; /* for the generator's value ranges */
    float gain;
    int shard;
} tensor_spec;

typedef struct {
    tensor_spec *t;
    int n, cap;
} spec_list;

static tensor_spec *add(spec_list *l, strata_err *err) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 64;
        tensor_spec *t = realloc(l->t, sizeof *t * (size_t)cap);
        if (!t) { err_set(err, "out of memory"); return NULL; }
        l->t = t;
        l->cap = cap;
    }
    memset(&l->t[l->n], 0, sizeof l->t[0]);
    return &l->t[l->n++];
}

static int add_linear(spec_list *l, const char *mod, int rows, int cols, int bits, int group, bk_dtype fd,
                      float gain, strata_err *err) {
    if (bits == 0) {
        tensor_spec *t = add(l, err);
        if (!t) return -1;
        *t = (tensor_spec){.kind = K_DENSE, .dtype = fd, .rows = rows, .cols = cols, .in_features = cols, .gain = gain};
        snprintf(t->name, sizeof t->name, "%s.weight", mod);
        return 0;
    }
    const char *suffix[] = {"weight", "scales", "biases"};
    kind kinds[] = {K_Q, K_SCALES, K_BIASES};
    for (int i = 0; i < 3; i++) {
        tensor_spec *t = add(l, err);
        if (!t) return -1;
        t->kind = kinds[i];
        t->dtype = i == 0 ? BK_U32 : fd;
        t->rows = rows;
        t->cols = i == 0 ? (int64_t)cols * bits / 32 : cols / group;
        t->in_features = cols;
        t->bits = bits;
        t->group = group;
        t->gain = gain;
        snprintf(t->name, sizeof t->name, "%s.%s", mod, suffix[i]);
    }
    return 0;
}

static int add_vec(spec_list *l, const char *name, int n, kind k, bk_dtype fd, strata_err *err) {
    tensor_spec *t = add(l, err);
    if (!t) return -1;
    snprintf(t->name, sizeof t->name, "%s", name);
    t->kind = k;
    t->dtype = fd;
    t->rows = n;
    t->cols = 0; /* 1-d */
    return 0;
}

static int build_specs(const shape *s, const gen_opts *o, int tied, spec_list *l, strata_err *err) {
    int b = o->bits, g = o->group_size;
    bk_dtype fd = o->float_dtype;
    int q_dim = s->heads * s->head_dim, kv_dim = s->kv_heads * s->head_dim;
    int vocab = o->vocab_size ? o->vocab_size : s->vocab, layers = o->n_layers ? o->n_layers : s->layers;
    char mod[128], name[160];
    /* embedding values of std ~2/sqrt(hidden): logits of O(1) when the head is tied */
    if (add_linear(l, "model.embed_tokens", vocab, s->hidden, b, g, fd, 2.0f, err)) return -1;
    for (int i = 0; i < layers; i++) {
        struct { const char *m; int rows, cols, bias; } mods[] = {
            {"self_attn.q_proj", q_dim, s->hidden, 1}, {"self_attn.k_proj", kv_dim, s->hidden, 1},
            {"self_attn.v_proj", kv_dim, s->hidden, 1}, {"self_attn.o_proj", s->hidden, q_dim, 0},
            {"mlp.gate_proj", s->ffn, s->hidden, 0},    {"mlp.up_proj", s->ffn, s->hidden, 0},
            {"mlp.down_proj", s->hidden, s->ffn, 0},
        };
        snprintf(name, sizeof name, "model.layers.%d.input_layernorm.weight", i);
        if (add_vec(l, name, s->hidden, K_NORM, fd, err)) return -1;
        snprintf(name, sizeof name, "model.layers.%d.post_attention_layernorm.weight", i);
        if (add_vec(l, name, s->hidden, K_NORM, fd, err)) return -1;
        for (size_t j = 0; j < sizeof mods / sizeof mods[0]; j++) {
            snprintf(mod, sizeof mod, "model.layers.%d.%s", i, mods[j].m);
            int mb = b, mg = g;
            if (o->mixed && i == 0 && !strcmp(mods[j].m, "mlp.down_proj")) { mb = 8; mg = 32; }
            if (add_linear(l, mod, mods[j].rows, mods[j].cols, mb, mg, fd, 1.0f, err)) return -1;
            if (mods[j].bias && !strcmp(s->model_type, "qwen2")) {
                snprintf(name, sizeof name, "%s.bias", mod);
                if (add_vec(l, name, mods[j].rows, K_BIAS, fd, err)) return -1;
            }
        }
    }
    if (add_vec(l, "model.norm.weight", s->hidden, K_NORM, fd, err)) return -1;
    if (!tied && add_linear(l, "lm_head", vocab, s->hidden, b, g, fd, 1.0f, err)) return -1;
    return 0;
}

static size_t spec_bytes(const tensor_spec *t) {
    return (size_t)t->rows * (size_t)(t->cols ? t->cols : 1) * bk_dtype_size(t->dtype);
}

/* ---- writing ---- */

static void put_float(uint8_t *p, bk_dtype t, float v) {
    if (t == BK_F32) { memcpy(p, &v, 4); return; }
    uint16_t h = t == BK_F16 ? bk_f32_to_f16(v) : bk_f32_to_bf16(v);
    p[0] = (uint8_t)h;
    p[1] = (uint8_t)(h >> 8);
}

/* Writes a tensor's values. Quantized groups: q uniform over [0, 2^bits), scale s around
 * gain / (std(q) sqrt(in)) so that w = s q + b has std ~ gain/sqrt(in), b ~ -mean(q) s. The scale
 * and bias of one group come from one stream (seeded by the weight's module) so they agree. */
static int write_tensor(FILE *f, const tensor_spec *t, uint64_t seed, uint8_t *buf, size_t cap, strata_err *err) {
    uint64_t s = name_seed(seed, t->name);
    size_t esz = bk_dtype_size(t->dtype), total = spec_bytes(t), done = 0;
    size_t n_elems = total / esz;
    float qmax = t->bits ? (float)((1 << t->bits) - 1) : 0;
    float qstd = t->bits ? sqrtf((qmax + 1) * (qmax + 1) - 1) / sqrtf(12.0f) : 1;
    float wstd = t->gain / sqrtf((float)(t->in_features ? t->in_features : 1));
    /* scales and biases share the stream of their module's ".scales" name */
    uint64_t gs = 0;
    if (t->kind == K_SCALES || t->kind == K_BIASES) {
        char mod[160];
        snprintf(mod, sizeof mod, "%.*s", (int)(strrchr(t->name, '.') - t->name), t->name);
        gs = name_seed(seed, mod);
    }
    size_t i = 0;
    while (done < total) {
        size_t chunk = total - done < cap ? total - done : cap, k = chunk / esz;
        for (size_t j = 0; j < k; j++, i++) {
            uint8_t *p = buf + j * esz;
            float v;
            switch (t->kind) {
            case K_Q: {
                uint32_t w = (uint32_t)splitmix(&s);
                memcpy(p, &w, 4); /* little-endian hosts only: checked in gen_model */
                continue;
            }
            case K_SCALES:
            case K_BIASES: {
                float sc = wstd / qstd * (0.5f + uniform(&gs));
                float bias = -sc * (qmax / 2) + sc * (uniform(&gs) - 0.5f);
                v = t->kind == K_SCALES ? sc : bias;
                break;
            }
            case K_DENSE: v = wstd * 1.7320508f * (2 * uniform(&s) - 1); break;
            case K_NORM: v = 1.0f + 0.2f * (uniform(&s) - 0.5f); break;
            case K_BIAS: default: v = 0.5f * (2 * uniform(&s) - 1); break;
            }
            put_float(p, t->dtype, v);
        }
        if (fwrite(buf, 1, chunk, f) != chunk) return err_set(err, "write failed: %s", strerror(errno));
        done += chunk;
    }
    (void)n_elems;
    return 0;
}

static int write_shard(const char *path, const spec_list *l, int shard, uint64_t seed, strata_err *err) {
    json_t *hdr = json_object();
    size_t off = 0;
    for (int i = 0; i < l->n; i++) {
        const tensor_spec *t = &l->t[i];
        if (t->shard != shard) continue;
        json_t *shape = t->cols ? json_pack("[II]", (json_int_t)t->rows, (json_int_t)t->cols)
                                : json_pack("[I]", (json_int_t)t->rows);
        json_object_set_new(hdr, t->name, json_pack("{s:s, s:o, s:[II]}", "dtype", bk_dtype_name(t->dtype), "shape",
                                                    shape, "data_offsets", (json_int_t)off,
                                                    (json_int_t)(off + spec_bytes(t))));
        off += spec_bytes(t);
    }
    json_object_set_new(hdr, "__metadata__", json_pack("{s:s}", "format", "mlx"));
    char *text = json_dumps(hdr, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(hdr);
    if (!text) return err_set(err, "out of memory");
    size_t len = strlen(text), padded = (len + 7) / 8 * 8; /* data 8-byte aligned, as safetensors does */
    FILE *f = fopen(path, "wb");
    if (!f) { free(text); return err_set(err, "%s: %s", path, strerror(errno)); }
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    int rc = 0;
    if (fwrite(le, 1, 8, f) != 8 || fwrite(text, 1, len, f) != len) rc = err_set(err, "%s: write failed", path);
    for (size_t i = len; i < padded && !rc; i++)
        if (fputc(' ', f) == EOF) rc = err_set(err, "%s: write failed", path);
    free(text);
    size_t cap = 1 << 20;
    uint8_t *buf = malloc(cap);
    if (!buf) rc = err_set(err, "out of memory");
    for (int i = 0; i < l->n && !rc; i++)
        if (l->t[i].shard == shard) rc = write_tensor(f, &l->t[i], seed, buf, cap, err);
    free(buf);
    if (fclose(f) && !rc) rc = err_set(err, "%s: close failed", path);
    if (rc) err_prefix(err, "%s", path);
    return rc;
}

static int write_config(const char *dir, const shape *s, const gen_opts *o, int tied, strata_err *err) {
    int layers = o->n_layers ? o->n_layers : s->layers, vocab = o->vocab_size ? o->vocab_size : s->vocab;
    json_t *c = json_pack("{s:s, s:[s], s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:f, s:f, s:b, s:s, s:s, s:i, s:i}",
                          "model_type", s->model_type, "architectures",
                          !strcmp(s->model_type, "qwen2") ? "Qwen2ForCausalLM" : "LlamaForCausalLM", "hidden_size",
                          s->hidden, "intermediate_size", s->ffn, "num_hidden_layers", layers,
                          "num_attention_heads", s->heads, "num_key_value_heads", s->kv_heads, "head_dim",
                          s->head_dim, "vocab_size", vocab, "max_position_embeddings", s->max_pos, "rope_theta",
                          (double)s->theta, "rms_norm_eps", (double)s->eps, "tie_word_embeddings", tied,
                          "hidden_act", "silu", "torch_dtype",
                          o->float_dtype == BK_BF16 ? "bfloat16" : o->float_dtype == BK_F16 ? "float16" : "float32",
                          "bos_token_id", 1, "eos_token_id", 2);
    if (!strcmp(s->model_type, "llama")) json_object_set_new(c, "attention_bias", json_false());
    if (s->llama3)
        json_object_set_new(c, "rope_scaling",
                            json_pack("{s:s, s:f, s:f, s:f, s:i}", "rope_type", "llama3", "factor", (double)s->factor,
                                      "low_freq_factor", (double)s->low, "high_freq_factor", (double)s->high,
                                      "original_max_position_embeddings", s->orig_max));
    if (o->bits) {
        json_t *q = json_pack("{s:i, s:i}", "group_size", o->group_size, "bits", o->bits);
        if (o->mixed)
            json_object_set_new(q, "model.layers.0.mlp.down_proj", json_pack("{s:i, s:i}", "group_size", 32, "bits", 8));
        json_object_set_new(c, "quantization", q);
    }
    char path[4096];
    snprintf(path, sizeof path, "%s/config.json", dir);
    int rc = json_dump_file(c, path, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(c);
    return rc ? err_set(err, "%s: cannot write", path) : 0;
}

static int write_index(const char *dir, const spec_list *l, int shards, strata_err *err) {
    json_t *map = json_object();
    size_t total = 0;
    char file[64];
    for (int i = 0; i < l->n; i++) {
        snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", l->t[i].shard + 1, shards);
        json_object_set_new(map, l->t[i].name, json_string(file));
        total += spec_bytes(&l->t[i]);
    }
    json_t *root = json_pack("{s:{s:I}, s:o}", "metadata", "total_size", (json_int_t)total, "weight_map", map);
    char path[4096];
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    int rc = json_dump_file(root, path, JSON_INDENT(2) | JSON_SORT_KEYS);
    json_decref(root);
    return rc ? err_set(err, "%s: cannot write", path) : 0;
}

int gen_model(const char *dir, const gen_opts *o, strata_err *err) {
    const uint16_t one = 1;
    if (*(const uint8_t *)&one != 1) return err_set(err, "the generator writes little-endian data and needs a little-endian host");
    const shape *s = NULL;
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
        if (!strcmp(shapes[i].name, o->shape)) s = &shapes[i];
    if (!s) return err_set(err, "unknown shape '%s'", o->shape);
    if (o->bits != 0 && o->bits != 4 && o->bits != 8) return err_set(err, "bits must be 0, 4 or 8");
    if (o->bits && o->group_size != 32 && o->group_size != 64 && o->group_size != 128)
        return err_set(err, "group size must be 32, 64 or 128");
    if (o->bits && (s->hidden % o->group_size || s->ffn % o->group_size || (s->heads * s->head_dim) % o->group_size))
        return err_set(err, "shape %s does not divide into groups of %d", s->name, o->group_size);
    if (o->float_dtype != BK_F16 && o->float_dtype != BK_BF16 && o->float_dtype != BK_F32)
        return err_set(err, "float dtype must be f16, bf16 or f32");
    if (o->shards < 1) return err_set(err, "shards must be at least 1");
    int tied = o->tied >= 0 ? o->tied : s->tied;
    if (mkdir(dir, 0755) && errno != EEXIST) return err_set(err, "%s: %s", dir, strerror(errno));
    spec_list l = {0};
    int rc = build_specs(s, o, tied, &l, err);
    if (!rc) {
        /* shards: contiguous runs of tensors of about equal bytes */
        size_t total = 0, acc = 0;
        for (int i = 0; i < l.n; i++) total += spec_bytes(&l.t[i]);
        for (int i = 0; i < l.n; i++) {
            int sh = (int)((double)acc * o->shards / (double)(total ? total : 1));
            l.t[i].shard = sh < o->shards ? sh : o->shards - 1;
            acc += spec_bytes(&l.t[i]);
        }
        rc = write_config(dir, s, o, tied, err);
    }
    char path[4096];
    if (!rc && o->shards == 1) {
        snprintf(path, sizeof path, "%s/model.safetensors", dir);
        rc = write_shard(path, &l, 0, o->seed, err);
    }
    for (int sh = 0; !rc && o->shards > 1 && sh < o->shards; sh++) {
        snprintf(path, sizeof path, "%s/model-%05d-of-%05d.safetensors", dir, sh + 1, o->shards);
        rc = write_shard(path, &l, sh, o->seed, err);
    }
    if (!rc && o->shards > 1) rc = write_index(dir, &l, o->shards, err);
    free(l.t);
    return rc;
}
