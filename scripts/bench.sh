#!/usr/bin/env bash
# End-to-end benchmark of the daemon against raw baselines measured in the same run, on the
# local services (test-services/services.sh up first). Prints a table of ratios and writes
# JSON to bench-results/ (git-ignored). BENCH_DOCS sets the document count (default 20000).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! test-services/services.sh status >/dev/null 2>&1; then
    echo "the local services are not running: test-services/services.sh up" >&2
    exit 1
fi
cargo build --release --bin mongo-kafka-bridge --example bench_e2e
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(free -g | awk '/Mem:/ {print $2}') GiB RAM"
target/release/examples/bench_e2e target/release/mongo-kafka-bridge bench-results
