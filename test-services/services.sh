#!/usr/bin/env bash
# The local services of the tests and the example configuration, bound to 127.0.0.1:
#   Apache Kafka, a single-node KRaft broker+controller     127.0.0.1:${KAFKA_PORT:-9092}
#   mongo-java-server with its oplog (change streams)       127.0.0.1:${MONGO_PORT:-27017}
# Jars come from Maven Central once and are cached in .cache/ (git-ignored).
#
# Usage: services.sh up [kafka|mongo]     start (a no-op for what already runs), wait until it answers
#        services.sh down [kafka|mongo] [--wipe]   stop by PID; --wipe also deletes the Kafka data
#        services.sh status
#        services.sh kafka-cli CLASS ARGS...   run a Kafka tool class, e.g.
#            services.sh kafka-cli org.apache.kafka.tools.TopicCommand --bootstrap-server 127.0.0.1:9092 --list
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cache="$here/.cache"
lib="$cache/lib"
run="$cache/run"
logs="$cache/logs"
KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-9093}"
MONGO_PORT="${MONGO_PORT:-27017}"
START_TIMEOUT="${START_TIMEOUT:-120}"
mkdir -p "$run" "$logs"

log() { echo "services: $*" >&2; }

# Resolves the jars of one Maven profile (kafka, mongo) once.
resolve() {
    local profile="$1"
    if [ -f "$lib/$profile/.complete" ]; then return; fi
    log "resolving $profile jars from Maven Central (once)"
    rm -rf "${lib:?}/$profile"
    mvn -q -B -Dstyle.color=never -f "$here/pom.xml" -P"$profile" dependency:copy-dependencies \
        -DoutputDirectory="$lib/$profile" >&2
    touch "$lib/$profile/.complete"
}

classpath() { echo "$lib/$1/*"; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The PID of a running service, or nothing (a stale PID file is removed).
running_pid() {
    local pidfile="$run/$1.pid" pid
    [ -f "$pidfile" ] || return 0
    pid="$(cat "$pidfile")"
    if kill -0 "$pid" 2>/dev/null; then echo "$pid"; else rm -f "$pidfile"; fi
}

# Waits until "$2" (a command) succeeds, or fails with the tail of the service's log.
wait_until() {
    local name="$1" check="$2" deadline=$((SECONDS + START_TIMEOUT)) pid
    until eval "$check"; do
        pid="$(running_pid "$name")"
        if [ -z "$pid" ]; then
            log "$name exited during start-up; its log:"
            tail -n 40 "$logs/$name.log" >&2
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            log "$name did not answer within ${START_TIMEOUT}s; its log:"
            tail -n 40 "$logs/$name.log" >&2
            return 1
        fi
        sleep 0.5
    done
}

kafka_tool() {
    local class="$1"; shift
    java -Xmx256m -Dlog4j2.configurationFile="$here/log4j2.xml" -Dlog4j2.level=WARN \
        -cp "$(classpath kafka)" "$class" "$@"
}

kafka_answers() {
    kafka_tool org.apache.kafka.tools.BrokerApiVersionsCommand \
        --bootstrap-server "127.0.0.1:$KAFKA_PORT" >/dev/null 2>&1
}

up_kafka() {
    if [ -n "$(running_pid kafka)" ] && port_open "$KAFKA_PORT"; then
        log "kafka already runs on 127.0.0.1:$KAFKA_PORT"; return
    fi
    if port_open "$KAFKA_PORT"; then
        log "something else listens on 127.0.0.1:$KAFKA_PORT; using it as Kafka"; return
    fi
    resolve kafka
    local data="$cache/kafka-data" props="$cache/kafka.properties"
    cat >"$props" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$data
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=4
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
log.flush.interval.messages=10000
delete.topic.enable=true
PROPS
    if [ ! -f "$data/meta.properties" ]; then
        log "formatting Kafka storage in $data"
        kafka_tool kafka.tools.StorageTool format --config "$props" \
            --cluster-id "$(kafka_tool kafka.tools.StorageTool random-uuid)" >>"$logs/kafka.log" 2>&1
    fi
    log "starting kafka on 127.0.0.1:$KAFKA_PORT"
    nohup java -Xms256m -Xmx1g -XX:+UseG1GC -Djava.awt.headless=true \
        -Dlog4j2.configurationFile="$here/log4j2.xml" \
        -cp "$(classpath kafka)" kafka.Kafka "$props" >>"$logs/kafka.log" 2>&1 </dev/null &
    echo $! >"$run/kafka.pid"
    wait_until kafka kafka_answers
    log "kafka answers on 127.0.0.1:$KAFKA_PORT"
}

up_mongo() {
    if [ -n "$(running_pid mongo)" ] && port_open "$MONGO_PORT"; then
        log "mongo stand-in already runs on 127.0.0.1:$MONGO_PORT"; return
    fi
    if port_open "$MONGO_PORT"; then
        log "something else listens on 127.0.0.1:$MONGO_PORT; using it as MongoDB"; return
    fi
    resolve mongo
    local classes="$cache/classes"
    if [ ! -f "$classes/MongoStandIn.class" ] || [ "$here/MongoStandIn.java" -nt "$classes/MongoStandIn.class" ]; then
        mkdir -p "$classes"
        javac -d "$classes" -cp "$(classpath mongo)" "$here/MongoStandIn.java"
    fi
    log "starting the mongo stand-in on 127.0.0.1:$MONGO_PORT"
    : >"$logs/mongo.log"
    nohup java -Xmx1g -cp "$classes:$(classpath mongo)" MongoStandIn --port "$MONGO_PORT" ${MONGO_H2_FILE:+--h2 "$MONGO_H2_FILE"} \
        >>"$logs/mongo.log" 2>&1 </dev/null &
    echo $! >"$run/mongo.pid"
    wait_until mongo "grep -q 'mongo-stand-in ready' '$logs/mongo.log' && port_open $MONGO_PORT"
    log "mongo stand-in answers on 127.0.0.1:$MONGO_PORT"
}

stop() {
    local name="$1" pid
    pid="$(running_pid "$name")"
    if [ -z "$pid" ]; then log "$name is not running"; return; fi
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 60); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name ignored SIGTERM for 30 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$run/$name.pid"
    log "$name stopped"
}

status() {
    local name pid
    for name in kafka mongo; do
        pid="$(running_pid "$name")"
        if [ -n "$pid" ]; then echo "$name: running (pid $pid)"; else echo "$name: stopped"; fi
    done
}

which_services() {
    case "${1:-all}" in
        all) echo "kafka mongo" ;;
        kafka|mongo) echo "$1" ;;
        *) log "unknown service: $1 (kafka, mongo)"; exit 2 ;;
    esac
}

command="${1:-}"
shift || true
case "$command" in
    up)
        for s in $(which_services "${1:-all}"); do "up_$s"; done ;;
    down)
        wipe=false target=all
        for arg in "$@"; do
            case "$arg" in --wipe) wipe=true ;; *) target="$arg" ;; esac
        done
        for s in $(which_services "$target"); do stop "$s"; done
        if $wipe; then rm -rf "$cache/kafka-data"; log "kafka data wiped"; fi ;;
    status) status ;;
    kafka-cli)
        resolve kafka
        kafka_tool "$@" ;;
    *)
        sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
        exit 2 ;;
esac
