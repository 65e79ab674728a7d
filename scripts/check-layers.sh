#!/usr/bin/env bash
# Fails when an import circle between top-level modules under src/ comes back, printing
# the module graph's strongly connected components. First proves, on small fixtures, that
# it catches inline paths, use groups, super:: chains and macro paths, and skips tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 scripts/check_layers.py --self-test
python3 scripts/check_layers.py src
