#!/usr/bin/env bash
# Makes sure this machine has what the daemon's build, the local services and the tests need;
# `services.sh up` runs it first, so the README's two commands work on a fresh Debian machine.
#   - Debian packages: Java 17 and Maven (Kafka, the MongoDB stand-in, the schema registry),
#     a C toolchain, pkg-config, OpenSSL and zlib headers (librdkafka is built from source),
#     Python 3 with venv (clients that are not ours, fastavro and Confluent's confluent-kafka,
#     read and write records in the tests) and curl.
#     Missing ones are installed with apt-get when this runs as root; otherwise it names them
#     and fails.
#   - A Prometheus server for tests/dashboard.rs: Debian's `prometheus` package, unpacked (not
#     installed: no system service is started) into .cache/prometheus/, unless `PROMETHEUS`
#     names a binary or one is on the PATH.
# Usage: setup.sh            check and install what is missing (quiet when nothing is)
#        setup.sh prometheus print the path of the Prometheus binary the tests use
# Environment: PROMETHEUS.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# Tools live in the checkout's cache whatever state folder (TEST_SERVICES_CACHE) the services
# of a test use, so a test that runs services of its own does not fetch them again.
cache="$here/.cache"
unpacked="$cache/prometheus"

log() { echo "setup: $*" >&2; }

# The Prometheus binary the tests run: PROMETHEUS, the unpacked package, or one on the PATH.
prometheus_binary() {
    if [ -n "${PROMETHEUS:-}" ]; then echo "$PROMETHEUS"; return; fi
    if [ -x "$unpacked/usr/bin/prometheus" ]; then echo "$unpacked/usr/bin/prometheus"; return; fi
    command -v prometheus || true
}

as_root() { [ "$(id -u)" = 0 ]; }

apt_updated=false
apt_update() {
    if ! $apt_updated; then
        apt-get update -qq
        apt_updated=true
    fi
}

missing_packages() {
    local missing=()
    command -v java >/dev/null || missing+=(openjdk-17-jre-headless)
    command -v javac >/dev/null || missing+=(openjdk-17-jdk-headless)
    command -v mvn >/dev/null || missing+=(maven)
    command -v cc >/dev/null || missing+=(build-essential)
    command -v make >/dev/null || missing+=(make)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    command -v flock >/dev/null || missing+=(util-linux)
    dpkg -s libssl-dev >/dev/null 2>&1 || missing+=(libssl-dev)
    dpkg -s zlib1g-dev >/dev/null 2>&1 || missing+=(zlib1g-dev)
    # A Python with venv and pip: the schema registry tests read our Avro with fastavro, the
    # Protobuf tests run Confluent's own client (confluent-kafka).
    command -v python3 >/dev/null || missing+=(python3)
    python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
    command -v curl >/dev/null || missing+=(curl)
    echo "${missing[@]}"
}

install_packages() {
    local missing
    missing="$(missing_packages)"
    [ -n "$missing" ] || return 0
    if ! as_root || ! command -v apt-get >/dev/null; then
        log "missing: $missing; install them (Debian: sudo apt-get install $missing) and run again"
        return 1
    fi
    log "installing $missing"
    apt_update
    # shellcheck disable=SC2086 # one word per package
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >&2
}

# Debian's package, downloaded and unpacked into the cache (made aside, moved in place).
fetch_prometheus() {
    [ -z "$(prometheus_binary)" ] || return 0
    if ! command -v apt-get >/dev/null; then
        log "no Prometheus server: install one and set PROMETHEUS to its path"
        return 1
    fi
    log "fetching Debian's prometheus package into $unpacked (once)"
    local tmp="$unpacked.new"
    rm -rf "$tmp"
    mkdir -p "$tmp/deb"
    # apt-get download needs the package lists; a fresh machine has none until an update.
    if ! (cd "$tmp/deb" && apt-get download prometheus >/dev/null 2>&1); then
        if ! as_root; then
            log "apt-get could not download prometheus (no package lists?); run as root once, or set PROMETHEUS"
            return 1
        fi
        apt_update
        (cd "$tmp/deb" && apt-get download prometheus >/dev/null)
    fi
    dpkg-deb -x "$tmp"/deb/prometheus_*.deb "$tmp"
    rm -rf "$tmp/deb"
    "$tmp/usr/bin/prometheus" --version >/dev/null 2>&1 || {
        log "the unpacked prometheus does not run: $("$tmp/usr/bin/prometheus" --version 2>&1 | tail -n 1)"
        return 1
    }
    rm -rf "$unpacked"
    mv "$tmp" "$unpacked"
}

case "${1:-}" in
    "")
        mkdir -p "$cache"
        install_packages
        fetch_prometheus ;;
    prometheus) prometheus_binary ;;
    *) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "${BASH_SOURCE[0]}" >&2
       exit 2 ;;
esac
