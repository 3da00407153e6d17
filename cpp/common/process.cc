#include "common/process.h"

#include <unistd.h>

#include "common/file_io.h"
#include "common/numbers.h"

#include <sys/prctl.h>

#include <cerrno>
#include <cstdio>

namespace sandbox_exec::process {

bool append_children(pid_t pid, pid_t tid, std::vector<pid_t>& out) {
  char path[96];
  std::snprintf(path, sizeof path, "/proc/%d/task/%d/children", static_cast<int>(pid), static_cast<int>(tid));
  if (::access(path, R_OK) != 0) return false;
  numbers::append_all(file_io::read_file(path), out);
  return true;
}

int set_no_new_privs() noexcept { return ::prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ? errno : 0; }

}  // namespace sandbox_exec::process
