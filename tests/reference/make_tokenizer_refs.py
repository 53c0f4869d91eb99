#!/usr/bin/env python3
"""Reference ids and chat renders for strata's tokenizer tests, from Hugging Face.

Two steps:
  make_tokenizer_refs.py corpus FIXDIR
      writes FIXDIR/corpus.json (the strings, as hex of their bytes, so invalid UTF-8
      survives) and FIXDIR/conversations.json. Deterministic; needs only Python.
  make_tokenizer_refs.py refs FIXDIR TOKDIR OUTDIR
      for each of TOKDIR/qwen3 and TOKDIR/llama3 (tokenizer.json + tokenizer_config.json),
      writes OUTDIR/ref_NAME.json (ids from `tokenizers`, decode results) and
      OUTDIR/chat_NAME.json (transformers' apply_chat_template renders). Needs `tokenizers`,
      `transformers`, `jinja2`.

The committed fixtures were made with tokenizers 0.23.2 and transformers 5.17.0 by
  tests/fetch_tokenizers.sh .dev/tok
  python3 tests/reference/make_tokenizer_refs.py refs tests/fixtures/tokenizer .dev/tok OUT
and OUT/*.json copied into tests/fixtures/tokenizer/.

Invalid UTF-8: HF tokenizers takes a str, which cannot hold invalid bytes. strata defines
that invalid sequences become U+FFFD exactly as Python's bytes.decode('utf-8',
errors='replace') does, so the reference encodes that decoded string.
"""
import json
import os
import random
import sys

SPECIALS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>",
            "<tool_call>", "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>",
            "<|start_header_id|>", "<|end_header_id|>", "<|reserved_special_token_5|>",
            "<|fim_prefix|>", "<|vision_pad|>"]


def build_corpus():
    s = []
    # English prose and contractions (the (?i:'s|'t...) alternative).
    s += ["Hello world", "Hello, world!", "The quick brown fox jumps over the lazy dog.",
          "don't", "DON'T", "I'm here, you're there, we've been, they'll go, he'd say",
          "IT'S HIS'S'S", "it'S", "O'Neil's", "'s", "'t 're 've 'm 'll 'd", "rock 'n' roll",
          "Mr. Smith went to Washington.", "e-mail: someone@example.com",
          "https://example.com/path?q=1&x=2#frag", "What's up?!?!", "...", "!!!???",
          "A", "a", " ", "", "  ", "\t", "\n", "\r\n", "\n\n\n", " \n ", "\t\t\tx",
          "hello   world", "hello\tworld", "hello\nworld", "hello\r\nworld", "hello \n world",
          "trailing space ", "trailing spaces   ", " leading", "   leading three",
          "line1\n\nline2\n\n\nline3", "a\n \n b", "x  \n\n  y", "  \t \n", "\n \t",
          "CamelCaseIdentifierName", "snake_case_name_here", "UPPER lower MiXeD",
          "supercalifragilisticexpialidocious", "antidisestablishmentarianism",
          "Pneumonoultramicroscopicsilicovolcanoconiosis is a long word."]
    # Digits: Qwen splits every digit, Llama 3 groups by up to three.
    s += ["1", "12", "123", "1234", "12345", "1234567890", "3.14159", "1,000,000",
          "2024-01-15", "v1.2.3", "0x1F600", "1e-10", "99 bottles", "abc123def456",
          "١٢٣٤", "٣.١٤", "Ⅻ and ½ and ²", "०१२३४५", "1 2  3   4", "$1,234.56", "-42", "+7"]
    # Code.
    s += ["def foo(x):\n    return x * 2\n",
          "int main(void) {\n\tprintf(\"%d\\n\", 42);\n\treturn 0;\n}\n",
          "for (int i = 0; i < n; ++i) { a[i] += b[i]; }",
          "if x == 1:\n    pass\nelif x != 2:\n        y = [1, 2, 3]\n",
          "#include <stdio.h>\n#define MAX(a,b) ((a)>(b)?(a):(b))",
          "const f = async () => { await fetch('/api'); };",
          "SELECT * FROM users WHERE id = 42 AND name LIKE '%bob%';",
          "<div class=\"x\"><span>hi</span></div>", "{\"key\": [1, 2, {\"n\": null}]}",
          "x = {'a': 1, \"b\": 2}", "    indented four", "        indented eight\n",
          "\tfn main() -> Result<(), Box<dyn Error>> {", "a->b; c::d; e<<=1; f>>=2; g&&h||i",
          "// comment\n/* block */\n# hash", "$ ls -la | grep foo > out.txt 2>&1",
          "```python\nprint('hi')\n```", "    \n    \n", "x=1;y=2;z=x+y", "__init__",
          "λx.x", "@decorator\nclass A(B, metaclass=M):\n    ..."]
    # CJK, Korean, Japanese.
    s += ["你好，世界！", "我爱北京天安门。", "今天天气很好，我们去公园散步吧。", "中文English混合text",
          "日本語のテキストです。", "ひらがなカタカナ漢字", "ｶﾀｶﾅ", "한국어 텍스트입니다.", "안녕하세요",
          "漢字", "汉字1234数字", "「引用」『二重』", "〜ー・", "全角ＡＢＣ１２３", "\u3000全角空白\u3000"]
    # Emoji, including ZWJ sequences, skin tones, flags, keycaps.
    s += ["😀", "😀😃😄", "👍🏽", "👨‍👩‍👧‍👦", "🇺🇸🇯🇵", "1️⃣", "❤️", "hello 👋 world 🌍",
          "🏳️‍🌈", "🤖🦀🐍", "emoji😀inside", " 😀", "😀 ", "\U0001F9D1\u200D\U0001F4BB"]
    # Arabic, Hebrew, Devanagari, Thai, Cyrillic, Greek, others.
    s += ["مرحبا بالعالم", "السلام عليكم ورحمة الله", "العربية ١٢٣", "שלום עולם", "नमस्ते दुनिया",
          "हिन्दी भाषा", "สวัสดีชาวโลก", "Привет, мир!", "ПРИВЕТ", "Γειά σου Κόσμε", "ἀρχή",
          "Ελληνικά", "ქართული", "Հայերեն", "አማርኛ", "ᚠᚢᚦᚨᚱᚲ", "Tiếng Việt có dấu",
          "Ça va? Très bien, merci. Où est l'hôtel?", "Größe, Maß, Straße", "naïve café résumé",
          "ﬁ ligature", "Ǆ ǅ ǆ", "İstanbul ıi"]
    # Combining marks: NFC composes some (Qwen normalizes), others stay.
    s += ["e\u0301", "cafe\u0301", "a\u0308o\u0308u\u0308", "A\u030A", "n\u0303",
          "\u0065\u0301\u0301", "x\u0301", "\u1100\u1161\u11A8", "Z\u0351\u0352\u0353algo",
          "\u0915\u094D\u0937", "\u00E9 vs e\u0301", "\u212B", "\u2126", "\uFB01", "\u0344",
          "q\u0307\u0323", "\u1E9B\u0323", "ọ\u0302", "\u0301leading mark", "Å\u0301"]
    # Unicode whitespace, controls, odd code points.
    s += ["a\u00A0b", "a\u2003b", "a\u2028b", "a\u2029b", "a\u0085b", "a\u000Bb", "a\u000Cb",
          "a\u200Bb", "a\u200Db", "\uFEFFbom", "a\u0000b", "\u0001\u0002\u0003", "\u007F",
          "a\u202Fb", "a\u205Fb", "a\u1680b", "a\u180Eb", "\u00A0\u00A0x", "tab\u00A0 \tmix",
          "\uFFFD", "\uFFFF", "\U0010FFFF", "\U0001D400\U0001D401", "\uE000private", "\u2060"]
    # Runs of whitespace of many shapes, for \s+(?!\S) and \s*[\r\n]+.
    for ws in [" " * 2, " " * 5, " " * 17, "\t" * 3, "\n" * 4, " \t" * 3, "\r\n" * 3,
               "  \n  \n", "\n  ", " \r ", "\u3000\u3000"]:
        s += ["x" + ws + "y", ws + "y", "x" + ws]
    s += [" " * 300, "\n" * 100, "a" * 500, "ab" * 200, "😀" * 40, "的" * 120,
          "- " * 80, "=" * 200, "1" * 64]
    # Special tokens inside text (both families' tokens; each is plain text to the other).
    s += ["<|im_start|>user\nhi<|im_end|>", "a<|im_end|>b", " <|im_end|> ", "<|im_end|><|im_end|>",
          "<|endoftext|>", "<think>\nreason\n</think>\n\nanswer", "x</think>y",
          "<|begin_of_text|>Hello", "<|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
          "<|eot_id|>", " <|eot_id|>", "<|eot_id|> ", "<|reserved_special_token_5|>",
          "<|im_start", "|im_end|>", "<|im_end", "<<|im_end|>>", "<tool_call>\n{}\n</tool_call>",
          "<|fim_prefix|>def<|fim_suffix|>", "text<|vision_pad|>text", "<|endoftext|>" * 3,
          "<|end_of_text|>\n", "< |im_end| >", "<|IM_END|>", "<s></s>[INST]"]
    # Invalid UTF-8 (as bytes): lone continuation, truncated, overlong, surrogates, > U+10FFFF.
    bad = [b"\x80", b"abc\xffdef", b"\xc3", b"\xc3(", b"\xe2\x82", b"\xe2\x82x", b"\xe2\x82\xac",
           b"\xf0\x9f\x98", b"\xf0\x9f\x98 ok", b"\xc0\xaf", b"\xed\xa0\x80", b"\xed\xbf\xbf",
           b"\xf4\x90\x80\x80", b"\xf5\x80", b"\xfe\xff", b"\xa0\xa1", b"hi\x80\x80\x80there",
           b"\xe0\x80\xaf", b"\xf0\x80\x80\x80", b"\xef\xbf\xbd", b"caf\xe9", b"\x00\xff\x00",
           b"<|im_end|>\xff", b"\xff<|eot_id|>", b"  \xc3  ", b"\xe4\xbd\xa0\xe5\xa5"]
    # Mixed scripts and punctuation soup.
    s += ["Hello世界مرحبا😀123", "a—b–c", "“quoted” ‘single’", "«guillemets»", "…ellipsis…",
          "©®™", "→←↑↓⇒", "∀x∈ℝ: x²≥0", "½ + ¼ = ¾", "10°C", "¿Qué?", "¡Hola!", "§1.2 ¶3",
          "#hashtag @mention", "C++ & C#", "a/b\\c|d", "~`^", "[[nested]]", "((()))",
          "'quoted'", "\"double\"", "it's 'ok'", "''", "'''", "' s", "x's y'S z'Ll"]
    rnd = random.Random(1234)
    pool = list("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789.,;:!?'\"-_()[]{}<>/\\@#$%^&*+=\t\n"
                ) + list("éüñçß你好世界한국어مرحبαβγδЖЩ😀👍🏽\u0301\u00A0\u3000") + ["'s", "'T", "<|im_end|>",
                                                                               "<|eot_id|>", "  ", "\r\n"]
    texts = [x.encode("utf-8") for x in s] + bad
    while len(texts) < 420:
        n = rnd.randint(1, 40)
        t = "".join(rnd.choice(pool) for _ in range(n))
        b = t.encode("utf-8")
        if rnd.random() < 0.08:
            i = rnd.randint(0, len(b))
            b = b[:i] + bytes([rnd.choice([0x80, 0xbf, 0xc3, 0xe2, 0xf0, 0xff])]) + b[i:]
        texts.append(b)
    texts.append(("The history of natural language processing generally started in the 1950s, "
                  "although work can be found from earlier periods. In 1950, Alan Turing published "
                  "an article titled \"Computing Machinery and Intelligence\" which proposed what is "
                  "now called the Turing test as a criterion of intelligence.\n\n") .encode() * 3)
    return texts


CONVERSATIONS = [
    [{"role": "user", "content": "Hello!"}],
    [{"role": "system", "content": "You are a helpful assistant."},
     {"role": "user", "content": "What is 2+2?"}],
    [{"role": "system", "content": "Be brief."},
     {"role": "user", "content": "Hi"},
     {"role": "assistant", "content": "Hello! How can I help?"},
     {"role": "user", "content": "Tell me a joke."}],
    [{"role": "user", "content": "First question"},
     {"role": "assistant", "content": "First answer"},
     {"role": "user", "content": "Second question"},
     {"role": "assistant", "content": "Second answer"}],
    [{"role": "user", "content": "  padded content \n"},
     {"role": "assistant", "content": "\n\nleading newlines answer  "},
     {"role": "user", "content": "你好 😀 مرحبا"}],
    [{"role": "user", "content": "Solve it"},
     {"role": "assistant", "content": "<think>\nLet me think.\n</think>\n\nThe answer is 4."},
     {"role": "user", "content": "And again?"},
     {"role": "assistant", "content": "<think>\n\nsecond thought\n\n</think>\n\n\nStill 4."}],
    [{"role": "system", "content": "sys one"},
     {"role": "user", "content": "q1"},
     {"role": "system", "content": "sys two, mid-conversation"},
     {"role": "user", "content": "q2"}],
    [{"role": "user", "content": "multi\nline\n\nmessage\twith tabs"},
     {"role": "assistant", "content": "ok"}],
    [{"role": "user", "content": ""}],
    [{"role": "user", "content": "<tool_response>\nresult\n</tool_response>"},
     {"role": "user", "content": "real question"},
     {"role": "assistant", "content": "answer"}],
]


def cmd_corpus(fixdir):
    os.makedirs(fixdir, exist_ok=True)
    texts = build_corpus()
    with open(os.path.join(fixdir, "corpus.json"), "w") as f:
        json.dump({"note": "hex of each string's bytes; some are invalid UTF-8 on purpose",
                   "hex": [t.hex() for t in texts]}, f, indent=0)
    with open(os.path.join(fixdir, "conversations.json"), "w") as f:
        json.dump(CONVERSATIONS, f, indent=1, ensure_ascii=False)
    print(len(texts), "strings,", len(CONVERSATIONS), "conversations")


def cmd_refs(fixdir, tokdir, outdir):
    import tokenizers
    import transformers
    print("tokenizers", tokenizers.__version__, "transformers", transformers.__version__)
    texts = [bytes.fromhex(h) for h in json.load(open(os.path.join(fixdir, "corpus.json")))["hex"]]
    convs = json.load(open(os.path.join(fixdir, "conversations.json")))
    os.makedirs(outdir, exist_ok=True)
    for name in ("qwen3", "llama3"):
        d = os.path.join(tokdir, name)
        tok = tokenizers.Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
        try:
            hf = transformers.AutoTokenizer.from_pretrained(d)
            hf_kind = type(hf).__name__
        except Exception as e:  # noqa: BLE001 - record and fall back
            print(name, "AutoTokenizer failed:", repr(e))
            cfg = json.load(open(os.path.join(d, "tokenizer_config.json")))
            cfg = {k: v for k, v in cfg.items() if k != "added_tokens_decoder"}
            hf = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(d, "tokenizer.json"),
                                                      **cfg)
            hf_kind = "PreTrainedTokenizerFast"
        cases = []
        for b in texts:
            s = b.decode("utf-8", errors="replace")
            ids = tok.encode(s, add_special_tokens=False).ids
            ids_sp = tok.encode(s, add_special_tokens=True).ids
            try:
                tok.encode_special_tokens = True
                ids_split = tok.encode(s, add_special_tokens=False).ids
                tok.encode_special_tokens = False
            except Exception:  # noqa: BLE001 - older tokenizers lack the switch
                ids_split = None
            dec = tok.decode(ids, skip_special_tokens=False)
            dec_skip = tok.decode(ids, skip_special_tokens=True)
            tf_sp = hf(s, add_special_tokens=True)["input_ids"]
            tf_no = hf(s, add_special_tokens=False)["input_ids"]
            cases.append({"hex": b.hex(), "ids": ids, "ids_special": ids_sp, "ids_split_special": ids_split,
                          "tf_ids_special": tf_sp, "tf_ids_match": tf_no == ids,
                          "decode_hex": dec.encode("utf-8").hex(),
                          "decode_skip_hex": dec_skip.encode("utf-8").hex(),
                          "roundtrip": dec.encode("utf-8") == b})
        with open(os.path.join(outdir, "ref_%s.json" % name), "w") as f:
            json.dump({"tokenizers": tokenizers.__version__, "transformers": transformers.__version__,
                       "transformers_class": hf_kind, "cases": cases}, f, separators=(",", ":"))
        renders = []
        for conv in convs:
            r = {"messages": conv}
            for key, kw in (("gen", {"add_generation_prompt": True}),
                            ("nogen", {"add_generation_prompt": False}),
                            ("gen_nothink", {"add_generation_prompt": True, "enable_thinking": False})):
                try:
                    r[key] = hf.apply_chat_template(conv, tokenize=False, **kw)
                except Exception as e:  # noqa: BLE001
                    r[key + "_error"] = repr(e)
            renders.append(r)
        with open(os.path.join(outdir, "chat_%s.json" % name), "w") as f:
            json.dump({"transformers": transformers.__version__, "renders": renders}, f,
                      indent=1, ensure_ascii=False)
        n_rt = sum(c["roundtrip"] for c in cases)
        n_tf = sum(c["tf_ids_match"] for c in cases)
        print(name, hf_kind, len(cases), "cases,", n_rt, "round-trip,", n_tf, "transformers==tokenizers;",
              "bos example", cases[0]["ids_special"], cases[0]["tf_ids_special"])


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "corpus":
        cmd_corpus(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == "refs":
        cmd_refs(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
