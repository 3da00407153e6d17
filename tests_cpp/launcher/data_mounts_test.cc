// Unit tests for cpp/launcher/data_mounts.cc, through mount::build_root() as the launcher runs
// it: host directories bound at paths relative to the workdir, read-only unless writable;
// what a cell can leave on the mountpoint's path (a symlink, a file, a linked parent) is
// refused and never followed; a host path with a symlink, missing, not a directory, or
// writable on a read-only host mount is refused; and the mounts are there after
// mount::enter_root(), both when it can pivot_root and when it must chroot (a host whose
// "/" cannot be pivoted: simulated by running it from a chroot whose root is no mount, and
// pivot_root made possible, on a host where "/" cannot be pivoted, from a chroot whose root
// is a mount of its own).
// Everything runs in forked children with namespaces of their own (child_probe.h).
#include "launcher/data_mounts.h"

#include <dirent.h>
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "child_probe.h"
#include "launcher/mount.h"
#include "launcher/userns.h"

namespace {

using sandbox_exec::DataMount;
using sandbox_exec::LaunchStep;
using sandbox_exec::SpawnSpec;

int own_mount_namespace() {
  if (::geteuid() == 0) return ::unshare(CLONE_NEWNS) == 0 ? 0 : errno;
  const unsigned uid = ::geteuid(), gid = ::getegid();
  if (::unshare(CLONE_NEWUSER | CLONE_NEWNS) != 0) return errno;
  return sandbox_exec::userns::self_map(uid, gid).error;
}

std::string list_dir(const std::string& path) {
  DIR* dir = ::opendir(path.c_str());
  if (dir == nullptr) return "<errno " + std::to_string(errno) + ">";
  std::vector<std::string> names;
  while (const dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    if (name != "." && name != "..") names.push_back(name);
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
  char buf[256];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  ::close(fd);
  return n < 0 ? "<read errno>" : std::string(buf, static_cast<std::size_t>(n));
}

int write_file(const std::string& path, const char* text = "x") {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
  if (fd < 0) return errno;
  const auto len = static_cast<ssize_t>(std::char_traits<char>::length(text));
  const int rc = ::write(fd, text, static_cast<std::size_t>(len)) == len ? 0 : errno;
  ::close(fd);
  return rc;
}

std::string mount_flags(const std::string& path) {
  struct statvfs vfs {};
  if (::statvfs(path.c_str(), &vfs) != 0) return "<errno " + std::to_string(errno) + ">";
  std::string out;
  if (vfs.f_flag & ST_RDONLY) out += "ro ";
  if (vfs.f_flag & ST_NOSUID) out += "nosuid ";
  if (vfs.f_flag & ST_NODEV) out += "nodev ";
  if (vfs.f_flag & ST_NOEXEC) out += "noexec ";
  return out;
}

// <base>/root: the mountpoint; <base>/work: the workdir; <base>/host/{data,out,secret}: the
// host's directories (data holds a.txt, secret a file no mount names).
struct Dirs {
  probe::TempDir base{"/tmp", "sandbox_exec_data_mounts_test"};
  std::string root = base / "root", work = base / "work", host = base / "host";
  std::string data = host + "/data", out = host + "/out", secret = host + "/secret";
  Dirs() {
    for (const std::string& d : {root, work, host, data, out, secret}) ::mkdir(d.c_str(), 0777);
    ::chmod(work.c_str(), 0777);
    (void)write_file(data + "/a.txt", "hello");
    (void)write_file(secret + "/s.txt", "secret");
  }
};

SpawnSpec spec_for(const Dirs& d, std::vector<DataMount> mounts) {
  SpawnSpec spec;
  spec.workdir = d.work;
  auto& iso = spec.isolation;
  iso.mountpoint = d.root;
  iso.readonly = {"/usr"};
  iso.symlinks = {{"/bin", "usr/bin"}, {"/lib", "usr/lib"}, {"/lib64", "usr/lib64"}};
  iso.tmp_bytes = 16ull << 20;
  iso.mounts = std::move(mounts);
  return spec;
}

TEST(DataMounts, ReadOnlyAndWritableBindsInTheWorkdir) {
  Dirs d;
  ASSERT_FALSE(d.base.path().empty());
  const SpawnSpec spec = spec_for(d, {{d.data, "data", false}, {d.out, "results/out", true}});
  const std::string in_work = d.root + d.work;
  const auto r = probe::run([&](const probe::Report& out) {
    if (int err = own_mount_namespace()) {
      out.put("setup", err);
      return 2;
    }
    out.put("f", sandbox_exec::mount::build_root(spec));
    out.put("work_list", list_dir(in_work));
    out.put("data_list", list_dir(in_work + "/data"));
    out.put("data_read", read_all(in_work + "/data/a.txt"));
    out.put("data_flags", mount_flags(in_work + "/data"));
    out.put("data_create", write_file(in_work + "/data/new"));
    out.put("data_overwrite", write_file(in_work + "/data/a.txt", "changed"));
    out.put_errno("data_mkdir", ::mkdir((in_work + "/data/dir").c_str(), 0755));
    out.put_errno("data_unlink", ::unlink((in_work + "/data/a.txt").c_str()));
    out.put("data_parent", list_dir(in_work + "/data/.."));
    out.put("out_flags", mount_flags(in_work + "/results/out"));
    out.put("out_create", write_file(in_work + "/results/out/made", "from the sandbox"));
    return 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  ASSERT_EQ(r.step("f"), LaunchStep::kNone) << r.dump();
  EXPECT_EQ(r.str("work_list"), "data results");
  EXPECT_EQ(r.str("data_list"), "a.txt");
  EXPECT_EQ(r.str("data_read"), "hello");
  EXPECT_EQ(r.str("data_flags"), "ro nosuid nodev noexec ");
  // The directory and its file are writable by anyone (0777/0666): only the mount says no.
  EXPECT_EQ(r.num("data_create"), EROFS);
  EXPECT_EQ(r.num("data_overwrite"), EROFS);
  EXPECT_EQ(r.num("data_mkdir"), EROFS);
  EXPECT_EQ(r.num("data_unlink"), EROFS);
  EXPECT_EQ(read_all(d.data + "/a.txt"), "hello");
  // ".." of a mount's root is its mountpoint's parent: the workdir, not the host's siblings.
  EXPECT_EQ(r.str("data_parent"), "data results");
  EXPECT_EQ(r.str("out_flags"), "nosuid nodev noexec ");
  EXPECT_EQ(r.num("out_create"), 0);
  EXPECT_EQ(read_all(d.out + "/made"), "from the sandbox") << "writes reach the host directory";
  // The mountpoints stay, empty, in the host's workdir (the mounts died with the namespace),
  // owned as the workdir is.
  EXPECT_EQ(list_dir(d.work + "/data"), "");
  EXPECT_EQ(list_dir(d.work + "/results"), "out");
  struct stat work {
  }, made{};
  ASSERT_EQ(::stat(d.work.c_str(), &work), 0);
  ASSERT_EQ(::lstat((d.work + "/results/out").c_str(), &made), 0);
  EXPECT_TRUE(S_ISDIR(made.st_mode));
  EXPECT_EQ(made.st_uid, work.st_uid);
  EXPECT_EQ(made.st_gid, work.st_gid);
}

// What a cell can leave in its workdir before the next start, where a mount's path goes.
TEST(DataMounts, WhatACellLeftOnThePathIsRefusedNotFollowed) {
  struct Case {
    const char* what;
    const char* path;
  };
  const Case cases[] = {
      {"symlink to a host directory", "data"},
      {"symlink to a directory in the workdir", "data"},
      {"dangling symlink", "data"},
      {"regular file", "data"},
      {"symlinked parent", "sub/data"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    Dirs d;
    const std::string what = c.what;
    // The link's target: a directory the test watches. Nothing may be made or mounted there.
    const std::string target = d.base / "target";
    ASSERT_EQ(::mkdir(target.c_str(), 0777), 0);
    if (what == "symlink to a host directory") {
      ASSERT_EQ(::symlink(target.c_str(), (d.work + "/data").c_str()), 0);
    }
    if (what == "symlink to a directory in the workdir") {
      ASSERT_EQ(::mkdir((d.work + "/elsewhere").c_str(), 0777), 0);
      ASSERT_EQ(::symlink("elsewhere", (d.work + "/data").c_str()), 0);
    }
    if (what == "dangling symlink") {
      ASSERT_EQ(::symlink((target + "/none").c_str(), (d.work + "/data").c_str()), 0);
    }
    if (what == "regular file") {
      ASSERT_EQ(write_file(d.work + "/data"), 0);
    }
    if (what == "symlinked parent") {
      ASSERT_EQ(::symlink(target.c_str(), (d.work + "/sub").c_str()), 0);
    }
    const SpawnSpec spec = spec_for(d, {{d.data, c.path, false}});
    const auto r = probe::run([&](const probe::Report& out) {
      if (int err = own_mount_namespace()) {
        out.put("setup", err);
        return 2;
      }
      out.put("f", sandbox_exec::mount::build_root(spec));
      out.put("target_list", list_dir(target));
      return 0;
    });
    ASSERT_TRUE(r.exited()) << r.dump();
    EXPECT_EQ(r.step("f"), LaunchStep::kMountData) << r.dump();
    EXPECT_TRUE(r.err("f") == ENOTDIR || r.err("f") == ELOOP) << r.dump();
    EXPECT_EQ(r.str("target_list"), "") << "nothing was made or mounted through the link";
    EXPECT_EQ(list_dir(target), "");
  }
}

TEST(DataMounts, HostDirectoryProblemsAreRefused) {
  struct Case {
    const char* what;
    int error;
  };
  const Case cases[] = {
      {"missing", ENOENT},
      {"a file", ENOTDIR},
      {"a symlink on its path", ELOOP},
      {"writable on a read-only host mount", EROFS},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    Dirs d;
    const std::string what = c.what;
    std::string host = d.data;
    bool writable = false;
    if (what == "missing") host = d.host + "/none";
    if (what == "a file") host = d.data + "/a.txt";
    if (what == "a symlink on its path") {
      ASSERT_EQ(::symlink(d.host.c_str(), (d.base / "link").c_str()), 0);
      host = d.base / "link/data";
    }
    if (what == "writable on a read-only host mount") writable = true;
    const SpawnSpec spec = spec_for(d, {{host, "data", writable}});
    const auto r = probe::run([&](const probe::Report& out) {
      if (int err = own_mount_namespace()) {
        out.put("setup", err);
        return 2;
      }
      if (what == "writable on a read-only host mount") {
        // The host's directory on a read-only mount (in this namespace only).
        if (::mount(d.data.c_str(), d.data.c_str(), nullptr, MS_BIND, nullptr) != 0 ||
            ::mount(nullptr, d.data.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY, nullptr) != 0) {
          out.put("setup", errno);
          return 3;
        }
      }
      out.put("f", sandbox_exec::mount::build_root(spec));
      return 0;
    });
    ASSERT_TRUE(r.exited()) << r.dump();
    EXPECT_EQ(r.step("f"), LaunchStep::kMountData) << r.dump();
    EXPECT_EQ(r.err("f"), c.error) << r.dump();
  }
}

// The mounts after enter_root(), from the sandbox's init: with pivot_root, and with the
// chroot fallback a host whose "/" cannot be pivoted takes. The test picks the path itself
// (a host whose "/" sits on the initramfs, as this project's CI host, cannot pivot at all):
// it runs enter_root() from a chroot into a "jail" that is a mount of its own (pivot_root
// works) or a plain directory (pivot_root fails with EINVAL), with /proc bound in for
// enter_root's /proc/self/fd paths. Which one ran is checked: pivot_root moves the root of
// every process of the namespace that had the old one, the test's own included.
TEST(DataMounts, PresentAfterEnteringTheRootWithPivotRootAndWithChroot) {
  for (const bool pivot : {true, false}) {
    SCOPED_TRACE(pivot ? "pivot_root" : "chroot");
    Dirs d;
    const std::string jail = d.base / "jail";
    ASSERT_EQ(::mkdir(jail.c_str(), 0755), 0);
    SpawnSpec spec = spec_for(d, {{d.data, "data", false}, {d.out, "out", true}});
    // pivot_root needs the new root reachable from the current one: inside the jail.
    if (pivot) spec.isolation.mountpoint = jail + "/root";
    const auto r = probe::run([&](const probe::Report& out) {
      if (int err = own_mount_namespace()) {
        out.put("setup", err);
        return 2;
      }
      if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0 ||
          (pivot && ::mount("tmpfs", jail.c_str(), "tmpfs", 0, "size=1m") != 0) ||
          ::mkdir((jail + "/proc").c_str(), 0755) != 0 ||
          (pivot && ::mkdir(spec.isolation.mountpoint.c_str(), 0755) != 0) ||
          ::mount("/proc", (jail + "/proc").c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0) {
        out.put("setup", errno);
        return 3;
      }
      if (auto f = sandbox_exec::mount::build_root(spec); f.failed()) {
        out.put("build", f);
        return 4;
      }
      // The working directory (the new root) is kept across the chroot.
      if (::chdir(spec.isolation.mountpoint.c_str()) != 0 || ::chroot(jail.c_str()) != 0) {
        out.put("setup", errno);
        return 5;
      }
      struct stat before {};
      if (::stat("/", &before) != 0 || ::unshare(CLONE_NEWPID) != 0) {
        out.put("setup", errno);
        return 6;
      }
      const pid_t init = ::fork();
      if (init == 0) {
        out.put("f", sandbox_exec::mount::enter_root(spec));
        out.put("data_read", read_all(d.work + "/data/a.txt"));
        out.put("data_create", write_file(d.work + "/data/new"));
        out.put("out_create", write_file(d.work + "/out/made", "inside"));
        out.put("work_list", list_dir(d.work));
        out.put("secret", ::access((d.secret + "/s.txt").c_str(), F_OK) == 0 ? 0 : errno);
        out.put("host_data", ::access((d.data + "/a.txt").c_str(), F_OK) == 0 ? 0 : errno);
        ::_exit(0);
      }
      int status = 0;
      if (init < 0 || ::waitpid(init, &status, 0) != init) return 7;
      struct stat after {};
      out.put("root_moved",
              ::stat("/", &after) == 0 && (after.st_dev != before.st_dev || after.st_ino != before.st_ino));
      return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    });
    ASSERT_TRUE(r.exited()) << r.dump();
    ASSERT_EQ(r.step("f"), LaunchStep::kNone) << r.dump();
    EXPECT_EQ(r.num("root_moved"), pivot ? 1 : 0) << "the path taken: " << (pivot ? "pivot_root" : "chroot");
    EXPECT_EQ(r.str("data_read"), "hello");
    EXPECT_EQ(r.num("data_create"), EROFS);
    EXPECT_EQ(r.num("out_create"), 0);
    EXPECT_EQ(read_all(d.out + "/made"), "inside");
    EXPECT_EQ(r.str("work_list"), "data out");
    // The host's directories are reachable only through their mounts.
    EXPECT_EQ(r.num("secret"), ENOENT);
    EXPECT_EQ(r.num("host_data"), ENOENT);
  }
}

}  // namespace
