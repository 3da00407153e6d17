#!/usr/bin/env bash
# The Python gates: ruff (lint and format) and mypy --strict, configured in pyproject.toml,
# run from the repo's .venv (scripts/setup.sh installs them with the test extra). Any
# finding fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."
paths=(python tests_py bench)
echo "== ruff check" >&2
.venv/bin/ruff check "${paths[@]}"
echo "== ruff format --check" >&2
.venv/bin/ruff format --check "${paths[@]}"
echo "== mypy (strict)" >&2
.venv/bin/mypy
