#!/usr/bin/env bash
# Run the whole Lark test suite as root: set-up (idempotent), lint, then every test, including
# the real-kernel tests and the real HTCondor pool tests (the pool is built once and cached).
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
cd "$here"
./scripts/setup.sh
.venv/bin/ruff check lark perfsonar hooks tests benchmarks
exec .venv/bin/python -m pytest "$@"
