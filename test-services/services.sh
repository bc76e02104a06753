#!/usr/bin/env bash
# The local services of the tests, benchmarks and example configuration, bound to 127.0.0.1:
#   Apache Kafka, a single-node KRaft broker+controller     127.0.0.1:${KAFKA_PORT:-9092}
#     and a SASL_SSL listener (TLS, SASL/SCRAM-SHA-512)     127.0.0.1:${KAFKA_SSL_PORT:-9094}
#     (clients trust .cache/tls/ca.pem, a test CA made once with keytool, and log in as
#     KAFKA_SCRAM_USER with KAFKA_SCRAM_PASSWORD, a user created with the storage, or at the
#     next start for storage formatted before)
#   mongo-java-server with an oplog (change streams)        127.0.0.1:${MONGO_PORT:-27017}
#     (MongoStandIn.java and the *.java beside it; see README.md for how its change events
#     are made like MongoDB's and where they still differ)
#   Apicurio Registry, a schema registry (registry.sh)      127.0.0.1:${REGISTRY_PORT:-8081}
# Jars come from Maven Central once and are cached in .cache/ (git-ignored). `up` first runs
# setup.sh, which installs what a fresh machine lacks (Java, Maven, build tools; as root) and
# fetches the Prometheus server of the dashboard test.
#
# Usage: services.sh up [kafka|mongo|registry]      start what is not running yet, wait until it answers
#        services.sh down [kafka|mongo|registry] [--wipe]
#                                          stop by PID; --wipe also deletes the Kafka data (and
#                                          MONGO_H2_FILE), so the next `up` starts empty
#        services.sh status                one line per service; exit 3 unless all answer
#        services.sh kafka-cli CLASS ARGS...
#                                          run a Kafka tool class on the cached classpath, e.g.
#            kafka-cli org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:9092 --list
#            kafka-cli org.apache.kafka.tools.ConsoleProducer --bootstrap-server 127.0.0.1:9092 --topic t
#            kafka-cli org.apache.kafka.tools.consumer.ConsoleConsumer --bootstrap-server 127.0.0.1:9092 \
#                --topic t --from-beginning --max-messages 1
# Environment: KAFKA_PORT, KAFKA_CONTROLLER_PORT (9093), KAFKA_SSL_PORT (9094), KAFKA_SPLIT_PORT
#   and KAFKA_SPLIT_ADVERTISED_PORT (none: see below), KAFKA_SCRAM_USER
#   (mkb-test), KAFKA_SCRAM_PASSWORD (mkb-test-secret), MONGO_PORT, START_TIMEOUT (120 s),
#   KAFKA_HEAP (1g), MONGO_HEAP (4g: the stand-in keeps every write of a test run in its
#   oplog), MONGO_H2_FILE (keep the stand-in's data in this H2 file
#   across restarts instead of memory), TEST_SERVICES_CACHE (state folder: data, logs, PIDs,
#   TLS material; default .cache/; jars and compiled classes always stay in .cache/).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="${TEST_SERVICES_CACHE:-$here/.cache}"
# Jars and the compiled launcher are the same whatever the state folder: they stay in the
# checkout's cache, so a test running services of its own (TEST_SERVICES_CACHE) reuses them.
lib="$here/.cache/lib"
run="$cache/run"
logs="$cache/logs"
kafka_data="$cache/kafka-data"
# Who the SCRAM user of kafka_data is, once created: "<user> <password>".
scram_marker="$cache/kafka-data.scram"
tls="$cache/tls"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
KAFKA_SSL_PORT="${KAFKA_SSL_PORT:-9094}"
# Optional: a third PLAINTEXT listener on KAFKA_SPLIT_PORT that advertises
# KAFKA_SPLIT_ADVERTISED_PORT, where a test puts a proxy in front of it: a client that
# bootstraps there reaches the broker only through the proxy, so a test can cut one client
# off the broker (a network split) while the others go on.
KAFKA_SPLIT_PORT="${KAFKA_SPLIT_PORT:-}"
KAFKA_SPLIT_ADVERTISED_PORT="${KAFKA_SPLIT_ADVERTISED_PORT:-$KAFKA_SPLIT_PORT}"
KAFKA_SCRAM_USER="${KAFKA_SCRAM_USER:-mkb-test}"
KAFKA_SCRAM_PASSWORD="${KAFKA_SCRAM_PASSWORD:-mkb-test-secret}"
# Protects only the local test keystores in $tls; not a secret.
TLS_STORE_PASSWORD="mkb-test-keystore"
MONGO_PORT="${MONGO_PORT:-27017}"
START_TIMEOUT="${START_TIMEOUT:-120}"
KAFKA_HEAP="${KAFKA_HEAP:-1g}"
MONGO_HEAP="${MONGO_HEAP:-4g}"
MONGO_H2_FILE="${MONGO_H2_FILE:-}"

log() { echo "services: $*" >&2; }
# shellcheck source=lib.sh
. "$here/lib.sh"

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
    exit 2
}

# Resolves the jars of one Maven profile (kafka, mongo) once; the marker file is written last,
# so an interrupted download is redone rather than leaving a half classpath.
resolve() {
    local profile="$1"
    if [ -f "$lib/$profile/.complete" ]; then return; fi
    log "resolving $profile jars from Maven Central (once)"
    local started=$SECONDS
    rm -rf "${lib:?}/$profile"
    if ! mvn -B -Dstyle.color=never -f "$here/pom.xml" -P"$profile" dependency:copy-dependencies \
        -DoutputDirectory="$lib/$profile" >"$logs/mvn-$profile.log" 2>&1; then
        log "maven failed; the end of $logs/mvn-$profile.log:"
        tail -n 40 "$logs/mvn-$profile.log" >&2
        return 1
    fi
    touch "$lib/$profile/.complete"
    log "$profile jars resolved in $((SECONDS - started)) s"
}

classpath() { echo "$lib/$1/*"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The Java main class that identifies each service's process.
main_class() {
    case "$1" in
        kafka) echo kafka.Kafka ;;
        mongo) echo MongoStandIn ;;
    esac
}

# The PID of the running service, or nothing (lib.sh `pid_matching`).
running_pid() { pid_matching "$run/$1.pid" " $(main_class "$1") "; }

# Keeps the previous run's log beside the new one, so a failure's tail shows only this run.
rotate_log() {
    if [ -f "$logs/$1.log" ]; then mv -f "$logs/$1.log" "$logs/$1.log.1"; fi
}

# Waits until the check (a command and its arguments) succeeds; fails with the tail of the
# service's log when the process dies or START_TIMEOUT passes. The process is watched by the
# PID in its PID file with `kill -0`, not by its command line: right after `nohup ... &` the
# child may not have become Java yet, and judging it by its command line then removed the PID
# file of a stand-in that went on to start (`status` then called it "not ours").
wait_until() {
    local name="$1" started=$SECONDS pid; shift
    pid="$(cat "$run/$name.pid" 2>/dev/null || true)"
    until "$@"; do
        if [ -z "$pid" ] || ! kill -0 "$pid" 2>/dev/null; then
            log "$name exited during start-up; the end of $logs/$name.log:"
            tail -n 40 "$logs/$name.log" >&2
            rm -f "$run/$name.pid"
            return 1
        fi
        if [ $((SECONDS - started)) -ge "$START_TIMEOUT" ]; then
            log "$name did not answer within ${START_TIMEOUT} s; the end of $logs/$name.log:"
            tail -n 40 "$logs/$name.log" >&2
            return 1
        fi
        sleep 0.5
    done
}

kafka_tool() {
    local class="$1"; shift
    java -Xmx256m -Dlog4j2.configurationFile="$here/log4j2-tools.xml" \
        -cp "$(classpath kafka)" "$class" "$@"
}

# A real request, not just an open port: the broker must return its metadata and be unfenced.
kafka_answers() {
    local out
    port_open "$KAFKA_PORT" || return 1
    out="$(timeout 30 java -Xmx128m -Dlog4j2.configurationFile="$here/log4j2-tools.xml" \
        -cp "$(classpath kafka)" org.apache.kafka.tools.BrokerApiVersionsCommand \
        --bootstrap-server "127.0.0.1:$KAFKA_PORT" 2>/dev/null)" || return 1
    grep -q 'isFenced: false' <<<"$out"
}

# Every listener is open: the PLAINTEXT one answers requests, the SASL_SSL one accepts
# connections (the broker opens its listeners together).
kafka_ready() {
    kafka_answers && port_open "$KAFKA_SSL_PORT"
}

mongo_answers() {
    grep -q 'mongo-stand-in ready' "$logs/mongo.log" 2>/dev/null && port_open "$MONGO_PORT"
}

# A test CA (ca.pem, for clients' `ssl.ca.location`) and the broker's keystore (broker.p12,
# a key and a certificate the CA signed for localhost and 127.0.0.1), made once with the JDK's
# keytool. Made aside and moved in place, so an interrupted run is redone.
ensure_tls() {
    if [ -f "$tls/.complete" ]; then return; fi
    log "making a test CA and the broker's TLS certificate in $tls (once)"
    local tmp="$tls.new" pass="$TLS_STORE_PASSWORD" out="$logs/tls.log"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    {
        keytool -genkeypair -alias ca -keyalg RSA -keysize 2048 -validity 3650 \
            -dname "CN=mongo-kafka-bridge test CA" -ext bc:c \
            -keystore "$tmp/ca.p12" -storetype PKCS12 -storepass "$pass"
        keytool -exportcert -rfc -alias ca -keystore "$tmp/ca.p12" -storepass "$pass" \
            -file "$tmp/ca.pem"
        keytool -genkeypair -alias broker -keyalg RSA -keysize 2048 -validity 3650 \
            -dname "CN=localhost" -keystore "$tmp/broker.p12" -storetype PKCS12 -storepass "$pass"
        keytool -certreq -alias broker -keystore "$tmp/broker.p12" -storepass "$pass" \
            -file "$tmp/broker.csr"
        keytool -gencert -rfc -alias ca -keystore "$tmp/ca.p12" -storepass "$pass" \
            -infile "$tmp/broker.csr" -outfile "$tmp/broker.pem" -validity 3650 \
            -ext "SAN=dns:localhost,ip:127.0.0.1" -ext "EKU=serverAuth"
        keytool -importcert -noprompt -alias ca -file "$tmp/ca.pem" \
            -keystore "$tmp/broker.p12" -storepass "$pass"
        keytool -importcert -noprompt -alias broker -file "$tmp/broker.pem" \
            -keystore "$tmp/broker.p12" -storepass "$pass"
    } >"$out" 2>&1 || { log "keytool failed; see $out"; tail -n 20 "$out" >&2; return 1; }
    touch "$tmp/.complete"
    rm -rf "$tls"
    mv "$tmp" "$tls"
}

# The SCRAM credential the SASL_SSL listener accepts, as StorageTool and ConfigCommand take it.
scram_credential() {
    echo "SCRAM-SHA-512=[$1password=$KAFKA_SCRAM_PASSWORD]"
}

write_kafka_properties() {
    local split_listener="" split_advertised=""
    if [ -n "$KAFKA_SPLIT_PORT" ]; then
        split_listener=",SPLIT://127.0.0.1:$KAFKA_SPLIT_PORT"
        split_advertised=",SPLIT://127.0.0.1:$KAFKA_SPLIT_ADVERTISED_PORT"
    fi
    # Replication factors of 1 let consumer groups and transactions work on one node; the
    # initial rebalance delay of 0 keeps tests from waiting 3 s for every new group. Brokers
    # and tools talk PLAINTEXT; the SASL_SSL listener is for clients testing TLS and SCRAM.
    cat >"$1" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT,SASL_SSL://127.0.0.1:$KAFKA_SSL_PORT$split_listener
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,SASL_SSL://127.0.0.1:$KAFKA_SSL_PORT$split_advertised
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT,SASL_SSL:SASL_SSL,SPLIT:PLAINTEXT
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
ssl.keystore.type=PKCS12
ssl.keystore.location=$tls/broker.p12
ssl.keystore.password=$TLS_STORE_PASSWORD
ssl.key.password=$TLS_STORE_PASSWORD
ssl.client.auth=none
log.dirs=$kafka_data
num.partitions=1
auto.create.topics.enable=true
delete.topic.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
}

up_kafka() {
    local pid started
    pid="$(running_pid kafka)"
    if [ -n "$pid" ]; then
        # Ours, perhaps still starting (another `up` launched it): wait rather than start twice.
        wait_until kafka kafka_answers
        log "kafka already runs on 127.0.0.1:$KAFKA_PORT (pid $pid)"
        if ! port_open "$KAFKA_SSL_PORT"; then
            log "warning: it has no SASL_SSL listener on 127.0.0.1:$KAFKA_SSL_PORT (started by an older" \
                "services.sh?); \`services.sh down kafka && services.sh up kafka\` adds it"
        fi
        return
    fi
    if port_open "$KAFKA_PORT"; then
        log "something else listens on 127.0.0.1:$KAFKA_PORT; using it as Kafka"; return
    fi
    resolve kafka
    started=$SECONDS
    ensure_tls
    local props="$cache/kafka.properties"
    write_kafka_properties "$props"
    rotate_log kafka
    if [ ! -f "$kafka_data/meta.properties" ]; then
        log "formatting Kafka storage in $kafka_data"
        rm -f "$scram_marker"
        kafka_tool kafka.tools.StorageTool format --config "$props" \
            --cluster-id "$(kafka_tool kafka.tools.StorageTool random-uuid)" \
            --add-scram "$(scram_credential "name=$KAFKA_SCRAM_USER,")" >>"$logs/kafka.log" 2>&1
        echo "$KAFKA_SCRAM_USER $KAFKA_SCRAM_PASSWORD" >"$scram_marker"
    fi
    log "starting kafka on 127.0.0.1:$KAFKA_PORT"
    # 9>&- keeps the service from inheriting the lock of this script.
    nohup java -Xms256m -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -XX:+ExitOnOutOfMemoryError \
        -Djava.awt.headless=true -Dlog4j2.configurationFile="$here/log4j2.xml" \
        -cp "$(classpath kafka)" kafka.Kafka "$props" >>"$logs/kafka.log" 2>&1 </dev/null 9>&- &
    echo $! >"$run/kafka.pid"
    wait_until kafka kafka_ready
    # Storage formatted by an older services.sh, or another user or password asked for.
    if [ "$(cat "$scram_marker" 2>/dev/null)" != "$KAFKA_SCRAM_USER $KAFKA_SCRAM_PASSWORD" ]; then
        log "creating the SCRAM user $KAFKA_SCRAM_USER"
        kafka_tool kafka.admin.ConfigCommand --bootstrap-server "127.0.0.1:$KAFKA_PORT" --alter \
            --add-config "$(scram_credential "iterations=4096,")" \
            --entity-type users --entity-name "$KAFKA_SCRAM_USER" >>"$logs/kafka.log" 2>&1
        echo "$KAFKA_SCRAM_USER $KAFKA_SCRAM_PASSWORD" >"$scram_marker"
    fi
    log "kafka answers on 127.0.0.1:$KAFKA_PORT (SASL_SSL on $KAFKA_SSL_PORT) after $((SECONDS - started)) s"
}

up_mongo() {
    local pid started
    pid="$(running_pid mongo)"
    if [ -n "$pid" ]; then
        wait_until mongo mongo_answers
        log "mongo stand-in already runs on 127.0.0.1:$MONGO_PORT (pid $pid)"; return
    fi
    if port_open "$MONGO_PORT"; then
        log "something else listens on 127.0.0.1:$MONGO_PORT; using it as MongoDB"; return
    fi
    resolve mongo
    started=$SECONDS
    # The launcher is every *.java beside this script (MongoStandIn and the backends and oplog it
    # installs, see README.md), compiled again when one of them is newer than the last compile.
    # It is compiled aside and then moved in place, so a failed compile leaves the last good one.
    local classes="$here/.cache/classes"
    if [ ! -f "$classes/.compiled" ] \
        || [ -n "$(find "$here" -maxdepth 1 -name '*.java' -newer "$classes/.compiled" -print -quit)" ]; then
        log "compiling the mongo stand-in launcher"
        rm -rf "$classes.new"
        mkdir -p "$classes.new"
        touch "$classes.new/.compiled" # before javac: a source saved meanwhile is compiled next time
        javac -nowarn -d "$classes.new" -cp "$(classpath mongo)" "$here"/*.java
        rm -rf "$classes"
        mv "$classes.new" "$classes"
    fi
    rotate_log mongo
    log "starting the mongo stand-in on 127.0.0.1:$MONGO_PORT"
    local args=(--port "$MONGO_PORT")
    if [ -n "$MONGO_H2_FILE" ]; then args+=(--h2 "$MONGO_H2_FILE"); fi
    # Timestamps in the log line up the stand-in's connection events with a fault test's steps.
    nohup java -Xmx"$MONGO_HEAP" -XX:+ExitOnOutOfMemoryError \
        -Dorg.slf4j.simpleLogger.showDateTime=true \
        -Dorg.slf4j.simpleLogger.dateTimeFormat="yyyy-MM-dd HH:mm:ss,SSS" \
        -cp "$classes:$(classpath mongo)" MongoStandIn "${args[@]}" \
        >>"$logs/mongo.log" 2>&1 </dev/null 9>&- &
    echo $! >"$run/mongo.pid"
    wait_until mongo mongo_answers
    log "mongo stand-in answers on 127.0.0.1:$MONGO_PORT after $((SECONDS - started)) s"
}

# The registry has its own script; services.sh passes it up, down and status.
up_registry() { "$here/registry.sh" up; }

stop() {
    local name="$1" pid
    if [ "$name" = registry ]; then "$here/registry.sh" down; return; fi
    pid="$(running_pid "$name")"
    if [ -z "$pid" ]; then log "$name is not running"; return; fi
    # Kafka shuts down cleanly on TERM (flushes, closes the log); KILL only if it hangs.
    terminate_pid "$pid" "$name"
    rm -f "$run/$name.pid"
    # A start right after this must find the port free, not take the old listener for
    # something else's.
    local port="$MONGO_PORT" waited=0
    if [ "$name" = kafka ]; then port="$KAFKA_PORT"; fi
    while port_open "$port" && [ "$waited" -lt 100 ]; do sleep 0.1; waited=$((waited + 1)); done
    log "$name stopped"
}

status() {
    local name pid port all=0
    for name in kafka mongo; do
        pid="$(running_pid "$name")"
        if [ "$name" = kafka ]; then port="$KAFKA_PORT"; else port="$MONGO_PORT"; fi
        if [ -n "$pid" ] && port_open "$port"; then
            if [ "$name" = kafka ]; then
                if port_open "$KAFKA_SSL_PORT"; then
                    echo "kafka: running (pid $pid) on 127.0.0.1:$port, SASL_SSL on 127.0.0.1:$KAFKA_SSL_PORT"
                else
                    echo "kafka: running (pid $pid) on 127.0.0.1:$port, no SASL_SSL listener on 127.0.0.1:$KAFKA_SSL_PORT"
                fi
                continue
            fi
            echo "$name: running (pid $pid) on 127.0.0.1:$port"
        elif [ -n "$pid" ]; then
            echo "$name: starting (pid $pid), 127.0.0.1:$port not open yet"; all=3
        elif port_open "$port"; then
            echo "$name: not ours, but something listens on 127.0.0.1:$port"
        else
            echo "$name: stopped"; all=3
        fi
    done
    "$here/registry.sh" status || all=3
    return "$all"
}

which_services() {
    case "${1:-all}" in
        all) echo "kafka mongo registry" ;;
        kafka|mongo|registry) echo "$1" ;;
        *) log "unknown service: $1 (kafka, mongo, registry)"; usage ;;
    esac
}

mkdir -p "$run" "$logs"
command="${1:-}"
shift || true
case "$command" in
    up|down)
        # One `up` or `down` at a time, so parallel test processes do not start a service twice.
        exec 9>"$run/.lock"
        flock 9 ;;
esac
case "$command" in
    up)
        # What a fresh machine lacks (Java, Maven, build tools, Prometheus), first.
        "$here/setup.sh"
        services="$(which_services "${1:-all}")"
        for s in $services; do "up_$s"; done ;;
    down)
        wipe=false target=all
        for arg in "$@"; do
            case "$arg" in --wipe) wipe=true ;; *) target="$arg" ;; esac
        done
        services="$(which_services "$target")"
        for s in $services; do
            stop "$s"
            if $wipe && [ "$s" = kafka ]; then
                rm -rf "$kafka_data" "$scram_marker"; log "kafka data wiped"
            fi
            if $wipe && [ "$s" = mongo ] && [ -n "$MONGO_H2_FILE" ]; then
                rm -f "$MONGO_H2_FILE"; log "$MONGO_H2_FILE wiped"
            fi
        done ;;
    status) status ;;
    kafka-cli)
        if [ $# -eq 0 ]; then usage; fi
        resolve kafka
        kafka_tool "$@" ;;
    *) usage ;;
esac
