// json_guard: the supervisor's check of every JSON message a worker sends, before the
// backend builds a single Python object from it.
//
// Why: the backend's cost for a message must be bounded by the message's size. A worker can
// send, within any byte cap, JSON whose Python form is many times larger and slower to
// build than its text (millions of empty nested lists: 16 MiB of text became 782 MiB of
// Python objects and held the GIL for seconds). This pass runs in C++ without the GIL, with
// nlohmann::json's SAX parser (iterative: no recursion, no tree built), and accepts only:
//   * strict RFC 8259 JSON: no NaN or Infinity, no number that overflows a double, no lone
//     UTF-16 surrogate escape, no ill-formed UTF-8, no raw control character in a string
//     (each of these passes Python's json module and then breaks a notebook writer or a
//     strict JSON consumer downstream);
//   * an object at the top;
//   * nesting at most kMaxDepth deep;
//   * an estimated Python footprint (CPython's object sizes for each value json.loads would
//     build: lists, dicts, strings by their kind, numbers; cached values free) of at most
//     kFootprintPerByte times the text, plus a small allowance. Measured worst cases before
//     this check: 22x (empty lists), 24x (empty dicts), 17x (one-character non-Latin-1
//     strings); ordinary outputs stay far below (plotly arrays 3x, records 7-14x).
// A message that fails becomes a marker in the cell's outputs; the cell runs on.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace sandbox_exec {

struct JsonShape {
  static constexpr std::size_t kMaxDepth = 64;
  static constexpr uint64_t kFootprintPerByte = 16;
  static constexpr uint64_t kFootprintAllowance = 64 * 1024;
};

struct JsonVerdict {
  bool ok = false;
  std::string reason;  // why not, in words (for the marker the user sees)
};

// Checks one message's text against the rules above.
[[nodiscard]] JsonVerdict check_message_json(std::string_view text);

// The end-of-cell report, checked and rebuilt by the supervisor.
struct CellDoneReport {
  bool ok = false;               // the cell's status: "ok" (true) or "error"
  std::optional<int64_t> count;  // its execution_count, if it gave a valid one
  uint64_t dropped = 0;          // output the worker did not send (the cap), as it says
  std::string json;              // the report as the backend gets it (always valid JSON)
};

// Parses a worker's kCellDone payload. A payload that fails check_message_json() or lacks
// a valid status is replaced by an "error" report naming the reason, so a hostile or broken
// report never ends the session and never reaches Python unchecked. The rebuilt report
// holds only {"status", "execution_count", "error": {"ename", "evalue", "traceback"}}: a
// report larger than `budget` bytes keeps its status and the error's name and a cut
// message, and says its traceback was dropped.
[[nodiscard]] CellDoneReport parse_cell_done(std::string_view text, uint64_t budget);

// The worker's kReady report: {"protocol": <version>, ...}. The protocol version the worker
// speaks (its _core's), or nullopt when the report is not such an object: the supervisor
// refuses to run cells with a worker of another version (CellRunner's start).
[[nodiscard]] std::optional<int64_t> ready_protocol(std::string_view text);

// The "error" report that stands for a rejected one (`why` says what was wrong with it).
[[nodiscard]] std::string rejected_cell_done(const std::string& why);

}  // namespace sandbox_exec
