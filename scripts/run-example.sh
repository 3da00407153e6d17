#!/usr/bin/env bash
# The main job: sets up what is missing, then executes a real notebook in the sandbox on
# the embedded defaults and writes the executed copy. With no argument it runs the example
# shipped in the package; pass a notebook path (and -o OUT.ipynb) to run another.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
mkdir -p out
if [ $# -eq 0 ]; then
  exec .venv/bin/python -m sandbox_exec run -o out/demo.executed.ipynb
fi
exec .venv/bin/python -m sandbox_exec run "$@"
