#include "supervisor/logging.h"

#include <spdlog/sinks/stdout_sinks.h>

#include <cstdlib>
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
}  // namespace

spdlog::logger& logger() {
  static std::shared_ptr<spdlog::logger> instance = [] {
    auto l = spdlog::stderr_logger_mt("sandbox_exec");
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

}  // namespace sandbox_exec::log
