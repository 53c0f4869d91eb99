#!/usr/bin/env bash
# The test command: installs what is missing, builds (Release, -Werror), runs every test with ctest.
# STRATA_SANITIZE=1 builds into build-asan with ASan+UBSan instead.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh --test
if [ "${STRATA_SANITIZE:-0}" = 1 ]; then
  dir=build-asan; flags=(-DCMAKE_BUILD_TYPE=Debug -DSTRATA_SANITIZE=ON)
else
  dir=build; flags=(-DCMAKE_BUILD_TYPE=Release)
fi
jobs=$(nproc 2>/dev/null || sysctl -n hw.ncpu)
cmake -S . -B "$dir" "${flags[@]}" >/dev/null
cmake --build "$dir" -j "$jobs"
cd "$dir"
ctest --output-on-failure -j "$jobs" ${CTEST_ARGS:-}
