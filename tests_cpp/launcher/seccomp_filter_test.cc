// Unit tests for the seccomp allow list (cpp/seccomp_filter.cc): each probe runs in a forked
// child that installs the real filter and then makes one syscall; the child's exit code is the
// errno it got (0: success). Where it says something, the same probe also runs unfiltered (the
// control), so a check cannot pass merely because the host refuses the call anyway.
#include "launcher/seccomp_filter.h"

#include <fcntl.h>
#include <linux/netlink.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/personality.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <initializer_list>
#include <string>
#include <type_traits>

#include <gtest/gtest.h>

namespace {

constexpr int kSetupFailed = 200;

// errno of a raw syscall, 0 when it succeeded (a returned descriptor is closed).
template <class T>
long word(T value) {
  if constexpr (std::is_pointer_v<T>)
    return reinterpret_cast<long>(value);
  else
    return static_cast<long>(value);
}

bool returns_fd(long nr) {
#if defined(SYS_open) && defined(SYS_creat)
  if (nr == SYS_open || nr == SYS_creat) return true;
#endif
  return nr == SYS_socket || nr == SYS_openat || nr == SYS_openat2;
}

template <class... Args>
int raw(long nr, Args... args) {
  errno = 0;
  long rc = ::syscall(nr, word(args)...);
  if (rc < 0) return errno;
  if (returns_fd(nr)) ::close(static_cast<int>(rc));
  return 0;
}

// Runs `probe` in a forked child, under the filter when `filtered`; returns the wait status.
template <class F>
int run_child(F probe, bool filtered) {
  pid_t pid = ::fork();
  if (pid == 0) {
    if (filtered) {
      if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) ::_exit(kSetupFailed);
      if (sandbox_exec::seccomp::install().failed()) ::_exit(kSetupFailed + 1);
    }
    ::_exit(probe() & 0xff);
  }
  int status = 0;
  if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return -1;
  return status;
}

// The errno `probe` got under the filter (or without it); -1 if the child did not exit.
template <class F>
int errno_of(F probe, bool filtered = true) {
  int status = run_child(probe, filtered);
  if (status == -1 || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

TEST(SeccompFilter, EverydaySyscallsWork) {
  EXPECT_EQ(errno_of([] { return raw(SYS_getpid); }), 0);
  EXPECT_EQ(errno_of([] {
              int fd = ::open("/proc/self/stat", O_RDONLY | O_CLOEXEC);
              if (fd < 0) return errno;
              char buf[64];
              int rc = ::read(fd, buf, sizeof buf) > 0 ? 0 : errno;
              ::close(fd);
              return rc;
            }),
            0);
  EXPECT_EQ(errno_of([] {
              int fds[2];
              if (::pipe2(fds, O_CLOEXEC) != 0) return errno;
              int pending = -1;
              return ::ioctl(fds[0], FIONREAD, &pending) == 0 && pending == 0 ? 0 : 99;
            }),
            0);
  // fork and threads (clone without namespace flags).
  EXPECT_EQ(errno_of([] {
              pid_t pid = ::fork();
              if (pid == 0) ::_exit(7);
              int status = 0;
              if (pid < 0 || ::waitpid(pid, &status, 0) != pid) return errno;
              return WIFEXITED(status) && WEXITSTATUS(status) == 7 ? 0 : 98;
            }),
            0);
  EXPECT_EQ(errno_of([] {
              pthread_t thread;
              if (int rc = ::pthread_create(
                      &thread, nullptr, [](void*) -> void* { return nullptr; }, nullptr))
                return rc;
              return ::pthread_join(thread, nullptr);
            }),
            0);
  EXPECT_EQ(errno_of([] { return raw(SYS_personality, PER_LINUX); }), 0);
}

TEST(SeccompFilter, AllowedSocketFamilies) {
  EXPECT_EQ(errno_of([] { return raw(SYS_socket, AF_UNIX, SOCK_STREAM, 0); }), 0);
  EXPECT_EQ(errno_of([] { return raw(SYS_socket, AF_INET, SOCK_STREAM, 0); }), 0);
  EXPECT_EQ(errno_of([] { return raw(SYS_socket, AF_INET6, SOCK_DGRAM, 0); }), 0);
  EXPECT_EQ(errno_of([] { return raw(SYS_socket, AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE); }), 0);
  EXPECT_EQ(errno_of([] {
              int fds[2];
              return ::socketpair(AF_UNIX, SOCK_STREAM, 0, fds) == 0 ? 0 : errno;
            }),
            0);
  // High bits the kernel ignores neither open nor close the filter: AF_UNIX with garbage above
  // bit 31 is still AF_UNIX.
  EXPECT_EQ(errno_of([] { return raw(SYS_socket, (1UL << 32) | AF_UNIX, SOCK_STREAM, 0); }), 0);
}

TEST(SeccompFilter, RefusedSocketFamilies) {
  for (long family : std::initializer_list<long>{AF_VSOCK, AF_PACKET, AF_ALG, AF_KEY, AF_BLUETOOTH, AF_TIPC, AF_RDS,
                                                 AF_CAN, AF_XDP, AF_NFC, 45L /* AF_MCTP */, 63L, 0x7fffffffL}) {
    SCOPED_TRACE(family);
    EXPECT_EQ(errno_of([family] { return raw(SYS_socket, family, SOCK_STREAM, 0); }), EPERM);
    EXPECT_EQ(errno_of([family] { return raw(SYS_socket, family, SOCK_DGRAM | SOCK_CLOEXEC, 0); }), EPERM);
    EXPECT_EQ(errno_of([family] {
                int fds[2];
                return ::socketpair(static_cast<int>(family), SOCK_STREAM, 0, fds) == 0 ? 0 : errno;
              }),
              EPERM);
    // Garbage in the high bits does not smuggle a family past the check.
    EXPECT_EQ(errno_of([family] { return raw(SYS_socket, (0xdeadUL << 32) | family, SOCK_STREAM, 0); }), EPERM);
  }
  for (long protocol : std::initializer_list<long>{NETLINK_AUDIT, NETLINK_KOBJECT_UEVENT, NETLINK_NETFILTER,
                                                   NETLINK_XFRM, NETLINK_SOCK_DIAG, NETLINK_GENERIC}) {
    SCOPED_TRACE(protocol);
    EXPECT_EQ(errno_of([protocol] { return raw(SYS_socket, AF_NETLINK, SOCK_RAW, protocol); }), EPERM);
    EXPECT_EQ(errno_of([protocol] { return raw(SYS_socket, AF_NETLINK, SOCK_RAW, (1UL << 32) | protocol); }), EPERM);
  }
}

TEST(SeccompFilter, VsockControl) {
  // Unfiltered, AF_VSOCK is not refused with EPERM: it is created (a VM with vsock) or the
  // family is unknown (EAFNOSUPPORT); the filter's EPERM above is its own doing.
  int outside = errno_of([] { return raw(SYS_socket, AF_VSOCK, SOCK_STREAM, 0); }, false);
  EXPECT_TRUE(outside == 0 || outside == EAFNOSUPPORT) << outside;
}

TEST(SeccompFilter, UnlistedSyscallsAreEnosys) {
  EXPECT_EQ(errno_of([] { return raw(1000); }), ENOSYS);
  EXPECT_EQ(errno_of([] { return raw(SYS_clone3, 0, 0); }), ENOSYS);
#ifdef SYS_get_robust_list
  long head = 0, len = 0;
  auto robust = [&] { return raw(SYS_get_robust_list, 0, &head, &len); };
  EXPECT_EQ(errno_of(robust), ENOSYS);
  EXPECT_EQ(errno_of(robust, false), 0);  // control: works unfiltered
#endif
#ifdef SYS_landlock_create_ruleset
  // LANDLOCK_CREATE_RULESET_VERSION: a harmless query the list does not need.
  EXPECT_EQ(errno_of([] { return raw(SYS_landlock_create_ruleset, 0, 0, 1); }), ENOSYS);
#endif
}

TEST(SeccompFilter, DeniedOnPurposeIsEperm) {
  EXPECT_EQ(errno_of([] { return raw(SYS_bpf, 0, 0, 0); }), EPERM);
  EXPECT_EQ(errno_of([] { return raw(SYS_ptrace, 0 /* PTRACE_TRACEME */, 0, 0, 0); }), EPERM);
  EXPECT_EQ(errno_of([] { return raw(SYS_unshare, 0); }), EPERM);
  EXPECT_EQ(errno_of([] { return raw(SYS_io_uring_setup, 1, 0); }), EPERM);
  EXPECT_EQ(errno_of([] { return raw(SYS_keyctl, 0, 0, 0); }), EPERM);
}

TEST(SeccompFilter, CloneNamespaceFlagsRefused) {
  for (long flag : std::initializer_list<long>{CLONE_NEWUSER, CLONE_NEWNS, CLONE_NEWNET, CLONE_NEWPID, CLONE_NEWIPC,
                                               CLONE_NEWUTS, CLONE_NEWCGROUP, CLONE_NEWTIME}) {
    SCOPED_TRACE(flag);
    // SIGCHLD|flag: if the filter let it through, a child would appear; it must not.
    EXPECT_EQ(errno_of([flag] {
                long rc = ::syscall(SYS_clone, flag | SIGCHLD, 0, 0, 0, 0);
                if (rc == 0) ::_exit(0);
                return rc < 0 ? errno : 97;
              }),
              EPERM);
  }
}

TEST(SeccompFilter, TerminalInjectionAndPersonality) {
  for (unsigned long request : {static_cast<unsigned long>(TIOCSTI), 0x541CUL, (1UL << 32) | TIOCSTI}) {
    SCOPED_TRACE(request);
    EXPECT_EQ(errno_of([request] { return raw(SYS_ioctl, 0, request, 0); }), EPERM);
    // Control: unfiltered, the same call is not refused with EPERM (ENOTTY, EBADF, ...).
    EXPECT_NE(errno_of([request] { return raw(SYS_ioctl, -1, request, 0); }, false), EPERM);
  }
  // A neighbouring request still reaches the kernel: TIOCGWINSZ on a pipe is ENOTTY.
  EXPECT_EQ(errno_of([] {
              int fds[2];
              if (::pipe(fds) != 0) return errno;
              char ws[8];
              return raw(SYS_ioctl, fds[0], TIOCGWINSZ, ws);
            }),
            ENOTTY);
  for (unsigned long persona : {static_cast<unsigned long>(ADDR_NO_RANDOMIZE), 0xffffffffUL,
                                static_cast<unsigned long>(READ_IMPLIES_EXEC), (1UL << 32) | ADDR_NO_RANDOMIZE}) {
    SCOPED_TRACE(persona);
    EXPECT_EQ(errno_of([persona] { return raw(SYS_personality, persona); }), EPERM);
  }
}

// A fresh directory for the mode probes (removed with its files at the end).
class SetIdModes : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/seccomp-modes-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
  }
  void TearDown() override {
    const std::string cmd = "rm -rf '" + dir_ + "'";
    EXPECT_EQ(std::system(cmd.c_str()), 0);
  }
  // A regular file at `name` with mode 0644, made outside the filter.
  std::string file(const char* name) const {
    const std::string path = dir_ + "/" + name;
    const int fd = ::open(path.c_str(), O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    EXPECT_GE(fd, 0);
    ::close(fd);
    EXPECT_EQ(::chmod(path.c_str(), 0644), 0);
    return path;
  }
  // The mode bits of `path`, -1 if it does not exist.
  static long mode_of(const std::string& path) {
    struct stat st {};
    return ::lstat(path.c_str(), &st) == 0 ? static_cast<long>(st.st_mode & 07777) : -1;
  }
  std::string dir_;
};

TEST_F(SetIdModes, ChmodWithSetIdBitsIsRefused) {
  const std::string path = file("a");
  const char* p = path.c_str();
  for (unsigned long mode : {04755UL, 02755UL, 06755UL, 04000UL, 02000UL, 07777UL, (1UL << 32) | 04755UL}) {
    SCOPED_TRACE(mode);
    EXPECT_EQ(errno_of([p, mode] { return raw(SYS_chmod, p, mode); }), EPERM);
    EXPECT_EQ(errno_of([p, mode] { return raw(SYS_fchmodat, AT_FDCWD, p, mode, 0); }), EPERM);
    EXPECT_EQ(errno_of([p, mode] {
                const int fd = ::open(p, O_RDONLY | O_CLOEXEC);
                if (fd < 0) return 99;
                return raw(SYS_fchmod, fd, mode);
              }),
              EPERM);
    EXPECT_EQ(mode_of(path), 0644);
  }
  // Control: unfiltered, the owner (here root) sets the bit; the refusal is the filter's.
  EXPECT_EQ(errno_of([p] { return raw(SYS_chmod, p, 04755); }, false), 0);
  EXPECT_EQ(mode_of(path), 04755);
}

TEST_F(SetIdModes, CreatingWithSetIdBitsIsRefused) {
  int n = 0;
  for (unsigned long mode : {04755UL, 02755UL, 06755UL, (0xdeadUL << 32) | 02755UL}) {
    SCOPED_TRACE(mode);
    auto fresh = [&] { return dir_ + "/new" + std::to_string(n++); };
    const std::string a = fresh(), b = fresh(), c = fresh(), d = fresh(), e = fresh();
    const char *pa = a.c_str(), *pb = b.c_str(), *pc = c.c_str(), *pd = d.c_str(), *pe = e.c_str();
#ifdef SYS_open
    EXPECT_EQ(errno_of([pa, mode] { return raw(SYS_open, pa, O_CREAT | O_WRONLY | O_CLOEXEC, mode); }), EPERM);
#endif
    EXPECT_EQ(errno_of([pb, mode] { return raw(SYS_openat, AT_FDCWD, pb, O_CREAT | O_RDWR | O_EXCL, mode); }), EPERM);
#ifdef SYS_creat
    EXPECT_EQ(errno_of([pc, mode] { return raw(SYS_creat, pc, mode); }), EPERM);
#endif
#ifdef SYS_mknod
    EXPECT_EQ(errno_of([pd, mode] { return raw(SYS_mknod, pd, S_IFREG | mode, 0); }), EPERM);
#endif
    EXPECT_EQ(errno_of([pe, mode] { return raw(SYS_mknodat, AT_FDCWD, pe, S_IFREG | mode, 0); }), EPERM);
    for (const std::string* path : {&a, &b, &c, &d, &e}) EXPECT_EQ(mode_of(*path), -1) << *path;
  }
  // O_TMPFILE takes the mode too (and the file can be linked in afterwards).
  const char* dir = dir_.c_str();
  EXPECT_EQ(errno_of([dir] { return raw(SYS_openat, AT_FDCWD, dir, O_TMPFILE | O_WRONLY, 04755); }), EPERM);
  // Control: unfiltered, the same openat makes a setuid file.
  const std::string made = dir_ + "/control";
  const char* pm = made.c_str();
  EXPECT_EQ(errno_of(
                [pm] {
                  ::umask(0);
                  return raw(SYS_openat, AT_FDCWD, pm, O_CREAT | O_WRONLY | O_EXCL, 06755);
                },
                false),
            0);
  EXPECT_EQ(mode_of(made), 06755);
}

TEST_F(SetIdModes, OrdinaryModesAreAllowed) {
  const std::string path = file("a");
  const char* p = path.c_str();
  for (unsigned long mode : {0644UL, 0755UL, 01777UL, 0UL, 0600UL}) {
    SCOPED_TRACE(mode);
    EXPECT_EQ(errno_of([p, mode] { return raw(SYS_chmod, p, mode); }), 0);
    EXPECT_EQ(mode_of(path), static_cast<long>(mode));
    EXPECT_EQ(errno_of([p, mode] { return raw(SYS_fchmodat, AT_FDCWD, p, mode, 0); }), 0);
    EXPECT_EQ(errno_of([p, mode] {
                const int fd = ::open(p, O_RDONLY | O_CLOEXEC);
                if (fd < 0) return 99;
                return raw(SYS_fchmod, fd, mode);
              }),
              0);
  }
  int n = 0;
  for (unsigned long mode : {0644UL, 0755UL, 01777UL}) {
    SCOPED_TRACE(mode);
    const std::string a = dir_ + "/ok" + std::to_string(n++), b = dir_ + "/ok" + std::to_string(n++);
    const char *pa = a.c_str(), *pb = b.c_str();
    EXPECT_EQ(errno_of([pa, mode] { return raw(SYS_openat, AT_FDCWD, pa, O_CREAT | O_WRONLY | O_CLOEXEC, mode); }), 0);
    EXPECT_EQ(errno_of([pb, mode] { return raw(SYS_mknodat, AT_FDCWD, pb, S_IFREG | mode, 0); }), 0);
  }
  // Opening without O_CREAT (libc passes mode 0) and the libc wrappers work as ever.
  EXPECT_EQ(errno_of([p] { return raw(SYS_openat, AT_FDCWD, p, O_RDONLY | O_CLOEXEC, 0); }), 0);
  EXPECT_EQ(errno_of([p] {
              const int fd = ::open(p, O_RDONLY | O_CLOEXEC);
              return fd < 0 ? errno : (::close(fd), 0);
            }),
            0);
}

TEST_F(SetIdModes, MkdirDropsSetIdBitsAndOpenat2Fchmodat2AreEnosys) {
  // mkdir is not checked: the kernel keeps only permission and sticky bits of its mode.
  const std::string sub = dir_ + "/d";
  const char* ps = sub.c_str();
  EXPECT_EQ(errno_of([ps] { return raw(SYS_mkdirat, AT_FDCWD, ps, 06755); }), 0);
  EXPECT_EQ(mode_of(sub) & 06000, 0);
  // ... but making it setgid afterwards is chmod, refused.
  EXPECT_EQ(errno_of([ps] { return raw(SYS_chmod, ps, 02755); }), EPERM);
  // openat2 (mode in a struct the filter cannot read) and fchmodat2: on no list.
  const std::string path = file("a");
  const char* p = path.c_str();
  EXPECT_EQ(errno_of([p] {
              struct {
                unsigned long long flags, mode, resolve;
              } how{O_RDONLY, 0, 0};
              return raw(SYS_openat2, AT_FDCWD, p, &how, sizeof how);
            }),
            ENOSYS);
  constexpr long kFchmodat2 = 452;  // x86_64 and aarch64 (asm-generic) alike
  EXPECT_EQ(errno_of([p] { return raw(kFchmodat2, AT_FDCWD, p, 0644, 0); }), ENOSYS);
  EXPECT_EQ(mode_of(path), 0644);
}

TEST(SeccompFilter, ProgramFitsTheKernelLimit) {
  // The kernel refuses a classic BPF program over 4096 instructions (BPF_MAXINSNS); the
  // argument rules (socket families, ioctl, personality) are the bulk of it.
  int fd = ::memfd_create("seccomp-bpf", MFD_CLOEXEC);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(sandbox_exec::seccomp::export_bpf(fd), 0);
  off_t bytes = ::lseek(fd, 0, SEEK_END);
  ::close(fd);
  const long instructions = bytes / 8;  // struct sock_filter is 8 bytes
  RecordProperty("bpf_instructions", static_cast<int>(instructions));
  std::printf("seccomp program: %ld instructions\n", instructions);
  EXPECT_GT(instructions, 300);  // an allow list of ~250 syscalls, not an empty program
  EXPECT_LT(instructions, 4096);
}

#if defined(__x86_64__)
TEST(SeccompFilter, OtherAbiKillsTheProcess) {
  // An x32 syscall number (bit 30) on the x86_64 ABI.
  int status = run_child([] { return raw(0x40000000L | SYS_getpid); }, true);
  ASSERT_TRUE(WIFSIGNALED(status)) << status;
  EXPECT_EQ(WTERMSIG(status), SIGSYS);
}
#endif

TEST(SeccompFilter, APreparedProgramIsTheSameFilter) {
  // What a zygote does: build once, then each forked session loads the prepared program.
  const int status = run_child(
      [] {
        if (sandbox_exec::seccomp::prepare() != 0) return 90;
        if (::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) return 91;
        if (sandbox_exec::seccomp::install().failed()) return 92;
        if (raw(1000) != ENOSYS) return 93;                                  // unlisted
        if (raw(SYS_ptrace, 0, 0, 0, 0) != EPERM) return 94;                 // denied on purpose
        if (raw(SYS_socket, AF_VSOCK, SOCK_STREAM, 0) != EPERM) return 95;   // by argument
        if (raw(SYS_getpid) != 0) return 96;                                 // allowed
        if (raw(SYS_fchmodat, AT_FDCWD, "/", 04755, 0) != EPERM) return 97;  // by mode
        return 0;
      },
      /*filtered=*/false);
  ASSERT_TRUE(WIFEXITED(status)) << status;
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
