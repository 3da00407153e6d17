#include "launcher/userns.h"

#include "common/file_io.h"

#include <fcntl.h>
#include <grp.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace sandbox_exec::userns {

namespace {
int write_for(const char* pid_part, unsigned inside_uid, unsigned inside_gid, unsigned outside_uid,
              unsigned outside_gid) noexcept {
  char path[64], line[64];
  std::snprintf(path, sizeof path, "/proc/%s/uid_map", pid_part);
  std::snprintf(line, sizeof line, "%u %u 1\n", inside_uid, outside_uid);
  if (int err = file_io::write_file(path, line)) return err;
  // setgroups must be denied before an unprivileged gid_map write, and a sandbox has no use
  // for supplementary groups: deny it always (CVE-2014-8989).
  std::snprintf(path, sizeof path, "/proc/%s/setgroups", pid_part);
  if (int err = file_io::write_file(path, "deny")) return err;
  std::snprintf(path, sizeof path, "/proc/%s/gid_map", pid_part);
  std::snprintf(line, sizeof line, "%u %u 1\n", inside_gid, outside_gid);
  return file_io::write_file(path, line);
}
}  // namespace

StepFailure write_maps(pid_t pid, unsigned inside_uid, unsigned inside_gid, unsigned outside_uid,
                       unsigned outside_gid) noexcept {
  char pid_part[16];
  std::snprintf(pid_part, sizeof pid_part, "%d", pid);
  return step_result(LaunchStep::kIdMap, write_for(pid_part, inside_uid, inside_gid, outside_uid, outside_gid));
}

StepFailure self_map(unsigned outer_uid, unsigned outer_gid) noexcept {
  return step_result(LaunchStep::kOuterIdMap, write_for("self", 0, 0, outer_uid, outer_gid));
}

StepFailure become(unsigned uid, unsigned gid) noexcept {
  if (::setresgid(gid, gid, gid) != 0) return step_result(LaunchStep::kSetIds, errno);
  if (::setresuid(uid, uid, uid) != 0) return step_result(LaunchStep::kSetIds, errno);
  return {};
}

}  // namespace sandbox_exec::userns
