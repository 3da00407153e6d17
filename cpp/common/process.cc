#include "common/process.h"

#include <sys/prctl.h>

#include <cerrno>
#include <cstdio>

namespace sandbox_exec::process {

bool append_children(pid_t pid, pid_t tid, std::vector<pid_t>& out) {
  char path[96];
  std::snprintf(path, sizeof path, "/proc/%d/task/%d/children", static_cast<int>(pid), static_cast<int>(tid));
  FILE* f = std::fopen(path, "re");
  if (f == nullptr) return false;
  int child;
  while (std::fscanf(f, "%d", &child) == 1) out.push_back(static_cast<pid_t>(child));
  std::fclose(f);
  return true;
}

int set_no_new_privs() noexcept { return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ? errno : 0; }

}  // namespace sandbox_exec::process
