#pragma once
// The events a test's cell handed to its sink, kept in order: what the supervisor's tests
// (the fake worker's and the real Python worker's) compare a cell's output with.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "supervisor/cell_runner.h"

namespace sandbox_exec::test_support {

struct Collected {
  std::vector<Event> events;
  EventSink sink() {
    return [this](EventBatch& batch) {
      for (auto& e : batch) events.push_back(std::move(e));
      return true;
    };
  }
  // The payloads of every event of `type`, joined.
  std::string joined(uint16_t type) const {
    std::string out;
    for (const auto& e : events)
      if (e.type == type) out += e.payload;
    return out;
  }
};

}  // namespace sandbox_exec::test_support
