#!/usr/bin/env bash
# A Kafka Connect worker in standalone mode running the MongoDB Kafka Connector, the peer the
# benchmarks (scripts/bench.sh) compare the daemon with. Bound to 127.0.0.1 (REST listener
# included), against the broker of services.sh (start it first).
# Kafka Connect runs from the broker's cached classpath (kafka-tools pulls connect-runtime); the
# connector and its MongoDB driver come from Maven Central once (pom.xml, profile `connect`) into
# .cache/lib/connect/mongo-kafka-connect, the worker's plugin.path, so they stay isolated.
#
# Usage: connect.sh up CONNECTOR.properties...
#                          start a worker (one at a time) running these connectors; wait
#                          until its REST API answers and every connector and task is RUNNING
#        connect.sh down   stop the worker by PID
#        connect.sh pid    print the worker's PID (exit 3 when it does not run)
#        connect.sh status one line; exit 3 unless the worker runs
# Environment: KAFKA_PORT (9092) or KAFKA_BOOTSTRAP (the broker list), CONNECT_PORT (REST,
#   8083), CONNECT_HEAP (2g, as Kafka's connect-standalone.sh), START_TIMEOUT (120 s),
#   TEST_SERVICES_CACHE (state folder, .cache/).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${TEST_SERVICES_CACHE:-$here/.cache}"
lib="$cache/lib"
run="$cache/run"
logs="$cache/logs"
state="$cache/connect"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_BOOTSTRAP="${KAFKA_BOOTSTRAP:-127.0.0.1:$KAFKA_PORT}"
CONNECT_PORT="${CONNECT_PORT:-8083}"
CONNECT_HEAP="${CONNECT_HEAP:-2g}"
START_TIMEOUT="${START_TIMEOUT:-120}"
pidfile="$run/connect.pid"
main_class=org.apache.kafka.connect.cli.ConnectStandalone

log() { echo "connect: $*" >&2; }
# shellcheck source=lib.sh
. "$here/lib.sh"

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
    exit 2
}

# The connector's jars, once; the marker is written last so an interrupted download is redone.
resolve_connector() {
    local dir="$lib/connect/mongo-kafka-connect"
    if [ -f "$lib/connect/.complete" ]; then return; fi
    log "resolving the MongoDB Kafka Connector from Maven Central (once)"
    rm -rf "${lib:?}/connect"
    mkdir -p "$dir"
    if ! mvn -B -Dstyle.color=never -f "$here/pom.xml" -Pconnect dependency:copy-dependencies \
        -DoutputDirectory="$dir" >"$logs/mvn-connect.log" 2>&1; then
        log "maven failed; the end of $logs/mvn-connect.log:"
        tail -n 40 "$logs/mvn-connect.log" >&2
        return 1
    fi
    touch "$lib/connect/.complete"
}

# The PID of our worker, or nothing; a stale PID file (process gone or reused) is removed.
running_pid() { pid_matching "$pidfile" " $main_class "; }

rest() { curl -fsS --max-time 5 "http://127.0.0.1:$CONNECT_PORT$1"; }

# 0 when the connector and all its tasks run; 1 while starting; 2 when one failed.
connector_state() {
    local status
    status="$(rest "/connectors/$1/status" 2>/dev/null)" || return 1
    if grep -q '"state":"FAILED"' <<<"$status"; then
        log "connector $1 failed: $status"
        return 2
    fi
    # Running, with at least one task and none in another state.
    grep -q '"tasks":\[{' <<<"$status" || return 1
    if [ "$(grep -o '"state":"[A-Z]*"' <<<"$status" | grep -vc RUNNING)" -ne 0 ]; then return 1; fi
    return 0
}

connector_name() { sed -n 's/^name=//p' "$1" | head -n 1; }

up() {
    if [ $# -eq 0 ]; then usage; fi
    if [ -n "$(running_pid)" ]; then
        log "a worker already runs (pid $(running_pid)); connect.sh down first"
        return 1
    fi
    if [ ! -f "$lib/kafka/.complete" ]; then
        log "the Kafka jars are missing: test-services/services.sh up kafka first"
        return 1
    fi
    local first="${KAFKA_BOOTSTRAP%%,*}"
    if ! (exec 3<>"/dev/tcp/${first%:*}/${first##*:}") 2>/dev/null; then
        log "no broker on $first: test-services/services.sh up kafka first"
        return 1
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$CONNECT_PORT") 2>/dev/null; then
        log "something already listens on 127.0.0.1:$CONNECT_PORT (CONNECT_PORT)"
        return 1
    fi
    resolve_connector
    mkdir -p "$state"
    # Offsets of the previous run's connectors mean nothing to the next one.
    rm -f "$state/offsets"
    cat >"$state/worker.properties" <<PROPS
bootstrap.servers=$KAFKA_BOOTSTRAP
listeners=http://127.0.0.1:$CONNECT_PORT
rest.advertised.host.name=127.0.0.1
rest.advertised.port=$CONNECT_PORT
plugin.path=$lib/connect
plugin.discovery=only_scan
key.converter=org.apache.kafka.connect.storage.StringConverter
value.converter=org.apache.kafka.connect.storage.StringConverter
offset.storage.file.filename=$state/offsets
offset.flush.interval.ms=10000
PROPS
    if [ -f "$logs/connect.log" ]; then mv -f "$logs/connect.log" "$logs/connect.log.1"; fi
    log "starting a Kafka Connect worker, REST on 127.0.0.1:$CONNECT_PORT, connectors: $*"
    local started=$SECONDS
    # The JVM settings of Kafka's connect-standalone.sh (heap 256M..2G, G1).
    nohup java -Xms256m -Xmx"$CONNECT_HEAP" -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -XX:+ExitOnOutOfMemoryError -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$here/log4j2-connect.xml" \
        -cp "$(echo "$lib/kafka/*")" $main_class "$state/worker.properties" "$@" \
        >>"$logs/connect.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    local file name rc
    for file in "$@"; do
        name="$(connector_name "$file")"
        while :; do
            rc=0
            connector_state "$name" || rc=$?
            if [ "$rc" -eq 0 ]; then break; fi
            if [ "$rc" -eq 2 ] || [ -z "$(running_pid)" ] \
                || [ $((SECONDS - started)) -ge "$START_TIMEOUT" ]; then
                log "connector $name did not start; the end of $logs/connect.log:"
                tail -n 40 "$logs/connect.log" >&2
                down
                return 1
            fi
            sleep 0.5
        done
    done
    log "worker runs (pid $(running_pid)) after $((SECONDS - started)) s"
}

down() {
    local pid
    pid="$(running_pid)"
    if [ -z "$pid" ]; then log "the worker is not running"; return; fi
    terminate_pid "$pid" "the worker"
    rm -f "$pidfile"
    log "worker stopped"
}

mkdir -p "$run" "$logs"
command="${1:-}"
shift || true
case "$command" in
    up) up "$@" ;;
    down) down ;;
    pid)
        pid="$(running_pid)"
        if [ -z "$pid" ]; then exit 3; fi
        echo "$pid" ;;
    status)
        pid="$(running_pid)"
        if [ -z "$pid" ]; then echo "connect: stopped"; exit 3; fi
        echo "connect: running (pid $pid), REST on 127.0.0.1:$CONNECT_PORT" ;;
    *) usage ;;
esac
