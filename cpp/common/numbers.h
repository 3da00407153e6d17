#pragma once
// numbers: decimal integers read from kernel text (/proc, cgroupfs), with every conversion
// checked (no scanf/atoi: they report neither overflow nor garbage).

#include <charconv>
#include <cstddef>
#include <optional>
#include <string_view>
#include <vector>

namespace sandbox_exec::numbers {

// The decimal integer that `text` is, whole; nullopt for anything else (a sign only for
// signed types, no spaces, no overflow).
template <typename Int>
[[nodiscard]] std::optional<Int> parse(std::string_view text) noexcept {
  Int value{};
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) return std::nullopt;
  return value;
}

// The whitespace-separated words of `text`, in order.
[[nodiscard]] inline std::vector<std::string_view> words(std::string_view text) {
  std::vector<std::string_view> out;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\n' || text[i] == '\t')) ++i;
    const std::size_t start = i;
    while (i < text.size() && text[i] != ' ' && text[i] != '\n' && text[i] != '\t') ++i;
    if (i > start) out.push_back(text.substr(start, i - start));
  }
  return out;
}

// Appends each word of `text` that is an integer to `out`, up to `max` values in `out`;
// stops at the first word that is not (kernel lists are numbers only).
template <typename Int>
void append_all(std::string_view text, std::vector<Int>& out, std::size_t max = static_cast<std::size_t>(-1)) {
  for (std::string_view word : words(text)) {
    if (out.size() >= max) return;
    const auto value = parse<Int>(word);
    if (!value) return;
    out.push_back(*value);
  }
}

}  // namespace sandbox_exec::numbers
