#!/usr/bin/env bash
# Crash and fault torture (issue 5; docs/torture.md): kill at every system call (a),
# error injection at every I/O system call (b), the system-call order check, the
# trace-driven power-loss simulator in journal mode (c; the whole-file protocol's is
# stage 30), real filesystems (d, with a journal-mode kill pass at the calls that change
# a file), multi-process stress (e), and short runs of the demonstration (plain and
# journal mode).
# Every layer prints `LAYER: crash states checked: N, violations: V`; this stage adds
# them up and requires at least 1,000 crash states and no violation.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v strace >/dev/null; then
  echo "40-torture: FAILED: strace is not installed (.ci/run installs it); the kill, error and order layers need it"
  exit 1
fi
scripts/release-build
bin="${CARGO_TARGET_DIR:-target}/release/torture-suite"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=()

layer() {
  local name=$1; shift
  local t0=$SECONDS
  echo "--- $name: torture-suite $*"
  if "$bin" "$@" 2> >(grep -v 'states checked$' >&2) | tee -a "$log"; then
    echo "--- $name: passed in $(( SECONDS - t0 ))s"
  else
    echo "--- $name: FAILED in $(( SECONDS - t0 ))s"
    failed+=("$name")
  fi
}

layer "a. kill at every syscall" kill
layer "a. kill at every syscall, streamed update (1 MiB, the CLI's path)" kill --ops update-streamed
layer "b. errors at every I/O syscall" errors
layer "b. errors in journal mode's group commit (threads of one store)" errors --ops journal-group
layer "order check" order
layer "c. power loss in journal mode (torn appends, lost flushes)" powerloss
layer "e. stress" stress --writers 6 --readers 2 --duration 8s
layer "d. real filesystems" fs --errnos ENOSPC,EIO --ops create,replace,update --journal-ops journal-append,journal-compact

# The order check must be able to fail: with every fsync faked as libeatmydata does,
# it has to report violations.
echo "--- self-check: order check with fsync faked (eatmydata), must FAIL"
if "$bin" order --eatmydata >/dev/null 2>&1; then
  echo "--- self-check: FAILED: the order check passed although every fsync was a no-op"
  failed+=("eatmydata self-check")
else
  echo "--- self-check: passed (the order check caught the faked fsyncs)"
fi

echo "--- demonstration (short): torture-suite demo --duration 4s"
if ! "$bin" demo --duration 4s; then
  failed+=("demonstration")
fi
echo "--- demonstration in journal mode (short): torture-suite demo --format journal --duration 3s"
if ! "$bin" demo --format journal --duration 3s; then
  failed+=("demonstration (journal)")
fi

states=$(grep -Eo 'crash states checked: [0-9]+' "$log" | awk '{s += $4} END {print s + 0}')
violations=$(grep -Eo 'violations: [0-9]+' "$log" | awk '{s += $2} END {print s + 0}')
# One line per filesystem not run (`fs [xfs]: SKIPPED (not run, not passed): why`), not
# the layer's own tally line (`fs: 2 of 5 filesystems SKIPPED`).
skips=$(grep -E '^fs \[[^]]*\]: SKIPPED' "$log" || true)
skipped=$(grep -c . <<<"$skips" || true)
echo "torture total: crash states checked: $states, violations: $violations, filesystems skipped: $skipped"
if [ -n "$skips" ] && [ -n "${STATESAFE_SUMMARY:-}" ]; then
  sed -E 's/^fs \[([^]]*)\]: SKIPPED( \(not run, not passed\))?: ?/SKIPPED 40-torture layer d on \1: /' <<<"$skips" >> "$STATESAFE_SUMMARY"
fi
if (( states < 1000 )); then
  echo "40-torture: FAILED: fewer than 1,000 crash states checked"
  failed+=("total crash states")
fi
if (( ${#failed[@]} > 0 )); then
  echo "40-torture: FAILED: ${failed[*]}"
  exit 1
fi
