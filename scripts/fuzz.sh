#!/usr/bin/env bash
# Builds the libFuzzer targets (CMake preset "fuzz": clang, -fsanitize=fuzzer,address,undefined)
# and runs each for a bounded time: scripts/test.sh runs it briefly as a CI step, and
# docs/reliability.md ("Fuzzing") gives the longer run's figures and commands.
#
#   scripts/fuzz.sh [seconds-per-target]        default 25
#   FUZZ_RUNS=N scripts/fuzz.sh                 N executions per target instead of a time bound
#   FUZZ_TARGETS="ring_reader_fuzz" ...         only these targets
#   FUZZ_KEEP=DIR                               keep each target's grown corpus and log in DIR
#
# Each target starts from a temporary copy of its checked-in seed corpus
# (tests_cpp/fuzz/corpus/<target>/, never written to) with its dictionary, under caps: input
# length (-max_len), time per input (-timeout: a hang fails), memory of the process
# (-rss_limit_mb) and of any one allocation (-malloc_limit_mb: "no allocation beyond the
# caps"). Fails on any crash, broken invariant, sanitizer report, leak, timeout or OOM.
set -euo pipefail

# All in one function, read whole before it runs: editing this file during a long run
# cannot change the run.
main() {
  cd "$(dirname "$0")/.."
  export PATH="$PWD/.venv/bin:$PATH"   # cmake and ninja from the venv, when there is one
  seconds=${1:-25}
  runs=${FUZZ_RUNS:-}

  # target:max_len:dictionary. max_len: json_guard_fuzz's inputs reach past 4 KiB so the
  # footprint estimate (not only the grammar) decides; the ring targets script a ring of at
  # most 4 KiB. output_collector_fuzz is Python (atheris, the "fuzz" extra), run by the .venv's
  # interpreter against the package installed there.
  targets=(
    frame_assembler_fuzz:4096:frames.dict
    ring_reader_fuzz:4096:frames.dict
    ring_writer_fuzz:4096:frames.dict
    json_guard_fuzz:16384:json_guard_fuzz.dict
    channel_fuzz:4096:frames.dict
    output_collector_fuzz:4096:json_guard_fuzz.dict
  )

  echo "== fuzz: building (preset fuzz)" >&2
  cmake --preset fuzz >/dev/null
  cmake --build --preset fuzz >/dev/null

  work=$(mktemp -d /tmp/sandbox_exec-fuzz-XXXXXX)
  trap 'rm -rf "$work"' EXIT
  failed=()
  for entry in "${targets[@]}"; do
    IFS=: read -r name max_len dict <<<"$entry"
    if [ -n "${FUZZ_TARGETS:-}" ] && ! [[ " $FUZZ_TARGETS " == *" $name "* ]]; then continue; fi
    corpus="$work/$name"
    mkdir -p "$corpus"
    cp tests_cpp/fuzz/corpus/"$name"/* "$corpus"/
    bound=(-max_total_time="$seconds")
    [ -n "$runs" ] && bound=(-runs="$runs")
    log="$work/$name.log"
    echo "== fuzz: $name (${bound[*]})" >&2
    # -error_exitcode/-timeout_exitcode: any finding exits non-zero; -detect_leaks: LeakSanitizer
    # (on by default with ASan, stated here because a leak per input is a finding too).
    rc=0
    runner=(build/fuzz/tests_cpp/fuzz/"$name")
    [ -f tests_cpp/fuzz/"$name".py ] && runner=(.venv/bin/python tests_cpp/fuzz/"$name".py)
    "${runner[@]}" "${bound[@]}" -max_len="$max_len" -timeout=10 -rss_limit_mb=2048 \
      -malloc_limit_mb=256 -detect_leaks=1 -print_final_stats=1 -dict=tests_cpp/fuzz/"$dict" \
      -artifact_prefix="$work/$name-" "$corpus" >"$log" 2>&1 || rc=$?
    grep -E '^(#[0-9]+[[:space:]]+DONE|stat::(number_of_executed_units|average_exec_per_sec|peak_rss_mb))' "$log" | \
      sed "s/^/  $name: /" >&2 || true
    echo "  $name: corpus $(find "$corpus" -type f | wc -l) files" >&2
    if [ "$rc" != 0 ]; then
      echo "fuzz: $name FAILED (exit $rc); its log:" >&2
      tail -n 60 "$log" >&2
      for artifact in "$work/$name"-*; do
        [ -e "$artifact" ] || continue
        mkdir -p build/fuzz/artifacts && cp "$artifact" build/fuzz/artifacts/ &&
          echo "  kept: build/fuzz/artifacts/$(basename "$artifact")" >&2
      done
      failed+=("$name")
    fi
    if [ -n "${FUZZ_KEEP:-}" ]; then
      mkdir -p "$FUZZ_KEEP" && cp "$log" "$FUZZ_KEEP"/ && rm -rf "${FUZZ_KEEP:?}/$name" && cp -r "$corpus" "$FUZZ_KEEP/$name"
    fi
  done
  if ((${#failed[@]})); then
    echo "fuzz: FAILED: ${failed[*]}" >&2
    exit 1
  fi
  echo "fuzz: clean" >&2
}
main "$@"
