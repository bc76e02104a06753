#!/usr/bin/env bash
# The soak run (tests/soak.rs): a source → sink chain under continuous traffic with a fault
# every SOAK_FAULT_EVERY seconds (SIGKILL, MongoDB cut, reload, reader restart, and with
# SOAK_RESTART_KAFKA=1 a Kafka broker restart), for SOAK_SECONDS (default 300); checks every
# document arrived and memory stayed bounded. The 10-minute run: SOAK_SECONDS=600.
#
# SOAK_MODE=scale-out: three daemons share an exactly-once source and a sink (a broker of the
# test's own, keys in Avro through the schema registry) for SOAK_SECONDS (default 3600), with
# a fault every SOAK_FAULT_EVERY seconds (default 60): kill -9, SIGSTOP past the session
# timeout, a slot's producer fenced, the registry unreachable, the broker restarted, a
# reload. Checks every change arrived exactly once (read_committed), every key at its last
# version in the sink's copy, RSS flat, and the time to reopen after a kill -9 flat.
# Needs the local services: test-services/services.sh up
set -euo pipefail
cd "$(dirname "$0")/.."
if ! test-services/services.sh status >/dev/null 2>&1; then
    echo "the local services are not running: test-services/services.sh up" >&2
    exit 1
fi
if [ "${SOAK_MODE:-}" = "scale-out" ]; then
    export SOAK_SECONDS="${SOAK_SECONDS:-3600}" SOAK_FAULT_EVERY="${SOAK_FAULT_EVERY:-60}"
    exec cargo test --release --test soak -- --ignored --nocapture --exact \
        soak_scale_out_three_daemons_exactly_once_every_key_at_its_last_version
fi
export SOAK_SECONDS="${SOAK_SECONDS:-300}" SOAK_FAULT_EVERY="${SOAK_FAULT_EVERY:-20}"
exec cargo test --release --test soak -- --ignored --nocapture --exact \
    soak_under_faults_loses_nothing_and_memory_stays_flat
