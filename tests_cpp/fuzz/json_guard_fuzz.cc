// Fuzz target: the supervisor's JSON guard (cpp/supervisor/json_guard.h) on a worker's message:
// check_message_json(), parse_cell_done() and ready_protocol().
//
// The input's last byte picks a budget for parse_cell_done(); the rest is the message text.
// Asserted, against nlohmann::json's own DOM parser (strict, the same library's other
// path) as the reference:
//   * the guard accepts only what the DOM parser accepts, and only an object nested at
//     most JsonShape::kMaxDepth deep: what it passes, the backend can parse;
//   * for a text of at most 4 KiB (the estimated Python footprint of such a text is always
//     under the allowance, so only grammar and shape decide) it accepts exactly that: a
//     guard that refuses valid messages breaks outputs;
//   * a refusal says why in at most 512 bytes (the reason becomes a marker in the cell's
//     output: a hostile message must not choose a large one);
//   * parse_cell_done() always returns a report that is valid JSON, an object with a status
//     of "ok" or "error" and nothing but status, execution_count and error (an error of
//     ename and evalue strings and a traceback of strings); ok exactly when the status is
//     "ok"; execution_count exactly when count is set; within the budget, or cut to a short
//     error once over it (at most 16 KiB whatever the input);
//   * ready_protocol() gives a version only for a message the guard accepts, whose
//     "protocol" is an integer.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

#include "fuzz_check.h"
#include "supervisor/json_guard.h"

namespace {

using nlohmann::json;

std::size_t depth_of(const json& value) {
  std::size_t deepest = 0;
  if (value.is_object() || value.is_array()) {
    for (const auto& item : value) deepest = std::max(deepest, depth_of(item));
    return deepest + 1;
  }
  return 0;
}

// The DOM parse of `text`, or a discarded value when the strict parser refuses it.
json reference_parse(std::string_view text) {
  return json::parse(text.begin(), text.end(), /*cb=*/nullptr, /*allow_exceptions=*/false);
}

void check_report(const sandbox_exec::CellDoneReport& report, uint64_t budget) {
  const json parsed = reference_parse(report.json);
  FUZZ_CHECK(!parsed.is_discarded() && parsed.is_object(), "the rebuilt report is a JSON object");
  for (const auto& [key, value] : parsed.items())
    FUZZ_CHECK(key == "status" || key == "execution_count" || key == "error", "the report holds only its fields");
  const auto status = parsed.find("status");
  FUZZ_CHECK(status != parsed.end() && status->is_string() && (*status == "ok" || *status == "error"),
             "the report's status is ok or error");
  FUZZ_CHECK(report.ok == (*status == "ok"), "ok is the report's status");
  const auto count = parsed.find("execution_count");
  FUZZ_CHECK(report.count.has_value() == (count != parsed.end()), "execution_count is there when count is");
  if (report.count) FUZZ_CHECK(count->is_number_integer() && count->get<int64_t>() == *report.count, "its value");
  if (const auto error = parsed.find("error"); error != parsed.end()) {
    FUZZ_CHECK(error->is_object() && error->size() == 3, "the error is {ename, evalue, traceback}");
    FUZZ_CHECK(error->contains("ename") && (*error)["ename"].is_string(), "ename is a string");
    FUZZ_CHECK(error->contains("evalue") && (*error)["evalue"].is_string(), "evalue is a string");
    FUZZ_CHECK(error->contains("traceback") && (*error)["traceback"].is_array(), "traceback is a list");
    for (const auto& line : (*error)["traceback"]) FUZZ_CHECK(line.is_string(), "of strings");
  }
  FUZZ_CHECK(report.dropped <= (uint64_t{1} << 53), "dropped is within 2^53");
  FUZZ_CHECK(report.json.size() <= std::max<uint64_t>(budget, 16 * 1024), "a report past its budget is cut short");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, std::size_t size) {
  FuzzedDataProvider in(data, size);
  const uint8_t budget_choice = in.ConsumeIntegral<uint8_t>();  // the last byte
  const std::string text = in.ConsumeRemainingBytesAsString();
  const std::string_view view(text);

  const sandbox_exec::JsonVerdict verdict = sandbox_exec::check_message_json(view);
  const json reference = reference_parse(view);
  const bool valid_object =
      !reference.is_discarded() && reference.is_object() && depth_of(reference) <= sandbox_exec::JsonShape::kMaxDepth;
  if (verdict.ok) {
    FUZZ_CHECK(valid_object, "the guard accepts only a strict JSON object within the depth");
    FUZZ_CHECK(verdict.reason.empty(), "an accepted message has no reason");
  } else {
    FUZZ_CHECK(!verdict.reason.empty() && verdict.reason.size() <= 512, "a refusal says why, briefly");
    FUZZ_CHECK(!(valid_object && text.size() <= 4096), "the guard accepts every small strict JSON object");
  }

  const uint64_t budget = budget_choice < 128 ? uint64_t{budget_choice} * 16 : uint64_t{1} << (budget_choice % 40);
  check_report(sandbox_exec::parse_cell_done(view, budget), budget);

  const std::optional<int64_t> protocol = sandbox_exec::ready_protocol(view);
  if (protocol) {
    FUZZ_CHECK(verdict.ok, "a version only from a message the guard accepts");
    const auto it = reference.find("protocol");
    FUZZ_CHECK(it != reference.end() && it->is_number_integer(), "the version is the protocol field, an integer");
  } else if (verdict.ok) {
    const auto it = reference.find("protocol");
    FUZZ_CHECK(it == reference.end() || !it->is_number_integer(), "an integer protocol field is read");
  }
  return 0;
}
