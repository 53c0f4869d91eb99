/* config.json parsing: the model families, the MLX quantization block and its overrides, and
 * named errors for bad configs. */
#include <math.h>
#include <string.h>

#include "check.h"
#include "common/config.h"

static int parse(const char *json, model_config *c, strata_err *err) { return config_parse(json, strlen(json), c, err); }

static void expect_error(const char *what, const char *json, const char *needle) {
    model_config c;
    strata_err err = {{0}};
    CHECK(parse(json, &c, &err) != 0, "%s: accepted", what);
    CHECK(strstr(err.msg, needle) != NULL, "%s: error '%s' lacks '%s'", what, err.msg, needle);
}

#define BASE "\"hidden_size\": 896, \"intermediate_size\": 4864, \"num_hidden_layers\": 24, " \
             "\"num_attention_heads\": 14, \"num_key_value_heads\": 2, \"vocab_size\": 151936"

int main(void) {
    model_config c;
    strata_err err = {{0}};

    /* Qwen2.5-0.5B as mlx-community ships it */
    int rc = parse("{\"model_type\": \"qwen2\", " BASE ", \"rope_theta\": 1000000.0, \"rms_norm_eps\": 1e-06,"
                   " \"tie_word_embeddings\": true, \"eos_token_id\": 151645,"
                   " \"quantization\": {\"group_size\": 64, \"bits\": 4}}", &c, &err);
    CHECK(rc == 0, "qwen2: %s", err.msg);
    CHECK(c.arch == ARCH_QWEN2 && c.qkv_bias && c.tie_embeddings, "qwen2 flags");
    CHECK(c.head_dim == 64 && c.n_kv_heads == 2, "head_dim derived: %d", c.head_dim);
    CHECK(c.quant.bits == 4 && c.quant.group_size == 64, "quant default");
    CHECK(c.n_eos == 1 && c.eos_ids[0] == 151645, "eos");
    CHECK(fabsf(c.rope_theta - 1e6f) < 1, "theta");

    /* Llama 3.2 with llama3 rope scaling, 8-bit with per-module overrides */
    rc = parse("{\"model_type\": \"llama\", \"hidden_size\": 2048, \"intermediate_size\": 8192,"
               " \"num_hidden_layers\": 16, \"num_attention_heads\": 32, \"num_key_value_heads\": 8,"
               " \"vocab_size\": 128256, \"head_dim\": 64, \"rope_theta\": 500000.0, \"eos_token_id\": [128001, 128008, 128009],"
               " \"rope_scaling\": {\"factor\": 32.0, \"high_freq_factor\": 4.0, \"low_freq_factor\": 1.0,"
               "   \"original_max_position_embeddings\": 8192, \"rope_type\": \"llama3\"},"
               " \"quantization\": {\"group_size\": 32, \"bits\": 8, \"lm_head\": {\"bits\": 4, \"group_size\": 128},"
               "   \"model.layers.0.mlp.down_proj\": false}}", &c, &err);
    CHECK(rc == 0, "llama: %s", err.msg);
    CHECK(c.arch == ARCH_LLAMA && !c.qkv_bias && !c.tie_embeddings, "llama flags");
    CHECK(c.rope_llama3 && c.rope_factor == 32.0f && c.rope_orig_max_pos == 8192, "llama3 rope");
    CHECK(c.n_eos == 3 && c.eos_ids[2] == 128009, "eos list");
    quant_spec q = config_quant_for(&c, "lm_head");
    CHECK(q.bits == 4 && q.group_size == 128, "lm_head override");
    q = config_quant_for(&c, "model.layers.0.mlp.down_proj");
    CHECK(q.bits == 0, "float override");
    q = config_quant_for(&c, "model.layers.1.mlp.down_proj");
    CHECK(q.bits == 8 && q.group_size == 32, "default applies elsewhere");
    /* llama3 scaling: the highest frequency is untouched, the lowest divided by the factor */
    float inv[32], plain0 = 1.0f, plain31 = 1.0f / powf(500000.0f, 62.0f / 64.0f);
    config_rope_inv_freq(&c, inv);
    CHECK(fabsf(inv[0] - plain0) < 1e-7f, "high frequency kept: %g", inv[0]);
    CHECK(fabsf(inv[31] - plain31 / 32.0f) < 1e-12f, "low frequency scaled: %g vs %g", inv[31], plain31 / 32.0f);

    /* float checkpoint: no quantization block */
    rc = parse("{\"model_type\": \"llama\", " BASE "}", &c, &err);
    CHECK(rc == 0 && c.quant.bits == 0, "float model: %s", err.msg);

    expect_error("missing field", "{\"model_type\": \"llama\", \"hidden_size\": 8}", "missing required field");
    expect_error("unknown model type", "{\"model_type\": \"mamba\", " BASE "}", "model_type 'mamba' is not supported");
    expect_error("no model type", "{" BASE "}", "'model_type'");
    expect_error("bad bits", "{\"model_type\": \"qwen2\", " BASE ", \"quantization\": {\"bits\": 3, \"group_size\": 64}}",
                 "3 bits is not supported");
    expect_error("bad group", "{\"model_type\": \"qwen2\", " BASE ", \"quantization\": {\"bits\": 4, \"group_size\": 48}}",
                 "group_size 48");
    expect_error("heads do not divide", "{\"model_type\": \"qwen2\", " BASE ", \"num_key_value_heads\": 3}",
                 "not a valid attention shape");
    expect_error("unknown rope scaling", "{\"model_type\": \"llama\", " BASE ", \"rope_scaling\": {\"type\": \"yarn\"}}",
                 "rope_scaling type 'yarn'");
    expect_error("negative size", "{\"model_type\": \"llama\", " BASE ", \"head_dim\": -4}", "non-negative");
    expect_error("not JSON", "model_type: llama", "invalid JSON");
    return TEST_END();
}
