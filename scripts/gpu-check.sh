#!/bin/bash
# The CUDA backend on a GPU machine: parity tests, matvec bandwidth, whole-model tok/s, greedy
# cpu-vs-cuda agreement and (where strata-worker exists) a cpu+cuda cluster on loopback.
#
#   scripts/gpu-check.sh run [BIN_DIR]     on the GPU machine; logs and JSON into $OUT
#   scripts/gpu-check.sh pack BUILD DEST   here: copy the built binaries and the shared
#                                          libraries they need (not glibc's) into DEST/bin, DEST/lib,
#                                          for a GPU machine that lacks cmake or the -dev packages
#
# BIN_DIR holds test_cuda_ops, bench_cuda, strata-gen, strata-master (strata-worker optional).
# Without it: a packed dir at build-cuda-dev/bin if present, else a fresh cmake build.
# Files written under $OUT (default ./gpu-check-out): summary.md, bench.json, bench.txt,
# tests.log, models.log, cluster.log, sanitizer.log. Models are generated under $WORK (/tmp).
# Knobs (environment): PERF_SHAPES (models timed whole), DECODE_VARIANTS (space-separated
# settings the decode of each model is also timed under, e.g. "STRATA_CUDA_FUSE=0
# STRATA_CUDA_PDL=0,STRATA_CUDA_MATVEC=regs": commas join the variables of one variant), QUICK
# (fewer greedy checks), DECODE_N (tokens generated in the decode timing, default 64),
# SKIP_CLUSTER, SKIP_SANITIZER, SKIP_BENCH.
set -u

pack() {
    local build=$1 dest=$2
    mkdir -p "$dest/bin" "$dest/lib"
    for exe in tests/test_cuda_ops tests/test_backend_ops bench_cuda strata-gen strata-master strata-worker; do
        [ -x "$build/$exe" ] && cp "$build/$exe" "$dest/bin/"
    done
    for exe in "$dest"/bin/*; do
        ldd "$exe" | awk '/=> \// {print $3}'
    done | sort -u | grep -v -E '/(libc|libm|libpthread|libdl|librt|libresolv|libstdc\+\+|libgcc_s|ld-linux[^/]*)\.so' |
        while read -r lib; do cp -L "$lib" "$dest/lib/"; done
    du -sh "$dest"
}

if [ "${1:-}" = pack ]; then
    pack "$2" "$3"
    exit 0
fi
[ "${1:-}" = run ] || { echo "usage: $0 run [BIN_DIR] | pack BUILD DEST" >&2; exit 2; }

OUT=${OUT:-$PWD/gpu-check-out}
WORK=${WORK:-/tmp/strata-gpu}
mkdir -p "$OUT" "$WORK"
SUM=$OUT/summary.md
: >"$SUM"
note() { echo "$*" | tee -a "$SUM"; }

BIN=${2:-}
if [ -z "$BIN" ]; then
    if [ -x build-cuda-dev/bin/test_cuda_ops ]; then
        BIN=build-cuda-dev/bin
    else
        cmake -S . -B build-gpu -DCMAKE_BUILD_TYPE=Release -DSTRATA_CUDA=ON >"$OUT/build.log" 2>&1 &&
            cmake --build build-gpu -j"$(nproc)" >>"$OUT/build.log" 2>&1 || { note "build failed (build.log)"; exit 1; }
        pack build-gpu build-gpu/packed >/dev/null
        BIN=build-gpu/packed/bin
    fi
fi
BIN=$(cd "$BIN" && pwd)
export LD_LIBRARY_PATH="$BIN/../lib:${LD_LIBRARY_PATH:-}"
export CUDA_MODULE_LOADING=EAGER # module loading stays out of the first forward's time

GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
note "# CUDA backend check, $(date -u '+%Y-%m-%d %H:%M UTC')"
note ""
note "GPU: ${GPU:-unknown}; host: $(nproc) cores; cmake: $(command -v cmake >/dev/null && cmake --version | head -1 || echo none)"
note ""

# ---- 1. parity with the cpu reference ----
{
    echo "== test_cuda_ops"
    timeout 300 "$BIN/test_cuda_ops" 2>&1
    echo "rc=$?"
    if [ -x "$BIN/test_backend_ops" ]; then
        echo "== test_backend_ops cuda"
        timeout 300 "$BIN/test_backend_ops" cuda 2>&1
        echo "rc=$?"
    fi
} >"$OUT/tests.log" 2>&1
# the warp matvec is the default; should its parity fail, time round 1's register one instead
if ! grep -q "^0 failed\|[0-9]* passed, 0 failed" <(sed -n '/== test_cuda_ops/,/rc=/p' "$OUT/tests.log"); then
    export STRATA_CUDA_MATVEC=regs
fi
note "## Parity with cpu-ref"
note '```'
grep -E "^(== |rc=|[0-9]+ passed)|FAIL" "$OUT/tests.log" | head -40 | tee -a "$SUM"
note '```'

# ---- 2. matvec bandwidth against the copy bandwidth ----
if [ -z "${SKIP_BENCH:-}" ]; then
    timeout 300 "$BIN/bench_cuda" --sweep --json "$OUT/bench.json" >"$OUT/bench.txt" 2>&1
    echo "rc=$?" >>"$OUT/bench.txt"
else
    timeout 60 "$BIN/bench_cuda" --iters 20 --json "$OUT/bench.json" >"$OUT/bench.txt" 2>&1
fi
note ""
note "## q4 matvec (group 64, bf16 scales) vs device-to-device copy"
note '```'
grep -E "GPU:|copy:|default|layer|rc=" "$OUT/bench.txt" | tee -a "$SUM"
[ -n "${STRATA_CUDA_MATVEC:-}" ] && note "(STRATA_CUDA_MATVEC=$STRATA_CUDA_MATVEC: the warp matvec failed parity)"
note '```'
BW=$(python3 -c "import json;print(json.load(open('$OUT/bench.json'))['d2d_copy_GBps'])" 2>/dev/null || echo 0)

# ---- 3. whole models: decode and prefill tok/s, greedy agreement ----
: >"$OUT/models.log"
gen() { # DIR SHAPE [extra args]
    local dir=$1 shape=$2
    shift 2
    [ -f "$dir/config.json" ] || "$BIN/strata-gen" --out "$dir" --shape "$shape" "$@" >>"$OUT/models.log" 2>&1
}
ids() { # N START STEP -> comma-separated ids
    python3 -c "print(','.join(str(($2 + i * $3) % 370 + 5) for i in range($1)))"
}
# single-node runs: no mDNS browsing where the master has discovery
LOCAL=()
"$BIN/strata-master" --help 2>&1 | grep -q -- --local && LOCAL=(--local)
# run MODEL BACKEND TOKENS N -> sets IDS and the stderr lines in LAST_ERR
master() {
    local m=$1 be=$2 toks=$3 n=$4
    shift 4
    echo "== strata-master --model $m --backend $be -n $n ($(echo "$toks" | tr ',' '\n' | wc -l) prompt tokens) $*" >>"$OUT/models.log"
    IDS=$(timeout 420 "$BIN/strata-master" --model "$m" --backend "$be" --tokens "$toks" -n "$n" "${LOCAL[@]}" "$@" 2>"$WORK/err.txt")
    local rc=$?
    LAST_ERR=$(cat "$WORK/err.txt")
    { echo "ids: $IDS"; echo "$LAST_ERR"; echo "rc=$rc"; } >>"$OUT/models.log"
}
# master with extra environment settings from STRATA_ENV ("A=1 B=2")
master_v() {
    local m=$1 be=$2 toks=$3 n=$4
    shift 4
    echo "== [$STRATA_ENV] strata-master --model $m --backend $be -n $n $*" >>"$OUT/models.log"
    # shellcheck disable=SC2086
    IDS=$(env $STRATA_ENV timeout 420 "$BIN/strata-master" --model "$m" --backend "$be" --tokens "$toks" -n "$n" "${LOCAL[@]}" "$@" 2>"$WORK/err.txt")
    local rc=$?
    LAST_ERR=$(cat "$WORK/err.txt")
    { echo "ids: $IDS"; echo "$LAST_ERR"; echo "rc=$rc"; } >>"$OUT/models.log"
}
toks_per_s() { echo "$LAST_ERR" | grep "^$1:" | sed -E 's/.*\(([0-9.]+) tok\/s\).*/\1/'; }

# weight bytes read per decoded token: every tensor but the embedding (a row lookup), which
# counts as the head when tied
weight_bytes() {
    python3 - "$1" <<'EOF'
import json, struct, sys, glob, os
d = sys.argv[1]
total, emb, head = 0, 0, 0
for f in glob.glob(os.path.join(d, "*.safetensors")):
    with open(f, "rb") as fh:
        n = struct.unpack("<Q", fh.read(8))[0]
        hdr = json.loads(fh.read(n))
    for k, v in hdr.items():
        if k == "__metadata__":
            continue
        b = v["data_offsets"][1] - v["data_offsets"][0]
        total += b
        if k.startswith("model.embed_tokens."):
            emb += b
        if k.startswith("lm_head."):
            head += b
print(total - emb + (emb if head == 0 else 0))
EOF
}

note ""
note "## Whole models (strata-master, synthetic MLX q4 checkpoints)"
note ""
DECODE_N=${DECODE_N:-64}
note "| model | backend | prefill tok/s (256-token prompt) | decode tok/s ($DECODE_N tokens) | weight bytes/token | bandwidth limit tok/s | decode % of limit |"
note "|---|---|---|---|---|---|---|"
for shape in ${PERF_SHAPES:-qwen2.5-0.5b qwen2.5-7b}; do
    gen "$WORK/$shape" "$shape"
    [ -f "$WORK/$shape/config.json" ] || { note "| $shape | - | generation failed | | | | |"; continue; }
    wb=$(weight_bytes "$WORK/$shape")
    master "$WORK/$shape" cuda "$(ids 256 1 7)" 1
    pre=$(toks_per_s prefill)
    lim=$(python3 -c "print(f'{$BW*1e9/$wb:.0f}')" 2>/dev/null)
    for variant in default ${DECODE_VARIANTS:-}; do
        envs=()
        [ "$variant" = default ] || IFS=, read -r -a envs <<<"$variant"
        STRATA_ENV="${envs[*]}" master_v "$WORK/$shape" cuda "$(ids 8 5 11)" "$DECODE_N"
        dec=$(toks_per_s decode)
        pct=$(python3 -c "print(f'{100*float('$dec')/float('$lim'):.0f}%')" 2>/dev/null)
        note "| $shape | cuda $([ "$variant" = default ] || echo "($variant)") | ${pre:-?} | ${dec:-?} | $(python3 -c "print(f'{$wb/1e9:.2f} GB')") | ${lim:-?} | ${pct:-?} |"
    done
done

note ""
note "## Greedy ids, --backend cpu vs --backend cuda (same model, same prompt)"
note ""
note "| model | prompt | generated | cpu ids = cuda ids |"
note "|---|---|---|---|"
greedy() { # DIR SHAPE N_PROMPT N_GEN [gen args]
    local dir=$1 shape=$2 np=$3 ng=$4
    shift 4
    gen "$dir" "$shape" "$@"
    local toks
    toks=$(ids "$np" 3 101)
    master "$dir" cpu "$toks" "$ng"
    local a=$IDS
    master "$dir" cuda "$toks" "$ng"
    local b=$IDS
    local same=no
    [ -n "$a" ] && [ "$a" = "$b" ] && same=yes
    note "| $shape $* | $np | $ng | $same |"
    [ $same = yes ] || { echo "cpu:  $a" >>"$SUM"; echo "cuda: $b" >>"$SUM"; }
}
greedy "$WORK/tiny-qwen" tiny-qwen 12 48
[ -n "${QUICK:-}" ] || {
greedy "$WORK/tiny-llama" tiny-llama 12 48
greedy "$WORK/tiny-qwen-q8-bf16" tiny-qwen 12 32 --bits 8 --dtype bf16
greedy "$WORK/llama-1b-4l" llama-3.2-1b 8 16 --layers 4
greedy "$WORK/qwen2.5-0.5b" qwen2.5-0.5b 8 8
}

# ---- 4. cluster: a cpu worker and a cuda worker on loopback ----
: >"$OUT/cluster.log"
note ""
note "## Cluster (cpu worker + cuda worker on loopback)"
if [ -z "${SKIP_CLUSTER:-}" ] && [ -x "$BIN/strata-worker" ] && "$BIN/strata-master" --help 2>&1 | grep -q -- --topology; then
    shape=${CLUSTER_SHAPE:-qwen2.5-0.5b}
    m=$WORK/$shape
    gen "$m" "$shape"
    nl=$(python3 -c "import json;print(json.load(open('$m/config.json'))['num_hidden_layers'])")
    half=$((nl / 2))
    mkdir -p "$WORK/cache-a" "$WORK/cache-b"
    # loopback only: no CurveZMQ keys where the binaries know --insecure
    sec_w=() sec_m=()
    "$BIN/strata-worker" --help 2>&1 | grep -q -- --insecure && sec_w=(--insecure)
    "$BIN/strata-master" --help 2>&1 | grep -q -- --insecure && sec_m=(--insecure)
    "$BIN/strata-worker" --listen tcp://127.0.0.1:5601 --name cpu-worker --backend cpu --cache-dir "$WORK/cache-a" "${sec_w[@]}" >>"$OUT/cluster.log" 2>&1 &
    pa=$!
    "$BIN/strata-worker" --listen tcp://127.0.0.1:5602 --name cuda-worker --backend "${CLUSTER_B_BACKEND:-cuda}" --cache-dir "$WORK/cache-b" "${sec_w[@]}" >>"$OUT/cluster.log" 2>&1 &
    pb=$!
    cat >"$WORK/topology.yml" <<EOF
cpu-worker:
  host: '127.0.0.1:5601'
  layers:
    - 'model.layers.0-$((half - 1))'
cuda-worker:
  host: '127.0.0.1:5602'
  layers:
    - 'model.layers.$half-$((nl - 1))'
EOF
    sleep 1
    toks=$(ids 8 3 101)
    master "$m" cpu "$toks" 8
    single=$IDS
    OUT_LOG=$OUT/cluster.log
    echo "== cluster run" >>"$OUT_LOG"
    cl=$(timeout 420 "$BIN/strata-master" --model "$m" --backend cpu --tokens "$toks" -n 8 --topology "$WORK/topology.yml" --strict-topology "${sec_m[@]}" 2>>"$OUT_LOG")
    echo "rc=$? ids: $cl (single-node cpu: $single)" >>"$OUT_LOG"
    kill "$pa" "$pb" 2>/dev/null
    wait "$pa" "$pb" 2>/dev/null
    same=no
    [ -n "$cl" ] && [ "$cl" = "$single" ] && same=yes
    note ""
    note "$shape, layers 0-$((half - 1)) on a cpu worker, $half-$((nl - 1)) on a ${CLUSTER_B_BACKEND:-cuda} worker, 8 prompt + 8 generated: cluster ids = single-node cpu ids: **$same**"
else
    note ""
    note "not run: no strata-worker with --topology support in this build"
fi

# ---- 5. memory checker over the parity test (catches out-of-bounds reads the values hide) ----
if [ -z "${SKIP_SANITIZER:-}" ] && command -v compute-sanitizer >/dev/null; then
    timeout 150 compute-sanitizer --tool memcheck --print-limit 20 "$BIN/test_cuda_ops" >"$OUT/sanitizer.log" 2>&1
    note ""
    note "compute-sanitizer memcheck over test_cuda_ops: $(grep -E 'ERROR SUMMARY' "$OUT/sanitizer.log" | tail -1)"
fi
cat "$SUM"
