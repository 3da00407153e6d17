// logging: the supervisor's log, through spdlog, to stderr under the name "sandbox_exec".
// The level comes from SANDBOX_EXEC_LOG (trace, debug, info, warn, error, off; default
// warn) or from sandbox_exec._core.set_log_level(). Never used between fork and execve.
#pragma once

// The launcher's libraries are compiled with SANDBOX_EXEC_NO_LOGGING: its clone child runs
// between fork and exec, where a logger's locks and allocations are not safe, so the build
// refuses the include rather than trusting a comment (CMakeLists.txt, launcher rules).
#ifdef SANDBOX_EXEC_NO_LOGGING
#error "supervisor/logging.h is not available to the launcher: report through the launcher's pipe instead"
#endif

#include <spdlog/spdlog.h>

#include <string>

namespace sandbox_exec::log {

spdlog::logger& logger();
void set_level(const std::string& level);

template <typename... Args>
void debug(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  logger().debug(fmt, std::forward<Args>(args)...);
}
template <typename... Args>
void info(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  logger().info(fmt, std::forward<Args>(args)...);
}
template <typename... Args>
void warn(spdlog::format_string_t<Args...> fmt, Args&&... args) {
  logger().warn(fmt, std::forward<Args>(args)...);
}

}  // namespace sandbox_exec::log
