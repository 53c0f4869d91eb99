#!/usr/bin/env python3
"""Train strata-code-4m, the small *trained* model that strata ships as a fixture.

Why: the generated checkpoints (strata-gen) have random weights, so nothing they write ever
repeats the prompt, and prompt-lookup speculative decoding has nothing to find. A language model
that has learned to copy (induction heads: the skill that makes real models repeat identifiers,
list items and quoted text) is what speculative decoding is built for. This script trains one on
the GPU machine, in a few minutes, from text that is already there (the Python source of the
machine's own standard library and packages), and writes it in the MLX 4-bit layout that strata
reads, with a byte-level BPE tokenizer.json and reference outputs from Hugging Face transformers.

usage: train_code_model.py OUT_DIR [--seconds 180] [--quick]

OUT_DIR/model/: config.json, model.safetensors (MLX affine 4-bit, group 64, f16 scales/biases,
tied embeddings), tokenizer.json, tokenizer_config.json.
OUT_DIR/reference.json: for each prompt, the tokenizer's ids and the greedy continuation of the
*quantized* model as run by transformers (Qwen2ForCausalLM, float32, eager attention, weights
dequantized here from the stored codes), with the top-1/top-2 logit margin of every step.
OUT_DIR/train.log: corpus, losses, and the copy accuracy on repeated random token spans.

Needs: torch (CUDA), transformers, tokenizers, numpy. Seeds are fixed; GPU kernels are not
bit-deterministic, so a rerun trains a slightly different model: the shipped one is the fixture.
tests/fixtures/code-model is OUT_DIR/model/*, OUT_DIR/reference.json and OUT_DIR/train.log of
`train_code_model.py OUT_DIR --seconds 200` on one H100 (about 4 minutes in all; its README.md
has the figures); tests/test_code_model.sh checks strata against its reference.json.
"""
import argparse
import glob
import json
import math
import os
import random
import struct
import sys
import time

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import Qwen2Config, Qwen2ForCausalLM

VOCAB = 1024
DIM, FFN, LAYERS, HEADS, KV_HEADS = 256, 704, 4, 4, 2
GROUP = 64
SEQ = 512

# the prompts of reference.json, which tests/test_code_model.sh replays through strata
PROMPTS = [
    'def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n',
    'for (int i = 0; i < n; i++) {\n    x[i] = y[i] + z[i];\n}\nfor (int i = 0; i < n; i++) {\n',
    'SELECT id, name FROM users WHERE id = 1;\nSELECT id, name FROM users WHERE id = 2;\nSELECT',
    '<li>apple</li>\n<li>banana</li>\n<li>cherry</li>\n<li>',
    'import os\nimport sys\nimport json\n\n\ndef main():\n',
    'class Point:\n    def __init__(self, x, y):\n        self.x = x\n        self.y = y\n\n',
    'The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick',
    'a = 1\nb = 2\nc = 3\nd = 4\ne = 5\nf =',
]


def log(f, *a):
    s = ' '.join(str(x) for x in a)
    print(s, flush=True)
    f.write(s + '\n')
    f.flush()


def corpus(limit):
    """Python source files under sys.path, shuffled with a fixed seed, up to `limit` bytes."""
    files = set()
    for root in sys.path:
        if root and os.path.isdir(root):
            files.update(glob.glob(os.path.join(root, '**', '*.py'), recursive=True))
    files = sorted(files)
    random.Random(0).shuffle(files)
    texts, total = [], 0
    for p in files:
        try:
            with open(p, encoding='utf-8') as fh:
                s = fh.read()
        except (OSError, UnicodeDecodeError):
            continue
        if not 200 <= len(s) <= 200_000:
            continue
        texts.append(s)
        total += len(s)
        if total >= limit:
            break
    return texts, total, len(files)


def train_tokenizer(texts):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    tr = trainers.BpeTrainer(vocab_size=VOCAB, special_tokens=['<|endoftext|>'],
                             initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, tr)
    return tok


def hf_config(attn):
    return Qwen2Config(vocab_size=VOCAB, hidden_size=DIM, intermediate_size=FFN, num_hidden_layers=LAYERS,
                       num_attention_heads=HEADS, num_key_value_heads=KV_HEADS, max_position_embeddings=2048,
                       rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True, hidden_act='silu',
                       bos_token_id=0, eos_token_id=0, attn_implementation=attn)


def quantize(w):
    """MLX affine 4-bit, per row and group of 64: w ~ scale * q + bias, q in 0..15, packed 8 to a
    uint32 word with element 0 in the lowest bits. Scales/biases are rounded to f16 first and the
    codes chosen for the rounded values."""
    rows, cols = w.shape
    g = w.double().reshape(rows, cols // GROUP, GROUP)
    lo, hi = g.amin(-1), g.amax(-1)
    s16 = ((hi - lo) / 15).half()
    b16 = lo.half()
    s, b = s16.double().unsqueeze(-1), b16.double().unsqueeze(-1)
    q = torch.where(s > 0, torch.round((g - b) / torch.where(s > 0, s, torch.ones_like(s))), torch.zeros_like(g))
    q = q.clamp(0, 15).to(torch.int64).reshape(rows, cols // 8, 8)
    words = torch.zeros(rows, cols // 8, dtype=torch.int64)
    for j in range(8):
        words |= q[..., j] << (4 * j)
    return words.numpy().astype(np.uint32), s16.numpy(), b16.numpy()


def dequant(words, s16, b16):
    w = torch.from_numpy(words.astype(np.int64))
    q = torch.stack([(w >> (4 * j)) & 15 for j in range(8)], -1).reshape(w.shape[0], -1).float()
    s = torch.from_numpy(s16.astype(np.float32)).repeat_interleave(GROUP, 1)
    b = torch.from_numpy(b16.astype(np.float32)).repeat_interleave(GROUP, 1)
    return s * q + b


def write_safetensors(path, tensors):
    names = sorted(tensors)
    header, blobs, off = {'__metadata__': {'format': 'mlx'}}, [], 0
    codes = {np.dtype(np.uint32): 'U32', np.dtype(np.float16): 'F16'}
    for n in names:
        a = np.ascontiguousarray(tensors[n])
        b = a.tobytes()
        header[n] = {'dtype': codes[a.dtype], 'shape': list(a.shape), 'data_offsets': [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(',', ':')).encode()
    h += b' ' * (-len(h) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def export(model, d):
    os.makedirs(d, exist_ok=True)
    sd = {k: v.detach().float().cpu() for k, v in model.state_dict().items() if k != 'lm_head.weight'}
    out, deq = {}, {}
    for k, v in sd.items():
        if v.dim() == 2:  # every linear layer and the embedding
            base = k[:-len('.weight')]
            words, s16, b16 = quantize(v)
            out[base + '.weight'], out[base + '.scales'], out[base + '.biases'] = words, s16, b16
            deq[k] = dequant(words, s16, b16)
        else:  # norms and the q/k/v output biases
            out[k] = v.numpy().astype(np.float16)
            deq[k] = torch.from_numpy(out[k].astype(np.float32))
    write_safetensors(os.path.join(d, 'model.safetensors'), out)
    cfg = {'architectures': ['Qwen2ForCausalLM'], 'model_type': 'qwen2', 'bos_token_id': 0, 'eos_token_id': 0,
           'head_dim': DIM // HEADS, 'hidden_act': 'silu', 'hidden_size': DIM, 'intermediate_size': FFN,
           'max_position_embeddings': 2048, 'num_attention_heads': HEADS, 'num_hidden_layers': LAYERS,
           'num_key_value_heads': KV_HEADS, 'quantization': {'bits': 4, 'group_size': GROUP},
           'rms_norm_eps': 1e-6, 'rope_theta': 10000.0, 'tie_word_embeddings': True, 'torch_dtype': 'float16',
           'vocab_size': VOCAB}
    with open(os.path.join(d, 'config.json'), 'w') as f:
        json.dump(cfg, f, indent=2)
    return deq


def reference(deq, tok, n_new):
    """Greedy continuation of every prompt by transformers on the dequantized weights."""
    cfg = hf_config('eager')
    m = Qwen2ForCausalLM(cfg).eval()
    missing, unexpected = m.load_state_dict(deq, strict=False)
    assert not unexpected and all(k == 'lm_head.weight' for k in missing), (missing, unexpected)
    m.tie_weights()
    refs = []
    with torch.no_grad():
        for p in PROMPTS:
            ids = tok.encode(p).ids
            seq, out, margins = list(ids), [], []
            for _ in range(n_new):
                logits = m(torch.tensor([seq])).logits[0, -1]
                top = torch.topk(logits, 2)
                out.append(int(top.indices[0]))
                margins.append(round(float(top.values[0] - top.values[1]), 5))
                seq.append(out[-1])
            refs.append({'prompt': p, 'prompt_ids': ids, 'greedy_ids': out, 'margins': margins,
                         'text': tok.decode(out)})
    return refs


def copy_accuracy(model, n=64, span=48, dev='cuda'):
    """Next-token accuracy on the second copy of a random token span: the copying skill."""
    g = torch.Generator(device='cpu').manual_seed(1)
    x = torch.randint(1, VOCAB, (n, span), generator=g)
    x = torch.cat([x, x], 1).to(dev)
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
        pred = model(input_ids=x, use_cache=False).logits.argmax(-1)
    return float((pred[:, span:-1] == x[:, span + 1:]).float().mean())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('out')
    ap.add_argument('--seconds', type=float, default=180)
    ap.add_argument('--quick', action='store_true')
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    lf = open(os.path.join(a.out, 'train.log'), 'w')
    torch.manual_seed(0)
    t0 = time.time()
    import tokenizers
    import transformers
    log(lf, f'{time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}; {torch.cuda.get_device_name()}; '
            f'torch {torch.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}; '
            f'args {vars(a)}')
    texts, nbytes, nfiles = corpus(2_000_000 if a.quick else 80_000_000)
    log(lf, f'corpus: {len(texts)} files of {nfiles} found, {nbytes / 1e6:.1f} MB, {time.time() - t0:.1f} s')
    tok = train_tokenizer(texts[: max(1, len(texts) // 4)])
    mdir = os.path.join(a.out, 'model')
    os.makedirs(mdir, exist_ok=True)
    tok.save(os.path.join(mdir, 'tokenizer.json'))
    with open(os.path.join(mdir, 'tokenizer_config.json'), 'w') as f:
        json.dump({'tokenizer_class': 'PreTrainedTokenizerFast', 'eos_token': '<|endoftext|>', 'bos_token': None,
                   'add_bos_token': False, 'model_max_length': 2048}, f, indent=2)
    enc = tok.encode_batch(texts)
    ids = np.fromiter((t for e in enc for t in e.ids + [0]), dtype=np.int64)
    log(lf, f'tokenizer: vocab {tok.get_vocab_size()}, {len(ids)} tokens ({nbytes / len(ids):.2f} bytes/token), '
            f'{time.time() - t0:.1f} s')
    n_val = max(SEQ * 64, len(ids) // 50)
    data = torch.from_numpy(ids[:-n_val]).cuda()
    val = torch.from_numpy(ids[-n_val:]).cuda()

    model = Qwen2ForCausalLM(hf_config('sdpa')).cuda()
    log(lf, f'model: {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M parameters, '
            f'attention {model.config._attn_implementation}')
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, betas=(0.9, 0.95), weight_decay=0.1, fused=True)
    B, base_lr, warm = 64, 3e-3, 100
    ar = torch.arange(SEQ + 1, device='cuda')

    def batch(src, n):
        ix = torch.randint(0, len(src) - SEQ - 2, (n,), device='cuda')
        return src[ix[:, None] + ar[None]]

    budget = 3 if a.quick else a.seconds
    step, total, ts, t10 = 0, None, time.time(), None
    while True:
        if step == 10:
            torch.cuda.synchronize()
            t10 = time.time()
        if total is None and step == 40:
            torch.cuda.synchronize()
            per = (time.time() - t10) / 30  # the first steps pay for CUDA's start: not counted
            total = max(60, int((budget - (t10 - ts)) / per) + 10)  # steps that fit the budget
            log(lf, f'{per * 1e3:.1f} ms/step -> {total} steps')
        if total is not None and step >= total:
            break
        lr = base_lr * min(1.0, (step + 1) / warm)
        if total:
            lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, step / total)))
        for gp in opt.param_groups:
            gp['lr'] = lr
        xy = batch(data, B)
        with torch.autocast('cuda', dtype=torch.bfloat16):
            logits = model(input_ids=xy[:, :-1], use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.float().reshape(-1, VOCAB), xy[:, 1:].reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if step % 200 == 0:
            log(lf, f'step {step} loss {loss.item():.3f} lr {lr:.2e} {time.time() - ts:.0f} s')
        step += 1
    model.eval()
    with torch.no_grad(), torch.autocast('cuda', dtype=torch.bfloat16):
        vl = []
        for _ in range(16):
            xy = batch(val, 32)
            lg = model(input_ids=xy[:, :-1], use_cache=False).logits
            vl.append(torch.nn.functional.cross_entropy(lg.float().reshape(-1, VOCAB), xy[:, 1:].reshape(-1)).item())
    log(lf, f'trained {step} steps in {time.time() - ts:.0f} s; validation loss {np.mean(vl):.3f} '
            f'({np.mean(vl) / math.log(2) * len(ids) / nbytes:.3f} bits/byte); copy accuracy {copy_accuracy(model):.3f}')
    deq = export(model.float().cpu(), mdir)
    qm = Qwen2ForCausalLM(hf_config('sdpa')).cuda()
    qm.load_state_dict({k: v for k, v in deq.items()}, strict=False)
    qm.tie_weights()
    log(lf, f'quantized: copy accuracy {copy_accuracy(qm.eval()):.3f}')
    refs = reference(deq, tok, 16 if a.quick else 48)
    with open(os.path.join(a.out, 'reference.json'), 'w') as f:
        json.dump({'model': 'strata-code-4m', 'transformers_eager_float32': True, 'cases': refs}, f, indent=1)
    for r in refs:
        log(lf, repr(r['prompt'][-30:]), '->', repr(r['text']), 'min margin', min(r['margins']))
    log(lf, f'done in {time.time() - t0:.0f} s')


if __name__ == '__main__':
    main()
