#!/usr/bin/env bash
# Side-by-side loopback load comparison: qlik-lb vs HAProxy vs NGINX, one run, same backends.
#
# Measures, per proxy: HTTP keep-alive req/s and latency with and without the sticky cookie,
# proxy CPU seconds per 100k requests, new connections per second (Connection: close),
# WebSocket echo round trips, memory per idle tunnel, reload under load, and (qlik-lb only)
# the load balancing module's prioritize endpoint. Writes results/<stamp>/summary.md.
#
# Every address is 127.0.0.1. Every process started here is recorded by PID under $RUN/pids
# and stopped by that PID. Every load run is bounded (DUR <= 15 s).
#
# usage: benches/load/run.sh [all|build|stop]
# env:   DUR=8 REPS=5 CONNS=64 WS_CONNS=64 HOLD_N=8000 HOLD_SECS=8 RELOAD_N=1000 LBM_CONNS="1 2 8"
#        PROXIES="haproxy nginx qlik-lb" RUN=/tmp/qlik-lb-load OUT=benches/load/results/<stamp>
#        QLB_BIN=<a qlik-lb binary to measure instead of building this checkout>
#        QLB_CLUSTER=1: qlik-lb runs with [cluster] over an etcd the harness starts (Debian
#        etcd-server) on 127.0.0.1:2479, to show the hot path does not wait on etcd
#        SCENARIOS="http ws lbm hold reload" (a subset runs only those, e.g. SCENARIOS=http for the
#        keep-alive, sticky and new-connection figures)
#        SCENARIOS=tls: HTTPS keep-alive and new TLS connections (wrk) and memory per idle wss tunnel
#        (tls/wss_hold.py, TLS_HOLD_N=2000, a fresh proxy process per rep) for HAProxy and qlik-lb,
#        each terminating TLS with one RSA-2048 certificate made for the run (not in the default set)
#        ACCESS_LOG=1 runs qlik-lb with its JSON access log on, written to $OUT/qlik-lb-access.log
#        (e.g. ACCESS_LOG=1 PROXIES=qlik-lb SCENARIOS=http for the sticky http figures with it)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
SHARED_BENCH=${SHARED_BENCH:-$ROOT/../shared/bench}
FIXTURES=${FIXTURES:-$ROOT/../shared/qlik/fixtures}
export RUN=${RUN:-${TMPDIR:-/tmp}/qlik-lb-load}
DUR=${DUR:-8}
REPS=${REPS:-5}
CONNS=${CONNS:-64}
WS_CONNS=${WS_CONNS:-64}
HOLD_N=${HOLD_N:-8000}
HOLD_SECS=${HOLD_SECS:-8}
RELOAD_N=${RELOAD_N:-1000}
LBM_CONNS=${LBM_CONNS:-"1 2 8"}
SCENARIOS=${SCENARIOS:-"http ws lbm hold reload"}
ACCESS_LOG=${ACCESS_LOG:-0}
TLS_HOLD_N=${TLS_HOLD_N:-2000}
SIM_BASE=9301
PROXIES=${PROXIES:-"haproxy nginx qlik-lb"}
OUT=${OUT:-$HERE/results/$(date +%Y%m%d-%H%M%S)}
WSB_TARGET=${WSB_TARGET:-$ROOT/target/wsbench}
WSB=$WSB_TARGET/release/wsbench
QLB_TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
# QLB_BIN=/path/to/qlik-lb compares a candidate binary instead of building this checkout.
QLB=${QLB_BIN:-$QLB_TARGET/release/qlik-lb}
CLK_TCK=$(getconf CLK_TCK)

# Ports: the shared HAProxy/NGINX configs fix theirs; qlik-lb's are in conf/qlik-lb.toml.
declare -A PORT=([haproxy]=8081 [nginx]=8082 [qlik-lb]=8084 [direct]=9101)
QLB_ADMIN=8406
# The tls scenario's front doors (conf/haproxy-tls.cfg, conf/qlik-lb-tls.toml; qlik-lb's admin 8407).
declare -A TLS_PORT=([haproxy]=8443 [qlik-lb]=8444)
QLB_LBMODULE=8187

for v in DUR HOLD_SECS; do
    if [ "${!v}" -gt 15 ]; then echo "$v must be <= 15" >&2; exit 2; fi
done
if [ "$HOLD_N" -gt 9500 ]; then echo "HOLD_N must be <= 9500 (2 fds per proxied connection)" >&2; exit 2; fi

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/run.log" >&2; }

# ------------------------------------------------------------------ process control (by PID)
# shellcheck source=procs.sh
. "$HERE/procs.sh"

require_free() { # ports...
    local p
    for p in "$@"; do
        if port_open "$p"; then
            echo "127.0.0.1:$p is already in use; stop what holds it (or: $0 stop)" >&2
            exit 1
        fi
    done
}

pid_tree() { # pid -> pid and its direct children (NGINX/HAProxy master + workers)
    echo "$1"; ps -o pid= --ppid "$1" 2>/dev/null | tr -d ' ' || true
}

cpu_ticks() { # pid -> utime+stime of the process and its children, in clock ticks
    local t=0 p v
    for p in $(pid_tree "$1"); do
        # Fields after "pid (comm) ": utime is the 12th, stime the 13th.
        v=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}') || continue
        t=$((t + ${v:-0}))
    done
    echo "$t"
}

mem_kb() { # pid -> "rss_kb pss_kb" summed over the process tree (PSS divides shared pages)
    local rss=0 pss=0 p r s
    for p in $(pid_tree "$1"); do
        [ -r "/proc/$p/smaps_rollup" ] || continue
        r=$(awk '/^Rss:/{print $2}' "/proc/$p/smaps_rollup")
        s=$(awk '/^Pss:/{print $2}' "/proc/$p/smaps_rollup")
        rss=$((rss + r)); pss=$((pss + s))
    done
    echo "$rss $pss"
}

metric() { # sample-prefix -> value from qlik-lb's /metrics (0 when absent)
    curl -s --max-time 2 "http://127.0.0.1:$QLB_ADMIN/metrics" 2>/dev/null \
        | awk -v p="$1" 'index($0, p) == 1 {print $NF; found=1} END {if (!found) print 0}' | head -1
}

# ------------------------------------------------------------------ setup
install_tools() {
    local missing=()
    for t in haproxy nginx wrk curl openssl python3; do command -v "$t" >/dev/null || missing+=("$t"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "missing: ${missing[*]}; install them: sudo apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    log "installing ${missing[*]}"
    apt-get install -y "${missing[@]}" >/dev/null || { apt-get update >/dev/null && apt-get install -y "${missing[@]}" >/dev/null; }
}

build() {
    log "build wsbench (target $WSB_TARGET) and qlik-lb --release"
    (cd "$SHARED_BENCH/wsbench" && CARGO_TARGET_DIR=$WSB_TARGET cargo build --release -q)
    [ -n "${QLB_BIN:-}" ] || (cd "$ROOT" && CARGO_TARGET_DIR=$QLB_TARGET cargo build --release -q --bin qlik-lb)
}

start_backends() {
    start_bg b1 "$WSB" serve --listen 127.0.0.1:9101 --id b1 --threads 2
    start_bg b2 "$WSB" serve --listen 127.0.0.1:9102 --id b2 --threads 2
    wait_port 9101; wait_port 9102
}

start_haproxy() { # master-worker (-W) so a reload (SIGUSR2) keeps old connections on the old worker
    haproxy -c -q -f "$SHARED_BENCH/conf/haproxy.cfg"
    start_bg haproxy haproxy -W -db -f "$SHARED_BENCH/conf/haproxy.cfg"
    wait_port "${PORT[haproxy]}"
}

start_nginx() {
    mkdir -p "$RUN/nginx-proxy/tmp"
    nginx -q -t -p "$RUN/nginx-proxy/" -c "$SHARED_BENCH/conf/nginx-proxy.conf" -g 'daemon off;'
    start_bg nginx nginx -p "$RUN/nginx-proxy/" -c "$SHARED_BENCH/conf/nginx-proxy.conf" -g 'daemon off;'
    wait_port "${PORT[nginx]}"
}

start_etcd() { # for QLB_CLUSTER=1; a fresh data folder each time
    rm -rf "$RUN/etcd-data"
    start_bg etcd etcd --name=bench --data-dir="$RUN/etcd-data" \
        --listen-client-urls=http://127.0.0.1:2479 --advertise-client-urls=http://127.0.0.1:2479 \
        --listen-peer-urls=http://127.0.0.1:2480 --initial-advertise-peer-urls=http://127.0.0.1:2480 \
        --initial-cluster=bench=http://127.0.0.1:2480 --logger=zap --log-level=error
    wait_port 2479
}

# The run copy of qlik-lb's config: the repository's, plus the access log with ACCESS_LOG=1 and
# a [cluster] on a local etcd with QLB_CLUSTER=1.
write_qlik_lb_config() { # dest
    cp "$HERE/conf/qlik-lb.toml" "$1"
    if [ "$ACCESS_LOG" = 1 ]; then
        printf '\n[access_log]\npath = "%s"\nformat = "json"\n' "$(realpath -m "$OUT")/qlik-lb-access.log" >>"$1"
    fi
    if [ "${QLB_CLUSTER:-0}" = 1 ]; then
        [ -f "$RUN/pids/etcd.pid" ] || start_etcd
        printf '\n[cluster]\netcd = ["http://127.0.0.1:2479"]\nname = "bench"\nprefix = "/bench/"\n' >>"$1"
    fi
}

start_qlik_lb() { # runs from a copy so the reload scenario can rewrite it
    mkdir -p "$RUN/qlik-lb"
    write_qlik_lb_config "$RUN/qlik-lb/qlik-lb.toml"
    "$QLB" check -c "$RUN/qlik-lb/qlik-lb.toml" >/dev/null
    start_bg qlik-lb "$QLB" --log-level warn run -c "$RUN/qlik-lb/qlik-lb.toml"
    wait_port "${PORT[qlik-lb]}"
}

start_proxy() {
    case $1 in
        haproxy) start_haproxy ;;
        nginx) start_nginx ;;
        qlik-lb) start_qlik_lb ;;
    esac
}

env_info() {
    {
        echo "date: $(date -Is)"; echo "kernel: $(uname -r)"; echo "cpus: $(nproc)"
        grep -m1 'model name' /proc/cpuinfo || true
        echo "load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
        haproxy -v | sed -n 1p; nginx -v 2>&1; wrk -v 2>&1 | sed -n 1p || true
        echo "qlik-lb: ${QLB_BIN:-$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')}"
        echo "ulimit -n: $(ulimit -n)"
        echo "DUR=$DUR REPS=$REPS CONNS=$CONNS WS_CONNS=$WS_CONNS HOLD_N=$HOLD_N HOLD_SECS=$HOLD_SECS RELOAD_N=$RELOAD_N SCENARIOS=$SCENARIOS ACCESS_LOG=$ACCESS_LOG QLB_CLUSTER=${QLB_CLUSTER:-0}"
    } >"$OUT/env.txt" 2>&1
}

sanity() { # how each proxy pins a client; fails the run if a cookie does not pin
    local p port b ok=1
    for p in $PROXIES; do
        port=${PORT[$p]}
        echo "== $p :$port, no cookie (first answer inserts SRV)"
        curl -s -D- -o /dev/null "http://127.0.0.1:$port/" | tr -d '\r' | grep -iE '^(HTTP|set-cookie|x-backend)'
        for b in b1 b2; do
            echo "== $p, Cookie: SRV=$b x3 (each must be $b, no Set-Cookie)"
            for _ in 1 2 3; do
                local h
                h=$(curl -s -D- -o /dev/null -H "Cookie: SRV=$b" "http://127.0.0.1:$port/" | tr -d '\r')
                echo "$h" | grep -iE '^(set-cookie|x-backend)'
                echo "$h" | grep -qi "^x-backend: $b$" || ok=0
                echo "$h" | grep -qi '^set-cookie' && ok=0
            done
        done
    done
    [ $ok -eq 1 ] || { echo "STICKY CHECK FAILED: a proxy did not pin by the SRV cookie" ; return 1; }
}

# ------------------------------------------------------------------ load runs
wrk_once() { # label proxy rep url [wrk args...] -> http/<label>.<rep>.txt and .cpu
    local conns=${WRK_CONNS:-$CONNS} threads=2
    [ "$conns" -lt 2 ] && threads=1    # wrk needs at least one connection per thread
    local label=$1 proxy=$2 rep=$3 url=$4; shift 4
    local pid="" before=0 after=0 b_before b_after
    [ "$proxy" != direct ] && pid=$(pid_of "$proxy") && before=$(cpu_ticks "$pid")
    b_before=$(( $(cpu_ticks "$(pid_of b1)") + $(cpu_ticks "$(pid_of b2)") ))
    local TIMEFORMAT='%U %S' client
    client=$( { time wrk -t"$threads" -c"$conns" -d"${DUR}s" --timeout 5s --latency "$@" "$url" >"$OUT/http/$label.$rep.txt" 2>&1 || true; } 2>&1 )
    [ -n "$pid" ] && after=$(cpu_ticks "$pid")
    b_after=$(( $(cpu_ticks "$(pid_of b1)") + $(cpu_ticks "$(pid_of b2)") ))
    # The backends' CPU shows what a proxy's way of writing costs the other side.
    echo "cpu_ticks=$((after - before)) backend_ticks=$((b_after - b_before)) clk_tck=$CLK_TCK" \
        "client_ticks=$(echo "$client" | awk -v t="$CLK_TCK" '{printf "%d", ($1 + $2) * t}')" >"$OUT/http/$label.$rep.cpu"
}

http_scenarios() {
    local rep p port
    log "warm-up (2 s each, not recorded)"
    for p in $PROXIES; do
        wrk -t2 -c"$CONNS" -d2s "http://127.0.0.1:${PORT[$p]}/" >/dev/null 2>&1 || true
    done
    # Reps interleave the proxies so drift in the machine's other load hits each one alike.
    for rep in $(seq 1 "$REPS"); do
        [ "$rep" -eq 1 ] && { log "direct-b1 (ceiling)"; wrk_once direct-keepalive direct 1 http://127.0.0.1:9101/; }
        for p in $PROXIES; do
            port=${PORT[$p]}
            log "rep $rep/$REPS $p: keep-alive no cookie, sticky cookie, new connections"
            wrk_once "$p-keepalive" "$p" "$rep" "http://127.0.0.1:$port/"
            wrk_once "$p-sticky" "$p" "$rep" "http://127.0.0.1:$port/" -H 'Cookie: SRV=b1'
            wrk_once "$p-newconn" "$p" "$rep" "http://127.0.0.1:$port/" -H 'Cookie: SRV=b1' -H 'Connection: close'
        done
    done
}

ws_rtt_scenarios() {
    local rep p
    for rep in $(seq 1 "$REPS"); do
        [ "$rep" -eq 1 ] && timeout 60 "$WSB" rtt --url ws://127.0.0.1:9101/ws --conns "$WS_CONNS" --secs "$DUR" --size 64 --threads 2 >"$OUT/ws/direct.rtt.1.txt" 2>&1 || true
        for p in $PROXIES; do
            log "rep $rep/$REPS $p: websocket echo"
            timeout 60 "$WSB" rtt --url "ws://127.0.0.1:${PORT[$p]}/ws" --conns "$WS_CONNS" --secs "$DUR" --size 64 --threads 2 \
                >"$OUT/ws/$p.rtt.$rep.txt" 2>&1 || true
        done
    done
}

wait_holding() { # client output file
    for _ in $(seq 1 900); do grep -q HOLDING "$1" 2>/dev/null && return 0; sleep 0.1; done
    return 1
}

hold_scenario() { # proxy
    local p=$1 pid f cpid
    pid=$(pid_of "$p")
    f="$OUT/ws/$p.hold.txt"
    log "$p: hold $HOLD_N idle websockets for ${HOLD_SECS}s"
    echo "proxy=$p conns=$HOLD_N" >"$f"
    echo "proxy_mem_before_kb(rss pss)=$(mem_kb "$pid")" >>"$f"
    timeout 120 "$WSB" hold --url "ws://127.0.0.1:${PORT[$p]}/ws" --conns "$HOLD_N" --secs "$HOLD_SECS" --concurrency 200 --threads 2 \
        >"$OUT/ws/$p.hold.client.txt" 2>&1 &
    cpid=$!
    wait_holding "$OUT/ws/$p.hold.client.txt" || echo "never_holding=1" >>"$f"
    sleep 2   # allocations settle after the last handshake
    echo "proxy_mem_holding_kb(rss pss)=$(mem_kb "$pid")" >>"$f"
    wait "$cpid" || echo "client_exit=$?" >>"$f"
    sleep 1
    echo "proxy_mem_after_kb(rss pss)=$(mem_kb "$pid")" >>"$f"
    cat "$OUT/ws/$p.hold.client.txt" >>"$f"
}

sighup_caught() { # pid -> true when the process installed a SIGHUP handler (else HUP would kill it)
    local mask
    mask=$(awk '/^SigCgt:/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0)
    (( (16#${mask:-0} & 1) == 1 ))
}

reload_scenario() { # proxy: reload while RELOAD_N tunnels are held and wrk runs
    local p=$1 pid f hpid wpid method reloads_before reloads_after
    pid=$(pid_of "$p")
    f="$OUT/reload/$p.txt"
    log "$p: reload with $RELOAD_N held websockets and wrk running"
    timeout 60 "$WSB" hold --url "ws://127.0.0.1:${PORT[$p]}/ws" --conns "$RELOAD_N" --secs 8 --concurrency 200 --threads 2 \
        >"$OUT/reload/$p.hold.txt" 2>&1 &
    hpid=$!
    wait_holding "$OUT/reload/$p.hold.txt" || true
    wrk -t1 -c32 -d6s --timeout 5s "http://127.0.0.1:${PORT[$p]}/" -H 'Cookie: SRV=b1' >"$OUT/reload/$p.wrk.txt" 2>&1 &
    wpid=$!
    sleep 2
    case $p in
        haproxy) method="SIGUSR2 to the master (-W)"; kill -USR2 "$pid" ;;
        nginx) method="SIGHUP to the master"; kill -HUP "$pid" ;;
        qlik-lb)
            reloads_before=$(metric 'qlb_config_reloads_total{result="ok"}')
            # A changed file is a reload trigger of its own (the file is watched).
            printf '\n# reloaded by the load harness at %s\n' "$(date -Is)" >>"$RUN/qlik-lb/qlik-lb.toml"
            method="config file rewritten"
            if sighup_caught "$pid"; then
                kill -HUP "$pid"; method="$method + SIGHUP"
            else
                method="$method; SIGHUP not sent: the process has no SIGHUP handler, HUP would terminate it"
            fi
            ;;
    esac
    sleep 2
    {
        echo "method=${method// /_}"
        echo "method_text: $method"
        if [ "$p" = qlik-lb ]; then
            reloads_after=$(metric 'qlb_config_reloads_total{result="ok"}')
            echo "reloads_ok_before=${reloads_before%.*} reloads_ok_after=${reloads_after%.*}"
        fi
        kill -0 "$pid" 2>/dev/null && echo "proxy_alive_after_reload=1" || echo "proxy_alive_after_reload=0"
    } >"$f"
    wait "$wpid" || true
    wait "$hpid" || true
    { echo "== wrk"; cat "$OUT/reload/$p.wrk.txt"; echo "== hold"; cat "$OUT/reload/$p.hold.txt"; } >>"$f"
}

# ------------------------------------------------------------------ tls
make_tls_certificate() { # one self-signed RSA-2048 certificate for localhost/127.0.0.1, both proxies
    mkdir -p "$RUN/tls"
    openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
        -keyout "$RUN/tls/key.pem" -out "$RUN/tls/cert.pem" 2>/dev/null
    cat "$RUN/tls/cert.pem" "$RUN/tls/key.pem" >"$RUN/tls/haproxy.pem"
}

start_tls_proxy() { # haproxy|qlik-lb -> a process of its own named <proxy>-tls
    case $1 in
        haproxy)
            haproxy -c -q -f "$HERE/conf/haproxy-tls.cfg"
            start_bg haproxy-tls haproxy -db -f "$HERE/conf/haproxy-tls.cfg"
            ;;
        qlik-lb)
            mkdir -p "$RUN/qlik-lb-tls"
            cp "$HERE/conf/qlik-lb-tls.toml" "$RUN/qlik-lb-tls/qlik-lb.toml"
            "$QLB" check -c "$RUN/qlik-lb-tls/qlik-lb.toml" >/dev/null
            start_bg qlik-lb-tls "$QLB" --log-level warn run -c "$RUN/qlik-lb-tls/qlik-lb.toml"
            ;;
    esac
    wait_port "${TLS_PORT[$1]}"
}

tls_proxies() { local p; for p in $PROXIES; do [ -n "${TLS_PORT[$p]:-}" ] && echo "$p"; done; }

tls_scenarios() {
    local rep p port
    make_tls_certificate
    for p in $(tls_proxies); do start_tls_proxy "$p"; done
    log "tls warm-up (2 s each, not recorded)"
    for p in $(tls_proxies); do
        wrk -t2 -c"$CONNS" -d2s "https://127.0.0.1:${TLS_PORT[$p]}/" >/dev/null 2>&1 || true
    done
    for rep in $(seq 1 "$REPS"); do
        for p in $(tls_proxies); do
            port=${TLS_PORT[$p]}
            log "rep $rep/$REPS $p: https keep-alive (sticky), new TLS connections"
            wrk_once "$p-tls-keepalive" "$p-tls" "$rep" "https://127.0.0.1:$port/" -H 'Cookie: SRV=b1'
            wrk_once "$p-tls-newconn" "$p-tls" "$rep" "https://127.0.0.1:$port/" -H 'Cookie: SRV=b1' -H 'Connection: close'
            mv "$OUT/http/$p-tls-"* "$OUT/tls/"
        done
    done
    # Memory: each rep starts a fresh process, so every growth is measured from the same baseline
    # (memory a process once held is not given back to the system).
    for rep in $(seq 1 "$REPS"); do
        for p in $(tls_proxies); do
            stop_one "$p-tls"; start_tls_proxy "$p"
            log "rep $rep/$REPS $p: $TLS_HOLD_N idle wss tunnels"
            timeout 120 python3 "$HERE/tls/wss_hold.py" "$TLS_HOLD_N" "${TLS_PORT[$p]}" "$(pid_of "$p-tls")" \
                >"$OUT/tls/$p.wss-hold.$rep.txt" 2>&1 || echo "failed" >>"$OUT/tls/$p.wss-hold.$rep.txt"
        done
    done
    for p in $(tls_proxies); do stop_one "$p-tls"; done
}

# Three simulated engines (qlik-lb sim) for the LB module to rank, at 20, 50 and 80 % CPU.
start_engines() {
    start_bg engines "$QLB" sim --nodes 3 --base-port "$SIM_BASE" --cert-dir "$RUN/sim-certs"
    local i cpu=(20 50 80)
    for i in 0 1 2; do
        wait_port $((SIM_BASE + i))
        curl -s -o /dev/null --max-time 2 -X POST -d "{\"cpu\":${cpu[$i]}}" "http://127.0.0.1:$((SIM_BASE + i))/__sim/control"
    done
}

prioritize_scenario() {
    local body="$OUT/lbmodule/prioritize-request.json" url="http://127.0.0.1:$QLB_LBMODULE/loadbalancing/prioritize" code rep
    local f="$OUT/lbmodule/status.txt"
    # The fixture's shape, naming the simulated engines so the module ranks real health samples.
    printf '{"AppName":"3f1c9a54-7b0e-4f8e-9a43-6f1f0a2f0c11","QlikSenseEngines":["wss://127.0.0.1:%d","wss://127.0.0.1:%d","wss://127.0.0.1:%d"]}' \
        $((SIM_BASE + 2)) $((SIM_BASE + 1)) "$SIM_BASE" >"$body"
    if ! port_open "$QLB_LBMODULE"; then
        echo "skipped: the load balancing module listener (127.0.0.1:$QLB_LBMODULE) is not open in this build" >"$f"
        log "lb module: skipped (listener not open)"; return 0
    fi
    code=$(curl -s -o "$OUT/lbmodule/sample-response.json" -w '%{http_code}' --max-time 2 -X POST \
        -H 'Content-Type: application/json' --data-binary "@$body" "$url" || echo 000)
    if [ "$code" != 200 ]; then
        echo "skipped: POST $url answered $code, not 200" >"$f"
        log "lb module: skipped ($code)"; return 0
    fi
    echo "ok: sample answer saved" >"$f"
    export PRIORITIZE_BODY=$body
    local c label
    for rep in $(seq 1 "$REPS"); do
        # QPS asks the module once per new engine session, a few at a time: the first count in
        # LBM_CONNS is the realistic one; the last saturates the shared cores (queueing, not work).
        for c in $LBM_CONNS; do
            label=lbmodule-prioritize-c$c
            log "rep $rep/$REPS lb module prioritize, $c concurrent callers"
            WRK_CONNS=$c wrk_once "$label" qlik-lb "$rep" "$url" -s "$HERE/prioritize.lua"
            mv "$OUT/http/$label.$rep.txt" "$OUT/http/$label.$rep.cpu" "$OUT/lbmodule/"
        done
    done
}

all() {
    mkdir -p "$OUT/http" "$OUT/ws" "$OUT/reload" "$OUT/lbmodule" "$OUT/tls"
    trap stop_all EXIT
    install_tools
    env_info
    build
    require_free 9101 9102 8081 8082 8083 8404 8405 8084 "$QLB_ADMIN" "$QLB_LBMODULE" 8443 8444 8407 $SIM_BASE $((SIM_BASE + 1)) $((SIM_BASE + 2)) $((SIM_BASE + 3))
    log "start backends and proxies: $PROXIES"
    start_backends
    if [[ " $PROXIES " == *" qlik-lb "* ]]; then start_engines; fi
    for p in $PROXIES; do start_proxy "$p"; done
    sanity >"$OUT/sanity.txt" 2>&1 || { cat "$OUT/sanity.txt" >&2; exit 1; }

    wanted() { [[ " $SCENARIOS " == *" $1 "* ]]; }
    if wanted http; then http_scenarios; fi
    if wanted ws; then ws_rtt_scenarios; fi
    if wanted lbm && [[ " $PROXIES " == *" qlik-lb "* ]]; then prioritize_scenario; fi
    if wanted hold; then for p in $PROXIES; do hold_scenario "$p"; done; fi
    if wanted reload; then for p in $PROXIES; do reload_scenario "$p"; done; fi
    if wanted tls; then tls_scenarios; fi

    stop_all
    python3 "$HERE/summarize.py" "$OUT" >"$OUT/summary.md"
    log "done: $OUT/summary.md"
    cat "$OUT/summary.md"
}

case "${1:-all}" in
    all) all ;;
    build) mkdir -p "$OUT"; build ;;
    stop) stop_all ;;
    *) echo "usage: $0 all|build|stop" >&2; exit 2 ;;
esac
