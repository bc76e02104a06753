# Shell functions shared by services.sh and connect.sh; sourced, not run.

# Stops process $1 (named $2 in messages): SIGTERM, so a broker or worker shuts down cleanly,
# then SIGKILL if it is still there after 30 s. Returns once it is gone.
terminate_pid() {
    local pid="$1" name="$2"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name ignored SIGTERM for 30 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
    fi
}

# The PID in the file $1 when that process's command line holds $2; otherwise nothing, and a
# PID file whose process is gone, or was reused by an unrelated process (after a reboot, on a
# CI machine), is removed, so a stop never kills a stranger.
pid_matching() {
    local pidfile="$1" pattern="$2" pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] \
        && tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$pattern"; then
        echo "$pid"
    else
        rm -f "$pidfile"
    fi
}
