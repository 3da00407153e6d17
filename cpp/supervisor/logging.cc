#include "supervisor/logging.h"

#include <spdlog/pattern_formatter.h>
#include <spdlog/sinks/base_sink.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <mutex>
#include <optional>

#include "common/sys_error.h"

namespace sandbox_exec::log {

namespace {
// The names spdlog knows ("warning", "err" and "critical" too); nullopt for any other, which
// spdlog itself would quietly take as "off".
std::optional<spdlog::level::level_enum> parse_level(const std::string& name) {
  const auto level = spdlog::level::from_str(name);
  if (level == spdlog::level::off && name != "off") return std::nullopt;
  return level;
}

// The logger's one sink: stderr (spdlog's default pattern), or the bounded queue. One sink
// that routes, rather than sinks swapped on the logger: spdlog's sink list must not change
// while another thread logs. base_sink's mutex (mutex_) is held around sink_it_; drain()
// takes the same mutex and nothing else (see logging.h for why that is safe with the GIL).
class RoutingSink final : public spdlog::sinks::base_sink<std::mutex> {
 public:
  void set_queueing(bool on) {
    std::lock_guard<std::mutex> lock(mutex_);
    queueing_ = on;
  }

  Drained drain() {
    if (pending_.load(std::memory_order_acquire) == 0) return {};
    Drained out;
    std::lock_guard<std::mutex> lock(mutex_);
    out.records.swap(queue_);
    out.dropped = dropped_;
    dropped_ = 0;
    pending_.store(0, std::memory_order_release);
    return out;
  }

 protected:
  void sink_it_(const spdlog::details::log_msg& msg) override {
    if (!queueing_) {
      spdlog::memory_buf_t line;
      formatter_->format(msg, line);
      std::fwrite(line.data(), 1, line.size(), stderr);
      return;
    }
    if (queue_.size() >= kQueueCapacity) {
      ++dropped_;
    } else {
      const auto since_epoch = std::chrono::duration<double>(msg.time.time_since_epoch());
      queue_.push_back(QueuedRecord{msg.level, since_epoch.count(), static_cast<uint64_t>(msg.thread_id),
                                    std::string(msg.payload.data(), msg.payload.size())});
    }
    pending_.fetch_add(1, std::memory_order_release);
  }
  void flush_() override { std::fflush(stderr); }

 private:
  bool queueing_ = false;
  std::vector<QueuedRecord> queue_;
  uint64_t dropped_ = 0;
  std::atomic<uint64_t> pending_{0};  // records (or drops) since the last drain
};

RoutingSink& sink() {
  static auto* instance = new RoutingSink();  // never destroyed: threads may log at exit
  return *instance;
}
}  // namespace

spdlog::logger& logger() {
  static std::shared_ptr<spdlog::logger> instance = [] {
    // A non-owning shared_ptr: the sink outlives every logger that holds it.
    auto l =
        std::make_shared<spdlog::logger>("sandbox_exec", std::shared_ptr<spdlog::sinks::sink>(&sink(), [](auto*) {}));
    spdlog::register_logger(l);
    // A misspelled SANDBOX_EXEC_LOG keeps the default rather than silencing the log.
    const char* env = std::getenv("SANDBOX_EXEC_LOG");
    l->set_level(env ? parse_level(env).value_or(spdlog::level::warn) : spdlog::level::warn);
    return l;
  }();
  return *instance;
}

void set_level(const std::string& level) {
  const auto parsed = parse_level(level);
  if (!parsed) throw ConfigError("log level must be trace, debug, info, warn, error or off, got '" + level + "'");
  logger().set_level(*parsed);
}

void queue_records(bool on) {
  logger();  // the sink is the logger's from the start
  sink().set_queueing(on);
}

Drained drain() { return sink().drain(); }

}  // namespace sandbox_exec::log
