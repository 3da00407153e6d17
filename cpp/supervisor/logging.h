// logging: the supervisor's log, through spdlog, under the name "sandbox_exec": to stderr,
// or (queue_records(true), what the Python package turns on at import) into a bounded
// in-memory queue that Python drains into its `logging` (sandbox_exec/_supervisor_log.py).
// The level comes from SANDBOX_EXEC_LOG (trace, debug, info, warn, error, off; default
// warn) or from sandbox_exec._core.set_log_level(). Never used between fork and execve.
//
// Why a queue and not a sink that calls into Python: the supervisor logs from threads that
// hold no GIL (a cell's steps, terminate() from a destructor) and from places where taking
// the GIL could deadlock (a thread that holds the GIL may be waiting for a lock the logging
// thread holds, e.g. the session's runner lock, or the interpreter may be finalizing). The
// queue's sink takes only its own mutex, for a push, and calls nothing while holding it;
// drain() takes the same mutex, for a swap. Neither waits for anything else under it, so
// the mutex cannot be part of a lock cycle with the GIL or any other lock. Python takes the
// records out with the GIL held, on its own schedule, and logs them there.
#pragma once

// The launcher's libraries are compiled with SANDBOX_EXEC_NO_LOGGING: its clone child runs
// between fork and exec, where a logger's locks and allocations are not safe, so the build
// refuses the include rather than trusting a comment (CMakeLists.txt, launcher rules).
#ifdef SANDBOX_EXEC_NO_LOGGING
#error "supervisor/logging.h is not available to the launcher: report through the launcher's pipe instead"
#endif

#include <spdlog/spdlog.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace sandbox_exec::log {

spdlog::logger& logger();
void set_level(const std::string& level);

// One record held in the queue.
struct QueuedRecord {
  spdlog::level::level_enum level;
  double time_s;     // when it was logged, seconds since the epoch (system clock)
  uint64_t thread;   // the OS thread id of the thread that logged it
  std::string text;  // the formatted message (bytes: may hold anything a message quoted)
};

// At most this many records wait in the queue; more are counted as dropped, not kept.
inline constexpr std::size_t kQueueCapacity = 4096;

// Where records go from now on: the queue (true) or stderr (false, the default).
void queue_records(bool on);

// The queued records, oldest first, and how many were dropped (the queue was full) since the
// last drain; both are taken. Cheap when nothing is queued (one atomic load).
struct Drained {
  std::vector<QueuedRecord> records;
  uint64_t dropped = 0;
};
Drained drain();

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
