#!/usr/bin/env bash
# Builds the libFuzzer targets with clang (-fsanitize=fuzzer,address,undefined) and runs each one
# for a while on a scratch copy of its seed corpus (tests/fuzz/<target>/; the tree is never
# written). A crash stops the run, its input is kept in OUT/crashes/, and the script fails: copy
# the input into tests/fuzz/<target>/ so that the replay unit test (fuzz_replay) keeps it fixed.
#
# usage: tests/fuzz/fuzz.sh OUT_DIR [SECONDS_PER_TARGET (default 20)] [-runs=N] [target...]
# Exits 77 (ctest: skipped) when clang with libFuzzer is not installed (Debian: clang,
# libclang-rt-14-dev). FUZZ_TIMEOUT: seconds one input may take before libFuzzer calls it a hang
# (default 10; raise it on a loaded machine, where ASan's allocator alone can stall that long).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${1:?usage: fuzz.sh OUT_DIR [SECONDS] [-runs=N] [target...]}
SECS=${2:-20}
shift $(( $# >= 2 ? 2 : 1 ))
RUNS=""
if [ $# -gt 0 ] && [ "${1#-runs=}" != "$1" ]; then RUNS=$1; shift; fi
TARGETS=${*:-safetensors wire topology tokenizer}
CC=${FUZZ_CC:-clang}
mkdir -p "$OUT/proto" "$OUT/crashes" || exit 2

probe="$OUT/probe.c"
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' > "$probe"
if ! command -v "$CC" >/dev/null || ! "$CC" -fsanitize=fuzzer,address,undefined "$probe" -o "$OUT/probe" 2>/dev/null; then
    echo "fuzz: skipped: $CC with libFuzzer not available (Debian: apt-get install clang libclang-rt-14-dev)"
    exit 77
fi
protoc-c --c_out="$OUT/proto" -I"$ROOT/proto" "$ROOT/proto/strata.proto" || exit 2

FLAGS=(-std=c11 -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -g -O1 -fno-omit-frame-pointer
       -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -I"$ROOT" -I"$OUT")
build() { # target, sources..., then -- pkg-config modules
    local t=$1; shift
    local srcs=() mods=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        case $1 in /*) srcs+=("$1") ;; *) srcs+=("$ROOT/$1") ;; esac
        shift
    done
    [ $# -gt 0 ] && shift
    mods=("$@")
    # shellcheck disable=SC2046
    "$CC" "${FLAGS[@]}" $(pkg-config --cflags "${mods[@]}") "$ROOT/tests/fuzz/fuzz_$t.c" "${srcs[@]}" \
        -o "$OUT/fuzz_$t" $(pkg-config --libs "${mods[@]}") -lm -lpthread
}
fail=0 n_ok=0 n_bad=0
for t in $TARGETS; do
    case $t in
    safetensors) build safetensors common/safetensors.c common/err.c kernels/backend.c kernels/cpu/cpu_ref.c -- jansson ;;
    wire) build wire common/wire.c common/err.c "$(cd "$OUT" && pwd)/proto/strata.pb-c.c" -- libprotobuf-c libzmq ;;
    topology) build topology common/topology.c master/planner.c common/err.c -- yaml-0.1 ;;
    tokenizer) build tokenizer common/tokenizer.c common/tokenizer_load.c common/err.c -- jansson libpcre2-8 libutf8proc ;;
    *) echo "fuzz: unknown target $t"; exit 2 ;;
    esac || { echo "fuzz: building $t failed"; fail=1; n_bad=$((n_bad + 1)); continue; }
    rm -rf "$OUT/corpus_$t" && mkdir -p "$OUT/corpus_$t" && cp "$ROOT/tests/fuzz/$t"/* "$OUT/corpus_$t/" 2>/dev/null
    dict=()
    [ -f "$ROOT/tests/fuzz/$t.dict" ] && dict=(-dict="$ROOT/tests/fuzz/$t.dict")
    limit=(-max_total_time="$SECS")
    [ -n "$RUNS" ] && limit=("$RUNS")
    start=$(date +%s.%N)
    "$OUT/fuzz_$t" "${limit[@]}" "${dict[@]}" -max_len=65536 -rss_limit_mb=2048 -timeout="${FUZZ_TIMEOUT:-10}" -print_final_stats=1 \
        -artifact_prefix="$OUT/crashes/$t-" "$OUT/corpus_$t" > "$OUT/$t.log" 2>&1
    rc=$?
    end=$(date +%s.%N)
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/$t.log" | tail -1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$OUT/$t.log" | tail -1)
    printf "fuzz %-12s %10s inputs in %6.1f s (%s exec/s) %s\n" "$t" "${runs:-?}" "$(awk -v a="$start" -v b="$end" 'BEGIN { print b - a }')" "${eps:-?}" \
        "$([ $rc -eq 0 ] && echo ok || echo "CRASH (rc $rc): see $OUT/$t.log and $OUT/crashes/")"
    if [ $rc -eq 0 ]; then n_ok=$((n_ok + 1)); else n_bad=$((n_bad + 1)); fail=1; grep -m5 -E 'ERROR|runtime error|SUMMARY' "$OUT/$t.log"; fi
done
echo "$n_ok passed, $n_bad failed"
exit $fail
