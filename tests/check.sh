# The shell twin of tests/check.h, sourced by the integration tests that start processes:
# counters, one line a check ("ok   ..." / "FAIL ..."), and the processes listed in $PIDS
# killed on exit (TERM, then KILL). Each script prints its own final "N passed, M failed".
PASS=0 FAIL=0 PIDS=""
cleanup() { for p in $PIDS; do kill "$p" 2>/dev/null; done; sleep 0.3; for p in $PIDS; do kill -9 "$p" 2>/dev/null; done; }
trap cleanup EXIT INT TERM
ok() { PASS=$((PASS + 1)); echo "ok   $1"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL $1"; }
# check DESCRIPTION CONDITION: CONDITION is a shell expression, evaluated
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }
