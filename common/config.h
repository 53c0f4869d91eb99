/* A model's config.json: Llama 2/3/3.1/3.2 and Qwen2/2.5, with the MLX quantization block.
 *
 * MLX writes "quantization": {"group_size": 64, "bits": 4, <module path>: {...} | false, ...}:
 * a per-module entry overrides the default for that module ("false" = left in float). */
#ifndef STRATA_CONFIG_H
#define STRATA_CONFIG_H

#include "common/err.h"

typedef enum { ARCH_LLAMA, ARCH_QWEN2 } model_arch;

typedef struct {
    int bits;       /* 0: float (not quantized); 4 or 8 */
    int group_size; /* 32, 64 or 128 when bits > 0 */
} quant_spec;

#define CONFIG_MAX_OVERRIDES 256
#define CONFIG_MAX_EOS 8

typedef struct {
    model_arch arch;
    char model_type[32];
    int hidden_dim, ffn_dim, n_layers, n_heads, n_kv_heads, head_dim, vocab_size;
    int max_seq_len;
    float rms_eps, rope_theta;
    /* rope_scaling {"rope_type": "llama3", ...} */
    int rope_llama3;
    float rope_factor, rope_low_freq_factor, rope_high_freq_factor;
    int rope_orig_max_pos;
    int tie_embeddings;
    int qkv_bias; /* Qwen2 always; Llama when attention_bias is true */
    quant_spec quant;
    int n_overrides;
    struct { char module[160]; quant_spec q; } overrides[CONFIG_MAX_OVERRIDES];
    int bos_id; /* -1 when absent */
    int n_eos;
    int eos_ids[CONFIG_MAX_EOS];
} model_config;

int config_parse(const char *json_text, size_t len, model_config *c, strata_err *err);
/* reads DIR/config.json */
int config_load(const char *dir, model_config *c, strata_err *err);
/* the quantization of a module ("model.layers.3.mlp.down_proj"), after overrides */
quant_spec config_quant_for(const model_config *c, const char *module);
/* inv_freq[head_dim/2] for RoPE, llama3 scaling applied as transformers does */
void config_rope_inv_freq(const model_config *c, float *inv_freq);

#endif
