#!/usr/bin/env bash
# Fuzzes the sink's record decoding (fuzz/fuzz_targets/sink_record.rs: key and value bytes in
# every format, decoded and converted by a set of pipeline settings) with cargo-fuzz and
# libFuzzer, for a bounded time. Not part of CI. Installs what is missing: a nightly toolchain
# (cargo-fuzz needs nightly's -Z flags) and cargo-fuzz.
#
# Usage: scripts/fuzz.sh [TARGET [LIBFUZZER-ARGS...]]     TARGET defaults to sink_record
# Environment: FUZZ_SECONDS (60), FUZZ_JOBS (1: parallel fuzzing processes),
#   FUZZ_SANITIZER (none; `address` for AddressSanitizer, slower), FUZZ_TOOLCHAIN (nightly)
# The corpus grows in fuzz/corpus/TARGET and crashing inputs land in fuzz/artifacts/TARGET
# (both git-ignored); reproduce one with
#   cargo +nightly fuzz run TARGET fuzz/artifacts/TARGET/crash-...
# Exits 1 when libFuzzer found a crash.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${1:-sink_record}"
shift || true
seconds="${FUZZ_SECONDS:-60}"
jobs="${FUZZ_JOBS:-1}"
sanitizer="${FUZZ_SANITIZER:-none}"
toolchain="${FUZZ_TOOLCHAIN:-nightly}"

if ! rustup toolchain list | grep -q "^$toolchain"; then
    echo "fuzz: installing the $toolchain toolchain"
    rustup toolchain install "$toolchain" --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz from crates.io"
    cargo install cargo-fuzz --locked
fi

mkdir -p "fuzz/corpus/$target" "fuzz/artifacts/$target"
before="$(find "fuzz/artifacts/$target" -type f | wc -l)"
echo "fuzz: $target for ${seconds} s ($jobs job(s), sanitizer $sanitizer)"
# -max_len: deep nesting needs a few KiB; -timeout: one input may take at most 10 s.
status=0
cargo +"$toolchain" fuzz run --sanitizer "$sanitizer" --jobs "$jobs" "$target" -- \
    -max_total_time="$seconds" -max_len=32768 -timeout=10 -print_final_stats=1 "$@" || status=$?
after="$(find "fuzz/artifacts/$target" -type f | wc -l)"
echo "fuzz: corpus $(find "fuzz/corpus/$target" -type f | wc -l) inputs; $((after - before)) new crash artifact(s)"
if [ "$status" -ne 0 ] || [ "$after" -gt "$before" ]; then
    find "fuzz/artifacts/$target" -type f -newer "fuzz/corpus/$target" -print 2>/dev/null || true
    exit 1
fi
