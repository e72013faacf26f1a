#!/usr/bin/env bash
# Layer c of the crash-consistency suite: the deterministic power-loss simulation of the
# write protocol (crates/statesafe/src/sim.rs), run on its own so its summary lines show.
set -euo pipefail
out=$(cargo test -p statesafe --lib --locked -- sim:: --nocapture 2>&1) || { echo "$out"; exit 1; }
echo "$out" | grep -E "crash states checked|test result"
