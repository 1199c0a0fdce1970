#!/usr/bin/env bash
# "A Qlik site at work" (PRODUCT.md §9): N users (default 4,000) arrive over ARRIVE seconds
# through a proxy to three simulated Qlik nodes; each opens the hub, then an app's QIX WebSocket,
# and sends Evaluate every EVAL seconds for SESSION seconds. At CHANGE seconds node1's engine
# goes to 95 % CPU and node2's becomes saturated. Run once through HAProxy (balance leastconn,
# cookie insert: what sites copy) and once through qlik-lb (least-loaded by engine health), on
# the same simulator in one invocation; writes results/site-<stamp>/{<proxy>.json,summary.md,
# sessions.svg}.
#
# Every address is 127.0.0.1. Every process started here is recorded by PID under $RUN/pids and
# stopped by that PID. A run is bounded: ARRIVE + SESSION <= 600 s per proxy, USERS <= 8000.
#
# usage: benches/load/site.sh [run|stop]
# env:   USERS=4000 ARRIVE=180 SESSION=30 EVAL=5 CHANGE=12 PROXIES="haproxy qlik-lb"
#        QLB_BIN=<a qlik-lb binary instead of building this checkout> RUN=/tmp/qlik-lb-site
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
export RUN=${RUN:-${TMPDIR:-/tmp}/qlik-lb-site}
USERS=${USERS:-4000}
ARRIVE=${ARRIVE:-180}
SESSION=${SESSION:-30}
EVAL=${EVAL:-5}
CHANGE=${CHANGE:-12}
PROXIES=${PROXIES:-"haproxy qlik-lb"}
OUT=${OUT:-$HERE/results/site-$(date +%Y%m%d-%H%M%S)}
QLB=${QLB_BIN:-$ROOT/target/release/qlik-lb}
USERGEN=$ROOT/target/release/examples/qlik-users
SIM_BASE=9501
declare -A PORT=([haproxy]=8091 [qlik-lb]=8094)
QLB_ADMIN=8496

if [ $((ARRIVE + SESSION)) -gt 600 ]; then echo "ARRIVE + SESSION must be <= 600" >&2; exit 2; fi
if [ "$USERS" -gt 8000 ]; then echo "USERS must be <= 8000" >&2; exit 2; fi

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }

# shellcheck source=procs.sh
. "$HERE/procs.sh"

node_port() { echo $((SIM_BASE + $1 - 1)); }

open_total() { # open QIX sessions over every node
    local t=0 i n
    for i in 1 2 3; do
        n=$(curl -s --max-time 2 "http://127.0.0.1:$(node_port "$i")/__sim/control" \
            | sed -n 's/.*"open_websockets":\([0-9]*\).*/\1/p')
        t=$((t + ${n:-0}))
    done
    echo "$t"
}

build() {
    if [ -z "${QLB_BIN:-}" ]; then
        log "building qlik-lb (release)"
        (cd "$ROOT" && cargo build --release --locked --bin qlik-lb)
    fi
    log "building the user generator (release)"
    (cd "$ROOT" && cargo build --release --locked --example qlik-users)
    command -v haproxy >/dev/null || { echo "haproxy is missing: apt-get install -y haproxy" >&2; exit 1; }
}

write_configs() {
    local i
    {
        printf 'global\n    maxconn 9000\n\ndefaults\n    mode http\n    timeout connect 3s\n'
        printf '    timeout client 120s\n    timeout server 120s\n    timeout tunnel 1h\n\n'
        printf 'frontend site\n    bind 127.0.0.1:%s\n    default_backend qps\n\n' "${PORT[haproxy]}"
        printf 'backend qps\n    balance leastconn\n    cookie SRV insert indirect nocache\n'
        printf '    option httpchk GET /engine/healthcheck\n'
        for i in 1 2 3; do
            printf '    server node%s 127.0.0.1:%s check inter 2s cookie node%s\n' "$i" "$(node_port "$i")" "$i"
        done
    } >"$RUN/haproxy.cfg"
    {
        printf '[admin]\nlisten = "127.0.0.1:%s"\n\n' "$QLB_ADMIN"
        printf '[[frontend]]\nname = "site"\nlisten = "127.0.0.1:%s"\npool = "qps"\n\n' "${PORT[qlik-lb]}"
        printf '[[pool]]\nname = "qps"\nbalance = "least-loaded"\n'
        printf '  [pool.sticky]\n  same_site = "Lax"\n'
        printf '  [pool.health]\n  check = "http"\n  path = "/engine/healthcheck"\n  interval = "2s"\n  timeout = "1s"\n'
        for i in 1 2 3; do
            printf '  [[pool.backend]]\n  id = "node%s"\n  url = "http://127.0.0.1:%s"\n' "$i" "$(node_port "$i")"
            printf '  engine_health = "http://127.0.0.1:%s/engine/healthcheck"\n' "$(node_port "$i")"
        done
    } >"$RUN/qlik-lb.toml"
    "$QLB" check --config "$RUN/qlik-lb.toml" >/dev/null
}

start_proxy() { # name
    case $1 in
        haproxy) start_bg haproxy haproxy -f "$RUN/haproxy.cfg" -db ;;
        qlik-lb) RUST_LOG=warn start_bg qlik-lb "$QLB" run --config "$RUN/qlik-lb.toml" ;;
    esac
    wait_port "${PORT[$1]}"
}

run_one() { # proxy
    local p=$1 nodes
    nodes="127.0.0.1:$(node_port 1),127.0.0.1:$(node_port 2),127.0.0.1:$(node_port 3)"
    # Engines idle again and every session of the run before closed, so each proxy starts alike.
    for i in 1 2 3; do
        curl -s -o /dev/null --max-time 2 -X POST -d '{"cpu":5,"saturated":null}' \
            "http://127.0.0.1:$(node_port "$i")/__sim/control"
    done
    for _ in $(seq 1 300); do [ "$(open_total)" -eq 0 ] && break; sleep 0.1; done
    start_proxy "$p"
    # Both proxies' health checks see three idle engines before the first user arrives.
    sleep 5
    log "$p: $USERS users over ${ARRIVE}s, sessions ${SESSION}s, change at ${CHANGE}s"
    "$USERGEN" --proxy "127.0.0.1:${PORT[$p]}" --nodes "$nodes" --users "$USERS" \
        --arrive-secs "$ARRIVE" --session-secs "$SESSION" --evaluate-secs "$EVAL" \
        --change-at "$CHANGE" --label "$p" --out "$OUT/$p.json" | tee -a "$OUT/run.log"
    stop_one "$p"
}

main() {
    case ${1:-run} in
        stop) stop_all; exit 0 ;;
        run) ;;
        *) echo "usage: $0 [run|stop]" >&2; exit 2 ;;
    esac
    mkdir -p "$OUT" "$RUN"
    trap stop_all EXIT
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    for p in "${PORT[haproxy]}" "${PORT[qlik-lb]}" "$QLB_ADMIN" $(node_port 1) $(node_port 2) $(node_port 3) $((SIM_BASE + 3)); do
        if port_open "$p"; then echo "127.0.0.1:$p is in use (or: $0 stop)" >&2; exit 1; fi
    done
    build
    start_bg sim "$QLB" sim --nodes 3 --base-port "$SIM_BASE" --cert-dir "$RUN/sim-certs"
    for i in 1 2 3; do wait_port "$(node_port "$i")"; done
    write_configs
    {
        echo "users=$USERS arrive=$ARRIVE session=$SESSION eval=$EVAL change=$CHANGE"
        echo "haproxy: $(haproxy -v | head -1)"
        echo "qlik-lb: $QLB"
        nproc; uptime
    } >"$OUT/env.txt"
    for p in $PROXIES; do run_one "$p"; done
    python3 "$HERE/site_report.py" "$OUT"
    log "wrote $OUT/summary.md and $OUT/sessions.svg"
}

main "$@"
