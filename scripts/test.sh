#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs what the tests need (the test
# OpenID provider's npm packages, a redis-server), then runs them. Safe to run again.
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

# A real console for the end-to-end tests: a Django admin from PyPI, pinned by
# tests/console/requirements.txt, in a virtualenv of its own.
venv=tests/console/.venv
if [ ! -x "$venv/bin/python" ] || [ tests/console/requirements.txt -nt "$venv/.installed" ]; then
  if ! python3 -m venv "$venv" 2>/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get install -y -qq python3-venv >/dev/null || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
    fi
    python3 -m venv "$venv"
  fi
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r tests/console/requirements.txt
  touch "$venv/.installed"
fi
export TETHER_TEST_DJANGO_PYTHON="$PWD/$venv/bin/python"

# A Redis for the shared-store tests (Debian package redis-server), on a free port of
# its own, stopped when this script exits. One already named by TETHER_TEST_REDIS_URL and
# answering is used as it is.
redis_dir=""
redis_pid=""
stop_redis() {
  if [ -n "$redis_pid" ]; then kill -CONT "$redis_pid" 2>/dev/null || true; kill "$redis_pid" 2>/dev/null || true; wait "$redis_pid" 2>/dev/null || true; fi
  if [ -n "$redis_dir" ]; then rm -rf "$redis_dir"; fi
}
trap stop_redis EXIT
if [ -n "${TETHER_TEST_REDIS_URL:-}" ] && command -v redis-cli >/dev/null && redis-cli -u "$TETHER_TEST_REDIS_URL" ping >/dev/null 2>&1; then
  echo "shared-store tests use $TETHER_TEST_REDIS_URL"
else
  unset TETHER_TEST_REDIS_URL
  if ! command -v redis-server >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get install -y -qq redis-server >/dev/null || { apt-get update -qq && apt-get install -y -qq redis-server >/dev/null; }
    fi
  fi
  if command -v redis-server >/dev/null; then
    redis_dir=$(mktemp -d)
    for _ in 1 2 3 4 5; do
      port=$(( 20000 + RANDOM % 20000 ))
      redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no --dir "$redis_dir" >"$redis_dir/log" 2>&1 &
      redis_pid=$!
      for _ in $(seq 50); do
        if redis-cli -p "$port" ping >/dev/null 2>&1; then break; fi
        if ! kill -0 "$redis_pid" 2>/dev/null; then break; fi
        sleep 0.1
      done
      if redis-cli -p "$port" ping >/dev/null 2>&1; then
        export TETHER_TEST_REDIS_URL="redis://127.0.0.1:$port"
        break
      fi
      kill "$redis_pid" 2>/dev/null || true
      wait "$redis_pid" 2>/dev/null || true
      redis_pid=""
    done
  fi
  if [ -z "${TETHER_TEST_REDIS_URL:-}" ]; then
    if [ "${CI:-}" = true ]; then
      echo "redis-server is needed for the shared-store tests (apt-get install redis-server)" >&2
      exit 1
    fi
    echo "no redis-server: the shared-store tests will be skipped" >&2
  else
    echo "shared-store tests use $TETHER_TEST_REDIS_URL"
  fi
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
