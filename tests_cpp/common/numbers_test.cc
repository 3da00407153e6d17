// numbers: parse<Int> takes a whole decimal string or nothing (no sign for unsigned types,
// no spaces, no overflow, not empty); words() splits on spaces, tabs and newlines;
// append_all() stops at the first word that is not a number and at `max` values.
#include "common/numbers.h"

#include <cstdint>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include <gtest/gtest.h>

namespace sandbox_exec {
namespace {

using numbers::append_all;
using numbers::parse;
using numbers::words;

TEST(NumbersParse, WholeDecimalStrings) {
  EXPECT_EQ(parse<int>("0"), 0);
  EXPECT_EQ(parse<int>("42"), 42);
  EXPECT_EQ(parse<int>("-17"), -17);
  EXPECT_EQ(parse<unsigned long long>("18446744073709551615"), std::numeric_limits<unsigned long long>::max());
  EXPECT_EQ(parse<int64_t>("-9223372036854775808"), std::numeric_limits<int64_t>::min());
  EXPECT_EQ(parse<int>("007"), 7);
}

TEST(NumbersParse, OnlyTheWholeString) {
  EXPECT_FALSE(parse<int>("12abc"));
  EXPECT_FALSE(parse<int>("abc"));
  EXPECT_FALSE(parse<int>("1.5"));
  EXPECT_FALSE(parse<int>("0x10"));
  EXPECT_FALSE(parse<int>("12 13"));
  // a view into a longer buffer stops where the view does
  const std::string_view text = "1234";
  EXPECT_EQ(parse<int>(text.substr(0, 2)), 12);
}

TEST(NumbersParse, EmptyIsNothing) {
  EXPECT_FALSE(parse<int>(""));
  EXPECT_FALSE(parse<unsigned>(""));
  EXPECT_FALSE(parse<int>(std::string_view()));
}

TEST(NumbersParse, NoSpacesAnywhere) {
  EXPECT_FALSE(parse<int>(" 1"));
  EXPECT_FALSE(parse<int>("1 "));
  EXPECT_FALSE(parse<int>("1\n"));
  EXPECT_FALSE(parse<int>("\t1"));
  EXPECT_FALSE(parse<int>(" "));
}

TEST(NumbersParse, SignOnlyForSignedTypes) {
  EXPECT_FALSE(parse<unsigned>("-1"));
  EXPECT_FALSE(parse<unsigned long long>("-0"));
  EXPECT_FALSE(parse<uint64_t>("-5"));
  // no plus sign for any type (from_chars takes none)
  EXPECT_FALSE(parse<int>("+1"));
  EXPECT_FALSE(parse<unsigned>("+1"));
  EXPECT_FALSE(parse<int>("-"));
  EXPECT_FALSE(parse<int>("--1"));
}

TEST(NumbersParse, OverflowIsNothing) {
  EXPECT_EQ(parse<int32_t>("2147483647"), std::numeric_limits<int32_t>::max());
  EXPECT_FALSE(parse<int32_t>("2147483648"));
  EXPECT_FALSE(parse<int32_t>("-2147483649"));
  EXPECT_EQ(parse<uint8_t>("255"), 255);
  EXPECT_FALSE(parse<uint8_t>("256"));
  EXPECT_FALSE(parse<unsigned long long>("18446744073709551616"));
  EXPECT_FALSE(parse<unsigned long long>("99999999999999999999999999"));
}

TEST(NumbersWords, SplitsOnSpacesTabsNewlines) {
  const std::vector<std::string_view> expected{"12", "ab", "3", "x"};
  EXPECT_EQ(words("12 ab\t3\nx"), expected);
  EXPECT_EQ(words("  12 \n\n ab\t\t3 \t\n x\n"), expected);
}

TEST(NumbersWords, EmptyAndBlankHaveNoWords) {
  EXPECT_TRUE(words("").empty());
  EXPECT_TRUE(words(" \t\n  ").empty());
}

TEST(NumbersWords, OneWordAndOtherBytesStayInside) {
  EXPECT_EQ(words("word"), std::vector<std::string_view>{"word"});
  // only space, tab and newline separate; a carriage return is part of a word
  EXPECT_EQ(words("a\rb c"), (std::vector<std::string_view>{"a\rb", "c"}));
}

TEST(NumbersWords, ViewsPointIntoTheText) {
  const std::string text = "one two";
  const auto w = words(text);
  ASSERT_EQ(w.size(), 2u);
  EXPECT_EQ(w[0].data(), text.data());
  EXPECT_EQ(w[1].data(), text.data() + 4);
}

TEST(NumbersAppendAll, AppendsEveryNumber) {
  std::vector<int> out;
  append_all("1 2\n3\t-4\n", out);
  EXPECT_EQ(out, (std::vector<int>{1, 2, 3, -4}));
}

TEST(NumbersAppendAll, AppendsAfterWhatIsThere) {
  std::vector<int> out{9};
  append_all("1 2", out);
  EXPECT_EQ(out, (std::vector<int>{9, 1, 2}));
}

TEST(NumbersAppendAll, StopsAtTheFirstNonNumber) {
  std::vector<int> out;
  append_all("1 2 x 3 4", out);
  EXPECT_EQ(out, (std::vector<int>{1, 2}));
  std::vector<unsigned> unsigned_out;
  append_all("5 -6 7", unsigned_out);
  EXPECT_EQ(unsigned_out, std::vector<unsigned>{5});
  std::vector<uint8_t> small;
  append_all("1 300 2", small);
  EXPECT_EQ(small, std::vector<uint8_t>{1});
}

TEST(NumbersAppendAll, HonoursMaxCountingWhatWasThere) {
  std::vector<int> out;
  append_all("1 2 3 4 5", out, 3);
  EXPECT_EQ(out, (std::vector<int>{1, 2, 3}));
  std::vector<int> prefilled{7, 8};
  append_all("1 2 3", prefilled, 3);
  EXPECT_EQ(prefilled, (std::vector<int>{7, 8, 1}));
  std::vector<int> full{7, 8, 9};
  append_all("1 2 3", full, 2);
  EXPECT_EQ(full, (std::vector<int>{7, 8, 9}));
  std::vector<int> none;
  append_all("1 2", none, 0);
  EXPECT_TRUE(none.empty());
}

TEST(NumbersAppendAll, EmptyTextAppendsNothing) {
  std::vector<int> out{1};
  append_all("", out);
  append_all(" \n", out);
  EXPECT_EQ(out, std::vector<int>{1});
}

}  // namespace
}  // namespace sandbox_exec
