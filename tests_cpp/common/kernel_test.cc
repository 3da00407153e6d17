// kernel: landlock_abi() is what the kernel itself answers to
// landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION), and 0 where that fails.
#include "common/kernel.h"

#include <linux/landlock.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <gtest/gtest.h>

namespace sandbox_exec {
namespace {

long ask_kernel() { return ::syscall(SYS_landlock_create_ruleset, nullptr, 0, LANDLOCK_CREATE_RULESET_VERSION); }

TEST(Kernel, LandlockAbiAgreesWithTheSyscall) {
  errno = 0;
  const long direct = ask_kernel();
  const int err = errno;
  if (direct < 0) {
    EXPECT_EQ(kernel::landlock_abi(), 0) << "the kernel answered " << std::strerror(err);
  } else {
    EXPECT_EQ(kernel::landlock_abi(), direct);
  }
}

TEST(Kernel, LandlockIsAvailableHere) {
  // This project's test machines run kernels with Landlock enabled (5.13+, lsm=landlock).
  const long direct = ask_kernel();
  if (direct < 0 && (errno == ENOSYS || errno == EOPNOTSUPP))
    GTEST_SKIP() << "this kernel has no Landlock: " << std::strerror(errno);
  EXPECT_GT(kernel::landlock_abi(), 0);
}

TEST(Kernel, LandlockAbiIsStable) {
  // asked twice, the same answer: nothing was created or changed by asking
  EXPECT_EQ(kernel::landlock_abi(), kernel::landlock_abi());
}

}  // namespace
}  // namespace sandbox_exec
