#!/usr/bin/env bash
# C++ gates, run by scripts/test.sh: clang-format (the repo's .clang-format) on every C++
# file, and clang-tidy (the repo's .clang-tidy) on the core's sources against the dev
# preset's compile database. Fails on any finding.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

mapfile -t files < <(git ls-files 'cpp/*.cc' 'cpp/*.h' 'tests_cpp/*.cc' 'tests_cpp/*.h')
echo "== clang-format (${#files[@]} files)" >&2
clang-format --dry-run -Werror "${files[@]}"

echo "== clang-tidy" >&2
cmake --preset dev >/dev/null
# GCC-only flags mean nothing to clang's front end: a filtered copy of the database.
db=$(mktemp -d)
trap 'rm -rf "$db"' EXIT
sed -e 's/ -fno-gnu-unique//g' build/dev/compile_commands.json >"$db/compile_commands.json"
mapfile -t sources < <(git ls-files 'cpp/*.cc' | grep -v -e '^cpp/python/' -e '^cpp/zygote/module.cc')
printf '%s\n' "${sources[@]}" | xargs -P "$(nproc)" -n 4 clang-tidy -p "$db" --quiet 2>/dev/null
echo "lint_cpp: clean" >&2
