#!/usr/bin/env python3
"""Writes the fuzz seed corpora tests/fuzz/<target>/seed-* (small, valid or nearly valid inputs
that reach deep into each parser). Re-run after a format change; crash inputs found by fuzz.sh are
added next to these as crash-* files and replayed by the fuzz_replay unit test."""
import json, os, struct, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

def put(target, name, data):
    d = os.path.join(HERE, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode())

# ---- safetensors ----
def st(tensors, meta=None, pad=0, extra=b""):
    hdr, data = {}, b""
    for name, dtype, shape, nbytes in tensors:
        hdr[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(data), len(data) + nbytes]}
        data += bytes((i * 37 + 11) & 255 for i in range(nbytes))
    if meta is not None:
        hdr["__metadata__"] = meta
    h = json.dumps(hdr).encode() + b" " * pad
    return struct.pack("<Q", len(h)) + h + data + extra

cfg = json.dumps({"hidden_size": 64, "num_hidden_layers": 2})
put("safetensors", "seed-q4", st([("model.layers.0.mlp.up_proj.weight", "U32", [8, 2], 64),
                                  ("model.layers.0.mlp.up_proj.scales", "F16", [8, 1], 16),
                                  ("model.layers.0.mlp.up_proj.biases", "BF16", [8, 1], 16),
                                  ("model.norm.weight", "F32", [4], 16)], {"config": cfg, "format": "mlx"}, pad=5))
put("safetensors", "seed-empty", st([], {}))
put("safetensors", "seed-scalar", st([("x", "F32", [], 4), ("y", "I32", [1, 1, 1], 4), ("z", "U8", [0], 0)]))
put("safetensors", "seed-bad-offsets", st([("a", "F32", [2], 8)])[:-3])
put("safetensors", "seed-zero-len", struct.pack("<Q", 0))

# ---- wire: protobuf Envelope, hand-encoded (field numbers from proto/strata.proto) ----
def varint(v):
    out = b""
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out += bytes([b | 0x80])
        else:
            return out + bytes([b])
def fv(n, v): return varint(n << 3) + varint(v)
def fb(n, b): b = b.encode() if isinstance(b, str) else b; return varint(n << 3 | 2) + varint(len(b)) + b
def fd(n, d): return varint(n << 3 | 1) + struct.pack("<d", d)
def env(n, body): return fb(n, body)
def wire(ctrl, payload=None):
    return bytes([1 if payload is not None else 0]) + struct.pack("<H", len(ctrl)) + ctrl + (payload or b"")

put("wire", "seed-hello", wire(env(1, fv(1, 1) + fb(2, "master") + fb(3, "cpu") + fb(4, "dev") + fv(5, 1 << 33) + fd(6, 1.5))))
put("wire", "seed-assign", wire(env(2, fb(1, cfg) + fv(2, 0) + fv(3, 2) + fb(4, bytes(range(32))) + fv(5, 4096) +
                                       fb(6, "tcp://127.0.0.1:5602") + fv(7, 512) + fv(8, 1024) + fv(9, 8))))
put("wire", "seed-ready", wire(env(3, fv(1, 1) + fv(2, 10) + fv(3, 1 << 24) + fd(4, 3.0) + fv(5, 0) + fv(6, 2))))
put("wire", "seed-fetch", wire(env(4, fv(1, 4096) + fv(2, 1024))))
put("wire", "seed-chunk", wire(env(5, fv(1, 0)), bytes(range(64))))
put("wire", "seed-forward", wire(env(6, fv(1, 7) + fv(2, 3) + fv(3, 5) + fv(4, 2) + fv(5, 4) + fv(6, 0) + fv(7, 99)), bytes(32)))
put("wire", "seed-forward-f16", wire(env(6, fv(1, 7) + fv(2, 3) + fv(4, 3) + fv(5, 2) + fv(6, 1)), bytes(12)))
put("wire", "seed-result", wire(env(7, fv(1, 7) + fv(2, 3) + fv(4, 1) + fv(5, 4) + fv(6, 2)), bytes(8)))
put("wire", "seed-trim", wire(env(8, fv(1, 7) + fv(2, 10))))
put("wire", "seed-end", wire(env(9, fv(1, 7))))
put("wire", "seed-error", wire(env(10, fv(1, 7) + fb(2, "bad thing") + fv(3, 1) + fv(4, 2) + fv(5, 1) + fb(6, "wa"))))
put("wire", "seed-empty-envelope", wire(b""))
put("wire", "seed-unknown-field", wire(fb(15, b"\x08\x01")))

# ---- topology ----
with open(os.path.join(ROOT, "topology.yml"), "rb") as f:
    put("topology", "seed-example", f.read())
put("topology", "seed-gap", "a:\n  host: '127.0.0.1:5601'\n  description: 'desk'\n  layers:\n    - 'model.layers.0-3'\n"
                            "b:\n  host: '[::1]:5602'\n  layers: ['model.layers.10', 'model.layers.11-23']\n")
put("topology", "seed-bad", "a:\n  host: 'nohost'\n  layers:\n    - 'model.layers.5-2'\nb: [1, 2]\n")
put("topology", "seed-anchors", "x: &w\n  host: 'h:1'\n  layers: ['model.layers.0']\ny: *w\n")

# ---- tokenizer.json: a byte-level BPE as qwen/llama write it, with a handful of tokens ----
def b2u():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b); cs.append(256 + n); n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}
B = b2u()
vocab = {B[b]: i for i, b in enumerate(range(256))}
merges = []
for pair in [("H", "e"), ("He", "l"), ("Hel", "l"), ("Hell", "o"), (B[32], "w"), (B[32] + "w", "o"), ("l", "d"), ("1", "2")]:
    vocab[pair[0] + pair[1]] = len(vocab)
    merges.append(pair)
pre = {"type": "Sequence", "pretokenizers": [
    {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"},
     "behavior": "Isolated", "invert": False},
    {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}]}
bl = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
added = [{"id": len(vocab), "content": "<|endoftext|>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True},
         {"id": len(vocab) + 1, "content": "<|im_start|>", "single_word": False, "lstrip": False, "rstrip": False, "normalized": False, "special": True}]
qwen = {"version": "1.0", "added_tokens": added, "normalizer": {"type": "NFC"}, "pre_tokenizer": pre, "post_processor": bl, "decoder": bl,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": [list(m) for m in merges]}}
put("tokenizer", "seed-qwen-like", json.dumps(qwen, ensure_ascii=False))
llama = json.loads(json.dumps(qwen))
llama["normalizer"] = None
llama["model"]["ignore_merges"] = True
llama["model"]["merges"] = [a + " " + b for a, b in merges]
llama["post_processor"] = {"type": "TemplateProcessing", "single": [{"SpecialToken": {"id": "<|endoftext|>", "type_id": 0}},
                                                                    {"Sequence": {"id": "A", "type_id": 0}}],
                           "pair": [], "special_tokens": {"<|endoftext|>": {"id": "<|endoftext|>", "ids": [len(vocab)], "tokens": ["<|endoftext|>"]}}}
put("tokenizer", "seed-llama-like", json.dumps(llama, ensure_ascii=False))
put("tokenizer", "seed-minimal", json.dumps({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": ["a b"]},
                                             "pre_tokenizer": {"type": "ByteLevel", "use_regex": True},
                                             "decoder": {"type": "ByteLevel"}, "added_tokens": []}))
