#!/usr/bin/env bash
# One command that validates strata on this machine and writes a report a maintainer can check.
#
#   scripts/validate-mac.sh [--backend metal|cpu] [--model DIR] [--out DIR] [--quick | --full]
#                           [--reference cpu|cpu-ref] [--build-dir DIR] [--no-build] [--no-install]
#                           [--keep-models]
#   sizes: --quick reduced models (CI); default the whole 0.5b, the 7b with 4 of its layers; --full all
#
# Gates, each printed PASS or FAIL (README, "Validate on your Mac", says what each proves):
#   1. kernels:     every op of the backend against the cpu reference (tests/test_backend_ops)
#   2. generation:  greedy ids of generated qwen2.5-0.5b- and 7b-shaped models (and of --model DIR)
#                   on the backend equal those of the reference backend
#   3. cluster:     a loopback cluster, one worker on the backend and one on another backend,
#                   gives the single-node ids
#   4. performance: prefill and decode tok/s, q4 matvec GB/s against the measured memory bandwidth
# Writes OUT/report.json (schema strata-validate/1) and OUT/summary.md, then checks them with
# strata-check-report, which recomputes every verdict (its thresholds are the only ones).
#
# macOS (Homebrew) is the target; `--backend cpu` runs on Linux too, and CI runs it with --quick.
# Written for bash 3.2 (macOS's /bin/bash): no associative arrays, no GNU-only tools.
set -u

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OS=$(uname -s)
BACKEND="" MODEL="" OUT="validate-report" MODE=default REF="" BUILD="" NO_BUILD=0 NO_INSTALL=0 KEEP=0

usage() { sed -n '4,7p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case "$1" in
        --backend) BACKEND=${2:-}; shift ;;
        --model) MODEL=${2:-}; shift ;;
        --out) OUT=${2:-}; shift ;;
        --quick) MODE=quick ;;
        --full) MODE=full ;;
        --reference) REF=${2:-}; shift ;;
        --build-dir) BUILD=${2:-}; shift ;;
        --no-build) NO_BUILD=1 ;;
        --no-install) NO_INSTALL=1 ;;
        --keep-models) KEEP=1 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "validate: unknown option '$1'"; usage; exit 2 ;;
    esac
    shift
done
[ -n "$BACKEND" ] || { [ "$OS" = Darwin ] && BACKEND=metal || BACKEND=cpu; }
case "$BACKEND" in metal|cpu|cuda) ;; *) echo "validate: --backend must be metal, cpu or cuda"; exit 2 ;; esac
# the reference: the scalar oracle when the cpu backend is under test (it cannot be its own
# reference); otherwise the cpu backend, itself checked against the oracle in gate 1
[ -n "$REF" ] || { [ "$BACKEND" = cpu ] && REF=cpu-ref || REF=cpu; }
case "$REF" in cpu|cpu-ref) ;; *) echo "validate: --reference must be cpu or cpu-ref"; exit 2 ;; esac
[ "$REF" != "$BACKEND" ] || { echo "validate: the backend cannot be its own reference"; exit 2; }
# the cluster's second worker runs another backend, so that the cluster mixes two
[ "$BACKEND" = cpu ] && OTHER=cpu-ref || OTHER=cpu
if [ -n "$MODEL" ] && [ ! -f "$MODEL/config.json" ]; then echo "validate: --model $MODEL: no config.json there"; exit 2; fi
[ -n "$BUILD" ] || BUILD="$ROOT/build-validate"
case "$BUILD" in /*) ;; *) BUILD="$(pwd)/$BUILD" ;; esac
case "$OUT" in /*) ;; *) OUT="$(pwd)/$OUT" ;; esac
if [ -n "$MODEL" ]; then case "$MODEL" in /*) ;; *) MODEL="$(pwd)/$MODEL" ;; esac; fi
mkdir -p "$OUT/logs" || exit 2
WORK="$OUT/work"
rm -rf "$WORK" && mkdir -p "$WORK" || exit 2
LOG="$OUT/logs"
NCPU=$(getconf _NPROCESSORS_ONLN 2>/dev/null || sysctl -n hw.ncpu 2>/dev/null || echo 2)

say() { printf '%s\n' "$*"; }
die() { say "validate: $*"; exit 1; }

# ---- processes: every child is bounded in time and killed on exit ----
PIDS=""
cleanup() {
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    sleep 0.3
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
    [ "$KEEP" = 1 ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# bounded SECONDS CMD...: runs CMD, killed after SECONDS (macOS has no `timeout`); 124 if killed
bounded() {
    secs=$1; shift
    "$@" &
    bpid=$!
    PIDS="$PIDS $bpid"
    ticks=$((secs * 5))
    while kill -0 "$bpid" 2>/dev/null; do
        if [ $ticks -le 0 ]; then
            kill "$bpid" 2>/dev/null; sleep 1; kill -9 "$bpid" 2>/dev/null
            wait "$bpid" 2>/dev/null
            say "validate: '$1' ran past ${secs}s and was killed" >&2
            return 124
        fi
        sleep 0.2
        ticks=$((ticks - 1))
    done
    wait "$bpid"
}

# ---- JSON helpers (no jq on a fresh Mac) ----
jstr() { printf '"%s"' "$(printf '%s' "$1" | tr -d '\000-\037' | sed 's/\\/\\\\/g; s/"/\\"/g')"; }
is_ids() { printf '%s' "$1" | grep -Eq '^[0-9]+(,[0-9]+)*$'; }
jids() { if is_ids "$1"; then printf '[%s]' "$1"; else printf '[]'; fi; }
cfg_int() { sed -n "s/.*\"$2\"[[:space:]]*:[[:space:]]*\([0-9][0-9]*\).*/\1/p" "$1/config.json" | head -1; }
# a prompt of N ids below VOCAB from seed S (the same on every machine)
prompt() { awk -v n="$1" -v v="$2" -v s="$3" 'BEGIN { for (i = 0; i < n; i++) { s = (s * 1103515245 + 12345) % 2147483648; printf "%s%d", i ? "," : "", 1 + s % (v - 1) } }'; }

# ---- 0. packages and build ----
if [ "$NO_BUILD" = 0 ]; then
    if [ "$OS" = Darwin ]; then
        command -v brew >/dev/null 2>&1 || die "Homebrew is needed: https://brew.sh, then re-run"
        xcode-select -p >/dev/null 2>&1 || die "the Xcode command line tools are needed: xcode-select --install"
        PKGS=$("$ROOT/scripts/deps.sh" | sed -n 's/^ *brew install //p')
        [ -n "$PKGS" ] || die "scripts/deps.sh printed no 'brew install' line"
        say "Homebrew packages strata needs: brew install $PKGS"
        MISSING=""
        for p in $PKGS; do brew list --versions "$p" >/dev/null 2>&1 || MISSING="$MISSING $p"; done
        if [ -n "$MISSING" ]; then
            [ "$NO_INSTALL" = 0 ] || die "missing Homebrew packages:$MISSING (run: brew install$MISSING)"
            say "installing the missing ones: brew install$MISSING"
            brew install $MISSING || die "brew install$MISSING failed"
        fi
    elif [ "$NO_INSTALL" = 0 ]; then
        "$ROOT/scripts/deps.sh" || die "scripts/deps.sh failed"
    fi
    CUDA_FLAG=-DSTRATA_CUDA=OFF
    [ "$BACKEND" = cuda ] && CUDA_FLAG=-DSTRATA_CUDA=ON
    say "building into $BUILD (log: $LOG/build.log)"
    { cmake -S "$ROOT" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release $CUDA_FLAG &&
      cmake --build "$BUILD" -j "$NCPU" --target strata-gen strata-master strata-worker test_backend_ops bench_cpu strata-check-report
    } > "$LOG/build.log" 2>&1 || { tail -30 "$LOG/build.log"; die "build failed (see $LOG/build.log)"; }
fi
GEN=$BUILD/strata-gen MASTER=$BUILD/strata-master WORKER=$BUILD/strata-worker
OPS=$BUILD/tests/test_backend_ops BENCH=$BUILD/bench_cpu CHECK=$BUILD/strata-check-report
for b in "$GEN" "$MASTER" "$WORKER" "$OPS" "$BENCH" "$CHECK"; do [ -x "$b" ] || die "$b is missing (build first, or drop --no-build)"; done

# ---- the machine ----
if [ "$OS" = Darwin ]; then
    M_MODEL=$(sysctl -n hw.model 2>/dev/null)
    M_CHIP=$(sysctl -n machdep.cpu.brand_string 2>/dev/null)
    M_OS="$(sw_vers -productName 2>/dev/null) $(sw_vers -productVersion 2>/dev/null) ($(sw_vers -buildVersion 2>/dev/null))"
    M_MEM=$(sysctl -n hw.memsize 2>/dev/null)
    M_GPU=$(system_profiler SPDisplaysDataType 2>/dev/null | awk -F': ' '/Chipset Model/ { c = $2 } /Total Number of Cores/ { n = $2 } END { if (c != "") printf "%s%s", c, n != "" ? ", " n " GPU cores" : "" }')
else
    M_MODEL=$(cat /sys/class/dmi/id/product_name 2>/dev/null)
    [ -n "$M_MODEL" ] && M_MODEL="$(cat /sys/class/dmi/id/sys_vendor 2>/dev/null) $M_MODEL"
    M_CHIP=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null)
    M_OS="$(. /etc/os-release 2>/dev/null && printf '%s' "${PRETTY_NAME:-Linux}"), Linux $(uname -r)"
    M_MEM=$(awk '/^MemTotal:/ { printf "%.0f", $2 * 1024 }' /proc/meminfo 2>/dev/null)
    M_GPU=""
fi
[ -n "$M_MODEL" ] || M_MODEL="unknown ($(uname -m))"
[ -n "$M_CHIP" ] || M_CHIP="unknown ($(uname -m))"
case "$M_MEM" in ''|*[!0-9]*) M_MEM=0 ;; esac
COMMIT=$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)
# plumbing only: reads the index, never rewrites it
if [ "$COMMIT" != unknown ] && ! git -C "$ROOT" diff-index --quiet HEAD -- 2>/dev/null; then COMMIT="$COMMIT+local-changes"; fi
CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)
say "strata validation: backend $BACKEND (reference $REF), mode $MODE"
say "machine: $M_MODEL, $M_CHIP, $M_OS, $((M_MEM / 1048576)) MiB${M_GPU:+, $M_GPU}; commit $COMMIT"

# single-node runs stay single-node: a master that browses mDNS for workers when given no topology
# could otherwise borrow a worker on the LAN
LOCAL=""
"$MASTER" --help 2>&1 | grep -q -- '--local' && LOCAL=--local

# gate_verdict NAME FIGURES_FILE: the checker's verdict (its thresholds are the only ones)
VERDICTS=""
gate_verdict() {
    v=$("$CHECK" --gate "$1" "$2" --backend "$BACKEND" 2>>"$LOG/check.log") || v=FAIL
    [ "$v" = PASS ] || v=FAIL
    VERDICTS="$VERDICTS $1=$v"
    say "gate $1: $v ($((SECONDS - GATE_T0)) s)"
    GATE_T0=$SECONDS
}
GATE_T0=$SECONDS

# ---- 1. kernels ----
say ""
say "[1/4] kernels: every op of $BACKEND against cpu-ref (random inputs, several shapes)"
kernels_of() { # backend -> $WORK/k-<backend>.json
    f="$WORK/k-$1.json"
    rm -f "$f"
    bounded 1800 "$OPS" "$1" --json "$f" > "$LOG/kernels-$1.log" 2>&1
    rc=$?
    say "  $1: $(tail -1 "$LOG/kernels-$1.log") (exit $rc)"
    if [ ! -s "$f" ]; then
        # the backend could not run at all: every op fails, with the reason
        why=$(head -1 "$LOG/kernels-$1.log")
        { printf '{"backend": %s, "error": %s, "ops": [' "$(jstr "$1")" "$(jstr "$why")"
          sep=""
          for op in matmul embed rmsnorm rope attention swiglu add copy model; do
              printf '%s{"op": "%s", "max_rel_err": 1e300, "cases": 1, "nonfinite": true}' "$sep" "$op"; sep=", "
          done
          printf ']}'; } > "$f"
    fi
}
kernels_of "$BACKEND"
KBACKENDS=$BACKEND
if [ "$REF" = cpu ]; then kernels_of cpu; KBACKENDS="$KBACKENDS cpu"; fi
{ printf '{"backends": ['; sep=""
  for b in $KBACKENDS; do printf '%s' "$sep"; sed 's/^[[:space:]]*//' "$WORK/k-$b.json" | tr -d '\n'; sep=", "; done
  printf ']}\n'; } > "$WORK/fig-kernels.json"
gate_verdict kernels "$WORK/fig-kernels.json"

# ---- 2. single-node generation ----
say ""
say "[2/4] generation: greedy ids on $BACKEND against $REF"
case $MODE in
    # quick (CI): the scalar oracle runs every token, so the 7b shape gets one layer and few tokens
    quick) G05="--layers 2 --vocab 4096" G7="--layers 1 --vocab 4096" N05=8 N7=3 P05=1 P7=1 L7=4 ;;
    default) G05="" G7="--layers 4" N05=16 N7=16 P05=2 P7=2 L7=8 ;;
    full) G05="" G7="" N05=16 N7=16 P05=2 P7=2 L7=8 ;;
esac
if [ "$REF" = cpu-ref ] && [ "$MODE" != quick ]; then
    say "  note: cpu-ref is the scalar oracle; at these sizes the reference runs take many minutes (--quick is faster)"
fi
RUNS="" NRUN=0 LAST_IDS=""
# run_pair LABEL SHAPE NOTE DIR PROMPT N: one run on the backend, one on the reference
run_pair() {
    label=$1 shape=$2 note=$3 dir=$4 p=$5 n=$6
    NRUN=$((NRUN + 1))
    tag="run$NRUN"
    bounded 3600 "$MASTER" --model "$dir" --tokens "$p" -n "$n" --backend "$BACKEND" $LOCAL > "$WORK/$tag.ids" 2> "$LOG/gen-$tag-$BACKEND.log"
    bounded 3600 "$MASTER" --model "$dir" --tokens "$p" -n "$n" --backend "$REF" $LOCAL > "$WORK/$tag.ref" 2> "$LOG/gen-$tag-$REF.log"
    ids=$(tr -d ' \n' < "$WORK/$tag.ids") ref=$(tr -d ' \n' < "$WORK/$tag.ref")
    eq=differ; [ -n "$ids" ] && [ "$ids" = "$ref" ] && eq=equal
    say "  $label, prompt of $(printf '%s' "$p" | awk -F, '{ print NF }') ids, $n generated: $eq ($ids)"
    err=""
    is_ids "$ids" || err="$BACKEND run failed: $(tail -1 "$LOG/gen-$tag-$BACKEND.log")"
    is_ids "$ref" || err="$err${err:+; }$REF run failed: $(tail -1 "$LOG/gen-$tag-$REF.log")"
    run=$(printf '{"model": %s, ' "$(jstr "$label")"
          [ -n "$shape" ] && printf '"shape": %s, ' "$(jstr "$shape")"
          printf '"note": %s, "backend": %s, "reference_backend": %s, "prompt": [%s], "ids": %s, "reference_ids": %s' \
              "$(jstr "$note")" "$(jstr "$BACKEND")" "$(jstr "$REF")" "$p" "$(jids "$ids")" "$(jids "$ref")"
          [ -n "$err" ] && printf ', "error": %s' "$(jstr "$err")"
          printf '}')
    RUNS="$RUNS${RUNS:+, }$run"
    LAST_IDS=$ids
}
# gen_model NAME SHAPE FLAGS SEED -> a directory and a note saying how it differs from the real shape
gen_model() {
    dir="$WORK/$1"
    bounded 1800 "$GEN" --out "$dir" --shape "$2" $3 --seed "$4" > "$LOG/gen-$1.log" 2>&1 || die "strata-gen $2 $3 failed (see $LOG/gen-$1.log)"
}
note_of() { # dir full_layers -> note
    l=$(cfg_int "$1" num_hidden_layers) v=$(cfg_int "$1" vocab_size)
    if [ "$l" = "$2" ] && [ -z "$3" ]; then printf 'generated, full size: %s layers, vocab %s' "$l" "$v"
    else printf 'generated, reduced: %s of %s layers, vocab %s' "$l" "$2" "$v"; fi
}
gen_model q05 qwen2.5-0.5b "$G05" 3
gen_model q7 qwen2.5-7b "$G7" 5
NOTE05=$(note_of "$WORK/q05" 24 "$(printf '%s' "$G05" | grep vocab)")
NOTE7=$(note_of "$WORK/q7" 28 "$(printf '%s' "$G7" | grep vocab)")
PROMPT1=$(prompt 8 4096 11)
run_pair qwen2.5-0.5b qwen2.5-0.5b "$NOTE05" "$WORK/q05" "$PROMPT1" $N05
SINGLE1=$LAST_IDS # the cluster gate's reference
s=23; i=0
while [ $i -lt $P05 ]; do run_pair qwen2.5-0.5b qwen2.5-0.5b "$NOTE05" "$WORK/q05" "$(prompt 8 4096 $s)" $N05; s=$((s + 14)); i=$((i + 1)); done
s=41; i=0
while [ $i -lt $P7 ]; do run_pair qwen2.5-7b qwen2.5-7b "$NOTE7" "$WORK/q7" "$(prompt $L7 4096 $s)" $N7; s=$((s + 12)); i=$((i + 1)); done
if [ -n "$MODEL" ]; then
    MV=$(cfg_int "$MODEL" vocab_size); [ -n "$MV" ] || MV=1000
    [ "$MV" -gt 1000 ] && MV=1000
    for s in 11 23; do run_pair "$(basename "$MODEL")" "" "checkpoint given with --model ($(basename "$MODEL"))" "$MODEL" "$(prompt 12 "$MV" $s)" 16; done
fi
printf '{"runs": [%s]}\n' "$RUNS" > "$WORK/fig-generation.json"
gate_verdict generation "$WORK/fig-generation.json"

# ---- 3. loopback cluster ----
say ""
say "[3/4] cluster: a $BACKEND worker and a $OTHER worker on loopback against single-node $BACKEND"
# flags of this build's cluster CLI (a cluster key and mDNS where the build has them)
# KEYOPT/KEYFILE: two words, so that a path with spaces stays one argument
KEYOPT="" KEYFILE="" WFLAGS=""
if "$MASTER" --help 2>&1 | grep -q keygen; then
    if bounded 30 "$MASTER" keygen --out "$WORK/cluster.key" > "$LOG/keygen.log" 2>&1; then KEYOPT=--key KEYFILE="$WORK/cluster.key"
    else KEYOPT=--insecure; fi
fi
"$WORKER" --help 2>&1 | grep -q -- --no-advertise && WFLAGS="--no-advertise"
L=$(cfg_int "$WORK/q05" num_hidden_layers)
H=$((L / 2))
CL_IDS="" CL_REF="" CL_ERR="" WSPEED=""
start_worker() { # name port backend
    "$WORKER" --listen "tcp://127.0.0.1:$2" --name "$1" --backend "$3" --cache-dir "$WORK/cache_$1" $KEYOPT ${KEYFILE:+"$KEYFILE"} $WFLAGS > "$LOG/worker-$1.log" 2>&1 &
    PIDS="$PIDS $!"
    eval "PID_$1=$!"
}
wait_listening() { # name -> 0 when listening, 1 when it died or took over 120 s
    i=0
    while [ $i -lt 600 ]; do
        grep -q listening "$LOG/worker-$1.log" 2>/dev/null && return 0
        kill -0 "$(eval echo \$PID_$1)" 2>/dev/null || return 1
        sleep 0.2; i=$((i + 1))
    done
    return 1
}
tries=0 up=0
while [ $tries -lt 3 ] && [ $up = 0 ]; do
    BASE=$((20000 + ($$ * 7 + tries * 101) % 40000))
    start_worker wa $BASE "$BACKEND"
    start_worker wb $((BASE + 1)) "$OTHER"
    if wait_listening wa && wait_listening wb; then up=1
    else
        kill "$PID_wa" "$PID_wb" 2>/dev/null; wait "$PID_wa" "$PID_wb" 2>/dev/null
        tries=$((tries + 1))
    fi
done
if [ $up = 1 ]; then
    { printf "wa:\n  host: '127.0.0.1:%s'\n  layers:\n    - 'model.layers.0-%s'\n" $BASE $((H - 1))
      printf "wb:\n  host: '127.0.0.1:%s'\n  layers:\n    - 'model.layers.%s-%s'\n" $((BASE + 1)) $H $((L - 1)); } > "$WORK/cluster.yml"
    bounded 3600 "$MASTER" --model "$WORK/q05" --tokens "$PROMPT1" -n $N05 --backend "$BACKEND" --topology "$WORK/cluster.yml" \
        --strict-topology $KEYOPT ${KEYFILE:+"$KEYFILE"} > "$WORK/cluster.ids" 2> "$LOG/cluster-master.log"
    CL_IDS=$(tr -d ' \n' < "$WORK/cluster.ids")
    is_ids "$CL_IDS" || CL_ERR="cluster run failed: $(grep -v '^cluster: worker' "$LOG/cluster-master.log" | tail -1)"
    WSPEED=$(sed -n "s/.*listening on .*, \([0-9.]*\) G q4 weights\/s.*/\1/p" "$LOG/worker-wa.log" | head -1)
else
    CL_ERR="the workers did not start (see logs/worker-wa.log, logs/worker-wb.log)"
fi
kill "${PID_wa:-}" "${PID_wb:-}" 2>/dev/null
CL_REF=$SINGLE1
eq=differ; [ -n "$CL_IDS" ] && [ "$CL_IDS" = "$CL_REF" ] && eq=equal
say "  qwen2.5-0.5b, layers 0-$((H - 1)) on $BACKEND, $H-$((L - 1)) on $OTHER: $eq ($CL_IDS)${CL_ERR:+ — $CL_ERR}"
{ printf '{"runs": [{"model": "qwen2.5-0.5b", "note": %s, "prompt": [%s], ' "$(jstr "$NOTE05")" "$PROMPT1"
  printf '"workers": [{"name": "wa", "backend": %s, "layers": "0-%s"}, {"name": "wb", "backend": %s, "layers": "%s-%s"}], ' \
      "$(jstr "$BACKEND")" $((H - 1)) "$(jstr "$OTHER")" $H $((L - 1))
  printf '"master_backend": %s, "security": %s, "ids": %s, "reference_ids": %s' "$(jstr "$BACKEND")" \
      "$(jstr "${KEYOPT:-none in this build}${KEYFILE:+ cluster.key}")" "$(jids "$CL_IDS")" "$(jids "$CL_REF")"
  [ -n "$CL_ERR" ] && printf ', "error": %s' "$(jstr "$CL_ERR")"
  printf '}]}\n'; } | sed "s|$WORK/||g" > "$WORK/fig-cluster.json"
gate_verdict cluster "$WORK/fig-cluster.json"

# ---- 4. performance ----
say ""
say "[4/4] performance: prefill and decode on $BACKEND, q4 matvec and memory bandwidth (bench_cpu)"
BQ=""; [ "$MODE" = quick ] && BQ=--quick
# only the matrix the figure is taken from, where this bench_cpu can select it (all 3 models' shapes
# take minutes)
"$BENCH" --help 2>&1 | grep -q -- --kernels && BQ="$BQ --kernels qwen2.5-7b/gate/up"
bounded 1800 "$BENCH" $BQ --skip-models --json "$WORK/bench.json" > "$LOG/bench_cpu.log" 2>&1 || say "  bench_cpu failed (see $LOG/bench_cpu.log)"
# jansson writes one key a line: read bandwidth first, then the matmul rows
BW=$(awk -F': ' '/"gbs_1"/ && !m { g = $2 + 0; if (g > b) b = g } /"gbs_all"/ && !m { g = $2 + 0; if (g > b) b = g; m = 1 } END { printf "%.2f", b }' "$WORK/bench.json" 2>/dev/null)
MV=$(awk -F': ' '/"model"/ { mo = $2 } /"matrix"/ { mx = $2 } /"n"/ { n = $2 + 0 }
     /"gbs_all"/ && mo ~ /qwen2.5-7b/ && mx ~ /gate\/up/ && n == 1 { printf "%.2f", $2 + 0; exit }' "$WORK/bench.json" 2>/dev/null)
LEVEL=$(sed -n 's/.*"level": "\([^"]*\)".*/\1/p' "$WORK/bench.json" 2>/dev/null)
THREADS=$(sed -n 's/.*"threads": \([0-9]*\).*/\1/p' "$WORK/bench.json" 2>/dev/null)
[ -n "$BW" ] || BW=0; [ -n "$MV" ] || MV=0
RATIO=$(awk -v a="$MV" -v b="$BW" 'BEGIN { printf "%.4f", (b > 0 ? a / b : 0) }')
if [ -n "$MODEL" ]; then PDIR=$MODEL PNAME=$(basename "$MODEL")
elif [ "$MODE" = full ]; then PDIR=$WORK/q7 PNAME="qwen2.5-7b ($NOTE7)"
else PDIR=$WORK/q05 PNAME="qwen2.5-0.5b ($NOTE05)"; fi
[ "$MODE" = quick ] && PN=64 DN=32 || PN=128 DN=64
PV=$(cfg_int "$PDIR" vocab_size); [ -n "$PV" ] && [ "$PV" -lt 4096 ] || PV=4096
PP=$(prompt $PN "$PV" 99)
PRE=0 DEC=0
for rep in 1 2; do # the best of two: the first also pays the page faults of the mmap
    bounded 3600 "$MASTER" --model "$PDIR" --tokens "$PP" -n $DN --backend "$BACKEND" $LOCAL > /dev/null 2> "$LOG/perf-$rep.log"
    p=$(sed -n 's/^prefill: .*(\([0-9.]*\) tok\/s).*/\1/p' "$LOG/perf-$rep.log" | tail -1)
    d=$(sed -n 's/^decode: .*(\([0-9.]*\) tok\/s).*/\1/p' "$LOG/perf-$rep.log" | tail -1)
    PRE=$(awk -v a="$PRE" -v b="${p:-0}" 'BEGIN { print (b > a ? b : a) }')
    DEC=$(awk -v a="$DEC" -v b="${d:-0}" 'BEGIN { print (b > a ? b : a) }')
done
say "  $PNAME: prefill $PRE tok/s ($PN tokens), decode $DEC tok/s ($DN tokens) on $BACKEND"
# the backend's own bandwidth figure: a decode step reads every weight once (an untied embedding
# only one row of it), so weight bytes x decode tok/s is what $BACKEND's q4 matvecs sustain
weight_bytes() { # dir -> bytes a decode step reads; nothing when the model is not quantized
    total=0
    for f in "$1"/*.safetensors; do [ -f "$f" ] && total=$((total + $(wc -c < "$f"))); done
    v=$(cfg_int "$1" vocab_size) h=$(cfg_int "$1" hidden_size) g=$(cfg_int "$1" group_size) q=$(cfg_int "$1" bits)
    tie=$(sed -En 's/.*"tie_word_embeddings"[[:space:]]*:[[:space:]]*(true|false).*/\1/p' "$1/config.json" | head -1)
    if [ -z "$v" ] || [ -z "$h" ] || [ -z "$g" ] || [ -z "$q" ] || [ "$total" -le 0 ]; then return 0; fi
    [ "$tie" = true ] || total=$((total - v * h * q / 8 - 4 * v * (h / g)))
    [ "$total" -gt 0 ] && echo "$total"
}
WB=$(weight_bytes "$PDIR")
WGBS=""
if [ -n "$WB" ]; then
    WGBS=$(awk -v b="$WB" -v d="$DEC" 'BEGIN { printf "%.3f", b * d / 1e9 }')
    say "  $BACKEND decode reads its weights at $WGBS GB/s ($(awk -v b="$WB" 'BEGIN { printf "%.1f", b / 1048576 }') MiB a token)"
fi
say "  q4 matvec $MV GB/s (cpu backend, $LEVEL) of $BW GB/s measured read bandwidth: ratio $RATIO"
[ -n "$WSPEED" ] && say "  the $BACKEND worker's own q4 matvec: $WSPEED G weights/s (1024x1024, cache-resident)"
MSRC="bench_cpu: cpu backend (level ${LEVEL:-?}, ${THREADS:-?} threads), q4 matvec of qwen2.5-7b gate/up 18944x3584, copies cycled through 384 MB so the weights come from memory"
[ "$BACKEND" = cpu ] || MSRC="$MSRC; there is no $BACKEND matvec bench yet, so this is the CPU's figure, not the $BACKEND backend's (see decode tok/s and the worker's own figure for $BACKEND)"
{ printf '{"model": %s, "method": %s, "prefill_tokens": %s, "decode_tokens": %s, "prefill_tok_s": %s, "decode_tok_s": %s, ' \
      "$(jstr "$PNAME")" "$(jstr "strata-master --tokens on $BACKEND, best of 2 runs, $PN-token prompt then $DN greedy tokens")" \
      $PN $DN "$PRE" "$DEC"
  printf '"matvec_gb_s": %s, "matvec_backend": "cpu", "matvec_source": %s, ' "$MV" "$(jstr "$MSRC")"
  printf '"memory_gb_s": %s, "memory_source": %s, "matvec_bandwidth_ratio": %s' "$BW" \
      "$(jstr "bench_cpu read bandwidth, the best of 1 and ${THREADS:-?} threads (CPU cores reading; on unified memory the GPU may reach more)")" "$RATIO"
  [ -n "$WGBS" ] && printf ', "decode_weight_bytes": %s, "decode_weight_gb_s": %s' "$WB" "$WGBS"
  [ -n "$WSPEED" ] && printf ', "worker_matvec_gweights_s": %s, "worker_matvec_source": %s' "$WSPEED" \
      "$(jstr "strata-worker's start-up measurement on $BACKEND: 1024x1024 q4 matvec, small enough to stay in cache")"
  printf '}\n'; } > "$WORK/fig-performance.json"
gate_verdict performance "$WORK/fig-performance.json"

# ---- the report ----
OVERALL=PASS
for v in $VERDICTS; do [ "${v#*=}" = PASS ] || OVERALL=FAIL; done
R="$OUT/report.json"
{ printf '{\n  "schema": "strata-validate/1",\n  "created": %s,\n' "$(jstr "$CREATED")"
  printf '  "machine": {"model": %s, "chip": %s, "os": %s, "memory_bytes": %s, "cores": %s' \
      "$(jstr "$M_MODEL")" "$(jstr "$M_CHIP")" "$(jstr "$M_OS")" "$M_MEM" "$NCPU"
  [ -n "$M_GPU" ] && printf ', "gpu": %s' "$(jstr "$M_GPU")"
  printf '},\n  "commit": %s,\n  "backend": %s,\n  "reference_backend": %s,\n  "mode": %s,\n  "gates": [\n' \
      "$(jstr "$COMMIT")" "$(jstr "$BACKEND")" "$(jstr "$REF")" "$(jstr "$MODE")"
  sep=""
  for v in $VERDICTS; do
      printf '%s    {"name": "%s", "verdict": "%s", "figures": ' "$sep" "${v%%=*}" "${v#*=}"
      tr -d '\n' < "$WORK/fig-${v%%=*}.json"
      printf '}'; sep=",
"
  done
  printf '\n  ],\n  "verdict": "%s"\n}\n' "$OVERALL"; } > "$R"
"$CHECK" "$R" --write-markdown "$OUT/summary.md" > /dev/null 2>> "$LOG/check.log"
# one file to send back: the report, its summary and the logs (not the generated models)
TARBALL="$OUT.tar.gz"
tar -czf "$TARBALL" --exclude work -C "$(dirname "$OUT")" "$(basename "$OUT")" 2>> "$LOG/check.log" || TARBALL=""
say ""
say "overall: $OVERALL ($SECONDS s)"
say "report: $R"
say "summary: $OUT/summary.md"
[ -n "$TARBALL" ] && say "to send back: $TARBALL (report, summary and logs); check it with: scripts/check-report '$R' --markdown '$OUT/summary.md'"
"$CHECK" "$R" --markdown "$OUT/summary.md" || exit 1
[ "$OVERALL" = PASS ]
