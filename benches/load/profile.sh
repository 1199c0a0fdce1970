#!/usr/bin/env bash
# Profiles qlik-lb on the sticky keep-alive path (wrk with `Cookie: SRV=b1`), loopback only.
#
#   perf:      `perf record -e cpu-clock` sampling (software clock, works without hardware
#              counters), flat by symbol including the kernel, plus a DWARF call-graph pass
#              to attribute system calls to the proxy code that makes them.
#   callgrind: instruction counts of the proxy's own code under a short, slower wrk run.
#
# Every process started here is recorded by PID and stopped by that PID; runs are bounded.
# usage: benches/load/profile.sh [perf|syscalls|callgrind|all]
# env:   DUR=8 CONNS=64 OUT=... PROXIES="haproxy nginx qlik-lb" (syscalls) QLB_BIN=<binary>
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
DUR=${DUR:-8}
CONNS=${CONNS:-64}
RUN=${RUN:-${TMPDIR:-/tmp}/qlik-lb-profile}
OUT=${OUT:-$HERE/results/profile-$(date +%Y%m%d-%H%M%S)}
WSB=${WSB_TARGET:-$ROOT/target/wsbench}/release/wsbench
QLB=${QLB_BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/qlik-lb}
URL=http://127.0.0.1:8084/
if [ "$DUR" -gt 15 ]; then echo "DUR must be <= 15" >&2; exit 2; fi
[ -x "$WSB" ] && [ -x "$QLB" ] || { echo "build first: benches/load/run.sh build" >&2; exit 1; }
mkdir -p "$OUT" "$RUN/pids"

start_bg() { local n=$1; shift; "$@" >"$RUN/$n.out" 2>&1 & echo $! >"$RUN/pids/$n.pid"; }
stop_one() {
    local f="$RUN/pids/$1.pid" pid; [ -f "$f" ] || return 0; pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
}
stop_all() { for f in "$RUN"/pids/*.pid; do [ -e "$f" ] && stop_one "$(basename "$f" .pid)"; done; return 0; }
trap stop_all EXIT
wait_port() { for _ in $(seq 1 300); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 closed" >&2; return 1; }

start_bg b1 "$WSB" serve --listen 127.0.0.1:9101 --id b1 --threads 2
start_bg b2 "$WSB" serve --listen 127.0.0.1:9102 --id b2 --threads 2
wait_port 9101; wait_port 9102
# The harness config, where its engines pool finds the simulated engines' certificates; the
# engines themselves run too, so the health checks behave as in run.sh.
mkdir -p "$RUN/qlik-lb"
cp "$HERE/conf/qlik-lb.toml" "$RUN/qlik-lb/qlik-lb.toml"
start_bg engines "$QLB" sim --nodes 3 --base-port 9301 --cert-dir "$RUN/sim-certs"
wait_port 9301

perf_pass() {
    command -v perf >/dev/null || { echo "perf not installed (apt-get install -y linux-perf)" >&2; return 0; }
    start_bg qlik-lb "$QLB" --log-level warn run -c "$RUN/qlik-lb/qlik-lb.toml"
    wait_port 8084
    local pid; pid=$(cat "$RUN/pids/qlik-lb.pid")
    wrk -t2 -c"$CONNS" -d2s "$URL" -H 'Cookie: SRV=b1' >/dev/null 2>&1 || true
    # Flat profile: where the proxy's CPU time goes, kernel included.
    perf record -q -e cpu-clock -F 2999 -p "$pid" -o "$OUT/perf-flat.data" -- sleep "$DUR" 2>/dev/null &
    local ppid=$!
    wrk -t2 -c"$CONNS" -d"${DUR}s" --latency "$URL" -H 'Cookie: SRV=b1' >"$OUT/perf-wrk.txt" 2>&1 || true
    wait "$ppid" || true
    perf report -i "$OUT/perf-flat.data" --stdio --no-children --sort dso,sym --percent-limit 0.4 \
        2>/dev/null | grep -v '^$' >"$OUT/perf-flat.txt" || true
    # Call graph (DWARF unwinding; the release profile keeps line tables), a shorter window.
    perf record -q -e cpu-clock -F 499 --call-graph dwarf,16384 -p "$pid" -o "$OUT/perf-graph.data" -- sleep 4 2>/dev/null &
    ppid=$!
    wrk -t2 -c"$CONNS" -d5s "$URL" -H 'Cookie: SRV=b1' >/dev/null 2>&1 || true
    wait "$ppid" || true
    perf report -i "$OUT/perf-graph.data" --stdio --children --sort sym --percent-limit 2 -g caller,0.5,callee \
        2>/dev/null | grep -v '^$' | head -600 >"$OUT/perf-graph.txt" || true
    stop_one qlik-lb
    echo "perf: $OUT/perf-flat.txt $OUT/perf-graph.txt"
}

callgrind_pass() {
    command -v valgrind >/dev/null || { echo "valgrind not installed" >&2; return 0; }
    start_bg qlik-lb-callgrind valgrind --tool=callgrind --callgrind-out-file="$OUT/callgrind.out" \
        "$QLB" --log-level warn run -c "$RUN/qlik-lb/qlik-lb.toml"
    wait_port 8084
    wrk -t1 -c8 -d"${DUR}s" "$URL" -H 'Cookie: SRV=b1' >"$OUT/callgrind-wrk.txt" 2>&1 || true
    stop_one qlik-lb-callgrind    # SIGTERM: graceful exit, callgrind writes its file
    callgrind_annotate --inclusive=yes "$OUT/callgrind.out" 2>/dev/null | head -80 >"$OUT/callgrind-inclusive.txt" || true
    callgrind_annotate "$OUT/callgrind.out" 2>/dev/null | head -70 >"$OUT/callgrind-self.txt" || true
    echo "callgrind: $OUT/callgrind-inclusive.txt $OUT/callgrind-self.txt"
}

per_unit() { # proxy csv count unit -> "proxy <event> per <unit>: x" lines
    awk -F, -v p="$1" -v r="$3" -v u="$4" '$1 ~ /^[0-9.]+$/ && r > 0 && $1 > 0 {
        sub(/^syscalls:sys_enter_|^raw_syscalls:sys_enter/, "", $3); name = ($3 == "" ? "all syscalls" : $3)
        if (name == "task-clock") { name = "CPU us"; $1 = $1 * 1000 }
        printf "%s %s per %s: %.2f\n", p, name, u, $1 / r }' "$2"
}

# System calls and context switches per request, each proxy on the same sticky load: what a
# request costs in kernel crossings, which dominate on loopback.
syscalls_pass() {
    command -v perf >/dev/null || { echo "perf not installed" >&2; return 0; }
    local shared=$ROOT/../shared/bench p port pids reqs
    local events=task-clock,raw_syscalls:sys_enter,context-switches,syscalls:sys_enter_sendto,syscalls:sys_enter_recvfrom,syscalls:sys_enter_writev,syscalls:sys_enter_readv,syscalls:sys_enter_write,syscalls:sys_enter_read,syscalls:sys_enter_epoll_wait,syscalls:sys_enter_epoll_ctl,syscalls:sys_enter_futex
    export RUN
    : >"$OUT/syscalls.txt"
    for p in ${PROXIES:-haproxy nginx qlik-lb}; do
        case $p in
            haproxy) port=8081; start_bg haproxy haproxy -db -f "$shared/conf/haproxy.cfg" ;;
            nginx) port=8082; mkdir -p "$RUN/nginx-proxy/tmp"
                start_bg nginx nginx -p "$RUN/nginx-proxy/" -c "$shared/conf/nginx-proxy.conf" -g 'daemon off;' ;;
            qlik-lb) port=8084; start_bg qlik-lb "$QLB" --log-level warn run -c "$RUN/qlik-lb/qlik-lb.toml" ;;
        esac
        wait_port "$port"
        sleep 0.3   # NGINX workers start after the port opens
        local main; main=$(cat "$RUN/pids/$p.pid")
        pids=$( { echo "$main"; ps -o pid= --ppid "$main" || true; } | tr -d ' ' | paste -sd, -)
        wrk -t2 -c"$CONNS" -d2s "http://127.0.0.1:$port/" -H 'Cookie: SRV=b1' >/dev/null 2>&1 || true
        perf stat -x, -e "$events" -p "$pids" -o "$OUT/syscalls-$p.csv" -- sleep 5 &
        local spid=$!
        wrk -t2 -c"$CONNS" -d5s "http://127.0.0.1:$port/" -H 'Cookie: SRV=b1' >"$OUT/syscalls-$p-wrk.txt" 2>&1 || true
        wait "$spid" || true
        reqs=$(awk '/requests in/{print $1}' "$OUT/syscalls-$p-wrk.txt")
        per_unit "$p" "$OUT/syscalls-$p.csv" "${reqs:-0}" "HTTP request" >>"$OUT/syscalls.txt"
        # The same for WebSocket echo round trips through the tunnel.
        perf stat -x, -e "$events" -p "$pids" -o "$OUT/syscalls-$p-ws.csv" -- sleep 5 &
        spid=$!
        timeout 30 "$WSB" rtt --url "ws://127.0.0.1:$port/ws" --conns 64 --secs 5 --size 64 --threads 2 >"$OUT/syscalls-$p-ws.txt" 2>&1 || true
        wait "$spid" || true
        reqs=$(sed -n 's/.*msgs=\([0-9]*\).*/\1/p' "$OUT/syscalls-$p-ws.txt")
        per_unit "$p" "$OUT/syscalls-$p-ws.csv" "${reqs:-0}" "WS round trip" >>"$OUT/syscalls.txt"
        stop_one "$p"
    done
    echo "syscalls: $OUT/syscalls.txt"
}

case "${1:-all}" in
    perf) perf_pass ;;
    callgrind) callgrind_pass ;;
    syscalls) syscalls_pass ;;
    all) perf_pass; syscalls_pass; callgrind_pass ;;
    *) echo "usage: $0 perf|syscalls|callgrind|all" >&2; exit 2 ;;
esac
