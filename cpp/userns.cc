#include "userns.h"

#include <fcntl.h>
#include <grp.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace sandbox_exec::userns {

namespace {
int write_file(const char* path, const char* text) noexcept {
  const int fd = ::open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  const auto len = static_cast<ssize_t>(std::strlen(text));
  const int err = ::write(fd, text, static_cast<size_t>(len)) == len ? 0 : errno;
  ::close(fd);
  return err;
}

int write_for(const char* pid_part, unsigned inside_uid, unsigned inside_gid, unsigned outside_uid,
              unsigned outside_gid) noexcept {
  char path[64], line[64];
  std::snprintf(path, sizeof path, "/proc/%s/uid_map", pid_part);
  std::snprintf(line, sizeof line, "%u %u 1\n", inside_uid, outside_uid);
  if (int err = write_file(path, line)) return err;
  // setgroups must be denied before an unprivileged gid_map write, and a sandbox has no use
  // for supplementary groups: deny it always (CVE-2014-8989).
  std::snprintf(path, sizeof path, "/proc/%s/setgroups", pid_part);
  if (int err = write_file(path, "deny")) return err;
  std::snprintf(path, sizeof path, "/proc/%s/gid_map", pid_part);
  std::snprintf(line, sizeof line, "%u %u 1\n", inside_gid, outside_gid);
  return write_file(path, line);
}
}  // namespace

int write_maps(pid_t pid, unsigned inside_uid, unsigned inside_gid, unsigned outside_uid,
               unsigned outside_gid) noexcept {
  char pid_part[16];
  std::snprintf(pid_part, sizeof pid_part, "%d", pid);
  return write_for(pid_part, inside_uid, inside_gid, outside_uid, outside_gid);
}

int self_map(unsigned outer_uid, unsigned outer_gid) noexcept {
  return write_for("self", 0, 0, outer_uid, outer_gid);
}

int become(unsigned uid, unsigned gid) noexcept {
  if (::setresgid(gid, gid, gid) != 0) return errno;
  if (::setresuid(uid, uid, uid) != 0) return errno;
  return 0;
}

}  // namespace sandbox_exec::userns
