// Unit tests for cpp/launcher/fds.cc: in a forked child, descriptors are opened (or closed)
// on purpose, the step runs, and the child reports which descriptors are open afterwards.
#include "launcher/fds.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

#include <gtest/gtest.h>

#include "child_probe.h"

namespace {

using sandbox_exec::LaunchStep;

bool is_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

// The open descriptors >= `from`, as /proc/self/fd lists them, without the one reading it.
std::string open_at_or_above(int from) {
  std::string out;
  DIR* dir = ::opendir("/proc/self/fd");
  if (dir == nullptr) return "<no /proc/self/fd>";
  const int own = ::dirfd(dir);
  while (const dirent* e = ::readdir(dir)) {
    if (e->d_name[0] == '.') continue;
    const int fd = std::atoi(e->d_name);
    if (fd >= from && fd != own) out += std::to_string(fd) + " ";
  }
  ::closedir(dir);
  return out;
}

TEST(Fds, CloseFromClosesEveryDescriptorFromN) {
  constexpr int kFirst = 20;
  const auto r = probe::run(
      [](const probe::Report& out) {
        // Below the cut: must survive. At and above: must go, including one near the limit.
        rlimit rl{};
        if (::getrlimit(RLIMIT_NOFILE, &rl) != 0) return 2;
        const int top = static_cast<int>(rl.rlim_cur > 4096 ? 4096 : rl.rlim_cur) - 1;
        // Whatever this process inherited up there goes first (by hand), so exactly the
        // descriptors planted below are open.
        for (int fd = kFirst; fd <= top; ++fd) {
          if (fd != out.fd()) ::close(fd);
        }
        const int null_fd = ::open("/dev/null", O_RDONLY);  // not CLOEXEC: close_from ignores flags
        if (null_fd < 0) return 3;
        for (int fd : {kFirst - 1, kFirst, kFirst + 1, kFirst + 30, top}) {
          if (::dup2(null_fd, fd) != fd) return 4;
        }
        ::close(null_fd);
        out.put("top", top);
        out.put("before", open_at_or_above(kFirst));
        out.put("f", sandbox_exec::fds::close_from(kFirst));
        out.put("after", open_at_or_above(kFirst));
        out.put("below_open", is_open(kFirst - 1));
        out.put("first_open", is_open(kFirst));
        ::fcntl(kFirst, F_GETFD);
        out.put("first_errno", errno);
        out.put("next_open", is_open(kFirst + 1));
        out.put("far_open", is_open(kFirst + 30));
        out.put("top_open", is_open(top));
        return 0;
      },
      5);
  ASSERT_TRUE(r.exited()) << r.dump();
  const std::string top = r.str("top");
  // Control: the descriptors were there before the step.
  EXPECT_EQ(r.str("before"), std::to_string(kFirst) + " " + std::to_string(kFirst + 1) + " " +
                                 std::to_string(kFirst + 30) + " " + top + " ")
      << r.dump();
  EXPECT_EQ(r.step("f"), LaunchStep::kNone) << r.dump();
  EXPECT_EQ(r.str("after"), "") << r.dump();
  EXPECT_EQ(r.num("below_open"), 1);
  EXPECT_EQ(r.num("first_open"), 0);
  EXPECT_EQ(r.num("first_errno"), EBADF);
  EXPECT_EQ(r.num("next_open"), 0);
  EXPECT_EQ(r.num("far_open"), 0);
  EXPECT_EQ(r.num("top_open"), 0);
}

TEST(Fds, CloseFromKeepsStdioAndTheLauncherDescriptors) {
  // The launcher's cut: 0-9 stay (stdio, report, lifeline, the channel, the exec report).
  const auto r = probe::run(
      [](const probe::Report& out) {
        for (int fd = 0; fd <= 12; ++fd) {
          if (fd != out.fd() && ::dup2(out.fd(), fd) != fd) return 2;
        }
        out.put("f", sandbox_exec::fds::close_from(10));
        std::string open;
        for (int fd = 0; fd <= 12; ++fd) {
          if (is_open(fd)) open += std::to_string(fd) + " ";
        }
        out.put("open", open);
        return 0;
      },
      5);
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.step("f"), LaunchStep::kNone);
  // 0-12 were all open (dup'd); 10-12 are gone.
  EXPECT_EQ(r.str("open"), "0 1 2 3 4 5 6 7 8 9 ") << r.dump();
}

// fstat of `fd` as "null" (the /dev/null character device), "fifo", "closed" or "other".
std::string kind_of(int fd) {
  struct stat st {
  }, null_st{};
  if (::fstat(fd, &st) != 0) return "closed";
  if (S_ISFIFO(st.st_mode)) return "fifo";
  if (::stat("/dev/null", &null_st) == 0 && S_ISCHR(st.st_mode) && st.st_rdev == null_st.st_rdev) {
    const int mode = ::fcntl(fd, F_GETFL) & O_ACCMODE;
    return mode == O_RDWR ? "null" : "null-not-rdwr";
  }
  return "other";
}

TEST(Fds, EnsureStdioOpensDevNullOnMissingStdio) {
  const auto r = probe::run(
      [](const probe::Report& out) {
        // Nothing open but the report pipe (9), so the next free descriptor is known.
        for (int fd = 0; fd < 9; ++fd) ::close(fd);
        if (sandbox_exec::fds::close_from(10).failed()) return 2;
        out.put("before", kind_of(0) + " " + kind_of(1) + " " + kind_of(2));
        out.put("f", sandbox_exec::fds::ensure_stdio());
        out.put("after", kind_of(0) + " " + kind_of(1) + " " + kind_of(2));
        // No stray descriptor left behind: the next open lands at 3.
        const int probe_fd = ::open("/dev/null", O_RDONLY);
        out.put("next_fd", probe_fd);
        return 0;
      },
      9);
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.str("before"), "closed closed closed");
  EXPECT_EQ(r.step("f"), LaunchStep::kNone) << r.dump();
  EXPECT_EQ(r.str("after"), "null null null") << r.dump();
  EXPECT_EQ(r.num("next_fd"), 3) << r.dump();
}

TEST(Fds, EnsureStdioLeavesOpenStdioAlone) {
  const auto r = probe::run(
      [](const probe::Report& out) {
        int p[2];
        if (::pipe(p) != 0) return 2;
        if (::dup2(p[0], 0) != 0 || ::dup2(p[1], 2) != 2) return 3;
        ::close(p[0]);
        ::close(p[1]);
        ::close(1);  // only stdout is missing
        out.put("before", kind_of(0) + " " + kind_of(1) + " " + kind_of(2));
        out.put("f", sandbox_exec::fds::ensure_stdio());
        out.put("after", kind_of(0) + " " + kind_of(1) + " " + kind_of(2));
        return 0;
      },
      9);
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.str("before"), "fifo closed fifo");
  EXPECT_EQ(r.step("f"), LaunchStep::kNone) << r.dump();
  EXPECT_EQ(r.str("after"), "fifo null fifo") << r.dump();
}

TEST(Fds, EnsureStdioFailureNamesCloseFds) {
  // No descriptor left to open /dev/null with: RLIMIT_NOFILE of 0 makes open() fail EMFILE.
  const auto r = probe::run(
      [](const probe::Report& out) {
        ::close(0);
        const rlimit rl{0, 0};
        if (::setrlimit(RLIMIT_NOFILE, &rl) != 0) return 2;
        out.put("f", sandbox_exec::fds::ensure_stdio());
        out.put("stdin_open", is_open(0));
        return 0;
      },
      9);
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.step("f"), LaunchStep::kCloseFds) << r.dump();
  EXPECT_EQ(r.err("f"), EMFILE) << r.dump();
  EXPECT_EQ(r.num("stdin_open"), 0);
}

}  // namespace
