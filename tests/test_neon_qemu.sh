#!/usr/bin/env bash
# The NEON levels on an x86-64 machine: builds the engine and test_backend_ops for aarch64 with
# Debian's cross compiler (STRATA_ENGINE_ONLY, tests/aarch64-linux-gnu.cmake) and runs the cpu
# backend's parity test under qemu-aarch64 at each aarch64 level: neon, neon-dot (qemu's CPU has
# the dot product) and scalar. It checks the kernels' arithmetic, not their speed (an emulator's
# timings mean nothing). Exit 77 (skipped) where the cross tools are missing
# (scripts/deps.sh --test installs them on Debian).
#   test_neon_qemu.sh SOURCE_DIR BUILD_DIR
set -euo pipefail
src=$1 out=$2
for tool in aarch64-linux-gnu-gcc aarch64-linux-gnu-g++ qemu-aarch64; do
  command -v "$tool" >/dev/null || { echo "skipped: $tool not installed"; exit 77; }
done
[ -e /usr/lib/aarch64-linux-gnu/libjansson.a ] || { echo "skipped: libjansson-dev:arm64 not installed"; exit 77; }
cmake -S "$src" -B "$out" -DCMAKE_TOOLCHAIN_FILE="$src/tests/aarch64-linux-gnu.cmake" -DCMAKE_BUILD_TYPE=Release \
  -DSTRATA_ENGINE_ONLY=ON -Dpkgcfg_lib_JANSSON_jansson=/usr/lib/aarch64-linux-gnu/libjansson.a >/dev/null
cmake --build "$out" --target test_backend_ops -j "$(nproc)" >/dev/null
fail=0
for level in neon neon-dot scalar; do
  echo "== STRATA_CPU_LEVEL=$level (aarch64, qemu)"
  log="$out/backend_ops_$level.log"
  if STRATA_CPU_LEVEL=$level qemu-aarch64 "$out/tests/test_backend_ops" cpu --threads 2 >"$log" 2>&1; then
    tail -n 1 "$log"
  else
    cat "$log"
    fail=1
  fi
done
exit $fail
