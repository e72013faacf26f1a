#!/usr/bin/env bash
# Adversarial layer (issue 10; docs/torture.md): attacks 1-8 of the issue by two
# unprivileged users and root in a sticky shared directory, with fs.protected_symlinks
# 0 and 1 (needs root, setpriv and the sysctl: otherwise a loud SKIPPED), and the
# sidecar-removal stress (6 processes x 200 `statesafe update` while a loop removes
# the sidecar, then only its lock file, every 20 ms, twice each; no root needed). Every layer
# prints `LAYER: crash states checked: N, violations: V`; this stage adds them up and
# fails on any violation.
set -euo pipefail
cd "$(dirname "$0")/../.."

scripts/release-build
bin="${CARGO_TARGET_DIR:-target}/release/torture-suite"
statesafe="${CARGO_TARGET_DIR:-target}/release/statesafe"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
failed=()
skipped=()

layer() {
  local name=$1; shift
  local t0=$SECONDS status=0
  echo "--- $name: torture-suite $*"
  "$bin" "$@" --statesafe "$statesafe" | tee -a "$log" || status=$?
  if (( status == 0 )); then
    echo "--- $name: passed in $(( SECONDS - t0 ))s"
  elif (( status == 77 )); then
    echo "--- $name: SKIPPED (not run, not passed); the reason is above"
    skipped+=("$name")
  else
    echo "--- $name: FAILED (exit $status) in $(( SECONDS - t0 ))s"
    failed+=("$name")
  fi
}

layer "adversarial (attacks 1-8)" adversarial
layer "sidecar-removal stress" sidecar-removal --processes 6 --updates 200 --interval 20ms --rounds 2

states=$(grep -Eo 'crash states checked: [0-9]+' "$log" | awk '{s += $4} END {print s + 0}')
violations=$(grep -Eo 'violations: [0-9]+' "$log" | awk '{s += $2} END {print s + 0}')
echo "adversarial total: crash states checked: $states, violations: $violations, layers skipped: ${#skipped[@]}"
if (( ${#skipped[@]} > 0 )); then
  echo "45-adversarial: SKIPPED: ${skipped[*]} did not run here (see the reason above); CI runs as root, where they must run"
  for name in "${skipped[@]}"; do
    [ -n "${STATESAFE_SUMMARY:-}" ] && echo "SKIPPED 45-adversarial layer $name: needs root, setpriv and a writable fs.protected_symlinks" >> "$STATESAFE_SUMMARY"
  done
  if [ "${CI:-}" = true ]; then
    echo "45-adversarial: FAILED: CI runs as root, so the adversarial layer must run there"
    exit 1
  fi
fi
if (( ${#failed[@]} > 0 )); then
  echo "45-adversarial: FAILED: ${failed[*]}"
  exit 1
fi
