#!/usr/bin/env bash
# The demo: installs what is missing, builds, generates a qwen2.5-0.5b-shaped 4-bit model and
# runs it on this machine, printing the generated ids and prefill/decode tok/s.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
jobs=$(nproc 2>/dev/null || sysctl -n hw.ncpu)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build -j "$jobs" --target strata-gen strata-master
model=${STRATA_DEMO_MODEL:-build/demo-qwen2.5-0.5b}
[ -f "$model/config.json" ] || build/strata-gen --shape qwen2.5-0.5b --out "$model" --seed 7
build/strata-master --model "$model" --tokens 9707,11,1879,0,358,1079,264,4128,1614,13 -n 128
