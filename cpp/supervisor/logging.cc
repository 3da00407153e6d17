#include "supervisor/logging.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <cstdlib>

namespace sandbox_exec::log {

spdlog::logger& logger() {
  static std::shared_ptr<spdlog::logger> instance = [] {
    auto l = spdlog::stderr_logger_mt("sandbox_exec");
    const char* env = std::getenv("SANDBOX_EXEC_LOG");
    l->set_level(env ? spdlog::level::from_str(env) : spdlog::level::warn);
    return l;
  }();
  return *instance;
}

void set_level(const std::string& level) { logger().set_level(spdlog::level::from_str(level)); }

}  // namespace sandbox_exec::log
