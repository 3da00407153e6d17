// json_guard: the supervisor's check of a worker's JSON (cpp/json_guard.h) and the
// end-of-cell report it rebuilds.
#include "supervisor/json_guard.h"

#include <gtest/gtest.h>

#include <string>

namespace sandbox_exec {
namespace {

std::string repeat(const std::string& s, std::size_t n) {
  std::string out;
  out.reserve(s.size() * n);
  for (std::size_t i = 0; i < n; ++i) out += s;
  return out;
}

TEST(JsonGuard, AcceptsOrdinaryMessages) {
  EXPECT_TRUE(
      check_message_json(R"({"output_type":"display_data","data":{"text/plain":"é \ud83d\ude00"},"metadata":{}})").ok);
  EXPECT_TRUE(check_message_json(R"({"a":[1,2.5,-3e10,true,false,null,"x"]})").ok);
  EXPECT_TRUE(check_message_json("{\"a\": [" + repeat("0.125,", 100000) + "0]}").ok);
}

TEST(JsonGuard, RejectsWhatStrictConsumersRefuse) {
  for (const char* bad : {R"({"v":NaN})", R"({"v":Infinity})", R"({"v":-Infinity})", R"({"v":1e999})",
                          R"({"v":"\ud800"})", R"({"v":"\udc00x"})", "{\"v\":\"\xff\"}", "{\"v\":\"a\x01\"}",
                          R"({"v":1,})", R"({'v':1})", "{\"v\":1} x", ""}) {
    const JsonVerdict v = check_message_json(bad);
    EXPECT_FALSE(v.ok) << bad;
    EXPECT_FALSE(v.reason.empty()) << bad;
  }
}

TEST(JsonGuard, OnlyAnObjectAtTheTop) {
  for (const char* bad : {"[]", "1", "\"s\"", "null", "{}{}"}) EXPECT_FALSE(check_message_json(bad).ok) << bad;
  EXPECT_NE(check_message_json("[1]").reason.find("must be a JSON object"), std::string::npos);
}

TEST(JsonGuard, BoundsDepthWithoutRecursion) {
  const std::string ok =
      "{\"a\":" + repeat("[", JsonShape::kMaxDepth - 1) + repeat("]", JsonShape::kMaxDepth - 1) + "}";
  EXPECT_TRUE(check_message_json(ok).ok);
  const std::string deep = "{\"a\":" + repeat("[", JsonShape::kMaxDepth) + repeat("]", JsonShape::kMaxDepth) + "}";
  EXPECT_NE(check_message_json(deep).reason.find("nested deeper"), std::string::npos);
  // A million levels: refused at level 65, without overflowing the stack.
  EXPECT_FALSE(check_message_json("{\"a\":" + repeat("[", 1000000) + repeat("]", 1000000) + "}").ok);
}

std::string list_of(const std::string& item, std::size_t n) { return "{\"a\":[" + repeat(item + ",", n) + item + "]}"; }

TEST(JsonGuard, BoundsTheEstimatedPythonFootprint) {
  // Shapes whose Python objects are many times their text (measured with tracemalloc:
  // empty lists 22x, empty dicts 24x, one-character non-Latin-1 strings 17x): refused.
  for (const std::string& item :
       {std::string("[]"), std::string("{}"), std::string("\"\u0100\""), std::string("\"\xc4\x80\"")}) {
    const JsonVerdict v = check_message_json(list_of(item, 200000));
    EXPECT_FALSE(v.ok) << item;
    EXPECT_NE(v.reason.find("as Python objects"), std::string::npos) << v.reason;
  }
  // Ordinary outputs: numbers (plotly arrays), short ASCII strings, small lists, records,
  // long text (one str, even with an astral character: 4 bytes per character).
  for (const std::string& item :
       {std::string("0.125"), std::string("12345"), std::string("\"ab\""), std::string("[0.5,0.25,0.125]"),
        std::string("{\"a\":1.5,\"b\":\"xy\"}"), std::string("{\"name\":\"abc\",\"value\":12345,\"flag\":true}"),
        std::string("\"") + std::string(100000, 'x') + "\xf0\x9f\x98\x80\""})
    EXPECT_TRUE(check_message_json(list_of(item, 200000 / (item.size() / 8 + 1))).ok) << item.substr(0, 40);
  // Cached values cost nothing: small ints, true/false/null, "" and one Latin-1 character.
  EXPECT_TRUE(check_message_json(list_of("1", 500000)).ok);
  EXPECT_TRUE(check_message_json(list_of("\"x\"", 500000)).ok);
  // Repeated keys are shared, as json.loads's memo shares them; many distinct keys are not.
  std::string distinct = "{";
  for (int i = 0; i < 100000; ++i) distinct += "\"k" + std::to_string(i) + "\":0,";
  distinct += "\"end\":0}";
  EXPECT_TRUE(check_message_json(distinct).ok);  // ~12 bytes of text for ~100 bytes of objects
  // A few objects are always allowed, whatever the size.
  EXPECT_TRUE(check_message_json("{\"a\":[[],[],[],[],[]]}").ok);
}

TEST(CellDone, RebuildsAValidReport) {
  const CellDoneReport r = parse_cell_done(
      R"({"status":"error","execution_count":3,"extra":[1],"error":{"ename":"E","evalue":"v","traceback":["t"]}})",
      1 << 20);
  EXPECT_FALSE(r.ok);
  ASSERT_TRUE(r.count.has_value());
  EXPECT_EQ(*r.count, 3);
  EXPECT_EQ(r.json, R"({"error":{"ename":"E","evalue":"v","traceback":["t"]},"execution_count":3,"status":"error"})");
}

TEST(CellDone, ABadReportBecomesAnErrorNotAViolation) {
  for (const char* bad : {R"({"status":"maybe"})", "not json", R"({"status":"error","error":{"ename":1}})",
                          R"({"status":"ok","v":NaN})"}) {
    const CellDoneReport r = parse_cell_done(bad, 1 << 20);
    EXPECT_FALSE(r.ok) << bad;
    EXPECT_NE(r.json.find("ProtocolError"), std::string::npos) << bad;
    EXPECT_TRUE(check_message_json(r.json).ok) << r.json;
  }
}

TEST(CellDone, OverTheBudgetTheTracebackGoesAndTheStatusStays) {
  const std::string big = R"({"status":"error","execution_count":1,"error":{"ename":"ValueError","evalue":")" +
                          std::string(100000, 'm') + R"(","traceback":[")" + std::string(100000, 't') + R"("]}})";
  const CellDoneReport r = parse_cell_done(big, 4096);
  EXPECT_FALSE(r.ok);
  EXPECT_LT(r.json.size(), 3000u);  // name and a 1 KiB message, twice (evalue and traceback)
  EXPECT_NE(r.json.find("traceback dropped"), std::string::npos);
  EXPECT_NE(r.json.find("ValueError"), std::string::npos);
  EXPECT_EQ(r.count, 1);
}

// Found by tests_cpp/fuzz/json_guard_fuzz (corpus/json_guard_fuzz/crash-ill-formed-utf8): the
// parse error's reason quoted the worker's raw bytes, and rebuilding the rejected report
// from it threw nlohmann's type_error (ill-formed UTF-8) out of the supervisor's cell loop.
TEST(CellDone, AReportWithIllFormedUtf8IsRejectedNotThrown) {
  for (const char* bad : {"\n\n\xf0", "{\"status\":\xff}", "\xc3", "{\"status\":\"ok\"} \xe2\x82"}) {
    CellDoneReport r;
    ASSERT_NO_THROW(r = parse_cell_done(bad, 1 << 20)) << bad;
    EXPECT_FALSE(r.ok) << bad;
    EXPECT_NE(r.json.find("rejected"), std::string::npos) << r.json;
    EXPECT_TRUE(check_message_json(r.json).ok) << r.json;
    // The reason the user sees (a marker for a rejected output) is printable ASCII.
    for (const char c : check_message_json(bad).reason) EXPECT_TRUE(c >= 0x20 && c < 0x7F) << bad;
  }
}

TEST(CellDone, MissingCountIsReportedAsMissing) {
  EXPECT_FALSE(parse_cell_done(R"({"status":"ok"})", 100).count.has_value());
  EXPECT_FALSE(parse_cell_done(R"({"status":"ok","execution_count":"1"})", 100).count.has_value());
}

}  // namespace
}  // namespace sandbox_exec

namespace sandbox_exec {
namespace {

TEST(ReadyProtocol, ReadsTheVersionOfAWellFormedReport) {
  EXPECT_EQ(ready_protocol(R"({"protocol": 1, "pid": 7})"), 1);
  EXPECT_EQ(ready_protocol(R"({"protocol": 42})"), 42);
}

TEST(ReadyProtocol, AnythingElseHasNoVersion) {
  EXPECT_EQ(ready_protocol(R"({"pid": 7})"), std::nullopt);
  EXPECT_EQ(ready_protocol(R"({"protocol": "1"})"), std::nullopt);
  EXPECT_EQ(ready_protocol(R"({"protocol": 1.5})"), std::nullopt);
  EXPECT_EQ(ready_protocol(R"([1])"), std::nullopt);
  EXPECT_EQ(ready_protocol("not json"), std::nullopt);
  EXPECT_EQ(ready_protocol(R"({"protocol": NaN})"), std::nullopt);
}

}  // namespace
}  // namespace sandbox_exec
