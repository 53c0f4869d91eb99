// The OpenAI client library against strata's HTTP server.
//   node serving_client.mjs NPM_DIR BASE_URL MODEL_ID PROMPT CLI_TEXT_FILE MAX_TOKENS [quick]
// NPM_DIR holds node_modules/openai (npm install --prefix NPM_DIR openai@VERSION). The CLI's
// text for the same prompt (greedy, MAX_TOKENS) is in CLI_TEXT_FILE. Prints "N passed, M failed".
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';

const [npmDir, base, modelId, prompt, cliFile, maxTokStr, mode] = process.argv.slice(2);
const require = createRequire(path.resolve(npmDir, 'node_modules') + '/');
const mod = require('openai');
const OpenAI = mod.OpenAI || mod.default || mod;
const maxTokens = parseInt(maxTokStr, 10);
const cliText = readFileSync(cliFile, 'utf8').replace(/\n$/, '');
const client = new OpenAI({ baseURL: base + '/v1', apiKey: 'none', maxRetries: 0, timeout: 120000 });

let passed = 0, failed = 0;
function check(ok, what, detail) {
  if (ok) { passed++; console.log('ok   ' + what); }
  else { failed++; console.log('FAIL ' + what + (detail !== undefined ? ': ' + detail : '')); }
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const msgs = [{ role: 'user', content: prompt }];

async function raw(pathname, body, method = 'POST') {
  const r = await fetch(base + pathname, {
    method, headers: { 'Content-Type': 'application/json' },
    body: method === 'POST' ? (typeof body === 'string' ? body : JSON.stringify(body)) : undefined,
  });
  let json = null;
  const text = await r.text();
  try { json = JSON.parse(text); } catch { /* checked by the caller */ }
  return { status: r.status, json, text };
}

function isOpenAIError(j) {
  return j && j.error && typeof j.error.message === 'string' && typeof j.error.type === 'string' &&
    'param' in j.error && 'code' in j.error;
}

async function streamChat(extra = {}) {
  const stream = await client.chat.completions.create({ model: modelId, messages: msgs, temperature: 0, max_tokens: maxTokens, stream: true, ...extra });
  let text = '', first = null, finish = null, usage = null, chunks = 0;
  for await (const ch of stream) {
    chunks++;
    if (ch.usage) usage = ch.usage;
    if (!ch.choices.length) continue;
    if (!first) first = ch;
    const c = ch.choices[0];
    if (c.delta && c.delta.content) text += c.delta.content;
    if (c.finish_reason) finish = c.finish_reason;
  }
  return { text, first, finish, usage, chunks };
}

async function healthy() {
  const h = await raw('/health', null, 'GET');
  return h.status === 200 && h.json && h.json.status === 'ok' ? h.json : null;
}

async function main() {
  // ---- the text equals the CLI's, streamed and not ----
  const r = await client.chat.completions.create({ model: modelId, messages: msgs, temperature: 0, max_tokens: maxTokens });
  const text = r.choices[0].message.content;
  check(text === cliText, 'non-streamed chat completion text equals the CLI\'s', JSON.stringify(text) + ' vs ' + JSON.stringify(cliText));
  check(r.object === 'chat.completion' && /^chatcmpl-/.test(r.id) && r.model === modelId && typeof r.created === 'number',
    'chat.completion fields (id, object, created, model)', JSON.stringify(r).slice(0, 300));
  check(r.choices[0].index === 0 && r.choices[0].message.role === 'assistant' && ['stop', 'length'].includes(r.choices[0].finish_reason),
    'choices[0]: index, message.role, finish_reason');
  check(r.usage && r.usage.prompt_tokens > 0 && r.usage.completion_tokens > 0 &&
    r.usage.total_tokens === r.usage.prompt_tokens + r.usage.completion_tokens, 'usage', JSON.stringify(r.usage));

  const s = await streamChat({ stream_options: { include_usage: true } });
  check(s.text === cliText, 'streamed chat completion text equals the CLI\'s', JSON.stringify(s.text));
  check(s.first && s.first.object === 'chat.completion.chunk' && s.first.choices[0].delta.role === 'assistant',
    'first chunk: chat.completion.chunk with the assistant role');
  check(s.finish === r.choices[0].finish_reason, 'streamed finish_reason equals the non-streamed one', s.finish);
  check(s.usage && s.usage.completion_tokens === r.usage.completion_tokens, 'stream_options.include_usage: a usage chunk', JSON.stringify(s.usage));

  // speculative decoding per request (the spec_k extension): the same text, drafts reported
  const sk = await client.chat.completions.create({ model: modelId, messages: msgs, temperature: 0, max_tokens: maxTokens, spec_k: 4 });
  check(sk.choices[0].message.content === cliText, 'spec_k 4: the same text as plain greedy', JSON.stringify(sk.choices[0].message.content));

  // ---- several at once (on a cluster: sessions in flight through the chain together) ----
  const many = await Promise.all([0, 1, 2, 3].map(() => streamChat()));
  check(many.every((m) => m.text === cliText), '4 concurrent streams each equal the CLI\'s text', JSON.stringify(many.map((m) => m.text.length)));
  if (mode === 'quick') return;

  // raw SSE framing: data: lines, blank-line separated, ending with data: [DONE]
  const sse = await fetch(base + '/v1/chat/completions', { method: 'POST', headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ model: modelId, messages: msgs, temperature: 0, max_tokens: 4, stream: true }) });
  const body = await sse.text();
  check(sse.headers.get('content-type').startsWith('text/event-stream'), 'SSE content type');
  const events = body.split('\n\n').filter((e) => e.length);
  check(events.every((e) => e.startsWith('data: ')) && events[events.length - 1] === 'data: [DONE]',
    'SSE events are "data: ..." and the last is [DONE]', body.slice(-200));

  // ---- completions, models, health ----
  const c1 = await client.completions.create({ model: modelId, prompt: 'def add(a, b):', temperature: 0, max_tokens: 12 });
  check(c1.object === 'text_completion' && typeof c1.choices[0].text === 'string' && /^cmpl-/.test(c1.id), 'text_completion');
  const cs = await client.completions.create({ model: modelId, prompt: 'def add(a, b):', temperature: 0, max_tokens: 12, stream: true });
  let ctext = '';
  for await (const ch of cs) ctext += ch.choices.length ? ch.choices[0].text : '';
  check(ctext === c1.choices[0].text, 'streamed completion equals the non-streamed one', JSON.stringify(ctext));
  const models = await client.models.list();
  check(models.data.some((m) => m.id === modelId && m.object === 'model'), 'GET /v1/models lists the model');
  check(await healthy(), 'GET /health');

  // ---- sampling with a seed is reproducible; stop strings cut the text ----
  const seeded = { model: modelId, messages: msgs, temperature: 0.9, top_p: 0.95, top_k: 40, seed: 42, max_tokens: 16 };
  const a = await client.chat.completions.create(seeded), b = await client.chat.completions.create(seeded);
  check(a.choices[0].message.content === b.choices[0].message.content, 'same seed, same text');
  if (cliText.length > 6) {
    const stop = cliText.slice(Math.floor(cliText.length / 2), Math.floor(cliText.length / 2) + 2);
    const st = await client.chat.completions.create({ model: modelId, messages: msgs, temperature: 0, max_tokens: maxTokens, stop: [stop] });
    check(st.choices[0].message.content === cliText.slice(0, cliText.indexOf(stop)) && st.choices[0].finish_reason === 'stop',
      'stop string: the text ends before it', JSON.stringify(st.choices[0].message.content));
  }

  // ---- bad input: OpenAI-shaped 400s, and the server keeps serving ----
  const bad = [
    ['malformed JSON', '{"model": "x", "messages": [', 'invalid_json', null],
    ['unknown model', { model: 'no-such-model', messages: msgs }, 'model_not_found', 'model'],
    ['too long a prompt', { model: modelId, messages: [{ role: 'user', content: 'word '.repeat(5000) }] }, 'context_length_exceeded', 'messages'],
    ['negative max_tokens', { model: modelId, messages: msgs, max_tokens: -5 }, 'invalid_value', 'max_tokens'],
    ['messages missing', { model: modelId }, 'missing_required_parameter', 'messages'],
    ['unknown role', { model: modelId, messages: [{ role: 'wizard', content: 'hi' }] }, 'invalid_value', 'messages'],
    ['temperature out of range', { model: modelId, messages: msgs, temperature: 7 }, 'invalid_value', 'temperature'],
    ['body not an object', '[1, 2, 3]', 'invalid_json', null],
    ['spec_k out of range', { model: modelId, messages: msgs, spec_k: 99 }, 'invalid_value', 'spec_k'],
  ];
  for (const [what, req, code, param] of bad) {
    const x = await raw('/v1/chat/completions', req);
    check(x.status === 400 && isOpenAIError(x.json) && x.json.error.code === code && x.json.error.param === param &&
      x.json.error.type === 'invalid_request_error', `${what}: 400 ${code}`, x.status + ' ' + x.text.slice(0, 300));
  }
  try {
    await client.chat.completions.create({ model: 'no-such-model', messages: msgs });
    check(false, 'the client library raises on an unknown model');
  } catch (e) {
    check(e.status === 400 && e.error && e.error.code === 'model_not_found', 'the client library sees a 400 BadRequestError', e.message);
  }
  const nf = await raw('/v1/nothing', null, 'GET');
  check(nf.status === 404 && isOpenAIError(nf.json), 'unknown endpoint: 404, OpenAI-shaped');
  const mna = await raw('/v1/chat/completions', null, 'GET');
  check(mna.status === 405 && isOpenAIError(mna.json), 'GET on a POST endpoint: 405');
  const after = await client.chat.completions.create({ model: modelId, messages: msgs, temperature: 0, max_tokens: maxTokens });
  check(after.choices[0].message.content === cliText, 'after the bad requests the server still serves the same text');

  // ---- a full queue: 429 with an OpenAI-shaped body, the rest served ----
  const flood = await Promise.all([...Array(10).keys()].map(() =>
    raw('/v1/chat/completions', { model: modelId, messages: msgs, temperature: 0, max_tokens: 48 })));
  const n429 = flood.filter((x) => x.status === 429).length, n200 = flood.filter((x) => x.status === 200).length;
  check(n429 > 0 && n200 > 0 && n429 + n200 === 10, `10 at once on --parallel 2 --queue 2: ${n200} served, ${n429} refused with 429`);
  check(flood.filter((x) => x.status === 429).every((x) => isOpenAIError(x.json) && x.json.error.code === 'queue_full'), '429 body is OpenAI-shaped (queue_full)');

  // ---- a client that goes away cancels its generation ----
  const ac = new AbortController();
  const long = await client.chat.completions.create({ model: modelId, messages: msgs, temperature: 0.8, max_tokens: 3000, stream: true },
    { signal: ac.signal });
  let got = 0;
  try {
    for await (const ch of long) { if (ch.choices.length && ++got >= 3) ac.abort(); }
  } catch { /* aborted */ }
  let idle = null;
  for (let i = 0; i < 100 && !idle; i++) {
    const h = await healthy();
    if (h && h.active === 0 && h.queued === 0) idle = h;
    else await sleep(100);
  }
  check(idle !== null, 'a disconnected stream is cancelled: the server is idle again within 10 s');
  const h2 = await healthy();
  check(h2 && h2.served >= 1, 'health counts served requests', JSON.stringify(h2));
  check(h2 && h2.generated && h2.generated.tokens > 0 && h2.generated.spec_passes > 0 &&
    h2.generated.accepted <= h2.generated.drafted, 'health totals: generated tokens, speculative passes, drafted >= accepted',
    JSON.stringify(h2 && h2.generated));
}

main().catch((e) => { failed++; console.log('FAIL exception: ' + (e && e.stack ? e.stack : e)); })
  .finally(() => { console.log(`${passed} passed, ${failed} failed`); process.exit(failed ? 1 : 0); });
