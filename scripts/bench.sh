#!/usr/bin/env bash
# End-to-end benchmark of the daemon against raw baselines (the same crates doing only the I/O)
# and against the MongoDB Kafka Connector on Kafka Connect, all in one run on the local services
# (test-services/services.sh up first, with the same KAFKA_PORT/MONGO_PORT as for this script).
# Prints one table of ratios and writes JSON to bench-results/ (git-ignored). Scenarios, how they
# are measured and the knobs for investigating: the header of examples/bench_e2e.rs.
#
# Every part sizes itself by time (BENCH_SECONDS) unless BENCH_DOCS forces a count. The MongoDB
# stand-in keeps every write in its oplog (~4.5 KB of heap per document), so each part's N is
# capped by MONGO_HEAP: the sink parts write about 10 x their N within half of it, the other
# parts about 27 x theirs (all of them, with the peer) within three eighths, near 13,000
# documents a part at 4g; give the stand-in more heap for full-length runs. Start from a fresh
# stand-in (services.sh down mongo; services.sh up mongo) and never point this at services
# others use.
#
# Environment:
#   BENCH_DOCS=N        documents per run of every part (default: sized by time)
#   BENCH_SECONDS=S     how long each run's measured part lasts (default 10): a sizing run of
#                       5000 documents (more while it is short) picks each part's N from its rate
#   MONGO_HEAP          the stand-in's heap as given to services.sh (default 4g): caps each N
#   BENCH_PEER=0        skip the MongoDB Kafka Connector (it needs Java and Maven Central once)
#   BENCH_SCALE=0       skip the scale scenarios (10/100 collections, 1/32 partitions, 1/2/3
#                       daemons sharing one source pipeline)
#   BENCH_ONLY=...      only these parts: source, sink, copy, formats (the source in relaxed_json,
#                       avro and json_schema against canonical_json; avro and json_schema need
#                       the schema registry of services.sh up), scale, scale-source, scale-sink,
#                       scale-out
#   BENCH_SCALE_COLLECTIONS=100   only these scale-source runs (1, 10, 100, 100db: the 100 through
#                       one database stream; default all)
#   BENCH_CHECKPOINT_LOAD=0   skip the checkpoint load scenario (examples/bench_checkpoint_load.rs:
#                       a load from a topic of 1,000,000 old checkpoints as a ratio to a fresh one;
#                       BENCH_CHECKPOINTS=N old checkpoints)
#   BENCH_CRITERION=1   also run the in-process criterion benches (`cargo bench`) and summarise
#   KAFKA_BOOTSTRAP, MONGODB_URI   default: 127.0.0.1 on KAFKA_PORT (9092) and MONGO_PORT (27017)
#   CONNECT_PORT        the Connect worker's REST port (default: a free one)
set -euo pipefail
cd "$(dirname "$0")/.."

export KAFKA_BOOTSTRAP="${KAFKA_BOOTSTRAP:-127.0.0.1:${KAFKA_PORT:-9092}}"
export MONGODB_URI="${MONGODB_URI:-mongodb://127.0.0.1:${MONGO_PORT:-27017}}"

if ! test-services/services.sh status >/dev/null 2>&1; then
    echo "the local services are not running: test-services/services.sh up" >&2
    echo "(with the same KAFKA_PORT, KAFKA_CONTROLLER_PORT and MONGO_PORT as this script)" >&2
    exit 1
fi
started=$SECONDS
cargo build --release --bin mongo-kafka-bridge --example bench_e2e --example bench_checkpoint_load
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB RAM; load average $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (modified)')"
peer=()
if [ "${BENCH_PEER:-1}" != 0 ]; then peer=(test-services/connect.sh); fi
status=0
target/release/examples/bench_e2e target/release/mongo-kafka-bridge bench-results "${peer[@]}" || status=$?
if [ "${BENCH_CHECKPOINT_LOAD:-1}" != 0 ]; then
    echo
    target/release/examples/bench_checkpoint_load || status=$?
fi

if [ "${BENCH_CRITERION:-0}" = 1 ]; then
    cargo bench --bench conversion --bench mailbox -- --noplot
    echo
    echo "criterion (one thread, so per core); the conversion target is >= 200000 events/s:"
    # Each group measured a batch of N elements per iteration: elements/s = N / mean time.
    for estimates in target/criterion/*/*/new/estimates.json; do
        dir="$(dirname "$(dirname "$estimates")")"
        bench="$(basename "$(dirname "$dir")")/$(basename "$dir")"
        # The slope (time per iteration from the linear fit) where criterion has one, else the
        # mean: the figure criterion prints.
        mean_ns="$(grep -o '"slope":{[^}]*}[^}]*}' "$estimates" | grep -o '"point_estimate":[0-9.e+-]*' | cut -d: -f2)"
        if [ -z "$mean_ns" ]; then
            mean_ns="$(grep -o '"mean":{[^}]*}[^}]*}' "$estimates" | grep -o '"point_estimate":[0-9.e+-]*' | cut -d: -f2)"
        fi
        elements="$(grep -o '"Elements":[0-9]*' "$dir/new/benchmark.json" | cut -d: -f2)"
        if [ -n "$mean_ns" ] && [ -n "$elements" ]; then
            awk -v b="$bench" -v ns="$mean_ns" -v n="$elements" \
                'BEGIN { printf "  %-40s %12.0f /s\n", b, n * 1e9 / ns }'
        fi
    done
else
    echo
    echo "in-process benches (conversion per core, mailbox hand-off): cargo bench, or BENCH_CRITERION=1 $0"
fi
echo "bench.sh took $((SECONDS - started)) s"
exit "$status"
