#!/usr/bin/env python3
"""Reference logits from Hugging Face transformers for strata's generated models.

Usage: make_parity.py CASES_JSON MODELS_DIR OUT_DIR
MODELS_DIR/<name>/ holds what `strata-gen` wrote for each case (config.json + safetensors).
The MLX affine weights are dequantized here, independently of strata's C code
(w = scale * q + bias, q unpacked from uint32 words, element 0 in the lowest bits), loaded
into Qwen2ForCausalLM / LlamaForCausalLM in float32 with eager attention, and the logits of
every position of the case's token sequence are written to OUT_DIR/<name>.f32.
"""
import json
import os
import sys

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM


def load_as_torch(d):
    from safetensors.torch import load_file as tload
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    out = {}
    for f in files:
        out.update(tload(os.path.join(d, f)))
    return out


def quant_for(cfg, module):
    q = cfg.get("quantization")
    if not q:
        return 0, 0
    o = q.get(module)
    if o is False:
        return 0, 0
    if isinstance(o, dict):
        return o.get("bits", q["bits"]), o.get("group_size", q["group_size"])
    return q["bits"], q["group_size"]


def dequant(w, scales, biases, bits, group):
    w = w.to(torch.int64) & 0xFFFFFFFF
    per = 32 // bits
    shifts = torch.arange(per, dtype=torch.int64) * bits
    q = ((w.unsqueeze(-1) >> shifts) & ((1 << bits) - 1)).reshape(w.shape[0], -1).float()
    s = scales.float().repeat_interleave(group, dim=1)
    b = biases.float().repeat_interleave(group, dim=1)
    return s * q + b


def hf_model(cfg):
    common = dict(
        hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
        num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=cfg["num_attention_heads"],
        num_key_value_heads=cfg["num_key_value_heads"], vocab_size=cfg["vocab_size"],
        max_position_embeddings=cfg["max_position_embeddings"], rope_theta=cfg["rope_theta"],
        rms_norm_eps=cfg["rms_norm_eps"], tie_word_embeddings=cfg["tie_word_embeddings"],
        hidden_act="silu", torch_dtype="float32", attn_implementation="eager",
    )
    if cfg["model_type"] == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common, use_sliding_window=False))
    return LlamaForCausalLM(LlamaConfig(**common, head_dim=cfg["head_dim"], attention_bias=False,
                                        mlp_bias=False, rope_scaling=cfg.get("rope_scaling")))


def main():
    cases_path, models_dir, out_dir = sys.argv[1:4]
    os.makedirs(out_dir, exist_ok=True)
    for case in json.load(open(cases_path))["cases"]:
        d = os.path.join(models_dir, case["name"])
        cfg = json.load(open(os.path.join(d, "config.json")))
        raw = load_as_torch(d)
        sd = {}
        for name, t in raw.items():
            if name.endswith(".scales") or name.endswith(".biases"):
                continue
            if name.endswith(".weight") and (name[:-7] + ".scales") in raw:
                mod = name[:-7]
                bits, group = quant_for(cfg, mod)
                sd[name] = dequant(t, raw[mod + ".scales"], raw[mod + ".biases"], bits, group)
            else:
                sd[name] = t.float()
        model = hf_model(cfg).float().eval()
        missing, unexpected = model.load_state_dict(sd, strict=False)
        missing = [m for m in missing if not (cfg["tie_word_embeddings"] and m == "lm_head.weight")]
        assert not missing and not unexpected, (case["name"], missing, unexpected)
        if cfg["tie_word_embeddings"]:
            model.tie_weights()
        ids = torch.tensor([case["tokens"]], dtype=torch.long)
        with torch.no_grad():
            logits = model(ids).logits[0].float().numpy()
        logits.astype("<f4").tofile(os.path.join(out_dir, case["name"] + ".f32"))
        print(case["name"], logits.shape, float(np.abs(logits).max()))


if __name__ == "__main__":
    main()
