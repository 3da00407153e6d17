// SharedRegion (shared_region.h): create() gives a zero-filled memfd of the asked size,
// sealed against shrinking, growing and further sealing (a worker cannot ftruncate it into
// a SIGBUS), close-on-exec and named for debugging; attach() in another process maps the
// same memory (writes cross in both directions) at the size fstat reports; an empty
// descriptor or none at all is refused with a SandboxError of layer "shared_region".
#include "ipc/shared_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "common/sys_error.h"

namespace sandbox_exec {
namespace {

constexpr std::size_t kSize = 3 * 4096;

TEST(SharedRegion, CreateGivesTheAskedSizeZeroFilled) {
  const SharedRegion region = SharedRegion::create(kSize, "test-region");
  EXPECT_EQ(region.size(), kSize);
  ASSERT_GE(region.fd(), 0);
  ASSERT_NE(region.data(), nullptr);
  struct stat st {};
  ASSERT_EQ(::fstat(region.fd(), &st), 0);
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), kSize);
  EXPECT_TRUE(std::all_of(region.data(), region.data() + kSize, [](std::byte b) { return b == std::byte{0}; }));
}

TEST(SharedRegion, CreateSealsTheSize) {
  const SharedRegion region = SharedRegion::create(kSize, "test-region");
  const int seals = ::fcntl(region.fd(), F_GET_SEALS);
  ASSERT_GE(seals, 0) << std::strerror(errno);
  EXPECT_EQ(seals & (F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL), F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL);
  // writes stay allowed: the region is written through the mapping
  EXPECT_EQ(seals & (F_SEAL_WRITE | F_SEAL_FUTURE_WRITE), 0);

  errno = 0;
  EXPECT_EQ(::ftruncate(region.fd(), 0), -1);
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  EXPECT_EQ(::ftruncate(region.fd(), kSize / 2), -1);
  EXPECT_EQ(errno, EPERM);
  errno = 0;
  EXPECT_EQ(::ftruncate(region.fd(), kSize * 2), -1);
  EXPECT_EQ(errno, EPERM);
  // F_SEAL_SEAL: no seal can be added or removed any more (a worker cannot add WRITE)
  errno = 0;
  EXPECT_EQ(::fcntl(region.fd(), F_ADD_SEALS, F_SEAL_WRITE), -1);
  EXPECT_EQ(errno, EPERM);
  // a write past the end cannot grow it either
  const char byte = 'x';
  errno = 0;
  EXPECT_EQ(::pwrite(region.fd(), &byte, 1, static_cast<off_t>(kSize)), -1);
  EXPECT_EQ(errno, EPERM);
  struct stat st {};
  ASSERT_EQ(::fstat(region.fd(), &st), 0);
  EXPECT_EQ(static_cast<std::size_t>(st.st_size), kSize);
}

TEST(SharedRegion, DescriptorIsCloseOnExecAndNamed) {
  const SharedRegion region = SharedRegion::create(4096, "named-region");
  const int flags = ::fcntl(region.fd(), F_GETFD);
  ASSERT_GE(flags, 0);
  EXPECT_NE(flags & FD_CLOEXEC, 0);
  char target[256] = {};
  const std::string link = "/proc/self/fd/" + std::to_string(region.fd());
  ASSERT_GT(::readlink(link.c_str(), target, sizeof target - 1), 0);
  EXPECT_EQ(std::string(target).rfind("/memfd:named-region", 0), 0u) << target;
}

TEST(SharedRegion, MappingIsTheDescriptorsMemory) {
  const SharedRegion region = SharedRegion::create(kSize, "test-region");
  std::memcpy(region.data() + 4100, "hello", 5);
  char back[5] = {};
  ASSERT_EQ(::pread(region.fd(), back, 5, 4100), 5);
  EXPECT_EQ(std::string(back, 5), "hello");
}

TEST(SharedRegion, AttachInAForkedChildSeesTheWrites) {
  SharedRegion region = SharedRegion::create(kSize, "test-region");
  std::memcpy(region.data(), "from parent", 11);
  std::memcpy(region.data() + kSize - 4, "tail", 4);

  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    // the child maps its own descriptor (as the worker does with the inherited one)
    int code = 0;
    try {
      SharedRegion mine = SharedRegion::attach(UniqueFd(::dup(region.fd())));
      if (mine.size() != kSize) code = 2;
      if (mine.data() == region.data()) code = 3;  // a second mapping, not the parent's
      if (std::memcmp(mine.data(), "from parent", 11) != 0) code = 4;
      if (std::memcmp(mine.data() + kSize - 4, "tail", 4) != 0) code = 5;
      std::memcpy(mine.data() + 100, "from child", 10);
    } catch (...) {
      code = 6;
    }
    ::_exit(code);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
  EXPECT_EQ(std::memcmp(region.data() + 100, "from child", 10), 0);
}

TEST(SharedRegion, AttachMapsTheWholeDescriptor) {
  const SharedRegion region = SharedRegion::create(5 * 4096, "test-region");
  region.data()[5 * 4096 - 1] = std::byte{7};
  const SharedRegion other = SharedRegion::attach(UniqueFd(::dup(region.fd())));
  EXPECT_EQ(other.size(), 5u * 4096);
  EXPECT_EQ(other.data()[5 * 4096 - 1], std::byte{7});
  other.data()[0] = std::byte{9};
  EXPECT_EQ(region.data()[0], std::byte{9});
}

TEST(SharedRegion, AttachRefusesAnEmptyDescriptor) {
  UniqueFd empty(::memfd_create("empty", MFD_CLOEXEC));
  ASSERT_TRUE(empty);
  try {
    (void)SharedRegion::attach(std::move(empty));
    FAIL() << "an empty descriptor was attached";
  } catch (const SandboxError& e) {
    EXPECT_EQ(e.layer(), "shared_region");
    EXPECT_NE(std::string(e.what()).find("not the session's ring"), std::string::npos) << e.what();
  }
}

TEST(SharedRegion, AttachRefusesNoDescriptor) {
  try {
    (void)SharedRegion::attach(UniqueFd());
    FAIL() << "no descriptor was attached";
  } catch (const SandboxError& e) {
    EXPECT_EQ(e.layer(), "shared_region");
    EXPECT_EQ(e.error_number(), EBADF);
  }
}

TEST(SharedRegion, CreateRefusesASizeOfZero) {
  // nothing to map: a zero-sized region is refused, not handed out unmapped
  EXPECT_THROW((void)SharedRegion::create(0, "zero"), SandboxError);
}

TEST(SharedRegion, MoveKeepsTheMapping) {
  SharedRegion a = SharedRegion::create(4096, "test-region");
  std::byte* const data = a.data();
  const int fd = a.fd();
  data[1] = std::byte{42};
  SharedRegion b = std::move(a);
  EXPECT_EQ(b.data(), data);
  EXPECT_EQ(b.fd(), fd);
  EXPECT_EQ(b.size(), 4096u);
  EXPECT_EQ(b.data()[1], std::byte{42});
}

}  // namespace
}  // namespace sandbox_exec
