#!/bin/sh
# Serving end to end: the OpenAI client library (npm `openai`) against `strata-master --serve`,
# on one node and on a 3-worker loopback cluster; speculative == plain greedy on the cluster.
#   usage: test_serving.sh SERVER MASTER WORKER GEN TEST_GENERATE TOKDIR NPM_DIR CLIENT_MJS WORKDIR
# SERVER is the binary that takes `--serve` (strata-master, or strata-serve). Every server and
# worker is killed on exit (trap); every client run is bounded by `timeout`.
SERVER=$1 MASTER=$2 WORKER=$3 GEN=$4 TESTGEN=$5 TOKDIR=$6 NPM=$7 CLIENT=$8 WORK=$9
[ -n "$WORK" ] || { echo "usage: $0 SERVER MASTER WORKER GEN TEST_GENERATE TOKDIR NPM_DIR CLIENT_MJS WORKDIR"; exit 2; }
rm -rf "$WORK" && mkdir -p "$WORK" || exit 2
. "$(cd "$(dirname "$0")" && pwd)/check.sh"
cd "$WORK" || exit 2
finish() { echo "$PASS passed, $FAIL failed"; [ "$FAIL" -eq 0 ]; exit $?; }
BASE=$((20000 + ($$ * 8) % 40000))
P1=$BASE P2=$((BASE + 1)) P3=$((BASE + 2))
PROMPT="Write a haiku about the sea."
N=24

# a text-capable model: Qwen2.5-0.5B's vocabulary (151936 >= Qwen3 tokenizer's 151669), tiny layers
"$GEN" --out m --shape tiny-qwen --vocab 151936 --layers 3 --seed 11 >/dev/null || { bad "strata-gen"; finish; }
cp "$TOKDIR/qwen3/tokenizer.json" "$TOKDIR/qwen3/tokenizer_config.json" m/ || { bad "tokenizer files in $TOKDIR/qwen3"; finish; }

# starts a server on a free port (printed by the server); sets SPID and URL
start_server() { # log, then flags
    log=$1; shift
    "$SERVER" --model m --serve --port 0 --threads 1 "$@" 2>"$log" &
    SPID=$!
    PIDS="$PIDS $SPID"
    i=0; URL=""
    while [ $i -lt 300 ] && [ -z "$URL" ] && kill -0 $SPID 2>/dev/null; do
        URL=$(sed -n 's/.*serving .* on \(http:[^ ]*\).*/\1/p' "$log"); sleep 0.1; i=$((i + 1))
    done
    [ -n "$URL" ]
}
stop_server() { # the server stops cleanly on SIGTERM
    kill -TERM $SPID 2>/dev/null
    i=0; while [ $i -lt 100 ] && kill -0 $SPID 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    ! kill -0 $SPID 2>/dev/null
}

# ---- one node ----
timeout 30 "$MASTER" --model m -p "$PROMPT" -n $N --threads 1 --local > cli.txt 2> cli.err
check "CLI reply to the prompt (greedy, $N tokens)" "[ -s cli.txt ]"
if start_server server1.log --local --parallel 2 --queue 2; then
    ok "server listening at $URL"
    timeout 60 node "$CLIENT" "$NPM" "$URL" m "$PROMPT" cli.txt $N > client1.out 2>&1
    rc=$?
    cat client1.out
    check "OpenAI client against the single-node server (see above)" "[ $rc -eq 0 ]"
    check "the server logged a cancelled request" "grep -q cancelled server1.log"
    check "server stops on SIGTERM" "stop_server"
else
    bad "server did not start: $(cat server1.log)"
fi
# bad flags are refused before anything loads
"$SERVER" --model m --serve --port 99999 >/dev/null 2>bad.err
check "--port 99999 refused" "[ \$? -eq 2 ] && grep -q port bad.err"
"$SERVER" --model m --serve --draft medusa >/dev/null 2>bad.err
check "--draft medusa refused" "[ \$? -eq 2 ] && grep -q ngram bad.err"
mkdir -p notext && cp m/config.json m/model.safetensors notext/
"$SERVER" --model notext --serve --port 0 --local >/dev/null 2>bad.err
check "a model without a tokenizer cannot serve: $(tail -1 bad.err)" "[ \$? -eq 1 ] && grep -q tokenizer bad.err"

# ---- 3 workers on loopback ----
for w in "wa $P1" "wb $P2" "wc $P3"; do
    set -- $w
    "$WORKER" --listen "tcp://127.0.0.1:$2" --name "$1" --cache-dir "cache_$1" --backend cpu --threads 1 --insecure 2>"$1.log" &
    PIDS="$PIDS $!"
done
printf "wa:\n  host: '127.0.0.1:%s'\n  layers: ['model.layers.0']\nwb:\n  host: '127.0.0.1:%s'\n  layers: ['model.layers.1']\nwc:\n  host: '127.0.0.1:%s'\n  layers: ['model.layers.2']\n" \
    $P1 $P2 $P3 > three.yml
for n in wa wb wc; do i=0; while [ $i -lt 100 ] && ! grep -q listening $n.log 2>/dev/null; do sleep 0.1; i=$((i + 1)); done; done

timeout 60 "$TESTGEN" m three.yml > gen_cluster.out 2>&1
rc=$?
tail -4 gen_cluster.out
check "speculative greedy == plain greedy on 24 prompts, and batched == alone, on the 3-worker cluster" "[ $rc -eq 0 ]"

timeout 30 "$MASTER" --model m -p "$PROMPT" -n $N --threads 1 --topology three.yml --insecure > cli3.txt 2> cli3.err
check "CLI on the cluster gives the single-node text" "cmp -s cli.txt cli3.txt"
if start_server server3.log --topology three.yml --insecure --parallel 4 --queue 4 --spec-k 4; then
    ok "cluster server listening at $URL"
    timeout 30 node "$CLIENT" "$NPM" "$URL" m "$PROMPT" cli.txt $N quick > client3.out 2>&1
    rc=$?
    cat client3.out
    check "OpenAI client against the cluster server with --spec-k 4 (see above)" "[ $rc -eq 0 ]"
    check "cluster server stops on SIGTERM" "stop_server"
else
    bad "cluster server did not start: $(cat server3.log)"
fi
finish
