// One serving measurement against strata's HTTP server (bench/bench_serving.sh drives it).
//   node bench_serving.mjs BASE_URL MODEL_ID STREAMS MAX_TOKENS ROUNDS PROMPT_KIND [SPEC_K]
// STREAMS clients at once, each sending ROUNDS greedy /v1/completions requests one after the
// other (streamed, so a token is counted when it arrives). PROMPT_KIND: repetitive (code-like and
// list-like text that repeats itself) or free (prose). SPEC_K: the requests' spec_k (strata's
// extension; default: the server's --spec-k). Prints one JSON line: tokens, wall seconds,
// aggregate tok/s, and the speculative counters' change over the run (from GET /health).
const [base, modelId, streamsS, maxTokS, roundsS, kind, specS] = process.argv.slice(2);
const specK = specS === undefined ? undefined : parseInt(specS, 10);
const streams = parseInt(streamsS, 10), maxTokens = parseInt(maxTokS, 10), rounds = parseInt(roundsS, 10);

const REPETITIVE = [
  'def add(a, b):\n    return a + b\n\ndef sub(a, b):\n    return a - b\n\ndef mul(a, b):\n',
  'for (int i = 0; i < n; i++) {\n    x[i] = y[i] + z[i];\n}\nfor (int i = 0; i < n; i++) {\n',
  'SELECT id, name FROM users WHERE id = 1;\nSELECT id, name FROM users WHERE id = 2;\nSELECT',
  '<li>apple</li>\n<li>banana</li>\n<li>cherry</li>\n<li>',
  'Summary: the meeting covered the budget, the budget review and the budget plan. In short, the budget',
  'case 1: return "one";\ncase 2: return "two";\ncase 3: return "three";\ncase 4:',
  'The quick brown fox jumps over the lazy dog. The quick brown fox jumps over the lazy dog. The quick',
  'a = 1\nb = 2\nc = 3\nd = 4\ne = 5\nf =',
];
const FREE = [
  'Once upon a time in a quiet village by the sea,',
  'The history of mathematics begins with',
  'My favourite recipe for a rainy afternoon is',
  'Explain why the sky looks blue during the day.',
  'In the year 2050, cities will',
  'A letter to a friend who moved far away:',
  'The best advice I ever received was',
  'Describe the sound of a forest at night.',
];
const prompts = kind === 'free' ? FREE : REPETITIVE;

async function health() {
  const r = await fetch(base + '/health');
  const j = await r.json();
  return j.generated || { tokens: 0, spec_passes: 0, drafted: 0, accepted: 0 };
}

async function one(prompt) {
  const r = await fetch(base + '/v1/completions', {
    method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: modelId, prompt, temperature: 0, max_tokens: maxTokens, stream: true,
      stream_options: { include_usage: true }, ...(specK === undefined ? {} : { spec_k: specK }) }),
  });
  if (r.status !== 200) throw new Error('HTTP ' + r.status + ': ' + (await r.text()).slice(0, 300));
  const body = await r.text();
  let tokens = 0;
  for (const ev of body.split('\n\n')) {
    if (!ev.startsWith('data: ') || ev === 'data: [DONE]') continue;
    const j = JSON.parse(ev.slice(6));
    if (j.error) throw new Error(j.error.message);
    if (j.usage) tokens = j.usage.completion_tokens;
  }
  return tokens;
}

async function main() {
  // warm-up: one short request (first-use costs: sessions, buffers)
  await one(prompts[0].slice(0, 20));
  const h0 = await health();
  const t0 = performance.now();
  const per = await Promise.all([...Array(streams).keys()].map(async (s) => {
    let n = 0;
    for (let i = 0; i < rounds; i++) n += await one(prompts[(s + i * streams) % prompts.length]);
    return n;
  }));
  const wall = (performance.now() - t0) / 1e3;
  const h1 = await health();
  const tokens = per.reduce((a, b) => a + b, 0);
  const passes = h1.spec_passes - h0.spec_passes, accepted = h1.accepted - h0.accepted;
  console.log(JSON.stringify({ streams, kind, spec_k: specK === undefined ? null : specK, max_tokens: maxTokens, rounds, tokens, wall_s: +wall.toFixed(3),
    tok_s: +(tokens / wall).toFixed(2), spec_passes: passes, drafted: h1.drafted - h0.drafted, accepted,
    mean_accepted: passes ? +(accepted / passes).toFixed(3) : 0 }));
}
main().catch((e) => { console.error('bench_serving: ' + (e && e.stack ? e.stack : e)); process.exit(1); });
