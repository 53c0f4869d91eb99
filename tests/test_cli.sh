#!/usr/bin/env bash
# The command-line programs on bad input: a clear one-line error and a non-zero exit, never a crash.
# usage: test_cli.sh BUILD_DIR TMP_DIR
set -u
bin=$1; tmp=$2
rm -rf "$tmp"; mkdir -p "$tmp"
passed=0; failed=0

# expect NAME EXPECTED_SUBSTRING COMMAND...: fails unless the command exits non-zero (not by a
# signal) and its stderr is one line containing the substring
expect() {
  local name=$1 needle=$2; shift 2
  "$@" >"$tmp/out" 2>"$tmp/err"; local rc=$?
  local lines; lines=$(grep -c '' "$tmp/err")
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && [ "$lines" -eq 1 ] && grep -qF -- "$needle" "$tmp/err"; then
    passed=$((passed + 1))
  else
    failed=$((failed + 1)); echo "FAIL $name: rc=$rc, stderr:"; cat "$tmp/err"
  fi
}

"$bin/strata-gen" --out "$tmp/m" --shape tiny-qwen --seed 3 >/dev/null || { echo "FAIL: generator"; exit 1; }
# --local: these runs are single-node on purpose; without it the master first browses for workers
# over mDNS (tests/test_discovery_cli.sh checks that path)

expect "missing model dir" "$tmp/nope/config.json" "$bin/strata-master" --local --model "$tmp/nope" --tokens 1,2
expect "bad token list" "--tokens" "$bin/strata-master" --local --model "$tmp/m" --tokens 1,x
expect "token outside vocab" "outside the vocabulary" "$bin/strata-master" --local --model "$tmp/m" --tokens 1,99999
expect "metal on linux" "'metal' is not available" "$bin/strata-master" --local --model "$tmp/m" --tokens 1 --backend metal
expect "unknown backend" "unknown backend 'tpu'" "$bin/strata-master" --local --model "$tmp/m" --tokens 1 --backend tpu
expect "unknown flag" "unknown option '--frobnicate'" "$bin/strata-master" --frobnicate 1
expect "generator unknown shape" "unknown shape 'gpt-9'" "$bin/strata-gen" --out "$tmp/x" --shape gpt-9
expect "generator bad bits" "--bits" "$bin/strata-gen" --out "$tmp/x" --bits 99

# truncated weights: cut the file in half
cp -r "$tmp/m" "$tmp/cut"; f="$tmp/cut/model.safetensors"
truncate -s $(( $(stat -c %s "$f") / 2 )) "$f"
expect "truncated safetensors" "out of range" "$bin/strata-master" --local --model "$tmp/cut" --tokens 1,2

# the same ids from every cpu backend on a good model
a=$("$bin/strata-master" --local --model "$tmp/m" --tokens 5,6,7,8 -n 12 --backend cpu-ref 2>/dev/null)
b=$("$bin/strata-master" --local --model "$tmp/m" --tokens 5,6,7,8 -n 12 --backend cpu 2>/dev/null)
if [ -n "$a" ] && [ "$a" = "$b" ] && [ "$(echo "$a" | tr ',' '\n' | wc -l)" -eq 12 ]; then
  passed=$((passed + 1))
else
  failed=$((failed + 1)); echo "FAIL cpu vs cpu-ref ids: '$a' vs '$b'"
fi

echo "$passed passed, $failed failed"
[ $failed -eq 0 ]
