#!/usr/bin/env bash
# `fuzz/run.sh [SECONDS] [TARGET...]`: fuzzes every file parser (or the TARGETs) for SECONDS (default 30) each, one target after the other, from its seed
# corpus (fuzz/corpus/TARGET, copied: what the run finds is not added to the repository), and prints
# one line per target: executions, seconds, executions/s, coverage, peak RSS. Fails on the first
# finding: a panic, an abort, an allocation over MALLOC_MB, a process over RSS_MB, an input that
# takes over 10 s. The crashing input is left in fuzz/artifacts/TARGET/.
#
# cargo-fuzz needs nightly compiler features: RUSTC_BOOTSTRAP=1 enables them on the stable
# toolchain. The targets are built with AddressSanitizer (cargo-fuzz's default), which is also what
# lets libFuzzer enforce -malloc_limit_mb. Files the targets write go to /dev/shm when it exists (a
# tmpfs: rewriting a file per input on a disk file system is 50 times slower).
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
rss_mb="${RSS_MB:-2048}"
malloc_mb="${MALLOC_MB:-2048}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
[ -d /dev/shm ] && export TMPDIR=/dev/shm
export RUSTC_BOOTSTRAP=1
targets=(checkpoint idx image clip_files concepts dissect_cache)
[ $# -gt 1 ] && targets=("${@:2}")
cargo fuzz build --fuzz-dir fuzz
logs="$(mktemp -d)"
trap 'rm -rf "$logs"' EXIT
for target in "${targets[@]}"; do
    corpus="$logs/corpus-$target"
    mkdir -p "$corpus" "fuzz/artifacts/$target"
    cp fuzz/corpus/"$target"/* "$corpus"/
    if ! nice -n "${NICE:-0}" cargo fuzz run --fuzz-dir fuzz "$target" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb="$rss_mb" -malloc_limit_mb="$malloc_mb" -max_len=65536 \
        -timeout=10 -print_final_stats=1 >"$logs/$target.log" 2>&1; then
        tail -n 60 "$logs/$target.log"
        echo "fuzz/run.sh: $target: a finding (input in fuzz/artifacts/$target/)" >&2
        exit 1
    fi
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logs/$target.log")
    time=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$logs/$target.log")
    cov=$(grep -o 'cov: [0-9]*' "$logs/$target.log" | tail -n 1 | cut -d' ' -f2)
    rss=$(sed -n 's/^stat::peak_rss_mb: *//p' "$logs/$target.log")
    echo "$target: $runs executions in $time s ($((runs / (time > 0 ? time : 1))) exec/s), coverage $cov edges, peak RSS $rss MB, 0 findings"
done
