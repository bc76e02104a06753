#!/usr/bin/env bash
# The soak run (tests/soak.rs): a source → sink chain under continuous traffic with a fault
# every SOAK_FAULT_EVERY seconds (SIGKILL, MongoDB cut, reload, reader restart, and with
# SOAK_RESTART_KAFKA=1 a Kafka broker restart), for SOAK_SECONDS (default 300); checks every
# document arrived and memory stayed bounded. The 10-minute run: SOAK_SECONDS=600.
# Needs the local services: test-services/services.sh up
set -euo pipefail
cd "$(dirname "$0")/.."
if ! test-services/services.sh status >/dev/null 2>&1; then
    echo "the local services are not running: test-services/services.sh up" >&2
    exit 1
fi
export SOAK_SECONDS="${SOAK_SECONDS:-300}" SOAK_FAULT_EVERY="${SOAK_FAULT_EVERY:-20}"
exec cargo test --release --test soak -- --ignored --nocapture
