#!/usr/bin/env bash
# The whole test suite, from a fresh clone. Installs nothing the tests do not need.
set -euo pipefail
cd "$(dirname "$0")/.."

# The committed fixture databases must be exactly what their source generates.
cargo run --locked --quiet --example geolite-fixtures -- --check

cargo test --locked --all-targets
