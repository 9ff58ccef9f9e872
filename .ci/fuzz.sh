#!/usr/bin/env bash
# Short, bounded libFuzzer run of every cargo-fuzz target in fuzz/ (README.md, "Fuzzing").
# Standalone and safe to re-run; .ci/run calls it with FUZZ_SECONDS=10. Fails if any target finds a crash, leak,
# timeout or failed assertion, and prints where the input is.
#
#   FUZZ_SECONDS      seconds per target (default 20)
#   FUZZ_TARGETS      space-separated targets (default: all of `cargo fuzz list`)
#   FUZZ_TOOLCHAIN    nightly toolchain for the sanitizer build (default nightly; installed if missing)
#   FUZZ_TARGET_DIR   build dir (default ~/.cache/nixcache-fuzz-target: sanitizer flags, kept apart
#                     from the ordinary target dir)
#   FUZZ_WORK_DIR     working corpora, crash inputs and logs (default ~/.cache/nixcache-fuzz)
#
# The committed seeds (fuzz/corpus/<target>, from the Nix fixtures, plus any regression inputs)
# are only read; what the fuzzer finds goes to $FUZZ_WORK_DIR/corpus/<target>, which later runs on
# this machine start from. The clone is never written to.
set -euo pipefail
cd "$(dirname "$0")/.."

log() { printf '[fuzz] %s\n' "$*" >&2; }
SECONDS=0

TOOLS=$HOME/.cache/nixcache-tools
CARGO_FUZZ_VERSION=0.13.2
FUZZ_SECONDS=${FUZZ_SECONDS:-20}
TOOLCHAIN=${FUZZ_TOOLCHAIN:-nightly}
TARGET_DIR=${FUZZ_TARGET_DIR:-$HOME/.cache/nixcache-fuzz-target}
WORK=${FUZZ_WORK_DIR:-$HOME/.cache/nixcache-fuzz}
export PATH="$TOOLS/bin:$PATH"
export CARGO_TERM_COLOR=never

# 1. cargo-fuzz, pinned, in the tool dir outside the clone (~1 min once).
if [ "$(cargo-fuzz --version 2>/dev/null)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
  log "cargo install cargo-fuzz $CARGO_FUZZ_VERSION into $TOOLS"
  env -u CARGO_TARGET_DIR cargo install --quiet --locked --root "$TOOLS" \
    cargo-fuzz --version "$CARGO_FUZZ_VERSION"
fi
# 2. A nightly toolchain: the address sanitizer needs -Zsanitizer.
if ! rustc "+$TOOLCHAIN" --version >/dev/null 2>&1; then
  log "rustup toolchain install $TOOLCHAIN"
  rustup toolchain install "$TOOLCHAIN" --profile minimal
fi
log "$(cargo-fuzz --version), $(rustc "+$TOOLCHAIN" --version)"

# 3. Build every target (fuzz/Cargo.lock must be up to date, as --locked would insist).
cargo "+$TOOLCHAIN" metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null
t0=$SECONDS
cargo "+$TOOLCHAIN" fuzz build --target-dir "$TARGET_DIR"
log "built in $((SECONDS - t0))s"

# 4. Run each target for FUZZ_SECONDS on the committed seeds plus the working corpus.
read -r -a targets <<< "${FUZZ_TARGETS:-$(cargo "+$TOOLCHAIN" fuzz list | tr '\n' ' ')}"
mkdir -p "$WORK/logs"
failed=()
summary=()
for t in "${targets[@]}"; do
  [ -d "fuzz/corpus/$t" ] || { log "no seeds in fuzz/corpus/$t"; exit 1; }
  mkdir -p "$WORK/corpus/$t" "$WORK/artifacts/$t"
  logf=$WORK/logs/$t.log
  t0=$SECONDS
  status=ok
  # -timeout: one input running 10 s is a hang, reported like a crash.
  if ! cargo "+$TOOLCHAIN" fuzz run --target-dir "$TARGET_DIR" "$t" "$WORK/corpus/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$FUZZ_SECONDS" -timeout=10 -print_final_stats=1 \
      -artifact_prefix="$WORK/artifacts/$t/" > "$logf" 2>&1; then
    status=FAILED
    failed+=("$t")
    tail -n 40 "$logf" >&2
    log "$t FAILED; input(s): $(grep -o 'Test unit written to .*' "$logf" | cut -d' ' -f5- | tr '\n' ' ')"
    log "reproduce: cargo +$TOOLCHAIN fuzz run $t <input>; minimise: cargo +$TOOLCHAIN fuzz tmin $t <input>"
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$logf" | tail -n 1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$logf" | tail -n 1)
  summary+=("$(printf '%-14s %-6s %10s execs %8s exec/s %4ss' "$t" "$status" "${execs:-?}" "${rate:-?}" "$((SECONDS - t0))")")
done

printf '%s\n' "${summary[@]}" >&2
log "logs in $WORK/logs; total ${SECONDS}s"
if [ ${#failed[@]} -gt 0 ]; then
  log "failed: ${failed[*]}"
  exit 1
fi
