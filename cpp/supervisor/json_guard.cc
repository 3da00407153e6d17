#include "supervisor/json_guard.h"

#include <algorithm>
#include <unordered_set>
#include <vector>

#include <nlohmann/json.hpp>

namespace sandbox_exec {

namespace {

using nlohmann::json;

// What CPython 3.11 (64-bit) allocates for each JSON value that json.loads builds, from its
// object sizes (sys.getsizeof plus pymalloc's 16-byte rounding, measured against
// tracemalloc): the supervisor's estimate of the backend's memory for a message, before any
// of it exists. Values CPython caches (small ints, true/false/null, "", one Latin-1
// character) cost nothing; json.loads shares repeated object keys, and so does the estimate.
namespace footprint {
constexpr uint64_t kListBase = 64, kListPerItem = 9;  // header + GC head; slot + over-allocation
constexpr uint64_t kDictBase = 72, kDictMinEntries = 112, kDictPerEntry = 40;
constexpr uint64_t kFloat = 24, kInt = 32;

uint64_t round16(uint64_t n) { return (n + 15) & ~uint64_t{15}; }

// A str of this UTF-8 text: 49 + n (ASCII), 73 + n (Latin-1), 74 + 2n (BMP), 76 + 4n.
uint64_t string(const std::string& utf8) {
  uint64_t chars = 0;
  unsigned kind = 0;  // 0 ASCII, 1 Latin-1, 2 BMP, 4 astral
  for (unsigned char b : utf8) {
    if ((b & 0xC0) == 0x80) continue;
    ++chars;
    if (b < 0x80) continue;
    const unsigned k = b < 0xC4 ? 1u : b < 0xF0 ? 2u : 4u;  // lead byte: 0xC2/0xC3 are Latin-1
    kind = k > kind ? k : kind;
  }
  if (chars == 0 || (chars == 1 && kind <= 1)) return 0;  // cached by CPython
  switch (kind) {
    case 0:
      return round16(49 + chars);
    case 1:
      return round16(73 + chars);
    case 2:
      return round16(74 + 2 * chars);
    default:
      return round16(76 + 4 * chars);
  }
}
}  // namespace footprint

// `text` with each byte outside printable ASCII as \xNN, cut at about `limit` bytes.
std::string printable_ascii(const std::string& text, std::size_t limit) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  for (const unsigned char c : text) {
    if (out.size() >= limit) break;
    if (c >= 0x20 && c < 0x7F) {
      out += static_cast<char>(c);
    } else {
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out;
}

// Walks the message with nlohmann's lexer checking the grammar, adding up the estimated
// Python footprint; returning false stops the parse at once (a shape over the limits is
// never read to its end).
class ShapeCounter {
 public:
  explicit ShapeCounter(uint64_t max_footprint) : max_footprint_(max_footprint) {}

  bool null() { return value(0); }
  bool boolean(bool) { return value(0); }
  bool number_integer(json::number_integer_t v) { return value(v >= -5 && v <= 256 ? 0 : footprint::kInt); }
  bool number_unsigned(json::number_unsigned_t v) { return value(v <= 256 ? 0 : footprint::kInt); }
  bool number_float(json::number_float_t, const json::string_t&) { return value(footprint::kFloat); }
  bool string(json::string_t& s) { return value(footprint::string(s)); }
  bool binary(json::binary_t&) { return fail("binary values are not JSON"); }
  bool key(json::string_t& k) {
    // json.loads keeps one str per distinct key (its memo).
    return keys_.insert(k).second ? add(footprint::string(k)) : true;
  }
  bool start_object(std::size_t) { return open(true); }
  bool end_object() {
    const uint64_t n = items_.back();
    return close(footprint::kDictBase + (n ? std::max(footprint::kDictMinEntries, footprint::kDictPerEntry * n) : 0));
  }
  bool start_array(std::size_t) { return open(false); }
  bool end_array() { return close(footprint::kListBase + footprint::kListPerItem * items_.back()); }
  bool parse_error(std::size_t position, const std::string&, const json::exception& e) {
    // nlohmann's message names the byte offset and the token; keep it short. The token is
    // the worker's raw bytes (invalid UTF-8 too): the reason goes into JSON (the rejected
    // end-of-cell report, where nlohmann's dump() throws on ill-formed UTF-8) and to the
    // user, so every byte outside printable ASCII is written as \xNN.
    std::string what = e.what();
    if (auto at = what.find("parse error"); at != std::string::npos) what = what.substr(at);
    return fail("invalid JSON at byte " + std::to_string(position) + ": " + printable_ascii(what, 200));
  }

  std::string reason;

 private:
  bool value(uint64_t cost) {
    if (items_.empty()) return fail("a message must be a JSON object");
    ++items_.back();
    return add(cost);
  }
  bool add(uint64_t cost) {
    total_ += cost;
    if (total_ <= max_footprint_) return true;
    return fail("it would take more than " + std::to_string(max_footprint_) + " bytes as Python objects (at most " +
                std::to_string(JsonShape::kFootprintPerByte) + " times its size)");
  }
  bool open(bool is_object) {
    if (items_.empty() && (!is_object || seen_top_)) return fail("a message must be a JSON object");
    seen_top_ = true;
    if (!items_.empty()) ++items_.back();
    if (items_.size() >= JsonShape::kMaxDepth)
      return fail("nested deeper than " + std::to_string(JsonShape::kMaxDepth) + " levels");
    items_.push_back(0);
    return true;
  }
  bool close(uint64_t cost) {
    items_.pop_back();
    return add(cost);
  }
  bool fail(std::string why) {
    if (reason.empty()) reason = std::move(why);
    return false;
  }

  uint64_t max_footprint_;
  uint64_t total_ = 0;
  std::vector<uint64_t> items_;  // per open container: its elements so far
  std::unordered_set<std::string> keys_;
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
  ShapeCounter counter(JsonShape::kFootprintAllowance + JsonShape::kFootprintPerByte * text.size());
  const bool ok = json::sax_parse(text.begin(), text.end(), &counter, json::input_format_t::json,
                                  /*strict=*/true);
  if (ok) return {true, {}};
  return {false, counter.reason.empty() ? std::string("invalid JSON") : counter.reason};
}

std::string rejected_cell_done(const std::string& why) {
  const std::string message = "the worker's end-of-cell report was rejected: " + why;
  return json{{"status", "error"},
              {"error", error_object("ProtocolError", message, json::array({"ProtocolError: " + message}))}}
      .dump();
}

std::optional<int64_t> ready_protocol(std::string_view text) {
  if (!check_message_json(text).ok) return std::nullopt;
  const json ready = json::parse(text.begin(), text.end());
  const auto protocol = ready.find("protocol");
  if (protocol == ready.end() || !protocol->is_number_integer()) return std::nullopt;
  return protocol->get<int64_t>();
}

CellDoneReport parse_cell_done(std::string_view text, uint64_t budget) {
  CellDoneReport report;
  json rebuilt;
  auto rejected = [&](const std::string& why) { rebuilt = json::parse(rejected_cell_done(why)); };
  const JsonVerdict verdict = check_message_json(text);
  if (!verdict.ok) {
    rejected(verdict.reason);
  } else {
    const json done = json::parse(text.begin(), text.end());
    const auto status = done.find("status");
    const auto count = done.find("execution_count");
    if (count != done.end() && count->is_number_integer()) report.count = count->get<int64_t>();
    // The worker's own count of output it did not send once the cap was reached: only
    // ever shown to the user (Result.truncated_bytes), so taken as said, within 2^53.
    if (const auto d = done.find("dropped_output_bytes"); d != done.end() && d->is_number_unsigned())
      report.dropped = std::min<uint64_t>(d->get<uint64_t>(), uint64_t{1} << 53);
    if (status == done.end() || !status->is_string() || (*status != "ok" && *status != "error")) {
      rejected("its status is not \"ok\" or \"error\"");
    } else {
      rebuilt = json{{"status", *status}};
      report.ok = *status == "ok";
      const auto error = done.find("error");
      if (error != done.end() && !error->is_null()) {
        const auto ename = error->is_object() ? error->find("ename") : error->end();
        const auto evalue = error->is_object() ? error->find("evalue") : error->end();
        const auto tb = error->is_object() ? error->find("traceback") : error->end();
        bool valid = error->is_object() && ename != error->end() && ename->is_string() && evalue != error->end() &&
                     evalue->is_string() && tb != error->end() && tb->is_array();
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
    error = error_object(
        ename, evalue,
        json::array({ename + ": " + evalue, "[sandbox_exec: traceback dropped: the cell's output limit was reached]"}));
    report.json = rebuilt.dump();
  }
  return report;
}

}  // namespace sandbox_exec
