#!/usr/bin/env bash
# The library's and the CLI's own tests (unit, integration, multi-process, doc tests).
set -euo pipefail
cargo nextest run --workspace --locked --no-fail-fast
cargo test --workspace --doc --locked --quiet
