#!/usr/bin/env bash
# scripts/validate-mac.sh --backend cpu --quick, end to end, against an existing build: every gate
# must PASS, and strata-check-report must accept the report and its Markdown summary.
#   test_validate.sh SOURCE_DIR BUILD_DIR TMP
set -u
SRC=$1 BUILD=$2 TMP=$3
passed=0 failed=0
ok() { echo "ok   $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1"; failed=$((failed + 1)); }
rm -rf "$TMP" && mkdir -p "$TMP" || exit 1

bash "$SRC/scripts/validate-mac.sh" --backend cpu --quick --no-build --no-install --build-dir "$BUILD" --out "$TMP/out" > "$TMP/validate.log" 2>&1
rc=$?
cat "$TMP/validate.log"
R="$TMP/out/report.json" S="$TMP/out/summary.md"
if [ $rc = 0 ]; then ok "validate-mac.sh --backend cpu --quick exits 0"
else
    bad "validate-mac.sh --backend cpu --quick exits $rc"
    for f in "$TMP"/out/logs/*.log; do echo "---- $f"; tail -5 "$f"; done
fi
[ -s "$R" ] && ok "report.json written" || bad "no report.json"
[ -s "$S" ] && ok "summary.md written" || bad "no summary.md"
if "$BUILD/strata-check-report" "$R" --markdown "$S"; then ok "strata-check-report accepts the report and its summary"
else bad "strata-check-report rejects the report"; fi
for g in kernels generation cluster performance; do
    if grep -q "{\"name\": \"$g\", \"verdict\": \"PASS\"" "$R" 2>/dev/null; then ok "gate $g: PASS"; else bad "gate $g is not PASS"; fi
done
grep -q '"verdict": "PASS"$' "$R" 2>/dev/null && ok "overall PASS" || bad "overall verdict is not PASS"
for k in '"schema": "strata-validate/1"' '"machine": {"model": ' '"memory_bytes": ' '"commit": ' '"backend": "cpu"'; do
    grep -qF "$k" "$R" 2>/dev/null && ok "report has $k" || bad "report lacks $k"
done
# the script leaves no process behind (workers are killed on exit)
left=$(grep -l "$TMP/out/wor[k]" /proc/[0-9]*/cmdline 2>/dev/null)
if [ -n "$left" ]; then bad "processes of the run are still alive: $left"; else ok "no process left behind"; fi
echo "$passed passed, $failed failed"
[ $failed = 0 ]
