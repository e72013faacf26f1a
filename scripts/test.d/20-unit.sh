#!/usr/bin/env bash
# The library's and the CLI's own tests (unit, integration, multi-process, doc tests).
set -euo pipefail
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo nextest run --workspace --locked --no-fail-fast 2>&1 | tee "$log"
cargo test --workspace --doc --locked --quiet 2>&1 | tee -a "$log"
# For the closing line of scripts/test: how many tests ran and passed here.
if [ -n "${STATESAFE_COUNTS:-}" ]; then
  nextest=$(grep -Eo '[0-9]+ tests run: [0-9]+ passed' "$log" | tail -1 | grep -Eo '[0-9]+ passed' | grep -Eo '[0-9]+')
  doc=$(grep -Eo 'test result: ok\. [0-9]+ passed' "$log" | grep -Eo '[0-9]+ passed' | awk '{ s += $1 } END { print s + 0 }')
  echo $(( ${nextest:-0} + ${doc:-0} )) >> "$STATESAFE_COUNTS"
fi
