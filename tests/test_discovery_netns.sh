#!/bin/sh
# Zero-config across hosts, on one machine: network namespaces joined by a bridge, each "host"
# with its own dbus-daemon and avahi-daemon; workers advertise themselves, the master browses,
# plans and must generate exactly the single-node run's tokens. Once with libavahi-client and
# once with the dns_sd API (Avahi's compatibility library).
#   usage: test_discovery_netns.sh MASTER WORKER GEN WORKDIR
#
# The layout (all inside namespaces this script creates; nothing is added to the caller's network):
#   <p>sw: bridge br0 ── veth ── <p>m  (10.77.0.1: master)
#                    ├── veth ── <p>a  (10.77.0.2: worker)
#                    └── veth ── <p>b  (10.77.0.3: worker)
# Each host's dbus-daemon listens on a socket in WORKDIR (clients find it through
# DBUS_SYSTEM_BUS_ADDRESS, which libdbus honours); each avahi-daemon runs in the mount namespace
# `ip netns exec` gives it, over a private tmpfs on /run, so its pid file and socket are its own.
# Needs root and `ip netns` (and dbus-daemon, avahi-daemon); otherwise exits 77 (skipped), saying
# why. Every process started here is killed and every namespace deleted on every exit path. The
# no-daemon path is tests/test_discovery_cli.sh.
MASTER=$1 WORKER=$2 GEN=$3 WORK=$4
[ -n "$WORK" ] || { echo "usage: $0 MASTER WORKER GEN WORKDIR"; exit 2; }
rm -rf "$WORK" && mkdir -p "$WORK" || exit 2
cd "$WORK" || exit 2
WORK=$(pwd)
PASS=0 FAIL=0 PIDS="" NETNS=""
P="sd$$"
T0=$(date +%s)
ok() { PASS=$((PASS + 1)); echo "ok   $1  [$(( $(date +%s) - T0 )) s]"; }
bad() { FAIL=$((FAIL + 1)); echo "FAIL $1  [$(( $(date +%s) - T0 )) s]"; }
check() { if eval "$2"; then ok "$1"; else bad "$1"; fi; }
finish() { echo "$PASS passed, $FAIL failed"; [ "$FAIL" -eq 0 ] && exit "${1:-0}"; exit 1; }
cleanup() {
    [ -n "$WD" ] && kill "$WD" 2>/dev/null
    for p in $PIDS; do kill "$p" 2>/dev/null; done
    i=0; while [ $i -lt 30 ]; do alive=""; for p in $PIDS; do kill -0 "$p" 2>/dev/null && alive=1; done
        [ -z "$alive" ] && break; sleep 0.1; i=$((i + 1)); done
    for p in $PIDS; do kill -9 "$p" 2>/dev/null; done
    # anything still inside our namespaces was started by this script
    for ns in $NETNS; do for p in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done; done
    for ns in $NETNS; do ip netns del "$ns" 2>/dev/null; done
}
trap cleanup EXIT
trap 'exit 1' INT TERM HUP
T="timeout 30"
# our own deadline, well inside ctest's (whose kill on timeout would leave the namespaces behind):
# at 120 s the script is told to stop, and its trap cleans up
ME=$$
( i=0; while [ $i -lt 120 ] && kill -0 $ME 2>/dev/null; do sleep 1; i=$((i + 1)); done
  kill -0 $ME 2>/dev/null && echo "FAIL watchdog: still running after 120 s" && kill -TERM $ME ) &
WD=$!

"$GEN" --out m6 --shape tiny-qwen --layers 6 --seed 7 >/dev/null || { echo "strata-gen failed"; exit 1; }
TOKENS=$(awk 'BEGIN { s = 11; for (i = 0; i < 40; i++) { s = (s * 1103515245 + 12345) % 2147483648; printf "%s%d", i ? "," : "", s % 512 } }')
$T "$MASTER" --local --model m6 --tokens "$TOKENS" -n 24 > single.out 2> single.err
check "single-node reference run (24 ids)" "[ \$(tr ',' '\n' < single.out | wc -l) -eq 24 ]"

# ---- can we build hosts here? ----
skip() { echo "skip: $1"; [ "$FAIL" -eq 0 ] || finish; echo "$PASS passed, $FAIL failed (the multi-host part skipped)"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (network namespaces)"
for tool in ip dbus-daemon avahi-daemon timeout; do
    command -v $tool >/dev/null 2>&1 || skip "$tool not installed (Debian: iproute2, dbus, avahi-daemon, coreutils)"
done
ip netns add "${P}probe" 2>/dev/null || skip "ip netns add is not permitted here"
ip netns del "${P}probe"

# ---- build the hosts ----
mkns() { ip netns add "$1" && NETNS="$NETNS $1"; }
mkns "${P}sw" || finish 1
ip -n "${P}sw" link add br0 type bridge && ip -n "${P}sw" link set br0 up || { bad "bridge"; finish; }
i=1
for h in m a b; do
    ns="$P$h"
    mkns "$ns" || { bad "netns $ns"; finish; }
    # both ends are created inside namespaces: nothing appears in the caller's network
    ip -n "${P}sw" link add "e$h" type veth peer name eth0 netns "$ns" &&
        ip -n "${P}sw" link set "e$h" master br0 up &&
        ip -n "$ns" addr add "10.77.0.$i/24" dev eth0 && ip -n "$ns" link set eth0 up && ip -n "$ns" link set lo up ||
        { bad "veth for $h"; finish; }
    mkdir -p "$h"
    cat > "$h/dbus.conf" <<EOF
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path=$WORK/$h/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
EOF
    cat > "$h/avahi.conf" <<EOF
[server]
host-name=strata-$h
domain-name=local
use-ipv4=yes
use-ipv6=no
allow-interfaces=eth0
enable-dbus=yes
ratelimit-interval-usec=1000000
ratelimit-burst=1000
[wide-area]
enable-wide-area=no
[publish]
publish-hinfo=no
publish-workstation=no
publish-aaaa-on-ipv4=no
[reflector]
enable-reflector=no
EOF
    ip netns exec "$ns" dbus-daemon --config-file="$WORK/$h/dbus.conf" --nofork --nopidfile 2> "$h/dbus.log" &
    PIDS="$PIDS $!"
    i=$((i + 1))
done
for h in m a b; do
    n=0; while [ $n -lt 50 ] && [ ! -S "$h/bus" ]; do sleep 0.1; n=$((n + 1)); done
    [ -S "$h/bus" ] || { bad "dbus-daemon on $h"; cat "$h/dbus.log"; finish; }
    # a private /run for the daemon: its pid file, socket and the static services dir stay its own
    ip netns exec "$P$h" env DBUS_SYSTEM_BUS_ADDRESS="unix:path=$WORK/$h/bus" sh -c \
        'mount -t tmpfs strata-run /run && mkdir -p /run/avahi-daemon && mount -t tmpfs strata-etc /etc/avahi &&
         exec avahi-daemon -f "$1" --no-drop-root --no-chroot --no-rlimits --no-proc-title' sh "$WORK/$h/avahi.conf" \
        > "$h/avahi.log" 2>&1 &
    PIDS="$PIDS $!"
done
for h in m a b; do
    n=0; while [ $n -lt 100 ] && ! grep -q "Server startup complete" "$h/avahi.log"; do sleep 0.1; n=$((n + 1)); done
    grep -q "Server startup complete" "$h/avahi.log" || { bad "avahi-daemon on $h"; cat "$h/avahi.log"; finish; }
done
ok "3 hosts up: a bridge, and a dbus-daemon + avahi-daemon in each"

on() { h=$1; shift; ip netns exec "$P$h" env DBUS_SYSTEM_BUS_ADDRESS="unix:path=$WORK/$h/bus" "$@"; }
KEYARGS="--insecure" OTHERKEY=""
if "$MASTER" keygen --out "$WORK/cluster.key" >/dev/null 2>&1; then KEYARGS="--key $WORK/cluster.key"; fi
# another cluster's worker on the same network (with keys: another key; else none to tell it by)
if [ "$KEYARGS" != "--insecure" ] && "$MASTER" keygen --out "$WORK/other.key" >/dev/null 2>&1; then
    OTHERKEY="--key $WORK/other.key"
fi

start_worker() { # host name log impl [extra...]
    h=$1 n=$2 log=$3 impl=$4; shift 4
    # not through on(): a function run with & is a subshell, and its pid is not the worker's
    ip netns exec "$P$h" env DBUS_SYSTEM_BUS_ADDRESS="unix:path=$WORK/$h/bus" "$WORKER" --listen tcp://0.0.0.0:5601 --name "$n" --cache-dir "$WORK/$h/cache" --backend cpu --threads 1 \
        --discovery "$impl" $KEYARGS "$@" > "$log" 2>&1 &
    PIDS="$PIDS $!"
    WPIDS="$WPIDS $!"
}
wait_log() { # file pattern [tenths of a second: 100]
    n=0; while [ $n -lt "${3:-100}" ] && ! grep -q "$2" "$1" 2>/dev/null; do sleep 0.1; n=$((n + 1)); done
    grep -q "$2" "$1" 2>/dev/null
}

for impl in avahi dnssd; do
    # both workers ask for the same name at once: one of them moves to an alternative ("w #2")
    # 5 MiB holds 2 layers of m6 (84 KB of weights + 2 MiB of KV cache at 4096 positions each),
    # 9 MiB holds 4: together exactly the 6 layers, so the plan is 2 + 4 whatever the speeds
    WPIDS=""
    start_worker a w "$impl-a.log" "$impl" --memory-mb 5
    start_worker b w "$impl-b.log" "$impl" --memory-mb 9
    # (once) a worker of another cluster, on the master's host: found, named, and left out
    stranger=""
    if [ $impl = avahi ] && [ -n "$OTHERKEY" ]; then
        stranger=1
        ip netns exec "${P}m" env DBUS_SYSTEM_BUS_ADDRESS="unix:path=$WORK/m/bus" "$WORKER" --listen tcp://0.0.0.0:5601 \
            --name stranger --cache-dir "$WORK/m/cache" --threads 1 --discovery "$impl" $OTHERKEY > stranger.log 2>&1 &
        PIDS="$PIDS $!"
        WPIDS="$WPIDS $!"
    fi
    # up to 20 s: two workers that keep colliding re-probe after pauses of up to 4 s each
    wait_log "$impl-a.log" "advertised as" 200 && wait_log "$impl-b.log" "advertised as" 200 &&
        { [ -z "$stranger" ] || wait_log stranger.log "advertised as" 200; }
    if [ $? -eq 0 ]; then ok "$impl: the workers advertised"
    else bad "$impl: the workers advertised"; tail -n 5 "$impl-a.log" "$impl-b.log"; fi
    na=$(sed -n "s/.*advertised as '\\(.*\\)' (_strata._tcp)/\\1/p" "$impl-a.log" | tail -1)
    nb=$(sed -n "s/.*advertised as '\\(.*\\)' (_strata._tcp)/\\1/p" "$impl-b.log" | tail -1)
    check "$impl: the name conflict is resolved, not fatal ('$na' and '$nb')" \
        "[ -n \"$na\" ] && [ -n \"$nb\" ] && [ \"$na\" != \"$nb\" ] && cat $impl-a.log $impl-b.log | grep -q \"advertising as 'w #\""

    on m $T "$MASTER" --model m6 --tokens 1 --discovery "$impl" --min-workers 2 --discover-seconds 2 --dry-run $KEYARGS \
        > "$impl-dry.out" 2> "$impl-dry.err"
    check "$impl: --dry-run lists both workers with their addresses" \
        "grep -q '10.77.0.2:5601' $impl-dry.out && grep -q '10.77.0.3:5601' $impl-dry.out"
    check "$impl: --dry-run plan: 2 layers on the 5 MiB worker, 4 on the 9 MiB one (never past memory)" \
        "grep -Eq 'worker w( #[0-9]+)?  layers (0-1|4-5) \(10.77.0.2:5601\)' $impl-dry.out &&
         grep -Eq 'worker w( #[0-9]+)?  layers (0-3|2-5) \(10.77.0.3:5601\)' $impl-dry.out"
    [ -z "$stranger" ] || check "$impl: a worker holding another cluster key is named and left out of the plan" \
        "grep -q \"note: worker 'stranger' holds another cluster key\" $impl-dry.out && ! grep -q 'worker stranger' $impl-dry.out"
    check "$impl: --dry-run prints the topology.yml it amounts to" \
        "grep -q \"host: '10.77.0.2:5601'\" $impl-dry.out && grep -Eq \"'model.layers.(0-3|2-5)'\" $impl-dry.out"

    on m $T "$MASTER" --model m6 --tokens "$TOKENS" -n 24 --discovery "$impl" --min-workers 2 --discover-seconds 2 \
        $KEYARGS > "$impl.out" 2> "$impl.err"
    nw=2; [ -z "$stranger" ] || nw=3
    check "$impl: the master found $nw workers" "grep -q '$nw workers found' $impl.err"
    check "$impl: the discovered cluster generates the single-node run's 24 ids" "cmp -s single.out $impl.out"
    check "$impl: both workers ran layers" \
        "grep -Eq 'layers (0-1|4-5) loaded' $impl-a.log && grep -Eq 'layers (0-3|2-5) loaded' $impl-b.log"
    if [ $impl = dnssd ]; then # (once) the master as a node too: its share depends on measured speeds,
        # the ids must not
        on m $T "$MASTER" --model m6 --tokens "$TOKENS" -n 24 --discovery "$impl" --min-workers 2 --discover-seconds 2 \
            --keep-layers $KEYARGS > "$impl-keep.out" 2> "$impl-keep.err"
        check "$impl: --keep-layers: the master plans itself in and generates the same ids" \
            "grep -q 'master: offers' $impl-keep.err && cmp -s single.out $impl-keep.out"
    fi

    # stopping withdraws the service: the next browse finds nobody and runs locally
    for p in $WPIDS; do kill "$p"; done
    for p in $WPIDS; do n=0; while [ $n -lt 50 ] && kill -0 "$p" 2>/dev/null; do sleep 0.1; n=$((n + 1)); done; done
    on m $T "$MASTER" --model m6 --tokens "$TOKENS" -n 24 --discovery "$impl" --discover-seconds 1.5 $KEYARGS \
        > "$impl-gone.out" 2> "$impl-gone.err"
    check "$impl: stopped workers are withdrawn (none found, local run, same ids)" \
        "grep -q 'no strata worker found' $impl-gone.err && cmp -s single.out $impl-gone.out"
    # (once: browsing goes on up to 10 s for the missing worker, and the master's code is the same for both)
    [ $impl = avahi ] || continue
    on m $T "$MASTER" --model m6 --tokens 1 -n 1 --discovery "$impl" --discover-seconds 1 --min-workers 1 $KEYARGS \
        > /dev/null 2> "$impl-min.err"
    check "$impl: --min-workers 1 with none: fails naming the count" "[ \$? -ne 0 ] && grep -q 'min-workers asks for 1' $impl-min.err"
done
finish
