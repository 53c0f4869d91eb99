#!/bin/sh
# strata-code-4m (tests/fixtures/code-model: a 4-layer Qwen2 trained on Python source, MLX 4-bit,
# its own byte-level BPE tokenizer) against the reference of Hugging Face transformers
# (reference.json: the prompt ids and 48 greedy ids of 8 prompts, with the top-1/top-2 logit
# margin of every step), through strata-master and through generate's step-wise form
# (test_code_model), on one node and on a 3-worker loopback cluster with a cluster key:
#   - strata's tokenizer gives the reference prompt ids;
#   - greedy ids == the reference's, plain and speculative (prompt lookup, --spec-k 4; 8 too in
#     test_code_model); the CLI's -p text == the reference text.
# Near-tie rule: where the reference margin at a step is below 1e-3 float rounding may pick the
# other token: test_code_model stops comparing a case at a difference there, the CLI checks
# compare each case up to its first such step (the shipped reference has none).
#   usage: test_code_model.sh MASTER WORKER CHECKER FIXTURE_DIR WORKDIR
# Every worker is killed on exit (trap); every run is bounded by `timeout`.
MASTER=$1 WORKER=$2 CHECKER=$3 FIX=$4 WORK=$5
[ -n "$WORK" ] || { echo "usage: $0 MASTER WORKER CHECKER FIXTURE_DIR WORKDIR"; exit 2; }
abs() { case $1 in /*) echo "$1" ;; *) echo "$PWD/$1" ;; esac; }
MASTER=$(abs "$MASTER") WORKER=$(abs "$WORKER") CHECKER=$(abs "$CHECKER") FIX=$(abs "$FIX")
rm -rf "$WORK" && mkdir -p "$WORK/cases" || exit 2
. "$(cd "$(dirname "$0")" && pwd)/check.sh"
cd "$WORK" || exit 2
finish() { cleanup; PIDS=""; echo "$PASS passed, $FAIL failed"; [ "$FAIL" -eq 0 ]; exit $?; }
T="timeout 60"
BASE=$((20000 + ($$ * 8) % 40000))
P1=$BASE P2=$((BASE + 1)) P3=$((BASE + 2))

NCASES=$("$CHECKER" --dump "$FIX/reference.json" cases) || { bad "reading $FIX/reference.json"; finish; }
check "reference.json holds $NCASES cases" "[ '$NCASES' -ge 8 ]"

# the reference ids of case $1 up to its first near tie, and the CLI's ids cut to as many
prefix_ok() { # case, file of the CLI's ids
    want=$(cat "cases/case$1.ids")
    [ -z "$want" ] && return 0  # a near tie at the first token: nothing to compare
    n=$(printf '%s' "$want" | awk -F, '{ print NF }')
    [ "$(cut -d, -f1-"$n" "$2")" = "$want" ] && [ "$(awk -F, '{ print NF }' "$2")" -eq "$(cat "cases/case$1.n")" ]
}
# -p TEXT: the CLI prints the reply and one newline; compared where the case has no near tie
text_ok() { # case, file of the CLI's text
    [ -f "cases/case$1.text" ] || { echo "     case $1 has a near tie: text not compared"; return 0; }
    { cat "cases/case$1.text"; echo; } | cmp -s - "$2"
}

cli_cases() { # label, then the CLI's engine flags
    label=$1; shift
    c=0
    while [ $c -lt "$NCASES" ]; do
        n=$(cat cases/case$c.n)
        $T "$MASTER" --model "$FIX" --tokens "$(cat cases/case$c.prompt_ids)" -n "$n" --threads 1 "$@" > ids$c.out 2> ids$c.err
        check "$label, case $c: --tokens greedy ids == transformers' ($n ids)" "prefix_ok $c ids$c.out"
        # the prompt as is: most end in a newline, which $(...) alone would drop
        p=$(cat "cases/case$c.prompt"; printf x)
        $T "$MASTER" --model "$FIX" -p "${p%x}" --raw -n "$n" --threads 1 --spec-k 4 -v "$@" > text$c.out 2> text$c.err
        check "$label, case $c: -p --spec-k 4 text == transformers' ($(sed -n 's/^speculative: //p' text$c.err))" "text_ok $c text$c.out"
        np=$(tr ',' ' ' < cases/case$c.prompt_ids | wc -w | tr -d ' ')
        check "$label, case $c: the CLI encodes the prompt into $np tokens, as transformers" "grep -q '^prompt: $np tokens' text$c.err"
        c=$((c + 1))
    done
}

# ---- one node ----
$T "$CHECKER" "$FIX" "$FIX/reference.json" > local.out 2>&1
rc=$?
cat local.out
check "single node: tokenizer == transformers' prompt ids; greedy ids == transformers', plain and spec k=4, 8" "[ $rc -eq 0 ]"
cli_cases "single node" --local

# ---- 3 workers on loopback, CurveZMQ with a cluster key: layer 0 | 1 | 2-3 ----
KEY=$WORK/cluster.key
"$MASTER" keygen --out "$KEY" >/dev/null || { bad "strata-master keygen"; finish; }
export STRATA_KEY="$KEY"
for w in "wa $P1" "wb $P2" "wc $P3"; do
    set -- $w
    "$WORKER" --listen "tcp://127.0.0.1:$2" --name "$1" --cache-dir "cache_$1" --backend cpu --threads 1 --key "$KEY" --no-advertise 2>"$1.log" &
    PIDS="$PIDS $!"
done
printf "wa:\n  host: '127.0.0.1:%s'\n  layers: ['model.layers.0']\nwb:\n  host: '127.0.0.1:%s'\n  layers: ['model.layers.1']\nwc:\n  host: '127.0.0.1:%s'\n  layers: ['model.layers.2-3']\n" \
    $P1 $P2 $P3 > three.yml
for n in wa wb wc; do i=0; while [ $i -lt 100 ] && ! grep -q listening $n.log 2>/dev/null; do sleep 0.1; i=$((i + 1)); done; done

$T "$CHECKER" "$FIX" "$FIX/reference.json" three.yml > cluster.out 2>&1
rc=$?
cat cluster.out
check "3-worker cluster: greedy ids == transformers', plain and spec k=4, 8" "[ $rc -eq 0 ]"
cli_cases "3-worker cluster" --topology three.yml

cleanup; PIDS=""
check "no sanitizer report in any worker log" "! cat wa.log wb.log wc.log | grep -q -e Sanitizer -e 'runtime error:'"

# ---- the HTTP server on a base model: /v1/completions serves, /v1/chat/completions is a 400 ----
if command -v node >/dev/null 2>&1; then
    "$MASTER" --model "$FIX" --serve --port 0 --local --threads 1 2> serve.log &
    PIDS="$PIDS $!"
    i=0 URL=""
    while [ $i -lt 300 ] && [ -z "$URL" ]; do URL=$(sed -n 's/.*serving .* on \(http:[^ ]*\).*/\1/p' serve.log); sleep 0.1; i=$((i + 1)); done
    check "the server starts on a model without a chat template" "[ -n '$URL' ] && grep -q 'no chat template' serve.log"
    if [ -n "$URL" ] && [ -f cases/case0.text ]; then
        node -e '
const [url, promptFile, textFile, n] = process.argv.slice(1), fs = require("fs");
(async () => {
  const post = (path, body) => fetch(url + path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  const r = await post("/v1/completions", { model: "code-model", prompt: fs.readFileSync(promptFile, "utf8"), max_tokens: +n, temperature: 0 });
  const j = await r.json();
  console.log(r.status === 200 && j.choices[0].text === fs.readFileSync(textFile, "utf8") ? "completion ok" : "completion differs: " + JSON.stringify(j).slice(0, 300));
  const c = await post("/v1/chat/completions", { model: "code-model", messages: [{ role: "user", content: "hi" }] });
  const e = await c.json();
  console.log(c.status === 400 && e.error && e.error.code === "model_not_supported" ? "chat refused ok" : "chat: " + c.status + " " + JSON.stringify(e).slice(0, 300));
})().catch((x) => console.log("node: " + x));' "$URL" cases/case0.prompt cases/case0.text "$(cat cases/case0.n)" > http.out 2>&1
        cat http.out
        check "server, /v1/completions (greedy, case 0): text == transformers'" "grep -qx 'completion ok' http.out"
        check "server, /v1/chat/completions on a base model: OpenAI-shaped 400 (model_not_supported)" "grep -qx 'chat refused ok' http.out"
    fi
    cleanup; PIDS=""
else
    echo "node not found: the HTTP checks are skipped"
fi
finish
