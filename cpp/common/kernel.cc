#include "common/kernel.h"

#include <linux/landlock.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace sandbox_exec::kernel {

int landlock_abi() noexcept {
  const long v = ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION);
  return v < 0 ? 0 : static_cast<int>(v);
}

}  // namespace sandbox_exec::kernel
