#include "launcher/landlock.h"

#include "common/kernel.h"

#include <fcntl.h>
#include <linux/landlock.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>

namespace sandbox_exec::landlock {

namespace {
// Newer than Debian 12's <linux/landlock.h>: defined here by value (the ABI is stable).
constexpr uint64_t kAccessTruncate = 1ULL << 14;    // ABI 3
constexpr uint64_t kAccessIoctlDev = 1ULL << 15;    // ABI 5
constexpr uint64_t kScopeAbstractUnix = 1ULL << 0;  // ABI 6
constexpr uint64_t kScopeSignal = 1ULL << 1;        // ABI 6

// The kernel's struct landlock_ruleset_attr with every field up to ABI 6; we pass the size
// the running ABI knows.
struct RulesetAttr {
  uint64_t handled_access_fs;
  uint64_t handled_access_net;
  uint64_t scoped;
};

struct PathBeneath {
  uint64_t allowed_access;
  int32_t parent_fd;
} __attribute__((packed));

constexpr uint64_t kRead = LANDLOCK_ACCESS_FS_EXECUTE | LANDLOCK_ACCESS_FS_READ_FILE | LANDLOCK_ACCESS_FS_READ_DIR;
constexpr uint64_t kWriteV1 = LANDLOCK_ACCESS_FS_WRITE_FILE | LANDLOCK_ACCESS_FS_REMOVE_DIR |
                              LANDLOCK_ACCESS_FS_REMOVE_FILE | LANDLOCK_ACCESS_FS_MAKE_CHAR |
                              LANDLOCK_ACCESS_FS_MAKE_DIR | LANDLOCK_ACCESS_FS_MAKE_REG | LANDLOCK_ACCESS_FS_MAKE_SOCK |
                              LANDLOCK_ACCESS_FS_MAKE_FIFO | LANDLOCK_ACCESS_FS_MAKE_BLOCK |
                              LANDLOCK_ACCESS_FS_MAKE_SYM;

int add_rule(int ruleset, const char* path, uint64_t access) noexcept {
  const int fd = ::open(path, O_PATH | O_CLOEXEC);
  if (fd < 0) return errno;
  PathBeneath rule{access, fd};
  const long rc = ::syscall(SYS_landlock_add_rule, ruleset, LANDLOCK_RULE_PATH_BENEATH, &rule, 0);
  const int err = rc == 0 ? 0 : errno;
  ::close(fd);
  return err;
}
}  // namespace

namespace {
int restrict_self_errno(const SpawnSpec& spec) noexcept {
  const int abi = kernel::landlock_abi();
  if (abi <= 0) return errno ? errno : EOPNOTSUPP;
  uint64_t write = kWriteV1;
  if (abi >= 2) write |= LANDLOCK_ACCESS_FS_REFER;
  if (abi >= 3) write |= kAccessTruncate;
  uint64_t device = 0;
  if (abi >= 5) device = kAccessIoctlDev;
  RulesetAttr attr{kRead | write | device, 0, 0};
  std::size_t size = sizeof(uint64_t);
  if (abi >= 4) size = 2 * sizeof(uint64_t);
  if (abi >= 6) {
    attr.scoped = kScopeAbstractUnix | kScopeSignal;
    size = sizeof attr;
  }
  const int ruleset = static_cast<int>(::syscall(SYS_landlock_create_ruleset, &attr, size, 0));
  if (ruleset < 0) return errno;
  int err = add_rule(ruleset, "/", kRead);
  // The workdir, the private /tmp and /dev/shm: everything; /dev: read and write its nodes
  // (and ioctl on them: terminals, /dev/urandom's RNDGETENTCNT), nothing else.
  const char* writable[] = {spec.workdir.c_str(), "/tmp", "/dev/shm"};
  for (const char* path : writable) {
    if (!err) err = add_rule(ruleset, path, kRead | write | device);
  }
  if (!err)
    err = add_rule(ruleset, "/dev", kRead | LANDLOCK_ACCESS_FS_WRITE_FILE | device | (abi >= 3 ? kAccessTruncate : 0));
  if (!err && ::syscall(SYS_landlock_restrict_self, ruleset, 0) != 0) err = errno;
  ::close(ruleset);
  return err;
}
}  // namespace

StepFailure restrict_self(const SpawnSpec& spec) noexcept {
  return step_result(LaunchStep::kLandlock, restrict_self_errno(spec));
}

}  // namespace sandbox_exec::landlock
