// data_mounts: see data_mounts.h.
#include "launcher/data_mounts.h"

#include <fcntl.h>
#include <linux/openat2.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>
#include <utility>

#include "launcher/mount.h"

namespace sandbox_exec::data_mounts {

namespace {

// A descriptor that closes itself (the launcher's own small RAII; no exceptions here).
class Fd {
 public:
  explicit Fd(int fd = -1) noexcept : fd_(fd) {}
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  Fd& operator=(Fd&& other) noexcept {
    reset(other.fd_);
    other.fd_ = -1;
    return *this;
  }
  ~Fd() { reset(); }
  [[nodiscard]] int get() const noexcept { return fd_; }
  void reset(int fd = -1) noexcept {
    if (fd_ >= 0) ::close(fd_);
    fd_ = fd;
  }

 private:
  int fd_;
};

constexpr int kDirFlags = O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC;

// The host directory, not following any symlink on its path (the backend checked that the
// path, as given, holds none, under directories nobody else may change): openat2 where the
// kernel has it (5.6), else the last part only (O_NOFOLLOW).
int open_host_dir(const std::string& path) noexcept {
  open_how how{};
  how.flags = O_PATH | O_DIRECTORY | O_CLOEXEC;
  how.resolve = RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;
  long fd = ::syscall(SYS_openat2, AT_FDCWD, path.c_str(), &how, sizeof how);
  if (fd < 0 && errno == ENOSYS) fd = ::open(path.c_str(), kDirFlags);
  return static_cast<int>(fd);
}

// A new directory is owned like the directory it is made in (as root the launcher would
// otherwise own it, inside the sandbox user's workdir).
int own_like_parent(int parent, const char* name) noexcept {
  struct stat p {
  }, made{};
  if (::fstat(parent, &p) != 0 || ::fstatat(parent, name, &made, AT_SYMLINK_NOFOLLOW) != 0) return errno;
  if (made.st_uid == p.st_uid && made.st_gid == p.st_gid) return 0;
  return ::fchownat(parent, name, p.st_uid, p.st_gid, AT_SYMLINK_NOFOLLOW) == 0 ? 0 : errno;
}

// Opens the directory `rel` below `dir` part by part, never following a symlink, making a
// missing part. Sets *parent to the last part's parent and *name to the last part (a view
// into `rel`'s copy in `buffer`). Returns the directory's descriptor or -errno.
int open_mountpoint(int dir, const std::string& rel, std::string& buffer, Fd& parent, const char** name) {
  buffer = rel;  // parts are NUL-terminated in place
  Fd current(::fcntl(dir, F_DUPFD_CLOEXEC, 0));
  if (current.get() < 0) return -errno;
  char* part = buffer.data();
  for (;;) {
    char* slash = part;
    while (*slash != '\0' && *slash != '/') ++slash;
    const bool last = *slash == '\0';
    *slash = '\0';
    int next = ::openat(current.get(), part, kDirFlags);
    if (next < 0 && errno == ENOENT) {
      if (::mkdirat(current.get(), part, 0755) != 0 && errno != EEXIST) return -errno;
      if (int err = own_like_parent(current.get(), part)) return -err;
      next = ::openat(current.get(), part, kDirFlags);
    }
    if (next < 0) return -errno;  // ENOTDIR or ELOOP: a file or a symlink where a directory goes
    if (last) {
      parent = std::move(current);
      *name = part;
      return next;
    }
    current.reset(next);
    part = slash + 1;
  }
}

std::string fd_path(int fd) {
  char text[48];
  std::snprintf(text, sizeof text, "/proc/self/fd/%d", fd);
  return text;
}

// 0 or errno. May throw std::bad_alloc (bind_all catches it).
int bind_one(const DataMount& m, int workdir) {
  const Fd host(open_host_dir(m.host));
  if (host.get() < 0) return errno;
  struct stat host_st {};
  struct statvfs host_vfs {};
  if (::fstat(host.get(), &host_st) != 0 || ::fstatvfs(host.get(), &host_vfs) != 0) return errno;
  if (m.writable && (host_vfs.f_flag & ST_RDONLY)) return EROFS;  // asked writable, cannot be
  std::string buffer;
  Fd parent;
  const char* name = "";  // set by open_mountpoint
  const int target = open_mountpoint(workdir, m.path, buffer, parent, &name);
  if (target < 0) return -target;
  {
    const Fd owned_target(target);
    if (::mount(fd_path(host.get()).c_str(), fd_path(target).c_str(), nullptr, MS_BIND, nullptr) != 0) return errno;
  }
  // The mount's own root, looked up again by name below the same parent descriptor (the
  // descriptor we mounted on still names the directory underneath): it must be the host
  // directory, or the remount below would change something else.
  const Fd mounted(::openat(parent.get(), name, kDirFlags));
  if (mounted.get() < 0) return errno;
  struct stat seen {};
  if (::fstat(mounted.get(), &seen) != 0) return errno;
  if (seen.st_dev != host_st.st_dev || seen.st_ino != host_st.st_ino) return EXDEV;
  unsigned long flags = MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV | MS_NOEXEC | mount::locked_flags(host_vfs);
  if (!m.writable) flags |= MS_RDONLY;
  if (::mount(nullptr, fd_path(mounted.get()).c_str(), nullptr, flags, nullptr) != 0) return errno;
  return 0;
}

}  // namespace

StepFailure bind_all(const SpawnSpec& spec, const std::string& workdir_in_root) noexcept {
  if (spec.isolation.mounts.empty()) return {};
  try {
    const Fd workdir(::open(workdir_in_root.c_str(), kDirFlags));
    if (workdir.get() < 0) return {LaunchStep::kMountData, errno};
    for (const DataMount& m : spec.isolation.mounts) {
      if (int err = bind_one(m, workdir.get())) return {LaunchStep::kMountData, err};
    }
    return {};
  } catch (...) {
    return {LaunchStep::kMountData, ENOMEM};
  }
}

}  // namespace sandbox_exec::data_mounts
