// Unit tests for cpp/launcher/contain.cc, the isolation steps in order.
//
// With namespaces, a forked child plays the launcher as main.cc does: prepare_launcher(),
// clone() of the sandbox's init into new user/pid/mount/ipc/uts/net namespaces, the init's id
// maps written from outside; the init runs enter_sandbox() and forks the worker, which runs
// contain_worker() and reports what it is left with. Without namespaces (an explicit policy
// choice), a forked child runs contain_worker() alone. A step that fails must stop the rest:
// the child then reports that nothing after it was applied.
//
// The report pipe sits on fd 5, one of the channel's descriptors, which contain_worker()
// keeps (it closes everything from launcher_fd::kFirstFree up, and 3 and 4).
#include "launcher/contain.h"

#include <fcntl.h>
#include <linux/capability.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string>

#include <gtest/gtest.h>

#include "child_probe.h"
#include "common/file_io.h"
#include "common/kernel.h"
#include "launcher/userns.h"

namespace {

using sandbox_exec::LaunchStep;
using sandbox_exec::SpawnSpec;

constexpr int kReportFd = sandbox_exec::launcher_fd::kRegion;  // kept by contain_worker
constexpr int kSentinelFd = 12;                                // >= kFirstFree: closed by it
constexpr const char* kAbstractName = "sandbox_exec_contain_test";

std::string status_field(const char* key) {
  const std::string status = sandbox_exec::file_io::read_file("/proc/self/status");
  const std::string k = std::string("\n") + key + ":";
  const auto pos = status.find(k);
  if (pos == std::string::npos) return "<none>";
  const auto start = status.find_first_not_of(" \t", pos + k.size());
  return status.substr(start, status.find('\n', start) - start);
}

std::string capget_text() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capget, &header, data) != 0) return "capget failed";
  char text[64];
  std::snprintf(text, sizeof text, "%x/%x %x/%x %x/%x", data[1].effective, data[0].effective, data[1].permitted,
                data[0].permitted, data[1].inheritable, data[0].inheritable);
  return text;
}

std::string limit_text(int resource) {
  rlimit rl{};
  if (::getrlimit(resource, &rl) != 0) return "getrlimit failed";
  return std::to_string(static_cast<unsigned long long>(rl.rlim_cur)) + "/" +
         std::to_string(static_cast<unsigned long long>(rl.rlim_max));
}

int create_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
  if (fd < 0) return errno;
  const int rc = ::write(fd, "x", 1) == 1 ? 0 : errno;
  ::close(fd);
  return rc;
}

// PTRACE_ATTACH to a pid that cannot exist: ESRCH from the kernel, EPERM from the filter
// (ptrace is "denied on purpose").
int ptrace_errno() {
  errno = 0;
  return ::syscall(SYS_ptrace, PTRACE_ATTACH, 0x3ffffff0, 0, 0) == 0 ? 0 : errno;
}

int connect_abstract() {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return errno;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, kAbstractName, std::strlen(kAbstractName));
  const socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + std::strlen(kAbstractName));
  const int rc = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), len) == 0 ? 0 : errno;
  ::close(fd);
  return rc;
}

int listen_abstract() {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -1;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path + 1, kAbstractName, std::strlen(kAbstractName));
  const socklen_t len = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + 1 + std::strlen(kAbstractName));
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 || ::listen(fd, 4) != 0) {
    ::close(fd);
    return -1;
  }
  return fd;
}

int lo_flags() {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  const int rc = ::ioctl(fd, SIOCGIFFLAGS, &ifr) == 0 ? (ifr.ifr_flags & 0xffff) : -errno;
  ::close(fd);
  return rc;
}

bool fd_open(int fd) { return ::fcntl(fd, F_GETFD) != -1; }

// What contain_worker() left: reported by the worker under the given keys.
void report_contained(const probe::Report& out) {
  out.put("caps", capget_text());
  out.put("cap_bnd", status_field("CapBnd"));
  out.put("cap_amb", status_field("CapAmb"));
  out.put("nnp", ::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0));
  out.put("seccomp", status_field("Seccomp"));
  out.put("ptrace", ptrace_errno());
  out.put("sentinel_open", fd_open(kSentinelFd));
  out.put("fd3_open", fd_open(3));
  out.put("fd4_open", fd_open(4));
  out.put("stdio_open", fd_open(0) && fd_open(1) && fd_open(2));
  out.put("nofile", limit_text(RLIMIT_NOFILE));
  out.put("cpu", limit_text(RLIMIT_CPU));
  out.put("fsize", limit_text(RLIMIT_FSIZE));
  out.put("core", limit_text(RLIMIT_CORE));
  char cwd[512] = {};
  out.put("cwd", ::getcwd(cwd, sizeof cwd) != nullptr ? cwd : "<none>");
  out.put("pdeathsig", [] {
    int sig = -1;
    return ::prctl(PR_GET_PDEATHSIG, &sig, 0, 0, 0) == 0 ? sig : -1;
  }());
}

// Puts a descriptor at kSentinelFd (one the worker must not inherit), and fds 3 and 4 (the
// launcher's report and lifeline) in place, before contain_worker() runs.
bool plant_descriptors() {
  const int null_fd = ::open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd < 0) return false;
  // Above every target, so that closing it closes none of them.
  const int fd = ::fcntl(null_fd, F_DUPFD, kSentinelFd + 1);
  ::close(null_fd);
  if (fd < 0) return false;
  const bool ok = ::dup2(fd, kSentinelFd) == kSentinelFd && ::dup2(fd, 3) == 3 && ::dup2(fd, 4) == 4;
  ::close(fd);
  return ok;
}

SpawnSpec base_spec(const std::string& workdir) {
  SpawnSpec spec;
  spec.workdir = workdir;
  spec.limits.open_files = 64;
  spec.limits.cpu_seconds = 60;
  spec.limits.file_bytes = 1u << 20;
  return spec;
}

// ---- with namespaces: the launcher's path --------------------------------------------------

struct Tree {
  probe::TempDir base{"/tmp", "sandbox_exec_contain_test"};
  std::string root = base / "root";
  std::string work = base / "work";
  Tree() {
    ::mkdir(root.c_str(), 0755);
    ::mkdir(work.c_str(), 0777);
    ::chmod(work.c_str(), 0777);  // the sandbox's uid maps to 65534 (as root) or to us
  }
};

SpawnSpec namespaced_spec(const Tree& t) {
  SpawnSpec spec = base_spec(t.work);
  auto& iso = spec.isolation;
  iso.namespaces = true;
  iso.mountpoint = t.root;
  iso.readonly = {"/usr"};
  iso.symlinks = {{"/bin", "usr/bin"}, {"/lib", "usr/lib"}};
  iso.tmp_bytes = 16ull << 20;
  iso.hostname = "contain-test";
  return spec;
}

// The launcher's part, in the probe child: the three entry points in main.cc's order. The
// worker runs `worker_body` after contain_worker() succeeded.
template <class F>
int launch_like_main(const SpawnSpec& spec, const probe::Report& out, F worker_body) {
  const bool was_root = ::geteuid() == 0;
  const auto prepared = sandbox_exec::contain::prepare_launcher(spec, was_root);
  out.put("prepare", prepared);
  if (prepared.failed()) return 0;
  int sync[2];
  if (::pipe2(sync, O_CLOEXEC) != 0) return 2;
  if (::chdir(spec.isolation.mountpoint.c_str()) != 0) return 3;
  const long init = ::syscall(
      SYS_clone, CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS | CLONE_NEWNET | SIGCHLD,
      nullptr, nullptr, nullptr, nullptr);
  if (init < 0) {
    out.put("setup", errno);
    return 4;
  }
  if (init == 0) {
    ::close(sync[1]);
    char go;
    if (::read(sync[0], &go, 1) != 1) ::_exit(10);
    ::close(sync[0]);
    const auto entered = sandbox_exec::contain::enter_sandbox(spec);
    out.put("enter", entered);
    if (entered.failed()) {
      out.put("lo_flags_after_failure", lo_flags());
      ::_exit(0);
    }
    // Outside the worker's Landlock domain: a listener the worker must not reach (ABI 6).
    const int listener = listen_abstract();
    out.put("init_listener", listener >= 0);
    const pid_t worker = ::fork();
    if (worker == 0) {
      if (!plant_descriptors()) ::_exit(11);
      const auto contained = sandbox_exec::contain::contain_worker(spec, 1);
      out.put("contain", contained);
      if (contained.failed()) ::_exit(0);
      report_contained(out);
      worker_body(out);
      ::_exit(0);
    }
    int status = 0;
    if (worker < 0 || ::waitpid(worker, &status, 0) != worker) ::_exit(12);
    ::_exit(WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status));
  }
  ::close(sync[0]);
  if (::chdir("/") != 0) return 5;
  const auto& iso = spec.isolation;
  const auto maps = sandbox_exec::userns::write_maps(static_cast<pid_t>(init), iso.inside_uid, iso.inside_gid,
                                                     was_root ? iso.outside_uid : 0, was_root ? iso.outside_gid : 0);
  out.put("maps", maps);
  if (!maps.failed() && ::write(sync[1], "!", 1) != 1) return 6;
  ::close(sync[1]);
  int status = 0;
  if (::waitpid(static_cast<pid_t>(init), &status, 0) != init) return 7;
  return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

TEST(Contain, AllStepsWithNamespaces) {
  Tree t;
  ASSERT_FALSE(t.base.path().empty());
  const SpawnSpec spec = namespaced_spec(t);
  ASSERT_EQ(create_file(t.base / "host_only"), 0);
  const auto r = probe::run(
      [&](const probe::Report& out) {
        return launch_like_main(spec, out, [&](const probe::Report& w) {
          uid_t ru, eu, su;
          gid_t rg, eg, sg;
          ::getresuid(&ru, &eu, &su);
          ::getresgid(&rg, &eg, &sg);
          w.put("ids", std::to_string(ru) + " " + std::to_string(eu) + " " + std::to_string(su) + " / " +
                           std::to_string(rg) + " " + std::to_string(eg) + " " + std::to_string(sg));
          w.put("pid", static_cast<int>(::getpid()));
          utsname u{};
          ::uname(&u);
          w.put("hostname", u.nodename);
          w.put("lo_up", (lo_flags() & IFF_UP) != 0);
          w.put("create_in_work", create_file(t.work + "/from_worker"));
          w.put("create_in_root", create_file("/new"));
          w.put("host_only", ::access((t.base / "host_only").c_str(), F_OK) == 0 ? 0 : errno);
          w.put("connect_outside_domain", connect_abstract());
        });
      },
      kReportFd);
  ASSERT_TRUE(r.exited()) << r.dump();
  ASSERT_EQ(r.step("prepare"), LaunchStep::kNone) << r.dump();
  ASSERT_EQ(r.step("maps"), LaunchStep::kNone) << r.dump();
  ASSERT_EQ(r.step("enter"), LaunchStep::kNone) << r.dump();
  ASSERT_EQ(r.step("contain"), LaunchStep::kNone) << r.dump();
  // The sandbox: its own ids, pid namespace, hostname, loopback, root.
  EXPECT_EQ(r.str("ids"), "1000 1000 1000 / 1000 1000 1000");
  EXPECT_EQ(r.num("pid"), 2);
  EXPECT_EQ(r.str("hostname"), "contain-test");
  EXPECT_EQ(r.num("lo_up"), 1);
  EXPECT_EQ(r.str("cwd"), t.work);
  EXPECT_EQ(r.num("create_in_work"), 0);
  EXPECT_EQ(sandbox_exec::file_io::read_file(t.work + "/from_worker"), "x");
  EXPECT_EQ(r.num("create_in_root"), EROFS);
  // The worker's /tmp is the sandbox's tmpfs: a file next to the host's workdir is not there.
  EXPECT_EQ(r.num("host_only"), ENOENT);
  // No capability, no_new_privs, the death signal.
  EXPECT_EQ(r.str("caps"), "0/0 0/0 0/0");
  EXPECT_EQ(r.str("cap_bnd"), "0000000000000000");
  EXPECT_EQ(r.str("cap_amb"), "0000000000000000");
  EXPECT_EQ(r.num("nnp"), 1);
  EXPECT_EQ(r.num("pdeathsig"), SIGKILL);
  // Descriptors: the planted one and the launcher's 3 and 4 are gone; stdio and fd 5 stay.
  EXPECT_EQ(r.num("sentinel_open"), 0);
  EXPECT_EQ(r.num("fd3_open"), 0);
  EXPECT_EQ(r.num("fd4_open"), 0);
  EXPECT_EQ(r.num("stdio_open"), 1);
  // Limits.
  EXPECT_EQ(r.str("nofile"), "64/64");
  EXPECT_EQ(r.str("cpu"), "60/60");
  EXPECT_EQ(r.str("fsize"), "1048576/1048576");
  EXPECT_EQ(r.str("core"), "0/0");
  // Seccomp (mode 2: filter) and a denied-on-purpose syscall.
  EXPECT_EQ(r.str("seccomp"), "2");
  EXPECT_EQ(r.num("ptrace"), EPERM);
  // Landlock: its ABI 6 scope keeps the worker from the init's abstract socket.
  ASSERT_EQ(r.num("init_listener"), 1) << r.dump();
  if (sandbox_exec::kernel::landlock_abi() >= 6) {
    EXPECT_EQ(r.num("connect_outside_domain"), EPERM);
  }
}

TEST(Contain, EnterSandboxFailureStopsBeforeLoopback) {
  Tree t;
  SpawnSpec spec = namespaced_spec(t);
  spec.isolation.hostname = std::string(100, 'h');  // over HOST_NAME_MAX: sethostname EINVAL
  const auto r =
      probe::run([&](const probe::Report& out) { return launch_like_main(spec, out, [](auto&) {}); }, kReportFd);
  ASSERT_TRUE(r.exited()) << r.dump();
  ASSERT_EQ(r.step("prepare"), LaunchStep::kNone) << r.dump();
  EXPECT_EQ(r.step("enter"), LaunchStep::kHostname) << r.dump();
  EXPECT_EQ(r.err("enter"), EINVAL);
  EXPECT_EQ(r.num("lo_flags_after_failure") & IFF_UP, 0) << "the loopback step came after";
  EXPECT_FALSE(r.has("contain")) << "no worker after a failed step";
}

TEST(Contain, PrepareLauncherFailureNamesTheMountStep) {
  Tree t;
  SpawnSpec spec = namespaced_spec(t);
  spec.isolation.mountpoint = t.base / "no_such_root";
  const auto r =
      probe::run([&](const probe::Report& out) { return launch_like_main(spec, out, [](auto&) {}); }, kReportFd);
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.step("prepare"), LaunchStep::kMountRootTmpfs) << r.dump();
  EXPECT_EQ(r.err("prepare"), ENOENT);
  EXPECT_FALSE(r.has("enter"));
}

// ---- without namespaces: contain_worker() alone ------------------------------------------

// The two directories under /var/tmp (/tmp is writable under the Landlock rules by design).
struct Plain {
  probe::TempDir work{"/var/tmp", "sandbox_exec_contain_work"};
  probe::TempDir outside{"/var/tmp", "sandbox_exec_contain_outside"};
};

SpawnSpec plain_spec(const std::string& workdir) {
  SpawnSpec spec = base_spec(workdir);
  spec.isolation.namespaces = false;
  return spec;
}

// Runs contain_worker(spec) in a child and reports the outcome and what followed; `before`
// runs first (to arrange a failure).
template <class F>
probe::Result contain_plain(const SpawnSpec& spec, const std::string& outside, F before) {
  return probe::run(
      [&](const probe::Report& out) {
        if (!plant_descriptors()) return 2;
        if (!before()) return 3;
        out.put("contain", sandbox_exec::contain::contain_worker(spec, ::getppid()));
        report_contained(out);
        out.put("create_in_work", create_file(spec.workdir + "/from_worker"));
        out.put("create_outside", create_file(outside + "/from_worker"));
        return 0;
      },
      kReportFd);
}

TEST(Contain, ContainWorkerWithoutNamespaces) {
  if (::geteuid() != 0) GTEST_SKIP() << "the capability checks need root to have capabilities to drop";
  Plain p;
  ASSERT_FALSE(p.work.path().empty());
  const SpawnSpec spec = plain_spec(p.work.path());
  // Control: before contain_worker() the same process may write outside and ptrace.
  const auto control = probe::run([&](const probe::Report& out) {
    out.put("create_outside", create_file(p.outside / "control"));
    out.put("ptrace", ptrace_errno());
    out.put("caps", capget_text());
    return 0;
  });
  ASSERT_TRUE(control.exited()) << control.dump();
  ASSERT_EQ(control.num("create_outside"), 0);
  ASSERT_EQ(control.num("ptrace"), ESRCH);
  ASSERT_NE(control.str("caps"), "0/0 0/0 0/0");

  const auto r = contain_plain(spec, p.outside.path(), [] { return true; });
  ASSERT_TRUE(r.exited()) << r.dump();
  ASSERT_EQ(r.step("contain"), LaunchStep::kNone) << r.dump();
  EXPECT_EQ(r.str("cwd"), p.work.path());
  EXPECT_EQ(r.str("caps"), "0/0 0/0 0/0");
  EXPECT_EQ(r.str("cap_bnd"), "0000000000000000");
  EXPECT_EQ(r.num("nnp"), 1);
  EXPECT_EQ(r.num("pdeathsig"), SIGKILL);
  EXPECT_EQ(r.num("sentinel_open"), 0);
  EXPECT_EQ(r.num("fd3_open"), 0);
  EXPECT_EQ(r.num("fd4_open"), 0);
  EXPECT_EQ(r.num("stdio_open"), 1);
  EXPECT_EQ(r.str("nofile"), "64/64");
  EXPECT_EQ(r.str("core"), "0/0");
  EXPECT_EQ(r.str("seccomp"), "2");
  EXPECT_EQ(r.num("ptrace"), EPERM);
  // Landlock: the workdir only (the directory outside is root's own, and this is root).
  EXPECT_EQ(r.num("create_in_work"), 0);
  EXPECT_EQ(r.num("create_outside"), EACCES);
}

// A failed step stops the rest: nothing after it is applied.
void expect_nothing_after(const probe::Result& r, bool root) {
  EXPECT_EQ(r.str("seccomp"), "0") << "seccomp must not be installed after a failed step";
  EXPECT_EQ(r.num("ptrace"), ESRCH);
  EXPECT_EQ(r.num("nnp"), 0);
  if (root) {
    EXPECT_NE(r.str("caps"), "0/0 0/0 0/0") << "capabilities must not be dropped";
  }
  EXPECT_EQ(r.num("sentinel_open"), 1) << "descriptors must not be closed";
  EXPECT_EQ(r.num("fd3_open"), 1);
  EXPECT_EQ(r.num("fd4_open"), 1);
  EXPECT_EQ(r.num("create_outside"), 0) << "Landlock must not be applied";
}

TEST(Contain, MissingWorkdirStopsTheRest) {
  Plain p;
  const SpawnSpec spec = plain_spec(p.work / "no_such_workdir");
  const auto r = contain_plain(spec, p.outside.path(), [] { return true; });
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.step("contain"), LaunchStep::kWorkdir) << r.dump();
  EXPECT_EQ(r.err("contain"), ENOENT);
  EXPECT_NE(r.str("nofile"), "64/64") << "rlimits come after the workdir";
  expect_nothing_after(r, ::geteuid() == 0);
}

TEST(Contain, WrongParentStopsAtTheDeathSignal) {
  Plain p;
  const SpawnSpec spec = plain_spec(p.work.path());
  const auto r = probe::run(
      [&](const probe::Report& out) {
        if (!plant_descriptors()) return 2;
        // The parent the worker expects is not its parent: it has gone, as far as it knows.
        out.put("contain", sandbox_exec::contain::contain_worker(spec, ::getppid() + 100000));
        report_contained(out);
        out.put("create_outside", create_file(p.outside / "from_worker"));
        return 0;
      },
      kReportFd);
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.step("contain"), LaunchStep::kDeathSignal) << r.dump();
  EXPECT_EQ(r.err("contain"), ESRCH);
  EXPECT_NE(r.str("cwd"), p.work.path()) << "the workdir step comes after";
  expect_nothing_after(r, ::geteuid() == 0);
}

TEST(Contain, RlimitFailureStopsTheRest) {
  Plain p;
  const SpawnSpec spec = plain_spec(p.work.path());  // asks RLIMIT_NOFILE 64
  const auto r = contain_plain(spec, p.outside.path(), [] {
    // A hard limit of 32, and no CAP_SYS_RESOURCE to raise it.
    const rlimit low{32, 32};
    if (::setrlimit(RLIMIT_NOFILE, &low) != 0) return false;
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    if (::syscall(SYS_capget, &header, data) != 0) return false;
    data[CAP_TO_INDEX(CAP_SYS_RESOURCE)].effective &= ~CAP_TO_MASK(CAP_SYS_RESOURCE);
    return ::syscall(SYS_capset, &header, data) == 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.step("contain"), LaunchStep::kRlimitOpenFiles) << r.dump();
  EXPECT_EQ(r.err("contain"), EPERM);
  EXPECT_EQ(r.str("cwd"), p.work.path()) << "the workdir step came before";
  EXPECT_EQ(r.str("cpu"), "60/60") << "the limits before it are set";
  EXPECT_EQ(r.str("core"), limit_text(RLIMIT_CORE)) << "RLIMIT_CORE 0 comes after";
  expect_nothing_after(r, ::geteuid() == 0);
}

}  // namespace
