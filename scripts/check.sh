#!/usr/bin/env bash
# Static checks, as CI runs them before the tests: lint, format, types, architecture, docs.
# Run after scripts/setup.sh. Any failure stops here with a non-zero status.
set -euo pipefail
cd "$(dirname "$0")/.."
run() { echo "check: $*" >&2; "$@"; }
run uv run --frozen ruff check .
run uv run --frozen ruff format --check .
run uv run --frozen mypy
run uv run --frozen lint-imports
if [ -f mkdocs.yml ]; then NO_MKDOCS_2_WARNING=1 run uv run --frozen mkdocs build --strict --quiet --site-dir "${TMPDIR:-/tmp}/dse-site"; fi
echo "check: all passed" >&2
