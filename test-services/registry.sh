#!/usr/bin/env bash
# The schema registry of the Avro and JSON Schema tests: Apicurio Registry 2.4.2, built once from
# its Maven Central artifacts (registry/pom.xml, see its header for why this version) into
# .cache/registry/build, run with its in-memory storage on 127.0.0.1:${REGISTRY_PORT:-8081}.
# Clients use its Confluent-compatible API: http://127.0.0.1:8081/apis/ccompat/v7
# (every start is empty: schemas registered before a restart are gone).
# services.sh up/down/status include it; this script also runs on its own.
#
# Usage: registry.sh up       build once, start unless it runs, wait until it answers
#        registry.sh down     stop by PID
#        registry.sh status   one line; exit 3 unless it answers
#        registry.sh pid      print its PID (exit 3 when it does not run)
#        registry.sh url      print the Confluent-compatible API's URL
#        registry.sh fastavro print a Python interpreter that has fastavro (a consumer that is
#                             not ours, for the tests), made once from PyPI in .cache/fastavro
#        registry.sh confluent print a Python interpreter that has Confluent's own client,
#                             confluent-kafka with its schema registry and Protobuf extras (the
#                             Protobuf tests' serializer and deserializer), made once from PyPI
#                             in .cache/confluent-kafka
# Environment: REGISTRY_PORT (8081), REGISTRY_HEAP (512m), START_TIMEOUT (120 s),
#   TEST_SERVICES_CACHE (state folder, .cache/), REGISTRY_BUILD (the build, default
#   .cache/registry/build: a test running its own registry with its own TEST_SERVICES_CACHE
#   points this at the shared build instead of building again).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${TEST_SERVICES_CACHE:-$here/.cache}"
run="$cache/run"
logs="$cache/logs"
build="${REGISTRY_BUILD:-$cache/registry/build}"
jar="$build/apicurio-registry-runner.jar"
pidfile="$run/registry.pid"
REGISTRY_PORT="${REGISTRY_PORT:-8081}"
REGISTRY_HEAP="${REGISTRY_HEAP:-512m}"
START_TIMEOUT="${START_TIMEOUT:-120}"
FASTAVRO_VERSION=1.12.1
CONFLUENT_KAFKA_VERSION=2.16.1
GRPCIO_TOOLS_VERSION=1.85.4
url="http://127.0.0.1:$REGISTRY_PORT/apis/ccompat/v7"

log() { echo "registry: $*" >&2; }
# shellcheck source=lib.sh
. "$here/lib.sh"

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
    exit 2
}

# The Quarkus build, once (about a minute with an empty Maven repository); the marker is written
# last, so an interrupted build is redone. Maven Central only (registry/settings.xml).
ensure_built() {
    if [ -f "$build/.complete" ]; then return; fi
    # One build at a time: tests that start registries of their own may ask at once, and two
    # Maven builds in one folder break each other. The later one finds the build done.
    mkdir -p "$(dirname "$build")"
    exec 8>"$build.lock"
    flock 8
    if [ -f "$build/.complete" ]; then exec 8>&-; return; fi
    log "building Apicurio Registry from Maven Central artifacts (once) into $build"
    local started=$SECONDS
    rm -rf "$build"
    mkdir -p "$build"
    if ! mvn -B -Dstyle.color=never -s "$here/registry/settings.xml" -f "$here/registry/pom.xml" \
        -Dregistry.build.dir="$build" package >"$logs/mvn-registry.log" 2>&1; then
        log "maven failed; the end of $logs/mvn-registry.log:"
        tail -n 40 "$logs/mvn-registry.log" >&2
        return 1
    fi
    if [ ! -f "$jar" ]; then
        log "maven built no $jar; see $logs/mvn-registry.log"
        return 1
    fi
    touch "$build/.complete"
    exec 8>&-
    log "built in $((SECONDS - started)) s"
}

# The PID of our registry, or nothing; a stale PID file (process gone or reused) is removed.
running_pid() { pid_matching "$pidfile" "apicurio-registry-runner.jar"; }

# A real request to the API the clients use, not just an open port.
answers() { curl -fsS --max-time 5 -o /dev/null "$url/subjects" 2>/dev/null; }

up() {
    local pid started
    pid="$(running_pid)"
    if [ -n "$pid" ]; then
        started=$SECONDS
        until answers; do
            if [ -z "$(running_pid)" ] || [ $((SECONDS - started)) -ge "$START_TIMEOUT" ]; then
                log "the registry (pid $pid) does not answer on $url"; return 1
            fi
            sleep 0.5
        done
        log "already runs on 127.0.0.1:$REGISTRY_PORT (pid $pid)"; return
    fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$REGISTRY_PORT") 2>/dev/null; then
        if answers; then
            log "something else answers on $url; using it as the registry"; return
        fi
        log "something else listens on 127.0.0.1:$REGISTRY_PORT (REGISTRY_PORT)"; return 1
    fi
    ensure_built
    mkdir -p "$cache/registry/tmp"
    if [ -f "$logs/registry.log" ]; then mv -f "$logs/registry.log" "$logs/registry.log.1"; fi
    log "starting Apicurio Registry on 127.0.0.1:$REGISTRY_PORT"
    started=$SECONDS
    # 9>&- keeps it from inheriting the lock services.sh holds while it starts services.
    nohup java -Xmx"$REGISTRY_HEAP" -XX:+ExitOnOutOfMemoryError \
        -Djava.io.tmpdir="$cache/registry/tmp" \
        -Dquarkus.http.host=127.0.0.1 -Dquarkus.http.port="$REGISTRY_PORT" \
        -jar "$jar" >>"$logs/registry.log" 2>&1 </dev/null 9>&- &
    echo $! >"$pidfile"
    until answers; do
        if [ -z "$(running_pid)" ]; then
            log "it exited during start-up; the end of $logs/registry.log:"
            tail -n 40 "$logs/registry.log" >&2
            return 1
        fi
        if [ $((SECONDS - started)) -ge "$START_TIMEOUT" ]; then
            log "it did not answer within ${START_TIMEOUT} s; the end of $logs/registry.log:"
            tail -n 40 "$logs/registry.log" >&2
            return 1
        fi
        sleep 0.5
    done
    log "answers on $url after $((SECONDS - started)) s"
}

down() {
    local pid
    pid="$(running_pid)"
    if [ -z "$pid" ]; then log "registry is not running"; return; fi
    terminate_pid "$pid" registry
    rm -f "$pidfile"
    log "registry stopped"
}

# A virtual environment with fastavro from PyPI, once; the marker is written last.
fastavro_python() {
    local venv="$cache/fastavro"
    if [ ! -f "$venv/.complete" ]; then
        log "installing fastavro from PyPI into $venv (once)"
        rm -rf "$venv"
        if ! { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet "fastavro==$FASTAVRO_VERSION"; } \
            >"$logs/fastavro.log" 2>&1; then
            log "installing fastavro failed; the end of $logs/fastavro.log:"
            tail -n 20 "$logs/fastavro.log" >&2
            return 1
        fi
        touch "$venv/.complete"
    fi
    echo "$venv/bin/python"
}

# A virtual environment with confluent-kafka and its schema registry and Protobuf extras from
# PyPI, and grpcio-tools (Google's protoc, to compile the .proto text a registry holds for
# Confluent's deserializer), once; the marker holds the requirements, so a new pin remakes it.
confluent_python() {
    local venv="$cache/confluent-kafka"
    local wanted="confluent-kafka[schemaregistry,protobuf]==$CONFLUENT_KAFKA_VERSION grpcio-tools==$GRPCIO_TOOLS_VERSION"
    # One install at a time: several tests ask at once on a fresh machine; the later ones
    # find it done.
    exec 7>"$venv.lock"
    flock 7
    if [ "$(cat "$venv/.complete" 2>/dev/null)" != "$wanted" ]; then
        log "installing $wanted from PyPI into $venv (once)"
        rm -rf "$venv"
        # shellcheck disable=SC2086 # the requirements are words
        if ! { python3 -m venv "$venv" && "$venv/bin/pip" install --quiet $wanted; } \
            >"$logs/confluent-kafka.log" 2>&1; then
            log "installing confluent-kafka failed; the end of $logs/confluent-kafka.log:"
            tail -n 20 "$logs/confluent-kafka.log" >&2
            return 1
        fi
        echo "$wanted" >"$venv/.complete"
    fi
    exec 7>&-
    echo "$venv/bin/python"
}

mkdir -p "$run" "$logs"
case "${1:-}" in
    up) up ;;
    down) down ;;
    pid)
        pid="$(running_pid)"
        if [ -z "$pid" ]; then exit 3; fi
        echo "$pid" ;;
    status)
        pid="$(running_pid)"
        if [ -n "$pid" ] && answers; then
            echo "registry: running (pid $pid) on 127.0.0.1:$REGISTRY_PORT, $url"
        elif [ -n "$pid" ]; then
            echo "registry: starting (pid $pid), $url does not answer yet"; exit 3
        elif answers; then
            echo "registry: not ours, but $url answers"
        else
            echo "registry: stopped"; exit 3
        fi ;;
    url) echo "$url" ;;
    fastavro) fastavro_python ;;
    confluent) confluent_python ;;
    *) usage ;;
esac
