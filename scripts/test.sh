#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need (the test
# OpenID provider's npm packages), then runs them. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

# The test IdP (the npm package oidc-provider), pinned by tests/idp/package-lock.json.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "node and npm are needed for the step-up tests" >&2
  exit 1
fi
if [ ! -d tests/idp/node_modules/oidc-provider ] || [ tests/idp/package-lock.json -nt tests/idp/node_modules/.package-lock.json ]; then
  npm ci --prefix tests/idp --no-audit --no-fund --loglevel=error
fi

# The committed fixture databases must be exactly what their source generates.
cargo run --locked --quiet --example geolite-fixtures -- --check

# Lower modules never import upper ones.
./scripts/check-layers.sh

cargo test --locked --all-targets

# The deployment artefacts: Prometheus rules and their unit tests, the metrics tether
# really exposes (promtool), Kubernetes objects, the systemd unit, and the shipped
# configurations started for real with the binary built above.
./scripts/validate-deploy.sh
