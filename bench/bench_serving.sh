#!/bin/sh
# Serving benchmark on loopback (nothing here is a test): the HTTP server (strata-serve, the same
# as `strata-master --serve`) in front of a 3-worker cluster on this machine.
#   1. aggregate tok/s with 1, 2, 4 and 8 concurrent streams (greedy, plain decoding): several
#      sessions in flight keep every worker of the chain busy on a different one;
#   2. speculative decoding (prompt lookup, --spec-k K) vs plain, one stream, on repetitive
#      (code-like, list-like, summary-like) and free prompts: tok/s and mean accepted length.
# Prints a table and a JSON line; writes OUT.md when given. Every process it starts is killed on
# exit. Needs node (>= 18, for fetch) and, for a generated model, the tokenizers fixture
# (tests/fetch_tokenizers.sh).
#
# usage: bench_serving.sh BUILD_DIR [OUT.md]
#   env: MODEL=DIR (a checkpoint with its own tokenizer, e.g. tests/fixtures/code-model, the small
#        trained model; default: a generated one of SHAPE with random weights and the Qwen3
#        tokenizer), SHAPE (qwen2.5-0.5b), LAYERS (the shape's), TOKENS per request (32), ROUNDS of
#        requests each stream sends in part 1 (2), REPEAT each measurement (3), SPEC_TOKENS per
#        request in part 2 (64), SPEC_K (4), THREADS per process (1),
#        TOKDIR (BUILD_DIR/tokenizers), INSECURE=1 (no CurveZMQ), KEEP=1 (keep the logs)
B=${1:?usage: bench_serving.sh BUILD_DIR [OUT.md]}
OUT=$2
SHAPE=${SHAPE:-qwen2.5-0.5b} NT=${TOKENS:-32} CR=${ROUNDS:-2} REP=${REPEAT:-3} NS=${SPEC_TOKENS:-64} K=${SPEC_K:-4} THREADS=${THREADS:-1}
TOKDIR=${TOKDIR:-$B/tokenizers}
HERE=$(cd "$(dirname "$0")" && pwd)
if [ -n "$MODEL" ]; then
    [ -f "$MODEL/config.json" ] && [ -f "$MODEL/tokenizer.json" ] || { echo "bench_serving: $MODEL has no config.json and tokenizer.json"; exit 1; }
    MODEL=$(cd "$MODEL" && pwd) SHAPE=$(basename "$MODEL")
else
    [ -f "$TOKDIR/qwen3/tokenizer.json" ] || { echo "bench_serving: no $TOKDIR/qwen3/tokenizer.json (run the tokenizers fixture: ctest -R tokenizers_fetch)"; exit 1; }
fi
command -v node >/dev/null || { echo "bench_serving: needs node"; exit 1; }
W=$(mktemp -d /tmp/strata-bench-serving.XXXXXX)
PIDS="" SPID=""
cleanup() {
    for p in $SPID $PIDS; do kill "$p" 2>/dev/null; done
    sleep 0.3
    for p in $SPID $PIDS; do kill -9 "$p" 2>/dev/null; done
    if [ -n "$KEEP" ]; then echo "bench_serving: logs kept in $W"; else rm -rf "$W"; fi
}
trap cleanup EXIT INT TERM
BASE=$((20000 + ($$ * 8) % 40000))
LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)

if [ -n "$MODEL" ]; then
    M=$MODEL KIND="model $SHAPE (trained, with its own tokenizer)"
else
    # the vocabulary of Qwen2.5 (>= the Qwen3 tokenizer's) so that any shape serves text
    M=$W/m KIND="$SHAPE shape (generated: random weights; the Qwen3 tokenizer)"
    "$B/strata-gen" --out "$M" --shape "$SHAPE" --vocab 151936 ${LAYERS:+--layers $LAYERS} >/dev/null || exit 1
    cp "$TOKDIR/qwen3/tokenizer.json" "$TOKDIR/qwen3/tokenizer_config.json" "$M/" || exit 1
fi
NL=$(sed -n 's/.*"num_hidden_layers": *\([0-9]*\).*/\1/p' "$M/config.json")
if [ -n "$INSECURE" ]; then SEC=--insecure; else "$B/strata-master" keygen --out "$W/cluster.key" >/dev/null || exit 1; SEC="--key $W/cluster.key"; fi
a=$((NL / 3)) b=$((2 * NL / 3))
for i in 1 2 3; do
    "$B/strata-worker" --listen "tcp://127.0.0.1:$((BASE + i))" --name "w$i" --cache-dir "$W/c$i" --backend cpu --threads "$THREADS" $SEC 2>"$W/w$i.log" &
    PIDS="$PIDS $!"
done
printf "w1:\n  host: '127.0.0.1:%d'\n  layers: ['model.layers.0-%d']\nw2:\n  host: '127.0.0.1:%d'\n  layers: ['model.layers.%d-%d']\nw3:\n  host: '127.0.0.1:%d'\n  layers: ['model.layers.%d-%d']\n" \
    $((BASE + 1)) $((a - 1)) $((BASE + 2)) $a $((b - 1)) $((BASE + 3)) $b $((NL - 1)) > "$W/three.yml"

serve() { # spec-k; sets URL
    "$B/strata-serve" --model "$M" --model-name m --serve --port 0 --threads "$THREADS" --topology "$W/three.yml" $SEC \
        --parallel 8 --queue 8 --spec-k "$1" 2>"$W/server$1.log" &
    SPID=$!
    i=0 URL=""
    while [ $i -lt 1200 ] && [ -z "$URL" ] && kill -0 $SPID 2>/dev/null; do
        URL=$(sed -n 's/.*serving .* on \(http:[^ ]*\).*/\1/p' "$W/server$1.log"); sleep 0.1; i=$((i + 1))
    done
    [ -n "$URL" ] || { echo "bench_serving: the server did not start:"; cat "$W/server$1.log"; exit 1; }
}
unserve() { kill -TERM $SPID 2>/dev/null; wait $SPID 2>/dev/null; SPID=""; }
measure() { # streams tokens rounds kind spec_k -> one JSON line
    timeout 600 node "$HERE/bench_serving.mjs" "$URL" m "$@" || { echo "bench_serving: measurement failed"; cat "$W"/server*.log | tail -20; exit 1; }
}
field() { echo "$1" | sed -n "s/.*\"$2\":\([-0-9.]*\).*/\1/p"; }

med() { # file -> its line with the median tok/s
    while read -r l; do echo "$(field "$l" tok_s) $l"; done < "$1" | sort -n | awk '{ a[NR] = $0 } END { print a[int((NR + 1) / 2)] }' | cut -d' ' -f2-
}
runs() { # file -> "a / b / c" (tok/s of every repetition, in order)
    while read -r l; do field "$l" tok_s; done < "$1" | paste -sd/ | sed 's|/| / |g'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2fx", (b > 0 ? a / b : 0) }'; }

# One server; plain and speculative requests (the spec_k extension) take turns, and every
# measurement is repeated REPEAT times, interleaved, so that a burst of load from elsewhere on a
# shared machine hits all configurations alike; the tables give the median and every run.
serve 0
r=0
while [ $r -lt "$REP" ]; do
    for n in 1 2 4 8; do measure $n "$NT" "$CR" repetitive 0 >> "$W/conc$n"; done
    for kind in repetitive free; do
        measure 1 "$NS" 2 $kind 0 >> "$W/plain_$kind"
        measure 1 "$NS" 2 $kind "$K" >> "$W/spec_$kind"
    done
    r=$((r + 1))
done
unserve
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

one=$(field "$(med "$W/conc1")" tok_s)
CPU=$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)
{
    echo "# Serving benchmark (bench/bench_serving.sh)"
    echo
    echo "strata-serve on a 3-worker loopback cluster, all on this machine: $CPU, $(nproc) cores shared"
    echo "by the server and every worker; $KIND, $NL layers, $a/$((b - a))/$((NL - b)) per worker, cpu backend,"
    echo "$THREADS compute thread(s) a process, greedy, streamed /v1/completions. Each measurement was repeated $REP"
    echo "times, interleaved with the others; the tables give the median, and every run's tok/s."
    echo "Load average (1/5/15 min) before: $LOAD0; after: $LOAD1. Measured $(date -u '+%Y-%m-%d %H:%M UTC')."
    echo
    echo "Concurrent streams, each sending $CR requests of $NT tokens one after the other:"
    echo
    echo "| concurrent streams | tokens | aggregate tok/s (median) | vs 1 stream | runs (tok/s) |"
    echo "|---|---|---|---|---|"
    for n in 1 2 4 8; do
        l=$(med "$W/conc$n")
        t=$(field "$l" tok_s)
        echo "| $n | $(field "$l" tokens) | $t | $(ratio "$t" "$one") | $(runs "$W/conc$n") |"
    done
    echo
    echo "One stream, 2 requests of $NS tokens each run; speculative = prompt-lookup drafting, k=$K:"
    echo
    echo "| prompts | plain tok/s | speculative tok/s | speedup | mean accepted length | drafted | accepted | plain runs | speculative runs |"
    echo "|---|---|---|---|---|---|---|---|---|"
    for kind in repetitive free; do
        p=$(med "$W/plain_$kind") s=$(med "$W/spec_$kind")
        tp=$(field "$p" tok_s) ts=$(field "$s" tok_s)
        echo "| $kind | $tp | $ts | $(ratio "$ts" "$tp") | $(field "$s" mean_accepted) | $(field "$s" drafted) | $(field "$s" accepted) | $(runs "$W/plain_$kind") | $(runs "$W/spec_$kind") |"
    done
    echo
    echo '```json'
    printf '{"bench":"serving","shape":"%s","tokens":%s,"spec_tokens":%s,"spec_k":%s,"repeat":%s,"load_before":"%s","load_after":"%s","concurrency":[%s],"plain":[%s],"speculative":[%s]}\n' \
        "$SHAPE" "$NT" "$NS" "$K" "$REP" "$LOAD0" "$LOAD1" "$(cat "$W"/conc1 "$W"/conc2 "$W"/conc4 "$W"/conc8 | paste -sd,)" \
        "$(cat "$W"/plain_* | paste -sd,)" "$(cat "$W"/spec_* | paste -sd,)"
    echo '```'
} > "$W/report.md"
cat "$W/report.md"
[ -n "$OUT" ] && cp "$W/report.md" "$OUT"
exit 0
