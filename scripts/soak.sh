#!/usr/bin/env bash
# The long soak: the release `tether run` for several minutes under a few hundred
# thousand sessions with churn, expiry, eviction, floods of fresh cookies and step-up
# challenges, SIGHUP reloads and admin revocations (examples/soak.rs does the work).
# Exits non-zero when a request went unanswered, a 5xx came back, RSS passed its bound,
# the store passed its cap, or tether logged a WARN, an ERROR or a panic. Loopback only.
#
#   scripts/soak.sh                                   # 300 s, 300,000 sessions
#   SOAK_SECS=20 SOAK_SESSIONS=20000 PROFILE=debug scripts/soak.sh   # a quick try
#
# Knobs (environment): SOAK_SECS=300 SOAK_SESSIONS=300000 SOAK_CONNS=40
# SOAK_RSS_MIB=256 SOAK_RELOAD_SECS=3 PROFILE=release|debug KEEP_TMP=1
# TETHER_BIN / SOAK_BIN: use these binaries instead of building.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PROFILE=${PROFILE:-release}
case $PROFILE in
  release) flag=(--release) ;;
  debug) flag=() ;;
  *) echo "error: PROFILE is release or debug" >&2; exit 2 ;;
esac
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

if [[ -z ${TETHER_BIN:-} || -z ${SOAK_BIN:-} ]]; then
  cargo build --locked "${flag[@]}" --bin tether --example soak
fi
export TETHER_BIN=${TETHER_BIN:-$TARGET/$PROFILE/tether}
SOAK_BIN=${SOAK_BIN:-$TARGET/$PROFILE/examples/soak}
for b in "$TETHER_BIN" "$SOAK_BIN"; do
  [[ -x $b ]] || { echo "error: no binary at $b" >&2; exit 2; }
done

SOAK_DIR=$(mktemp -d "${TMPDIR:-/tmp}/tether-soak.XXXXXX")
export SOAK_DIR
cleanup() {
  # The generator stops tether itself; this only covers a generator that was killed.
  local pid i
  if pid=$(cat "$SOAK_DIR/tether.pid" 2>/dev/null) && kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  if [[ -n ${KEEP_TMP:-} ]]; then echo "kept $SOAK_DIR (tether.log, audit.jsonl, tether.toml)" >&2; else rm -rf "$SOAK_DIR"; fi
}
trap cleanup EXIT

# The generator starts tether itself, stops it with SIGTERM and checks its log; a hard
# ceiling here only guards against a wedged generator.
limit=$(( ${SOAK_SECS:-300} + 180 ))
timeout --kill-after=10 "$limit" "$SOAK_BIN"
