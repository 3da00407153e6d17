// Unit tests for cpp/launcher/caps.cc: drop_all() runs in a forked child that starts with
// capabilities to drop (host root, as CI runs; otherwise root of a user namespace of its
// own), which reports every capability set and flag afterwards.
#include "launcher/caps.h"

#include <fcntl.h>
#include <grp.h>
#include <linux/capability.h>
#include <linux/securebits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "child_probe.h"
#include "common/file_io.h"

namespace {

using sandbox_exec::LaunchStep;

// Root in some user namespace: the host's when we are root, else a new one of our own.
int become_privileged() {
  if (::geteuid() == 0) return 0;
  return ::unshare(CLONE_NEWUSER) == 0 ? 0 : errno;
}

// The capability lines of /proc/<pid>/status, "CapInh=... CapPrm=... ...".
std::string cap_lines(const std::string& status) {
  std::string out;
  std::size_t pos = 0;
  while ((pos = status.find("\nCap", pos)) != std::string::npos) {
    const std::size_t end = status.find('\n', pos + 1);
    std::string line = status.substr(pos + 1, end - pos - 1);
    const auto colon = line.find(':');
    std::string value = line.substr(colon + 1);
    value.erase(0, value.find_first_not_of(" \t"));
    out += line.substr(0, colon) + "=" + value + " ";
    pos = end;
  }
  return out;
}

std::string status_field(const std::string& status, const std::string& key) {
  const auto pos = status.find("\n" + key + ":");
  if (pos == std::string::npos) return "<none>";
  const auto start = status.find_first_not_of(" \t", pos + key.size() + 2);
  return status.substr(start, status.find('\n', start) - start);
}

void put_capget(const probe::Report& out, const char* key) {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capget, &header, data) != 0) {
    out.put(key, "capget failed");
    return;
  }
  char text[160];
  std::snprintf(text, sizeof text, "eff=%08x%08x prm=%08x%08x inh=%08x%08x", data[1].effective, data[0].effective,
                data[1].permitted, data[0].permitted, data[1].inheritable, data[0].inheritable);
  out.put(key, text);
}

constexpr const char* kNoCaps = "eff=0000000000000000 prm=0000000000000000 inh=0000000000000000";

TEST(Caps, DropAllLeavesNoCapabilityAndSetsNoNewPrivs) {
  const auto r = probe::run([](const probe::Report& out) {
    if (int err = become_privileged()) {
      out.put("setup", err);
      return 2;
    }
    // A capability in the ambient set too (it needs to be permitted and inheritable).
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    if (::syscall(SYS_capget, &header, data) != 0) return 3;
    data[0].inheritable |= CAP_TO_MASK(CAP_NET_BIND_SERVICE);
    if (::syscall(SYS_capset, &header, data) != 0) return 4;
    if (::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0) != 0) return 5;

    put_capget(out, "capget_before");
    out.put("status_before", cap_lines(sandbox_exec::file_io::read_file("/proc/self/status")));
    out.put("nnp_before", ::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
    out.put("f", sandbox_exec::caps::drop_all());
    put_capget(out, "capget");
    out.put("status", cap_lines(sandbox_exec::file_io::read_file("/proc/self/status")));
    out.put("nnp", ::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
    out.put("bound_sys_admin", ::prctl(PR_CAPBSET_READ, CAP_SYS_ADMIN, 0, 0, 0));
    out.put("ambient_net_bind", ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_IS_SET, CAP_NET_BIND_SERVICE, 0, 0));
    out.put("securebits", ::prctl(PR_GET_SECUREBITS, 0, 0, 0, 0));
    // A capability cannot come back: not through capset, not into the ambient set.
    __user_cap_data_struct again[_LINUX_CAPABILITY_U32S_3] = {};
    again[0].effective = again[0].permitted = CAP_TO_MASK(CAP_SYS_ADMIN);
    out.put_errno("capset_again", ::syscall(SYS_capset, &header, again));
    out.put_errno("ambient_again", ::prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, CAP_NET_BIND_SERVICE, 0, 0));
    // Nor is anything that needs one allowed any more: a chroot.
    out.put_errno("chroot", ::chroot("/"));
    return 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  // Control: there was something to drop, in every set.
  EXPECT_NE(r.str("capget_before"), kNoCaps) << r.dump();
  EXPECT_NE(r.str("status_before").find("CapAmb=0000000000000400"), std::string::npos) << r.dump();
  EXPECT_EQ(r.str("status_before").find("CapBnd=0000000000000000"), std::string::npos) << r.dump();
  EXPECT_EQ(r.num("nnp_before"), 0);

  EXPECT_EQ(r.step("f"), LaunchStep::kNone) << r.dump();
  EXPECT_EQ(r.str("capget"), kNoCaps);
  EXPECT_EQ(r.str("status"),
            "CapInh=0000000000000000 CapPrm=0000000000000000 CapEff=0000000000000000 "
            "CapBnd=0000000000000000 CapAmb=0000000000000000 ");
  EXPECT_EQ(r.num("nnp"), 1);
  EXPECT_EQ(r.num("bound_sys_admin"), 0);
  EXPECT_EQ(r.num("ambient_net_bind"), 0);
  const long long bits = r.num("securebits");
  for (int bit : {SECBIT_NOROOT, SECBIT_NOROOT_LOCKED, SECBIT_NO_SETUID_FIXUP, SECBIT_NO_SETUID_FIXUP_LOCKED,
                  SECBIT_KEEP_CAPS_LOCKED, SECBIT_NO_CAP_AMBIENT_RAISE, SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED}) {
    EXPECT_TRUE(bits & bit) << "securebits " << bits << " lack " << bit;
  }
  EXPECT_EQ(r.num("capset_again"), EPERM);
  EXPECT_EQ(r.num("ambient_again"), EPERM);
  EXPECT_EQ(r.num("chroot"), EPERM);
}

// A setuid-root program's credentials, as /proc shows them once its execve is done. The
// child: host root turned uid/gid 65534 (keeping its capabilities, so drop_all() has
// something to drop), then, if `contained`, drop_all(); then execve(program) with stdin
// a pipe that stays open (a password prompt waits on it) and stdout/stderr on another.
struct Exec {
  std::string uid_line;  // "Uid:\t<real> <effective> <saved> <fs>"
  std::string cap_eff;
  int drop_step = -1;
};

Exec exec_setuid(const char* program, bool contained) {
  Exec result;
  int in[2], out[2], rep[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(rep, O_CLOEXEC) != 0) return result;
  const pid_t pid = ::fork();
  if (pid == 0) {
    auto fail = [&](int code) {
      const int32_t step = -code;
      [[maybe_unused]] ssize_t n = ::write(rep[1], &step, sizeof step);
      ::_exit(code);
    };
    if (::prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0) fail(2);
    if (::setgroups(0, nullptr) != 0 || ::setresgid(65534, 65534, 65534) != 0 || ::setresuid(65534, 65534, 65534) != 0)
      fail(3);
    // KEEPCAPS kept the permitted set; the effective one is empty after setresuid.
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    if (::syscall(SYS_capget, &header, data) != 0) fail(4);
    for (auto& d : data) d.effective = d.permitted;
    if (::syscall(SYS_capset, &header, data) != 0) fail(5);
    int32_t step = 0;
    if (contained) step = static_cast<int32_t>(sandbox_exec::caps::drop_all().step);
    [[maybe_unused]] ssize_t n = ::write(rep[1], &step, sizeof step);
    if (::dup2(in[0], 0) != 0 || ::dup2(out[1], 1) != 1 || ::dup2(out[1], 2) != 2) ::_exit(6);
    const char* argv[] = {program, nullptr};
    const char* envp[] = {"PATH=/usr/bin:/bin", "LANG=C", nullptr};
    ::execve(program, const_cast<char* const*>(argv), const_cast<char* const*>(envp));
    ::_exit(7);
  }
  ::close(in[0]);
  ::close(out[1]);
  ::close(rep[1]);
  int32_t step = -100;
  if (::read(rep[0], &step, sizeof step) == sizeof step) result.drop_step = step;
  ::close(rep[0]);
  // The first output (a prompt, an error) or EOF (it exited) comes after the execve has
  // committed the new credentials; a program that waits silently gets 5 s.
  pollfd p{out[0], POLLIN, 0};
  ::poll(&p, 1, 5000);
  // Unreaped, even an exited program's status is still readable.
  const std::string status = sandbox_exec::file_io::read_file("/proc/" + std::to_string(pid) + "/status");
  result.uid_line = status_field(status, "Uid");
  result.cap_eff = status_field(status, "CapEff");
  ::kill(pid, SIGKILL);
  ::waitpid(pid, nullptr, 0);
  ::close(in[1]);
  ::close(out[0]);
  return result;
}

TEST(Caps, SetuidRootBinaryCannotRegainRoot) {
  if (::geteuid() != 0) GTEST_SKIP() << "needs host root to become uid 65534 with capabilities";
  const char* program = nullptr;
  for (const char* candidate : {"/usr/bin/su", "/bin/su", "/usr/bin/ping", "/bin/ping", "/usr/bin/passwd"}) {
    struct stat st {};
    if (::stat(candidate, &st) == 0 && (st.st_mode & S_ISUID) && st.st_uid == 0) {
      program = candidate;
      break;
    }
  }
  if (program == nullptr) {
    // No setuid-root program on this machine: no_new_privs is what would stop one.
    const auto r = probe::run([](const probe::Report& out) {
      out.put("f", sandbox_exec::caps::drop_all());
      out.put("nnp", ::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
      return 0;
    });
    ASSERT_TRUE(r.exited()) << r.dump();
    EXPECT_EQ(r.step("f"), LaunchStep::kNone);
    EXPECT_EQ(r.num("nnp"), 1);
    GTEST_SKIP() << "no setuid-root program found; checked PR_GET_NO_NEW_PRIVS only";
  }
  // Control: without drop_all(), the setuid bit makes the same process root.
  const Exec control = exec_setuid(program, false);
  ASSERT_EQ(control.drop_step, 0) << "setup failed";
  if (control.uid_line.rfind("65534\t0\t0\t0", 0) != 0) {
    GTEST_SKIP() << program << " does not run as root even without drop_all() (a nosuid mount?): " << control.uid_line;
  }
  const Exec contained = exec_setuid(program, true);
  ASSERT_EQ(contained.drop_step, static_cast<int>(LaunchStep::kNone)) << "drop_all() failed";
  EXPECT_EQ(contained.uid_line, "65534\t65534\t65534\t65534") << program;
  EXPECT_EQ(contained.cap_eff, "0000000000000000") << program;
}

}  // namespace
