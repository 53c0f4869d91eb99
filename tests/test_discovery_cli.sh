#!/bin/sh
# The master's discovery options with no mDNS daemon (no root, no network needed): what a person
# sees on a machine without avahi-daemon, what --local and --discover-seconds 0 do, --dry-run,
# and the option errors. The multi-host path is tests/test_discovery_netns.sh.
#   usage: test_discovery_cli.sh MASTER WORKER GEN WORKDIR
MASTER=$1 WORKER=$2 GEN=$3 WORK=$4
[ -n "$WORK" ] || { echo "usage: $0 MASTER WORKER GEN WORKDIR"; exit 2; }
rm -rf "$WORK" && mkdir -p "$WORK" || exit 2
cd "$WORK" || exit 2
PASS=0 FAIL=0
ok() { PASS=$((PASS + 1)); echo "ok   $1"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL $1"; for f in out err; do [ -s "$f" ] && { echo "  $f:"; sed 's/^/    /' "$f"; }; done; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }
T="timeout 60"
# no system bus at this address: libavahi-client (and Avahi's dns_sd library over it) find no daemon
NOBUS="unix:path=$WORK/no-such-bus"
lines() { grep -c '' "$1"; }

"$GEN" --out m --shape tiny-qwen --layers 3 --seed 5 >/dev/null || { echo "strata-gen failed"; exit 1; }
$T "$MASTER" --local --model m --tokens 3,1,4,1,5 -n 8 > single.out 2> err
check "--local: 8 ids, nothing on stderr about discovery" "[ \$(tr ',' '\n' < single.out | wc -l) -eq 8 ] && ! grep -qi 'discovery' err"
$T "$MASTER" --discover-seconds 0 --model m --tokens 3,1,4,1,5 -n 8 > out 2> err
check "--discover-seconds 0: the same as --local" "cmp -s single.out out && ! grep -qi 'discovery' err"

for impl in avahi dnssd; do
    DBUS_SYSTEM_BUS_ADDRESS=$NOBUS $T "$MASTER" --model m --tokens 3,1,4,1,5 -n 8 --discovery $impl > out 2> err
    rc=$?
    # stderr also carries the run's prefill/decode figures; discovery says its piece in one line
    check "$impl, no daemon: exit 0, one line on stderr that names the missing daemon, --topology and --local" \
        "[ $rc -eq 0 ] && [ \$(grep -c 'discovery' err) -eq 1 ] && grep 'discovery' err | grep 'no .*daemon' |
         grep -- '--topology' | grep -q -- '--local'"
    check "$impl, no daemon: the whole model runs here, same ids as --local" "cmp -s single.out out"
    DBUS_SYSTEM_BUS_ADDRESS=$NOBUS $T "$MASTER" --model m --tokens 1 -n 1 --discovery $impl --min-workers 1 > out 2> err
    rc=$?
    check "$impl, no daemon, --min-workers 1: fails, one line suggesting --topology" \
        "[ $rc -ne 0 ] && [ $rc -lt 124 ] && [ \$(lines err) -eq 1 ] && grep -q 'daemon' err && grep -q -- '--topology' err && [ ! -s out ]"
    DBUS_SYSTEM_BUS_ADDRESS=$NOBUS $T "$MASTER" --model m --tokens 1 --discovery $impl --dry-run > out 2> err
    check "$impl, no daemon, --dry-run: says why and prints the local plan" \
        "grep -q 'daemon' out && grep -q 'plan: the whole model on the master' out"
done

# the default implementation (no --discovery) behaves the same
DBUS_SYSTEM_BUS_ADDRESS=$NOBUS $T "$MASTER" --model m --tokens 3,1,4,1,5 -n 8 > out 2> err
check "default implementation, no daemon: one line, same ids" \
    "[ \$(grep -c 'discovery' err) -eq 1 ] && grep 'discovery' err | grep -q -- '--topology' && cmp -s single.out out"

# --dry-run with a topology file: the plan, nothing run
cat > topo.yml <<EOF
w1:
  host: '127.0.0.1:1'
  layers:
    - 'model.layers.1-2'
EOF
$T "$MASTER" --model m --tokens 1 --topology topo.yml --dry-run --insecure > out 2> err
rc=$?
check "--dry-run --topology: prints the plan without connecting" \
    "[ $rc -eq 0 ] && grep -q 'master  embed + layers 0\$' out && grep -q 'worker w1  layers 1-2 (127.0.0.1:1)' out"
$T "$MASTER" --local --model m --tokens 1 --dry-run > out 2> err
check "--dry-run --local: the whole model on the master" "grep -q 'plan: the whole model on the master' out"

# option errors: one line, non-zero
expect_err() { # name needle args...
    name=$1 needle=$2; shift 2
    $T "$MASTER" "$@" > out 2> err
    rc=$?
    check "$name" "[ $rc -ne 0 ] && [ $rc -lt 124 ] && [ \$(lines err) -eq 1 ] && grep -qF -- \"$needle\" err"
}
expect_err "--discover-seconds x" "expected 0 (no discovery) or seconds" --model m --tokens 1 --discover-seconds x
expect_err "--discover-seconds 0.01" "expected 0 (no discovery) or seconds" --model m --tokens 1 --discover-seconds 0.01
expect_err "--discovery bonjour" "expected avahi or dnssd" --model m --tokens 1 --discovery bonjour
expect_err "--min-workers 0" "--min-workers" --model m --tokens 1 --min-workers 0
expect_err "--local --min-workers 2" "excludes --min-workers" --local --model m --tokens 1 --min-workers 2
expect_err "--local --topology" "excludes --topology" --local --model m --tokens 1 --topology topo.yml

# the worker: without a daemon it says so once and serves anyway (a topology file can name it)
DBUS_SYSTEM_BUS_ADDRESS=$NOBUS $T "$WORKER" --listen 'tcp://127.0.0.1:*' --name solo --insecure --threads 1 \
    --cache-dir "$WORK/cache" > /dev/null 2> werr &
WPID=$!
n=0; while [ $n -lt 100 ] && ! grep -q 'advertised' werr; do sleep 0.1; n=$((n + 1)); done
sleep 0.3
alive=0; kill -0 $WPID 2>/dev/null && alive=1
kill $WPID 2>/dev/null; wait $WPID 2>/dev/null
cp werr err
check "worker, no daemon: one 'not advertised' line naming the daemon, and it keeps serving" \
    "[ $alive = 1 ] && [ \$(grep -c 'advertised' err) -eq 1 ] && grep 'not advertised' err | grep -q 'daemon'"
wexpect() { # name needle args...
    name=$1 needle=$2; shift 2
    $T "$WORKER" "$@" > out 2> err
    rc=$?
    check "$name" "[ $rc -eq 2 ] && grep -qF -- \"$needle\" err"
}
wexpect "worker --memory-mb 5x" "--memory-mb: expected an integer" --listen tcp://127.0.0.1:1 --insecure --memory-mb 5x
wexpect "worker --memory-mb 0" "--memory-mb: expected an integer" --listen tcp://127.0.0.1:1 --insecure --memory-mb 0
wexpect "worker --discovery bonjour" "expected avahi or dnssd" --listen tcp://127.0.0.1:1 --insecure --discovery bonjour

echo "$PASS passed, $FAIL failed"
[ "$FAIL" -eq 0 ]
