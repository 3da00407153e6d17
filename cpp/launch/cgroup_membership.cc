#include "launch/cgroup_membership.h"

#include <fcntl.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdio>
#include <string_view>

#include "common/file_io.h"

namespace sandbox_exec::cgroup {

namespace {

std::string parent_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos || slash == 0 ? std::string("/") : path.substr(0, slash);
}

std::string base_name(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos ? path : path.substr(slash + 1);
}

}  // namespace

bool is_backend_group(const std::string& name) {
  const std::string_view prefix = kBackendGroupPrefix;
  if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) return false;
  std::size_t i = prefix.size(), digits = 0, hex = 0;
  for (; i < name.size() && name[i] >= '0' && name[i] <= '9'; ++i) ++digits;
  if (digits == 0) return false;
  if (i == name.size()) return true;
  if (name[i++] != '-') return false;
  for (; i < name.size() && std::isxdigit(static_cast<unsigned char>(name[i])); ++i) ++hex;
  return hex > 0 && i == name.size();
}

int remove_dir_now(const char* path) noexcept { return ::rmdir(path) != 0 ? errno : 0; }

void remove_session_groups(const std::vector<std::string>& leaves, int (*remove_dir)(const char*)) noexcept {
  if (remove_dir == nullptr) remove_dir = &remove_dir_now;
  try {
    for (const auto& leaf : leaves) {
      // A group empties a moment after its last process is released, which on a loaded
      // machine (a session that had hundreds of processes) takes more than a few
      // milliseconds: up to about 3 s, polling more slowly as it goes.
      int err = remove_dir(leaf.c_str());
      for (int i = 0, delay_us = 1000; err == EBUSY && i < 60; ++i) {
        ::usleep(static_cast<useconds_t>(delay_us));
        delay_us = delay_us < 64000 ? delay_us * 2 : delay_us;
        err = remove_dir(leaf.c_str());
      }
      // The per-backend group once it holds no other session (EBUSY/ENOTEMPTY: it does).
      // Only it: the directory above (delegated or shared) is not ours to remove.
      const std::string parent = parent_of(leaf);
      if (is_backend_group(base_name(parent))) (void)remove_dir(parent.c_str());
    }
  } catch (...) {
  }
}

int join(const std::vector<std::string>& leaves, pid_t pid) noexcept {
  char text[24];
  const int len = std::snprintf(text, sizeof text, "%d", static_cast<int>(pid));
  for (const auto& dir : leaves) {
    char path[4096];
    if (std::snprintf(path, sizeof path, "%s/cgroup.procs", dir.c_str()) >= static_cast<int>(sizeof path))
      return ENAMETOOLONG;
    if (int err = file_io::write_file(path, std::string_view(text, static_cast<std::size_t>(len)))) return err;
  }
  return 0;
}

}  // namespace sandbox_exec::cgroup
