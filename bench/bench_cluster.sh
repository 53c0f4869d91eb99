#!/bin/sh
# Cluster benchmark on loopback (nothing here is a test): single-node vs 2- and 3-worker tok/s on
# the qwen2.5-0.5b shape, and the per-hop overhead (microseconds per token per hop, prefill and
# decode) that the master measures as chain wall time minus the workers' own forward time.
# Prints a table and a JSON line; writes OUT (a Markdown section for bench/RESULTS.md) when OUT is given.
#
# usage: bench_cluster.sh BUILD_DIR [PROMPT_TOKENS] [GEN_TOKENS] [OUT.md]
B=${1:?usage: bench_cluster.sh BUILD_DIR [PROMPT_TOKENS] [GEN_TOKENS] [OUT.md]}
NP=${2:-16} NG=${3:-8} OUT=$4
BACKEND=${BACKEND:-cpu}
# one compute thread a process by default: on a small shared machine, several processes whose
# thread pools spin before sleeping compete for the cores and the wake-ups swamp the network path
THREADS=${THREADS:-1}
W=$(mktemp -d /tmp/strata-bench-cluster.XXXXXX)
PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; done; rm -rf "$W"; }
trap cleanup EXIT INT TERM
BASE=$((20000 + ($$ * 8) % 40000))
"$B/strata-gen" --out "$W/m" --shape qwen2.5-0.5b >/dev/null || exit 1
# CurveZMQ on, as a real cluster runs (INSECURE=1 measures without it)
if [ -n "$INSECURE" ]; then SEC=--insecure; else "$B/strata-master" keygen --out "$W/cluster.key" >/dev/null || exit 1; SEC="--key $W/cluster.key"; fi
for i in 1 2 3; do
    "$B/strata-worker" --listen "tcp://127.0.0.1:$((BASE + i))" --name "w$i" --cache-dir "$W/c$i" --backend "$BACKEND" --threads "$THREADS" $SEC 2>"$W/w$i.log" &
    PIDS="$PIDS $!"
done
TOK=$(awk -v n="$NP" 'BEGIN { s = 1; for (i = 0; i < n; i++) { s = (s * 1103515245 + 12345) % 2147483648; printf "%s%d", i ? "," : "", s % 150000 } }')
printf "w1:\n  host: '127.0.0.1:%d'\n  layers: ['model.layers.0-11']\nw2:\n  host: '127.0.0.1:%d'\n  layers: ['model.layers.12-23']\n" \
    $((BASE + 1)) $((BASE + 2)) > "$W/two.yml"
printf "w1:\n  host: '127.0.0.1:%d'\n  layers: ['model.layers.0-7']\nw2:\n  host: '127.0.0.1:%d'\n  layers: ['model.layers.8-15']\nw3:\n  host: '127.0.0.1:%d'\n  layers: ['model.layers.16-23']\n" \
    $((BASE + 1)) $((BASE + 2)) $((BASE + 3)) > "$W/three.yml"

run() { # name, extra flags; a first run ships the bundles, the timed one is the second
    sec=; [ -n "$2" ] && sec=$SEC
    if [ -n "$2" ]; then "$B/strata-master" --model "$W/m" --backend "$BACKEND" -t "$THREADS" --tokens 1,2 -n 1 $2 $sec >/dev/null 2>&1; fi
    "$B/strata-master" --model "$W/m" --backend "$BACKEND" -t "$THREADS" --tokens "$TOK" -n "$NG" $2 $sec > "$W/$1.out" 2> "$W/$1.err"
    pf=$(sed -n 's/^prefill: .*(\([0-9.]*\) tok\/s)/\1/p' "$W/$1.err")
    dc=$(sed -n 's/^decode: .*(\([0-9.]*\) tok\/s)/\1/p' "$W/$1.err")
    hp=$(sed -n 's/^cluster: prefill: .*overhead \([-0-9.]*\) us.*/\1/p' "$W/$1.err")
    hd=$(sed -n 's/^cluster: decode: .*overhead \([-0-9.]*\) us.*/\1/p' "$W/$1.err")
    echo "$1 ${pf:-0} ${dc:-0} ${hp:-null} ${hd:-null}"
}
{
    run single ""
    run two "--topology $W/two.yml"
    run three "--topology $W/three.yml"
} > "$W/rows"
same=yes
cmp -s "$W/single.out" "$W/two.out" || same=no
cmp -s "$W/single.out" "$W/three.out" || same=no
CPU=$(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1)
{
    echo "| setup | prefill tok/s | decode tok/s | hop overhead prefill (us/token/hop) | hop overhead decode (us/token/hop) |"
    echo "|---|---|---|---|---|"
    awk '{ printf "| %s | %s | %s | %s | %s |\n", $1 == "single" ? "single node" : $1 == "two" ? "2 workers (12+12 layers)" : "3 workers (8+8+8 layers)", $2, $3, $4 == "null" ? "-" : $4, $5 == "null" ? "-" : $5 }' "$W/rows"
} > "$W/table"
cat "$W/table"
echo "outputs identical across setups: $same"
JSON=$(awk -v np="$NP" -v ng="$NG" -v be="$BACKEND" -v same="$same" 'BEGIN { printf "{\"bench\":\"cluster\",\"shape\":\"qwen2.5-0.5b\",\"backend\":\"%s\",\"prompt_tokens\":%d,\"gen_tokens\":%d,\"identical\":%s,\"rows\":[", be, np, ng, same == "yes" ? "true" : "false" }
    { printf "%s{\"setup\":\"%s\",\"prefill_tok_s\":%s,\"decode_tok_s\":%s,\"hop_us_prefill\":%s,\"hop_us_decode\":%s}", (NR > 1 ? "," : ""), $1, $2, $3, $4, $5 }
    END { print "]}" }' "$W/rows")
echo "$JSON"
if [ -n "$OUT" ]; then
    {
        echo "# Cluster benchmark (bench/bench_cluster.sh)"
        echo
        echo "Loopback, all processes on one machine: $CPU, $(nproc) cores shared by the master and every"
        echo "worker; backend \`$BACKEND\`, $THREADS compute thread(s) a process; qwen2.5-0.5b shape (generated, q4 g64); prompt $NP tokens, $NG generated."
        echo "Hop overhead = chain wall time minus the workers' own forward time, per token and per network"
        echo "hop (a chain of k workers has k + 1 hops). CurveZMQ: $([ -n "$INSECURE" ] && echo off || echo on). Measured $(date -u +%Y-%m-%d)."
        echo
        cat "$W/table"
        echo
        echo "Outputs identical across the three setups: $same."
        echo
        echo '```json'
        echo "$JSON"
        echo '```'
    } > "$OUT"
fi
