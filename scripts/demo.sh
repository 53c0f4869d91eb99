#!/usr/bin/env bash
# The demo: installs what is missing, builds, generates a qwen2.5-0.5b-shaped 4-bit model (random
# weights, the real Qwen3 tokenizer attached), starts three workers on loopback as topology.yml
# says, and has the master generate through them: each worker receives a bundle of only its
# layers (cached for the next run), activations go master -> alpha -> beta -> gamma -> master.
# The weights are random, so the text is nonsense; the tokens equal a single-node run's.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc 2>/dev/null || sysctl -n hw.ncpu)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$jobs" --target strata-gen strata-master strata-worker

model=build/demo-qwen2.5-0.5b
if [ ! -f "$model/tokenizer.json" ]; then
  tests/fetch_tokenizers.sh build/tokenizers >/dev/null
  build/strata-gen --shape qwen2.5-0.5b --out "$model" --seed 7
  cp build/tokenizers/qwen3/tokenizer.json build/tokenizers/qwen3/tokenizer_config.json "$model/"
fi

# the cluster key (CurveZMQ): made once, given to every worker and the master
key=build/demo-cluster.key
[ -f "$key" ] || build/strata-master keygen --out "$key"

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT INT TERM
for w in alpha:5601 beta:5602 gamma:5603; do
  name=${w%%:*} port=${w##*:}
  build/strata-worker --listen "tcp://127.0.0.1:$port" --name "$name" --cache-dir "build/demo-cache/$name" \
    --threads 1 --key "$key" >"build/demo-$name.log" 2>&1 &
  pids+=($!)
done
echo "demo: workers alpha, beta, gamma on 127.0.0.1:5601-5603 (logs in build/demo-*.log)"
build/strata-master --model "$model" --topology topology.yml --key "$key" -p "${DEMO_PROMPT:-Explain pipeline parallelism in one paragraph.}" \
  -n "${DEMO_TOKENS:-64}" -v
