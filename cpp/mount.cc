#include "mount.h"

#include <fcntl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

namespace sandbox_exec::mount {

namespace {

// Runs in the launcher before clone(): allocation is fine here (single-threaded, fresh).
std::string under(const SpawnSpec& spec, const std::string& path) {
  return spec.isolation.mountpoint + path;
}

int mkdirs(const std::string& path, mode_t mode = 0755) {
  for (std::size_t i = 1; i <= path.size(); ++i) {
    if (i == path.size() || path[i] == '/') {
      const std::string part = path.substr(0, i);
      if (::mkdir(part.c_str(), mode) != 0 && errno != EEXIST) return errno;
    }
  }
  return 0;
}

int touch(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    if (int err = mkdirs(path.substr(0, slash))) return err;
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

int write_text(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  const bool ok = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size());
  ::close(fd);
  return ok ? 0 : EIO;
}

// The flags the kernel refuses to clear on a remount inside a user namespace.
unsigned long locked_flags(const char* path) {
  struct statvfs st {};
  if (::statvfs(path, &st) != 0) return 0;
  unsigned long flags = 0;
  if (st.f_flag & ST_NOSUID) flags |= MS_NOSUID;
  if (st.f_flag & ST_NODEV) flags |= MS_NODEV;
  if (st.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
  if (st.f_flag & ST_NOATIME) flags |= MS_NOATIME;
  if (st.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
  if (st.f_flag & ST_RELATIME) flags |= MS_RELATIME;
  return flags;
}

Failure bind(const std::string& source, const std::string& target, bool read_only) {
  struct stat st {};
  if (::stat(source.c_str(), &st) != 0) return {LaunchStep::kMountBind, errno};
  if (int err = S_ISDIR(st.st_mode) ? mkdirs(target) : touch(target)) return {LaunchStep::kMountBind, err};
  if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0)
    return {LaunchStep::kMountBind, errno};
  unsigned long flags = MS_BIND | MS_REMOUNT | MS_NOSUID | locked_flags(source.c_str());
  if (read_only) flags |= MS_RDONLY;
  if (!S_ISCHR(st.st_mode)) flags |= MS_NODEV;
  if (::mount(nullptr, target.c_str(), nullptr, flags, nullptr) != 0)
    return {LaunchStep::kMountRemountRo, errno};
  return {};
}

Failure write_etc(const SpawnSpec& spec) {
  const Isolation& iso = spec.isolation;
  const std::string etc = under(spec, "/etc");
  if (int err = mkdirs(etc)) return {LaunchStep::kMountEtc, err};
  // Only the sandbox's own users: nothing of the host's accounts or secrets.
  const std::string uid = std::to_string(iso.inside_uid), gid = std::to_string(iso.inside_gid);
  const std::pair<const char*, std::string> files[] = {
      {"/passwd", "root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:" + uid + ":" + gid +
                      ":sandbox:" + spec.workdir + ":/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"},
      {"/group", "root:x:0:\nsandbox:x:" + gid + ":\nnogroup:x:65534:\n"},
      {"/hostname", iso.hostname + "\n"},
      {"/hosts", "127.0.0.1 localhost " + iso.hostname + "\n::1 localhost ip6-localhost\n"},
      {"/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n"},
  };
  for (const auto& [name, text] : files) {
    if (int err = write_text(etc + name, text)) return {LaunchStep::kMountEtc, err};
  }
  if (!iso.network) {
    if (int err = write_text(etc + "/resolv.conf", "")) return {LaunchStep::kMountEtc, err};
  }
  return {};
}

Failure make_dev(const SpawnSpec& spec) {
  const std::string dev = under(spec, "/dev");
  if (int err = mkdirs(dev)) return {LaunchStep::kMountDev, err};
  if (::mount("tmpfs", dev.c_str(), "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755") != 0)
    return {LaunchStep::kMountDev, errno};
  for (const char* node : {"null", "zero", "full", "random", "urandom"}) {
    if (Failure f = bind(std::string("/dev/") + node, dev + "/" + node, false); f.failed())
      return {LaunchStep::kMountDev, f.error};
  }
  const std::pair<const char*, const char*> links[] = {
      {"/fd", "/proc/self/fd"}, {"/stdin", "/proc/self/fd/0"}, {"/stdout", "/proc/self/fd/1"},
      {"/stderr", "/proc/self/fd/2"}, {"/ptmx", "pts/ptmx"}};
  for (const auto& [name, target] : links) {
    if (::symlink(target, (dev + name).c_str()) != 0) return {LaunchStep::kMountDev, errno};
  }
  const std::string shm = dev + "/shm";
  if (int err = mkdirs(shm)) return {LaunchStep::kMountDev, err};
  const std::string opts = "size=" + std::to_string(spec.isolation.tmp_bytes) + ",mode=1777";
  if (::mount("tmpfs", shm.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) != 0)
    return {LaunchStep::kMountTmp, errno};
  // /dev itself read-only from now on: the cell may write the device nodes, not add any.
  if (::mount(nullptr, dev.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC,
              nullptr) != 0)
    return {LaunchStep::kMountRemountRo, errno};
  return {};
}

}  // namespace

Failure build_root(const SpawnSpec& spec) noexcept {
  try {
    const Isolation& iso = spec.isolation;
    const std::string& root = iso.mountpoint;
    // Nothing we mount may propagate back to the host (shared subtrees, mount_namespaces(7)).
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0)
      return {LaunchStep::kMountPrivate, errno};
    if (::mount("tmpfs", root.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0755") != 0)
      return {LaunchStep::kMountRootTmpfs, errno};
    for (const char* dir : {"/proc", "/tmp", "/etc"}) {
      if (int err = mkdirs(under(spec, dir))) return {LaunchStep::kMountRootTmpfs, err};
    }
    for (const auto& [path, target] : iso.symlinks) {
      if (::symlink(target.c_str(), under(spec, path).c_str()) != 0 && errno != EEXIST)
        return {LaunchStep::kMountRootTmpfs, errno};
    }
    if (Failure f = write_etc(spec); f.failed()) return f;
    // /tmp first: binds below it (a workdir under /tmp, as a default Sandbox root is) must
    // land on top of this tmpfs, not under it.
    const std::string tmp_opts = "size=" + std::to_string(iso.tmp_bytes) + ",mode=1777";
    if (::mount("tmpfs", under(spec, "/tmp").c_str(), "tmpfs", MS_NOSUID | MS_NODEV, tmp_opts.c_str()) != 0)
      return {LaunchStep::kMountTmp, errno};
    for (const auto& path : iso.readonly) {
      if (Failure f = bind(path, under(spec, path), true); f.failed()) return f;
    }
    if (Failure f = bind(spec.workdir, under(spec, spec.workdir), false); f.failed()) return f;
    if (Failure f = make_dev(spec); f.failed()) return f;
    // The root tmpfs itself read-only: no new files next to /usr or in /etc.
    if (::mount(nullptr, root.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV,
                nullptr) != 0)
      return {LaunchStep::kMountRemountRo, errno};
    return {};
  } catch (...) {
    return {LaunchStep::kMountRootTmpfs, ENOMEM};
  }
}

Failure enter_root(const SpawnSpec&) noexcept {
  // The launcher cloned us with the new root as our working directory: no host path is
  // walked here (with the session's host id, we could not search a root-only directory).
  // Only our pid namespace's processes are in this /proc.
  if (::mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0)
    return {LaunchStep::kMountProc, errno};
  // pivot_root(".", "."): the old root ends up stacked on the new one and is detached at
  // once, without needing a directory for it (pivot_root(2), NOTES).
  if (::syscall(SYS_pivot_root, ".", ".") == 0) {
    if (::umount2(".", MNT_DETACH) != 0) return {LaunchStep::kPivotRoot, errno};
    if (::chdir("/") != 0) return {LaunchStep::kPivotRoot, errno};
    return {};
  }
  if (errno != EINVAL) return {LaunchStep::kPivotRoot, errno};
  // EINVAL: the host's "/" is itself stacked on the initramfs (switch_root moved it there)
  // and the sandbox's copy of it is locked (mount_namespaces(7)), so neither pivot_root nor
  // MS_MOVE can work. chroot into the new root instead, as runc's no-pivot mode does: the
  // host tree stays mounted underneath, unreachable by any path; leaving a chroot takes
  // chroot() or a directory descriptor from outside, and the worker has neither (no
  // CAP_SYS_CHROOT, chroot refused by seccomp, every inherited descriptor closed).
  if (::chroot(".") != 0) return {LaunchStep::kPivotRoot, errno};
  if (::chdir("/") != 0) return {LaunchStep::kPivotRoot, errno};
  return {};
}

}  // namespace sandbox_exec::mount
