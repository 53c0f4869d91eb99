#!/bin/sh
# Integration test of the cluster on loopback: 3 strata-worker processes and strata-master as
# separate processes. usage: test_cluster.sh MASTER WORKER GEN UNITS WORKDIR
# Every worker is killed on exit (trap), every master run is bounded by `timeout`.
# Secure by default, as a real cluster: one cluster key (strata-master keygen), workers get --key,
# the master finds it through $STRATA_KEY.
MASTER=$1 WORKER=$2 GEN=$3 UNITS=$4 WORK=$5
[ -n "$WORK" ] || { echo "usage: $0 MASTER WORKER GEN UNITS WORKDIR"; exit 2; }
rm -rf "$WORK" && mkdir -p "$WORK" || exit 2
. "$(cd "$(dirname "$0")" && pwd)/check.sh"
cd "$WORK" || exit 2
# distinct ports per run: from the PID, in 20000..59999, 8 consecutive
BASE=$((20000 + ($$ * 8) % 40000))
P1=$BASE P2=$((BASE + 1)) P3=$((BASE + 2)) PV=$((BASE + 3)) PDEAD=$((BASE + 4))
T="timeout 300"

start_worker() { # name port cache [extra...]
    n=$1 p=$2 c=$3; shift 3
    "$WORKER" --listen "tcp://127.0.0.1:$p" --name "$n" --cache-dir "$c" --backend cpu --threads 1 --key "$KEY" --no-advertise "$@" 2>"$n.log" &
    PIDS="$PIDS $!"
    eval "PID_$n=$!"
}
topo() { # file, then "name port layers" triples
    f=$1; shift
    : > "$f"
    while [ $# -gt 0 ]; do
        printf "%s:\n  host: '127.0.0.1:%s'\n  layers:\n" "$1" "$2" >> "$f"
        for l in $3; do printf "    - 'model.layers.%s'\n" "$l" >> "$f"; done
        shift 3
    done
}
rss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
sent() { sed -n 's/^cluster: bundle bytes sent: \([0-9]*\).*/\1/p' "$1"; }

"$GEN" --out m6 --shape tiny-qwen --layers 6 --seed 7 >/dev/null || { echo "strata-gen failed"; exit 1; }
KEY=$WORK/cluster.key
"$MASTER" keygen --out "$KEY" >/dev/null || { echo "strata-master keygen failed"; exit 1; }
export STRATA_KEY="$KEY"
start_worker wa $P1 cache_a
start_worker wb $P2 cache_b
start_worker wc $P3 cache_c
topo three.yml wa $P1 "0-1" wb $P2 "2 3" wc $P3 "4-5"
# each worker's resident memory before it loads anything: the baseline its share adds to
for n in wa wb wc; do
    i=0; while [ $i -lt 100 ] && ! grep -q listening $n.log 2>/dev/null; do sleep 0.1; i=$((i + 1)); done
    eval "BASE_$n=\$(rss_kb \$PID_$n)"
done
TOKENS=$(awk 'BEGIN { s = 7; for (i = 0; i < 112; i++) { s = (s * 1103515245 + 12345) % 2147483648; printf "%s%d", i ? "," : "", s % 512 } }')

# ---- equal outputs: 112-token prompt, 64 greedy tokens ----
$T "$MASTER" --model m6 --tokens "$TOKENS" -n 64 --local > single.out 2> single.err
check "single-node run" "[ \$(tr ',' '\n' < single.out | wc -l) -eq 64 ]"
$T "$MASTER" --model m6 --tokens "$TOKENS" -n 64 --topology three.yml > cluster1.out 2> cluster1.err
check "3-worker run: the 64 ids equal the single-node run's" "cmp -s single.out cluster1.out"
S1=$(sent cluster1.err)
check "first run sends the bundles (bytes sent: $S1)" "[ -n '$S1' ] && [ '$S1' -gt 0 ]"

# ---- each cached bundle: a valid safetensors with exactly its layers' tensors ----
for w in a:0:2 b:2:4 c:4:6; do
    n=${w%%:*} r=${w#*:}
    f=$(ls cache_$n/*/model.safetensors 2>/dev/null | head -1)
    check "worker w$n's cached bundle lists exactly layers ${r%:*}..$((${r#*:} - 1))" \
        "[ -n '$f' ] && '$UNITS' check-bundle '$f' m6 ${r%:*} ${r#*:} >/dev/null"
done

# ---- second run: nothing sent ----
$T "$MASTER" --model m6 --tokens "$TOKENS" -n 64 --topology three.yml > cluster2.out 2> cluster2.err
check "second run: same ids" "cmp -s single.out cluster2.out"
check "second run sends no bundle bytes (bytes sent: $(sent cluster2.err))" "[ '$(sent cluster2.err)' = 0 ]"
check "second run: every worker reports its bundle cached" "[ \$(grep -c 'bundle was cached' cluster2.err) -eq 3 ]"

# ---- a master segment in the middle: wa 0-1, master 2-3, wc 4-5 ----
topo gap.yml wa $P1 "0-1" wc $P3 "4-5"
$T "$MASTER" --model m6 --tokens "$TOKENS" -n 64 --topology gap.yml > gap.out 2> gap.err
check "layers on no worker run on the master, in the middle of the chain: same ids" "cmp -s single.out gap.out"

# ---- plans that fail before any transfer, with a message naming the fault ----
assigned() { cat wa.log wb.log wc.log | grep -c 'assigned layers'; }
plan_fails() { # label, expected message, topology, extra flags
    before=$(assigned)
    $T "$MASTER" --model m6 --tokens 1,2,3 -n 2 --topology "$3" $4 > /dev/null 2> fail.err
    rc=$?
    check "$1: fails ($rc) naming it: '$2'" "[ $rc -ne 0 ] && grep -q \"$2\" fail.err"
    check "$1: nothing assigned or sent" "[ \$(assigned) -eq $before ] && ! grep -q 'bytes sent' fail.err"
}
topo missing.yml wa $P1 "0-1" wc $P3 "4-5"
plan_fails "missing layers (strict)" "layers 2-3 are missing" missing.yml --strict-topology
topo dup.yml wa $P1 "0-1" wb $P2 "2-3" wc $P3 "3-5"
plan_fails "duplicated layer" "layer 3 is duplicated: assigned to both 'wb' and 'wc'" dup.yml
topo range.yml wa $P1 "0-1" wb $P2 "2-3" wc $P3 "4-7"
plan_fails "out-of-range layer" "worker 'wc' (line [0-9]*): layer 6 is out of range" range.yml
printf "wa:\n  host: '127.0.0.1:%s'\n" $P1 > nolayers.yml
plan_fails "worker without layers" "worker 'wa' has no layers" nolayers.yml
topo dead.yml wa $P1 "0-1" wb $P2 "2-3" wd $PDEAD "4-5"
plan_fails "master without the cluster key (--insecure)" "refused this master" three.yml --insecure
plan_fails "unreachable host" "worker 'wd' at 127.0.0.1:$PDEAD: no answer to hello within 1500 ms" dead.yml "--connect-timeout-ms 1500"

# ---- protocol version mismatch: a clear message on both ends ----
start_worker wv $PV cache_v --protocol 2
topo version.yml wa $P1 "0-2" wv $PV "3-5"
plan_fails "protocol version mismatch (master side)" "worker 'wv' (127.0.0.1:$PV): protocol version mismatch: the worker speaks 2, this master speaks 1" version.yml
check "protocol version mismatch (worker side)" "grep -q \"protocol version mismatch: master speaks 1, worker 'wv' speaks 2\" wv.log"

# ---- workers hold their share of the weights, not the model: VmRSS after load ----
"$GEN" --out m05 --shape qwen2.5-0.5b --layers 3 --seed 3 >/dev/null || { echo "strata-gen failed"; exit 1; }
topo rss.yml wa $P1 "0" wb $P2 "1" wc $P3 "2"
$T "$MASTER" --model m05 --tokens 11,22 -n 1 --topology rss.yml > rss.out 2> rss.err
check "0.5b-shape run on 3 workers" "[ -s rss.out ]"
MODEL_KB=$(( $(stat -c %s m05/model.safetensors) / 1024 ))
# AddressSanitizer's shadow memory and quarantine add ~20 MB to a process that has run a model
SLACK_KB=16384
if ldd "$WORKER" 2>/dev/null | grep -q libasan; then SLACK_KB=32768; fi
for n in a b c; do
    pid=$(eval echo \$PID_w$n)
    kb=$(rss_kb "$pid")
    base=$(eval echo \$BASE_w$n)
    f=$(ls -S cache_$n/*/model.safetensors | head -1)  # the largest bundle: this run's (3 x 8.4 MB layer)
    share=$(( $(stat -c %s "$f") / 1024 ))
    echo "     worker w$n: VmRSS $((kb / 1024)) MB ($((base / 1024)) MB before any load), its bundle $((share / 1024)) MB, the whole model $((MODEL_KB / 1024)) MB"
    # growth since start: its share plus at most 16 MB (32 under ASan) of KV, scratch and buffers;
    # far below the whole model
    check "worker w$n resident memory near its share (VmRSS ${kb} kB = ${base} kB at start + $((kb - base)) kB, share ${share} kB)" \
        "[ $((kb - base)) -lt $((share + SLACK_KB)) ] && [ $((kb - base)) -gt $((share * 3 / 4)) ] && [ $kb -lt $((base + MODEL_KB / 2)) ]"
done

# a sanitizer build's workers report into their logs, which no one else reads (cleanup first: the
# leak check runs at their exit)
cleanup; PIDS=""
check "no sanitizer report in any worker log" "! cat wa.log wb.log wc.log wv.log | grep -q -e Sanitizer -e 'runtime error:'"
echo "$PASS passed, $FAIL failed"
[ $FAIL -eq 0 ]
