#include "launcher/rlimits.h"

#include <sys/resource.h>

#include <cerrno>

namespace sandbox_exec::rlimits {

namespace {
// Sets soft and hard limit alike, so the cell cannot raise it back.
int set(int resource, uint64_t value) noexcept {
  const rlimit rl{static_cast<rlim_t>(value), static_cast<rlim_t>(value)};
  return ::setrlimit(resource, &rl) == 0 ? 0 : errno;
}
}  // namespace

Failure apply(const ResourceLimits& limits) noexcept {
  struct Item {
    const std::optional<uint64_t>& value;
    int resource;
    LaunchStep step;
  };
  const Item items[] = {
      {limits.cpu_seconds, RLIMIT_CPU, LaunchStep::kRlimitCpu},
      {limits.file_bytes, RLIMIT_FSIZE, LaunchStep::kRlimitFileSize},
      {limits.open_files, RLIMIT_NOFILE, LaunchStep::kRlimitOpenFiles},
      {limits.address_space, RLIMIT_AS, LaunchStep::kRlimitAddressSpace},
      // Counted per (user namespace, uid) since Linux 5.14's ucounts: each session's own.
      {limits.processes, RLIMIT_NPROC, LaunchStep::kRlimitProcesses},
  };
  for (const auto& item : items) {
    if (!item.value) continue;
    if (int err = set(item.resource, *item.value)) return {item.step, err};
  }
  if (!limits.core_dumps) {
    if (int err = set(RLIMIT_CORE, 0)) return {LaunchStep::kRlimitCore, err};
  }
  return {};
}

}  // namespace sandbox_exec::rlimits
