// Unit tests for cpp/launcher/landlock.cc: restrict_self() runs in a forked child, which
// then tries reads and writes inside and outside what the rules allow and reports the
// errno of each. Every write that Landlock must refuse is first made without Landlock (the
// control), so a refusal cannot come from the file's mode or the mount instead. The
// directories live under /var/tmp: /tmp is writable under the rules by design.
#include "launcher/landlock.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "child_probe.h"
#include "common/kernel.h"
#include "common/process.h"

namespace {

using sandbox_exec::LaunchStep;
using sandbox_exec::SpawnSpec;

int create_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) return errno;
  const int rc = ::write(fd, "x", 1) == 1 ? 0 : errno;
  ::close(fd);
  return rc;
}

int open_errno(const std::string& path, int flags) {
  const int fd = ::open(path.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

std::string read_all(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<errno " + std::to_string(errno) + ">";
  char buf[256];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  return n < 0 ? "<read errno " + std::to_string(errno) + ">" : std::string(buf, static_cast<std::size_t>(n));
}

int zero_if(int rc) { return rc == 0 ? 0 : errno; }

// What a process can do to the two directories, reported under `prefix`.
void probe_access(const probe::Report& out, const std::string& work, const std::string& outside,
                  const std::string& tag) {
  auto put = [&](const char* key, long long v) { out.put((std::string(key) + tag).c_str(), v); };
  // Outside the workdir, under "/": read and list only.
  out.put(("read_outside" + tag).c_str(), read_all(outside + "/existing"));
  DIR* root = ::opendir("/");
  put("list_root", root != nullptr ? 0 : errno);
  if (root != nullptr) ::closedir(root);
  put("create_outside", create_file(outside + "/new" + tag));
  put("write_outside", open_errno(outside + "/existing", O_WRONLY));
  put("mkdir_outside", zero_if(::mkdir((outside + "/dir" + tag).c_str(), 0700)));
  put("unlink_outside", zero_if(::unlink((outside + "/victim" + tag).c_str())));
  put("truncate_outside", zero_if(::truncate((outside + "/existing").c_str(), 0)));
  put("symlink_outside", zero_if(::symlink("/etc/passwd", (outside + "/link" + tag).c_str())));
  // Inside the workdir: everything.
  put("create_work", create_file(work + "/new" + tag));
  out.put(("read_work" + tag).c_str(), read_all(work + "/new" + tag));
  put("mkdir_work", zero_if(::mkdir((work + "/dir" + tag).c_str(), 0700)));
  put("rmdir_work", zero_if(::rmdir((work + "/dir" + tag).c_str())));
  put("unlink_work", zero_if(::unlink((work + "/new" + tag).c_str())));
  // The private /tmp and /dev/shm (here the host's), and the device nodes.
  const std::string tmp_file = "/tmp/sandbox_exec_landlock_test." + std::to_string(::getpid()) + tag;
  put("create_tmp", create_file(tmp_file));
  ::unlink(tmp_file.c_str());
  put("write_dev_null", open_errno("/dev/null", O_WRONLY));
}

TEST(Landlock, WritesOnlyInTheWorkdirTmpAndDevShm) {
  const int abi = sandbox_exec::kernel::landlock_abi();
  if (abi == 0) GTEST_SKIP() << "this kernel has no Landlock (landlock_abi() is 0)";
  probe::TempDir work("/var/tmp", "landlock_work"), outside("/var/tmp", "landlock_outside");
  ASSERT_FALSE(work.path().empty());
  ASSERT_FALSE(outside.path().empty());
  for (const char* name : {"existing", "victim", "victim_ll"}) {
    FILE* f = std::fopen((outside / name).c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("host data", f);
    std::fclose(f);
  }
  SpawnSpec spec;
  spec.workdir = work.path();

  // Control first: without Landlock every one of these succeeds for this process.
  const auto control = probe::run([&](const probe::Report& out) {
    probe_access(out, work.path(), outside.path(), "");
    return 0;
  });
  ASSERT_TRUE(control.exited()) << control.dump();
  for (const char* key :
       {"list_root", "create_outside", "write_outside", "mkdir_outside", "unlink_outside", "truncate_outside",
        "symlink_outside", "create_work", "mkdir_work", "rmdir_work", "unlink_work", "create_tmp", "write_dev_null"}) {
    EXPECT_EQ(control.num(key), 0) << key << "\n" << control.dump();
  }
  // The control truncated the file; give it its content back.
  {
    FILE* f = std::fopen((outside / "existing").c_str(), "w");
    ASSERT_NE(f, nullptr);
    std::fputs("host data", f);
    std::fclose(f);
  }

  const auto r = probe::run([&](const probe::Report& out) {
    if (int err = sandbox_exec::process::set_no_new_privs()) {
      out.put("setup", err);
      return 2;
    }
    out.put("f", sandbox_exec::landlock::restrict_self(spec));
    probe_access(out, work.path(), outside.path(), "_ll");
    // ABI 6 scopes signals: the parent (outside the domain) cannot be signalled.
    out.put_errno("signal_parent", ::kill(::getppid(), 0));
    return 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  ASSERT_EQ(r.step("f"), LaunchStep::kNone) << r.dump();
  EXPECT_EQ(r.str("read_outside_ll"), "host data");
  EXPECT_EQ(r.num("list_root_ll"), 0);
  EXPECT_EQ(r.num("create_outside_ll"), EACCES);
  EXPECT_EQ(r.num("write_outside_ll"), EACCES);
  EXPECT_EQ(r.num("mkdir_outside_ll"), EACCES);
  EXPECT_EQ(r.num("unlink_outside_ll"), EACCES);
  EXPECT_EQ(r.num("symlink_outside_ll"), EACCES);
  if (abi >= 3) {
    EXPECT_EQ(r.num("truncate_outside_ll"), EACCES);
  }
  EXPECT_EQ(r.num("create_work_ll"), 0) << r.dump();
  EXPECT_EQ(r.str("read_work_ll"), "x");
  EXPECT_EQ(r.num("mkdir_work_ll"), 0);
  EXPECT_EQ(r.num("rmdir_work_ll"), 0);
  EXPECT_EQ(r.num("unlink_work_ll"), 0);
  EXPECT_EQ(r.num("create_tmp_ll"), 0);
  EXPECT_EQ(r.num("write_dev_null_ll"), 0);
  if (abi >= 6) {
    EXPECT_EQ(r.num("signal_parent"), EPERM);
  }
  // And the host's files are as they were.
  struct stat st {};
  EXPECT_EQ(::stat((outside / "new_ll").c_str(), &st), -1);
  EXPECT_EQ(::stat((outside / "victim_ll").c_str(), &st), 0);
  EXPECT_EQ(::stat((outside / "existing").c_str(), &st), 0);
  EXPECT_EQ(st.st_size, 9);
}

TEST(Landlock, RestrictionIsInheritedAndCannotBeLifted) {
  if (sandbox_exec::kernel::landlock_abi() == 0) GTEST_SKIP() << "this kernel has no Landlock (landlock_abi() is 0)";
  probe::TempDir work("/var/tmp", "landlock_work"), outside("/var/tmp", "landlock_outside");
  ASSERT_FALSE(work.path().empty());
  ASSERT_FALSE(outside.path().empty());
  SpawnSpec spec;
  spec.workdir = work.path();
  const auto r = probe::run([&](const probe::Report& out) {
    if (sandbox_exec::process::set_no_new_privs() != 0) return 2;
    out.put("f", sandbox_exec::landlock::restrict_self(spec));
    // A second, wider ruleset (all of "/" writable) only adds a layer: still refused.
    SpawnSpec wide;
    wide.workdir = "/";
    out.put("wide", sandbox_exec::landlock::restrict_self(wide));
    out.put("create_outside", create_file(outside / "new"));
    // A forked child is as restricted.
    const pid_t pid = ::fork();
    if (pid == 0) ::_exit(create_file(outside / "child"));
    int status = 0;
    ::waitpid(pid, &status, 0);
    out.put("child_create_outside", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    return 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.step("f"), LaunchStep::kNone);
  EXPECT_EQ(r.step("wide"), LaunchStep::kNone);
  EXPECT_EQ(r.num("create_outside"), EACCES);
  EXPECT_EQ(r.num("child_create_outside"), EACCES);
}

TEST(Landlock, FailureNamesTheLandlockStep) {
  if (sandbox_exec::kernel::landlock_abi() == 0) GTEST_SKIP() << "this kernel has no Landlock (landlock_abi() is 0)";
  const auto r = probe::run([](const probe::Report& out) {
    // A workdir that does not exist: its rule cannot be added.
    SpawnSpec missing;
    missing.workdir = "/nonexistent/sandbox_exec/workdir";
    if (sandbox_exec::process::set_no_new_privs() != 0) return 2;
    out.put("missing", sandbox_exec::landlock::restrict_self(missing));
    out.put("create_tmp_after", create_file("/tmp/sandbox_exec_landlock_failed." + std::to_string(::getpid())));
    ::unlink(("/tmp/sandbox_exec_landlock_failed." + std::to_string(::getpid())).c_str());
    return 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.step("missing"), LaunchStep::kLandlock);
  EXPECT_EQ(r.err("missing"), ENOENT);
  EXPECT_EQ(r.num("create_tmp_after"), 0);
  // Without no_new_privs (and without CAP_SYS_ADMIN) the kernel refuses to restrict.
  const auto nnp = probe::run([](const probe::Report& out) {
    if (::geteuid() == 0) {
      // Root has CAP_SYS_ADMIN, which lets landlock_restrict_self go without no_new_privs:
      // drop to an ordinary uid first.
      if (::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0) return 2;
    }
    SpawnSpec spec;
    spec.workdir = "/";
    out.put("f", sandbox_exec::landlock::restrict_self(spec));
    return 0;
  });
  ASSERT_TRUE(nnp.exited()) << nnp.dump();
  EXPECT_EQ(nnp.step("f"), LaunchStep::kLandlock);
  EXPECT_EQ(nnp.err("f"), EPERM);
}

}  // namespace
