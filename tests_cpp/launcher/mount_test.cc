// Unit tests for cpp/launcher/mount.cc. build_root() runs in a forked child in a mount
// namespace of its own (as root; otherwise a user+mount namespace mapping root to us, as the
// launcher does it), with temporary directories as the spec's mountpoint and workdir; the
// child inspects the new tree from outside it. For enter_root() the child also unshares a
// pid namespace and forks the sandbox's "init", which enters the root and reports what it
// sees from inside. No mount reaches the test process: it all dies with the namespace.
#include "launcher/mount.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/magic.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "child_probe.h"
#include "common/file_io.h"
#include "launcher/userns.h"

namespace {

using sandbox_exec::LaunchStep;
using sandbox_exec::SpawnSpec;

constexpr uint64_t kTmpBytes = 32ull << 20;       // 32 MiB: nr_inodes = 32 MiB / 16 KiB = 2048
constexpr uint64_t kAddressSpace = 512ull << 20;  // the session memory /proc/meminfo shows

// A mount namespace of our own, where we may mount: as root a plain one, otherwise inside a
// new user namespace that maps root to us (the launcher's own way).
int own_mount_namespace() {
  if (::geteuid() == 0) return ::unshare(CLONE_NEWNS) == 0 ? 0 : errno;
  const unsigned uid = ::geteuid(), gid = ::getegid();
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return errno;
  return sandbox_exec::userns::self_map(uid, gid).error;
}

// The names in a directory, sorted, space-separated ("<errno N>" if it cannot be listed).
std::string list_dir(const std::string& path, bool hidden = true) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return "<errno " + std::to_string(errno) + ">";
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    if (name == "." || name == ".." || (!hidden && name[0] == '.')) continue;
    names.push_back(name);
  }
  ::closedir(dir);
  std::sort(names.begin(), names.end());
  std::string out;
  for (const auto& n : names) out += (out.empty() ? "" : " ") + n;
  return out;
}

std::string read_all(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "<errno " + std::to_string(errno) + ">";
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof buf)) > 0) text.append(buf, static_cast<std::size_t>(n));
  ::close(fd);
  return n < 0 ? "<read errno " + std::to_string(errno) + ">" : text;
}

std::string first_line(const std::string& text) { return text.substr(0, text.find('\n')); }

int create_file(const std::string& path) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  const int rc = ::write(fd, "x", 1) == 1 ? 0 : errno;
  ::close(fd);
  return rc;
}

// "tmpfs <bytes> <inodes> [ro] [nosuid] [nodev] [noexec]" for the filesystem at `path`.
std::string fs_facts(const std::string& path) {
  struct statfs fs {};
  struct statvfs vfs {};
  if (::statfs(path.c_str(), &fs) != 0 || ::statvfs(path.c_str(), &vfs) != 0)
    return "<errno " + std::to_string(errno) + ">";
  std::string out = fs.f_type == TMPFS_MAGIC ? "tmpfs" : "type-" + std::to_string(fs.f_type);
  out += " " + std::to_string(static_cast<uint64_t>(fs.f_blocks) * static_cast<uint64_t>(fs.f_bsize));
  out += " " + std::to_string(static_cast<uint64_t>(fs.f_files));
  if (vfs.f_flag & ST_RDONLY) out += " ro";
  if (vfs.f_flag & ST_NOSUID) out += " nosuid";
  if (vfs.f_flag & ST_NODEV) out += " nodev";
  if (vfs.f_flag & ST_NOEXEC) out += " noexec";
  return out;
}

// Mount flags only: "ro nosuid ..." (for the binds, whose size is the host's).
std::string mount_flags(const std::string& path) {
  struct statvfs vfs {};
  if (::statvfs(path.c_str(), &vfs) != 0) return "<errno " + std::to_string(errno) + ">";
  std::string out;
  if (vfs.f_flag & ST_RDONLY) out += "ro ";
  if (vfs.f_flag & ST_NOSUID) out += "nosuid ";
  if (vfs.f_flag & ST_NODEV) out += "nodev ";
  return out;
}

// The sandbox's tree: <base>/root is the mountpoint, <base>/work the workdir.
struct Dirs {
  probe::TempDir base{"/tmp", "sandbox_exec_mount_test"};
  std::string root = base / "root";
  std::string work = base / "work";
  Dirs() {
    ::mkdir(root.c_str(), 0755);
    ::mkdir(work.c_str(), 0777);
    ::chmod(work.c_str(), 0777);
  }
};

SpawnSpec spec_for(const Dirs& d) {
  SpawnSpec spec;
  spec.workdir = d.work;
  spec.limits.address_space = kAddressSpace;
  auto& iso = spec.isolation;
  iso.mountpoint = d.root;
  iso.readonly = {"/usr"};
  iso.symlinks = {{"/bin", "usr/bin"}, {"/lib", "usr/lib"}};
  iso.tmp_bytes = kTmpBytes;
  iso.hostname = "mount-test";
  return spec;
}

// The tmpfs size and inode caps, and the flags, of a private /tmp or /dev/shm.
std::string expected_tmpfs() { return "tmpfs " + std::to_string(kTmpBytes) + " 2048 nosuid nodev"; }

TEST(Mount, BuildRootAssemblesTheSandboxTree) {
  Dirs d;
  ASSERT_FALSE(d.base.path().empty());
  const SpawnSpec spec = spec_for(d);
  const auto r = probe::run([&](const probe::Report& out) {
    if (int err = own_mount_namespace()) {
      out.put("setup", err);
      return 2;
    }
    const std::string& root = d.root;
    out.put("f", sandbox_exec::mount::build_root(spec));
    // The root itself: a read-only tmpfs.
    out.put("root_fs", fs_facts(root).substr(0, 5));
    out.put("root_flags", mount_flags(root));
    out.put("create_in_root", create_file(root + "/new"));
    out.put("root_list", list_dir(root));
    out.put("bin_link", read_all(root + "/bin/env").compare(1, 3, "ELF") == 0 ? "ok" : "not an ELF");
    char link[64] = {};
    out.put("bin_target", ::readlink((root + "/bin").c_str(), link, sizeof link - 1) > 0 ? link : "<none>");
    // /etc: only what the unit writes.
    out.put("etc_list", list_dir(root + "/etc"));
    out.put("passwd", read_all(root + "/etc/passwd"));
    out.put("group", read_all(root + "/etc/group"));
    out.put("hostname", read_all(root + "/etc/hostname"));
    out.put("hosts", read_all(root + "/etc/hosts"));
    out.put("resolv", read_all(root + "/etc/resolv.conf"));
    out.put("create_in_etc", create_file(root + "/etc/shadow"));
    // /dev: the listed nodes (the host's devices), the links, shm.
    out.put("dev_list", list_dir(root + "/dev"));
    std::string nodes;
    for (const char* node : {"null", "zero", "full", "random", "urandom"}) {
      struct stat mine {
      }, host{};
      const bool same = ::lstat((root + "/dev/" + node).c_str(), &mine) == 0 &&
                        ::stat((std::string("/dev/") + node).c_str(), &host) == 0 && S_ISCHR(mine.st_mode) &&
                        mine.st_rdev == host.st_rdev && (mine.st_mode & 0666) == 0666;
      nodes += std::string(node) + (same ? "=ok " : "=BAD ");
    }
    out.put("dev_nodes", nodes);
    char fd_link[64] = {};
    out.put("dev_fd", ::readlink((root + "/dev/fd").c_str(), fd_link, sizeof fd_link - 1) > 0 ? fd_link : "<none>");
    out.put("write_dev_null", create_file(root + "/dev/null"));
    out.put("create_in_dev", create_file(root + "/dev/sda"));
    out.put("dev_flags", mount_flags(root + "/dev"));
    // The private /tmp and /dev/shm: capped tmpfs, writable.
    out.put("tmp_fs", fs_facts(root + "/tmp"));
    out.put("shm_fs", fs_facts(root + "/dev/shm"));
    out.put("create_in_tmp", create_file(root + "/tmp/file"));
    out.put("create_in_shm", create_file(root + "/dev/shm/file"));
    // The byte cap: 33 MiB do not fit in 32.
    const int big = ::open((root + "/tmp/big").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    out.put("fallocate_over_cap", big >= 0 && ::posix_fallocate(big, 0, kTmpBytes + (1 << 20)) == ENOSPC);
    if (big >= 0) ::close(big);
    ::unlink((root + "/tmp/big").c_str());
    // The inode cap: empty files until the tmpfs says no.
    int files = 0, err = 0;
    for (; files < 5000; ++files) {
      const int fd =
          ::open((root + "/dev/shm/f" + std::to_string(files)).c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
      if (fd < 0) {
        err = errno;
        break;
      }
      ::close(fd);
    }
    out.put("shm_files", files);
    out.put("shm_files_errno", err);
    // The read-only bind and the read-write workdir.
    out.put("usr_env", ::access((root + "/usr/bin/env").c_str(), X_OK) == 0 ? 0 : errno);
    out.put("usr_flags", mount_flags(root + "/usr"));
    out.put("create_in_usr", create_file(root + "/usr/new"));
    out.put("work_flags", mount_flags(root + d.work));
    out.put("create_in_work", create_file(root + d.work + "/from_inside"));
    // The sandbox's /proc views, prepared for enter_root.
    out.put("proc_list", list_dir(root + "/proc"));
    out.put("views_list", list_dir(root + "/proc/.sandbox_exec"));
    out.put("view_meminfo", first_line(read_all(root + "/proc/.sandbox_exec/meminfo")));
    out.put("view_loadavg", read_all(root + "/proc/.sandbox_exec/loadavg"));
    struct stat denied {};
    out.put("view_denied_mode",
            ::stat((root + "/proc/.sandbox_exec/denied").c_str(), &denied) == 0 ? (denied.st_mode & 07777) : -1);
    return 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  ASSERT_EQ(r.step("f"), LaunchStep::kNone) << r.dump();

  EXPECT_EQ(r.str("root_fs"), "tmpfs");
  EXPECT_EQ(r.str("root_flags"), "ro nosuid nodev ");
  EXPECT_EQ(r.num("create_in_root"), EROFS);
  EXPECT_EQ(r.str("root_list"), "bin dev etc lib proc tmp usr");
  EXPECT_EQ(r.str("bin_target"), "usr/bin");
  EXPECT_EQ(r.str("bin_link"), "ok");

  EXPECT_EQ(r.str("etc_list"), "group hostname hosts nsswitch.conf passwd resolv.conf");
  EXPECT_EQ(r.str("passwd"), "root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:1000:1000:sandbox:" + d.work +
                                 ":/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n");
  EXPECT_EQ(r.str("group"), "root:x:0:\nsandbox:x:1000:\nnogroup:x:65534:\n");
  EXPECT_EQ(r.str("hostname"), "mount-test\n");
  EXPECT_NE(r.str("hosts").find("127.0.0.1 localhost mount-test"), std::string::npos) << r.str("hosts");
  EXPECT_EQ(r.str("resolv"), "");  // no network: no name servers
  EXPECT_EQ(r.num("create_in_etc"), EROFS);

  EXPECT_EQ(r.str("dev_list"), "fd full null ptmx random shm stderr stdin stdout urandom zero");
  EXPECT_EQ(r.str("dev_nodes"), "null=ok zero=ok full=ok random=ok urandom=ok ");
  EXPECT_EQ(r.str("dev_fd"), "/proc/self/fd");
  EXPECT_EQ(r.num("write_dev_null"), 0);
  EXPECT_EQ(r.num("create_in_dev"), EROFS);
  EXPECT_EQ(r.str("dev_flags"), "ro nosuid ");  // device nodes work: not nodev

  EXPECT_EQ(r.str("tmp_fs"), expected_tmpfs());
  EXPECT_EQ(r.str("shm_fs"), expected_tmpfs());
  EXPECT_EQ(r.num("create_in_tmp"), 0);
  EXPECT_EQ(r.num("create_in_shm"), 0);
  EXPECT_EQ(r.num("fallocate_over_cap"), 1);
  // 2048 inodes: the root directory and "file" hold two, give or take the kernel's own.
  EXPECT_EQ(r.num("shm_files_errno"), ENOSPC) << r.dump();
  EXPECT_GE(r.num("shm_files"), 2040);
  EXPECT_LE(r.num("shm_files"), 2048);

  EXPECT_EQ(r.num("usr_env"), 0);
  EXPECT_EQ(r.str("usr_flags").substr(0, 3), "ro ");
  EXPECT_NE(r.str("usr_flags").find("nosuid nodev"), std::string::npos) << r.str("usr_flags");
  EXPECT_EQ(r.num("create_in_usr"), EROFS);
  EXPECT_EQ(r.str("work_flags").find("ro "), std::string::npos) << r.str("work_flags");
  EXPECT_EQ(r.num("create_in_work"), 0);
  // The workdir is the host's directory itself, not a copy.
  EXPECT_EQ(read_all(d.work + "/from_inside"), "x");

  EXPECT_EQ(r.str("proc_list"), ".sandbox_exec");
  EXPECT_EQ(r.str("views_list"), "boot_id denied loadavg meminfo stat");
  EXPECT_EQ(r.str("view_meminfo"), "MemTotal:         524288 kB");
  EXPECT_EQ(r.str("view_loadavg"), "0.00 0.00 0.00 1/1 1\n");
  EXPECT_EQ(r.num("view_denied_mode"), 0);

  // Nothing of it reached the host's tree: the mountpoint is as empty as it was.
  EXPECT_EQ(list_dir(d.root), "");
}

TEST(Mount, EnterRootShowsOnlyTheSandbox) {
  Dirs d;
  ASSERT_FALSE(d.base.path().empty());
  const SpawnSpec spec = spec_for(d);
  const std::string host_boot_id = read_all("/proc/sys/kernel/random/boot_id");
  ASSERT_EQ(host_boot_id.size(), 37u);
  const std::string host_only = d.base / "host_only";
  ASSERT_EQ(create_file(host_only), 0);
  const std::string private_tmp = "/tmp/sandbox_exec_mount_test_private." + std::to_string(::getpid());
  const auto r = probe::run([&](const probe::Report& out) {
    if (int err = own_mount_namespace()) {
      out.put("setup", err);
      return 2;
    }
    if (auto f = sandbox_exec::mount::build_root(spec); f.failed()) {
      out.put("build", f);
      return 3;
    }
    // As the launcher: the init starts in the new root, in a new pid namespace.
    if (::chdir(d.root.c_str()) != 0) return 4;
    if (::unshare(CLONE_NEWPID) != 0) {
      out.put("setup", errno);
      return 5;
    }
    const pid_t init = ::fork();
    if (init == 0) {
      out.put("f", sandbox_exec::mount::enter_root(spec));
      out.put("pid", static_cast<int>(::getpid()));
      char cwd[256] = {};
      out.put("cwd", ::getcwd(cwd, sizeof cwd) != nullptr ? cwd : "<none>");
      out.put("root_list", list_dir("/"));
      struct stat root {
      }, parent{};
      out.put("dotdot_is_root", ::stat("/", &root) == 0 && ::stat("/..", &parent) == 0 &&
                                    root.st_ino == parent.st_ino && root.st_dev == parent.st_dev);
      char link[256] = {};
      out.put("proc_self_root", ::readlink("/proc/self/root", link, sizeof link - 1) > 0 ? link : "<none>");
      out.put("host_only", ::access(host_only.c_str(), F_OK) == 0 ? 0 : errno);
      out.put("etc_passwd", first_line(read_all("/etc/passwd")));
      out.put("etc_shadow", ::access("/etc/shadow", F_OK) == 0 ? 0 : errno);
      out.put("create_in_work", create_file(d.work + "/from_init"));
      out.put("create_in_tmp", create_file(private_tmp));
      out.put("create_in_root", create_file("/new"));
      // /proc: this pid namespace only, with the session's views and the masks.
      const std::string pids = list_dir("/proc", false);
      std::string numeric;
      for (std::size_t i = 0; i < pids.size();) {
        std::size_t end = pids.find(' ', i);
        if (end == std::string::npos) end = pids.size();
        const std::string name = pids.substr(i, end - i);
        if (!name.empty() && std::all_of(name.begin(), name.end(), ::isdigit)) numeric += name + " ";
        i = end + 1;
      }
      out.put("proc_pids", numeric);
      out.put("meminfo", first_line(read_all("/proc/meminfo")));
      out.put("loadavg", read_all("/proc/loadavg"));
      const std::string stat = read_all("/proc/stat");
      out.put("stat_intr", stat.find("\nintr 0\n") != std::string::npos);
      out.put("stat_cpu", first_line(stat));
      out.put("boot_id", read_all("/proc/sys/kernel/random/boot_id"));
      std::string masked;
      for (const char* name : {"interrupts", "kallsyms", "cmdline", "vmstat", "diskstats", "sys/fs/file-nr"}) {
        if (::access((std::string("/proc/") + name).c_str(), F_OK) != 0) continue;  // not in this kernel
        masked += std::string(name) + "=" + read_all(std::string("/proc/") + name).substr(0, 16) + " ";
      }
      out.put("masked_files", masked);
      // Root-only files are masked by a mode-0 file, not by the world-readable /dev/null.
      std::string root_only;
      for (const char* name : {"kcore", "kmsg", "timer_list", "slabinfo", "vmallocinfo", "sysrq-trigger"}) {
        struct stat st {};
        if (::stat((std::string("/proc/") + name).c_str(), &st) != 0) continue;
        root_only += std::string(name) + "=" + std::to_string(st.st_mode & 07777) + " ";
      }
      out.put("root_only", root_only);
      std::string dirs;
      for (const char* name : {"acpi", "bus", "fs", "irq", "driver", "scsi", "pressure"}) {
        const std::string path = std::string("/proc/") + name;
        if (::access(path.c_str(), F_OK) != 0) continue;
        dirs += std::string(name) + "=[" + list_dir(path) + "] ";
      }
      out.put("masked_dirs", dirs);
      out.put("write_meminfo", create_file("/proc/meminfo"));
      out.put("self_status", read_all("/proc/self/status").find("\nPid:\t1\n") != std::string::npos);
      ::_exit(0);
    }
    int status = 0;
    if (init < 0 || ::waitpid(init, &status, 0) != init) return 6;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  ASSERT_EQ(r.step("f"), LaunchStep::kNone) << r.dump();
  EXPECT_EQ(r.num("pid"), 1);
  EXPECT_EQ(r.str("cwd"), "/");
  EXPECT_EQ(r.str("root_list"), "bin dev etc lib proc tmp usr");
  EXPECT_EQ(r.num("dotdot_is_root"), 1);
  EXPECT_EQ(r.str("proc_self_root"), "/");
  EXPECT_EQ(r.num("host_only"), ENOENT) << "the host's tree is out of reach";
  EXPECT_EQ(r.str("etc_passwd"), "root:x:0:0:root:/root:/usr/sbin/nologin");
  EXPECT_EQ(r.num("etc_shadow"), ENOENT);
  EXPECT_EQ(r.num("create_in_work"), 0);
  EXPECT_EQ(read_all(d.work + "/from_init"), "x");
  EXPECT_EQ(r.num("create_in_tmp"), 0);
  EXPECT_NE(::access(private_tmp.c_str(), F_OK), 0) << "the sandbox's /tmp is its own";
  EXPECT_EQ(r.num("create_in_root"), EROFS);

  EXPECT_EQ(r.str("proc_pids"), "1 ");
  EXPECT_EQ(r.str("meminfo"), "MemTotal:         524288 kB");
  EXPECT_EQ(r.str("loadavg"), "0.00 0.00 0.00 1/1 1\n");
  EXPECT_EQ(r.num("stat_intr"), 1);
  EXPECT_EQ(r.str("stat_cpu"), "cpu  0 0 0 0 0 0 0 0 0 0");
  const std::string boot_id = r.str("boot_id");
  EXPECT_EQ(boot_id.size(), 37u) << boot_id;
  EXPECT_NE(boot_id, host_boot_id);
  // Every masked file that this kernel has reads empty.
  const std::string masked = r.str("masked_files");
  EXPECT_NE(masked.find("interrupts= "), std::string::npos) << masked;
  EXPECT_NE(masked.find("cmdline= "), std::string::npos) << masked;
  for (std::size_t i = 0; i < masked.size();) {
    const std::size_t end = masked.find(' ', i);
    EXPECT_EQ(masked[end - 1], '=') << masked.substr(i, end - i);
    i = end + 1;
  }
  const std::string root_only = r.str("root_only");
  EXPECT_FALSE(root_only.empty()) << "no root-only /proc file to check";
  for (std::size_t i = 0; i < root_only.size();) {
    const std::size_t end = root_only.find(' ', i);
    EXPECT_EQ(root_only.substr(end - 2, 2), "=0") << root_only.substr(i, end - i);
    i = end + 1;
  }
  const std::string dirs = r.str("masked_dirs");
  EXPECT_NE(dirs.find("fs=[]"), std::string::npos) << dirs;
  for (std::size_t i = 0; i < dirs.size();) {
    const std::size_t end = dirs.find(' ', i);
    EXPECT_EQ(dirs.substr(end - 2, 2), "[]") << dirs.substr(i, end - i);
    i = end + 1;
  }
  EXPECT_NE(r.num("write_meminfo"), 0) << "the views are read-only";
  EXPECT_EQ(r.num("self_status"), 1);
}

// The step that fails is named: the launcher reports it to the supervisor as is.
TEST(Mount, FailuresNameTheirStep) {
  struct Case {
    const char* what;
    LaunchStep step;
    int error;
  };
  const Case cases[] = {
      {"missing workdir", LaunchStep::kMountBind, ENOENT},
      {"missing mountpoint", LaunchStep::kMountRootTmpfs, ENOENT},
      {"missing read-only path", LaunchStep::kMountBind, ENOENT},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    Dirs d;
    SpawnSpec spec = spec_for(d);
    const std::string what = c.what;
    if (what == "missing workdir") spec.workdir = d.base / "no_such_workdir";
    if (what == "missing mountpoint") spec.isolation.mountpoint = d.base / "no_such_root";
    if (what == "missing read-only path") spec.isolation.readonly.push_back("/nonexistent/sandbox_exec/lib");
    const auto r = probe::run([&](const probe::Report& out) {
      if (int err = own_mount_namespace()) {
        out.put("setup", err);
        return 2;
      }
      out.put("f", sandbox_exec::mount::build_root(spec));
      return 0;
    });
    ASSERT_TRUE(r.exited()) << r.dump();
    EXPECT_EQ(r.step("f"), c.step) << r.dump();
    EXPECT_EQ(r.err("f"), c.error) << r.dump();
  }
  // enter_root outside a built root: the /proc views are not there.
  probe::TempDir empty;
  Dirs d;
  const SpawnSpec spec = spec_for(d);
  const auto r = probe::run([&](const probe::Report& out) {
    if (int err = own_mount_namespace()) {
      out.put("setup", err);
      return 2;
    }
    if (::chdir(empty.path().c_str()) != 0) return 3;
    out.put("f", sandbox_exec::mount::enter_root(spec));
    return 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.step("f"), LaunchStep::kMountProc) << r.dump();
  EXPECT_EQ(r.err("f"), ENOENT) << r.dump();
}

}  // namespace
