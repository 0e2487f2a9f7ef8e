#!/usr/bin/env bash
# Fuzzes every file parser for SECONDS (default 30) each from its seed corpus (fuzz/corpus/TARGET).
# cargo-fuzz needs nightly features; RUSTC_BOOTSTRAP=1 enables them on this stable toolchain.
# Memory is capped at 2 GiB per process (-rss_limit_mb) and per allocation (-malloc_limit_mb):
# exceeding either fails. Not part of .ci/run yet (see README, "Reliability").
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-30}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
for target in checkpoint idx image clip_files concepts dissect_cache; do
    corpus="$(mktemp -d)"
    cp fuzz/corpus/"$target"/* "$corpus"/
    RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz "$target" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -malloc_limit_mb=2048 -max_len=65536
    rm -rf "$corpus"
done
