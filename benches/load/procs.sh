# Process control shared by the load scripts: every process is started in the background with
# its PID recorded under $RUN/pids and stopped by that PID, never by name.

start_bg() { # name cmd...
    local name=$1; shift
    mkdir -p "$RUN/pids"
    "$@" >"$RUN/$name.out" 2>&1 &
    echo $! >"$RUN/pids/$name.pid"
}

pid_of() { cat "$RUN/pids/$1.pid"; }

stop_one() { # name
    local f="$RUN/pids/$1.pid" pid
    [ -f "$f" ] || return 0
    pid=$(cat "$f")
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    fi
    rm -f "$f"
}

stop_all() {
    [ -d "$RUN/pids" ] || return 0
    for f in "$RUN"/pids/*.pid; do [ -e "$f" ] && stop_one "$(basename "$f" .pid)"; done
    return 0
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port
    for _ in $(seq 1 100); do port_open "$1" && return 0; sleep 0.1; done
    echo "port $1 did not open" >&2; return 1
}
