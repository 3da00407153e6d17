#include "json_guard.h"

#include <nlohmann/json.hpp>

namespace sandbox_exec {

namespace {

using nlohmann::json;

// Counts structure while nlohmann's lexer checks the grammar; returning false stops the
// parse at once (a shape over the limits is never read to its end).
class ShapeCounter {
 public:
  explicit ShapeCounter(std::size_t max_containers) : max_containers_(max_containers) {}

  bool null() { return value(); }
  bool boolean(bool) { return value(); }
  bool number_integer(json::number_integer_t) { return value(); }
  bool number_unsigned(json::number_unsigned_t) { return value(); }
  bool number_float(json::number_float_t, const json::string_t&) { return value(); }
  bool string(json::string_t&) { return value(); }
  bool binary(json::binary_t&) { return fail("binary values are not JSON"); }
  bool key(json::string_t&) { return true; }
  bool start_object(std::size_t) { return open('{'); }
  bool end_object() { return close(); }
  bool start_array(std::size_t) { return open('['); }
  bool end_array() { return close(); }
  bool parse_error(std::size_t position, const std::string&, const json::exception& e) {
    // nlohmann's message names the byte offset and the token; keep it short.
    std::string what = e.what();
    if (auto at = what.find("parse error"); at != std::string::npos) what = what.substr(at);
    return fail("invalid JSON at byte " + std::to_string(position) + ": " + what.substr(0, 200));
  }

  std::string reason;

 private:
  bool value() {
    if (depth_ == 0) return fail("a message must be a JSON object");
    return true;
  }
  bool open(char kind) {
    if (depth_ == 0 && (kind != '{' || seen_top_)) return fail("a message must be a JSON object");
    seen_top_ = true;
    if (++depth_ > JsonShape::kMaxDepth)
      return fail("nested deeper than " + std::to_string(JsonShape::kMaxDepth) + " levels");
    if (++containers_ > max_containers_)
      return fail("more than " + std::to_string(max_containers_) +
                  " objects and arrays for its size (at most one per " +
                  std::to_string(JsonShape::kBytesPerContainer) + " bytes)");
    return true;
  }
  bool close() {
    --depth_;
    return true;
  }
  bool fail(std::string why) {
    if (reason.empty()) reason = std::move(why);
    return false;
  }

  std::size_t max_containers_;
  std::size_t depth_ = 0;
  std::size_t containers_ = 0;
  bool seen_top_ = false;
};

std::string utf8_cut(const std::string& text, std::size_t limit) {
  if (text.size() <= limit) return text;
  std::size_t cut = limit;
  while (cut > 0 && (static_cast<unsigned char>(text[cut]) & 0xC0) == 0x80) --cut;
  return text.substr(0, cut) + "...";
}

json error_object(const std::string& ename, const std::string& evalue, json traceback) {
  return json{{"ename", ename}, {"evalue", evalue}, {"traceback", std::move(traceback)}};
}

}  // namespace

JsonVerdict check_message_json(std::string_view text) {
  ShapeCounter counter(JsonShape::kContainerAllowance + text.size() / JsonShape::kBytesPerContainer);
  const bool ok = json::sax_parse(text.begin(), text.end(), &counter, json::input_format_t::json,
                                  /*strict=*/true);
  if (ok) return {true, {}};
  return {false, counter.reason.empty() ? std::string("invalid JSON") : counter.reason};
}

CellDoneReport parse_cell_done(std::string_view text, uint64_t budget) {
  CellDoneReport report;
  json rebuilt;
  auto rejected = [&](const std::string& why) {
    rebuilt = json{{"status", "error"},
                   {"error", error_object("ProtocolError",
                                          "the worker's end-of-cell report was rejected: " + why,
                                          json::array({"ProtocolError: the worker's end-of-cell report was "
                                                       "rejected: " + why}))}};
  };
  const JsonVerdict verdict = check_message_json(text);
  if (!verdict.ok) {
    rejected(verdict.reason);
  } else {
    const json done = json::parse(text.begin(), text.end());
    const auto status = done.find("status");
    const auto count = done.find("execution_count");
    if (count != done.end() && count->is_number_integer()) report.count = count->get<int64_t>();
    if (status == done.end() || !status->is_string() ||
        (*status != "ok" && *status != "error")) {
      rejected("its status is not \"ok\" or \"error\"");
    } else {
      rebuilt = json{{"status", *status}};
      report.ok = *status == "ok";
      const auto error = done.find("error");
      if (error != done.end() && !error->is_null()) {
        const auto ename = error->is_object() ? error->find("ename") : error->end();
        const auto evalue = error->is_object() ? error->find("evalue") : error->end();
        const auto tb = error->is_object() ? error->find("traceback") : error->end();
        bool valid = error->is_object() && ename != error->end() && ename->is_string() &&
                     evalue != error->end() && evalue->is_string() && tb != error->end() &&
                     tb->is_array();
        if (valid) {
          for (const auto& line : *tb) valid = valid && line.is_string();
        }
        if (!valid) {
          report.ok = false;
          rejected("its error is not {ename, evalue, traceback} of strings");
        } else {
          rebuilt["error"] = error_object(*ename, *evalue, *tb);
        }
      }
    }
  }
  if (report.count) rebuilt["execution_count"] = *report.count;
  report.json = rebuilt.dump();
  if (report.json.size() > budget && rebuilt.contains("error")) {
    // Over the output budget: the status and a short error survive, the traceback does not.
    json& error = rebuilt["error"];
    const std::string ename = utf8_cut(error["ename"].get<std::string>(), 256);
    const std::string evalue = utf8_cut(error["evalue"].get<std::string>(), 1024);
    error = error_object(ename, evalue,
                         json::array({ename + ": " + evalue,
                                      "[sandbox_exec: traceback dropped: the cell's output limit was reached]"}));
    report.json = rebuilt.dump();
  }
  return report;
}

}  // namespace sandbox_exec
