#include "disk_usage.h"

#include <dirent.h>
#include <ftw.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <vector>

#include <set>
#include <utility>

namespace sandbox_exec {

namespace {
// nftw takes a plain function: the walk's state lives here, one walk per thread.
thread_local uint64_t t_total = 0;
thread_local std::size_t t_entries = 0;
thread_local std::size_t t_max = 0;
thread_local std::set<std::pair<dev_t, ino_t>>* t_seen = nullptr;

int visit(const char*, const struct stat* st, int type, FTW*) {
  if (++t_entries > t_max) return 1;  // stop: a lower bound is enough to say "over"
  if (type == FTW_F && st->st_nlink > 1 && !t_seen->insert({st->st_dev, st->st_ino}).second) return 0;
  if (type == FTW_F || type == FTW_D || type == FTW_SL)
    t_total += static_cast<uint64_t>(st->st_blocks) * 512;
  return 0;
}
}  // namespace

std::optional<uint64_t> disk_usage(const std::string& path, std::size_t max_entries) noexcept {
  try {
    std::set<std::pair<dev_t, ino_t>> seen;
    t_total = 0;
    t_entries = 0;
    t_max = max_entries;
    t_seen = &seen;
    const int rc = ::nftw(path.c_str(), visit, 32, FTW_PHYS | FTW_MOUNT);
    t_seen = nullptr;
    if (rc < 0) return std::nullopt;
    if (t_entries > t_max) return UINT64_MAX;
    return t_total;
  } catch (...) {
    return std::nullopt;
  }
}

}  // namespace sandbox_exec

namespace sandbox_exec {

namespace {
void collect_pids(pid_t pid, std::vector<pid_t>& out, int depth) {
  if (depth > 64 || out.size() > 100000) return;
  out.push_back(pid);
  char path[64];
  std::snprintf(path, sizeof path, "/proc/%d/task", pid);
  DIR* tasks = ::opendir(path);
  if (tasks == nullptr) return;
  while (dirent* task = ::readdir(tasks)) {
    if (task->d_name[0] == '.') continue;
    char children[320];
    std::snprintf(children, sizeof children, "/proc/%d/task/%s/children", pid, task->d_name);
    if (FILE* f = std::fopen(children, "re")) {
      int child;
      while (std::fscanf(f, "%d", &child) == 1) collect_pids(child, out, depth + 1);
      std::fclose(f);
    }
  }
  ::closedir(tasks);
}
}  // namespace

uint64_t deleted_open_bytes(pid_t root_pid, dev_t device) noexcept {
  try {
    std::vector<pid_t> pids;
    collect_pids(root_pid, pids, 0);
    std::set<std::pair<dev_t, ino_t>> seen;
    uint64_t total = 0;
    for (pid_t pid : pids) {
      char dir_path[64];
      std::snprintf(dir_path, sizeof dir_path, "/proc/%d/fd", pid);
      DIR* fds = ::opendir(dir_path);
      if (fds == nullptr) continue;
      while (dirent* entry = ::readdir(fds)) {
        if (entry->d_name[0] == '.') continue;
        char link[4096];
        const ssize_t n = ::readlinkat(::dirfd(fds), entry->d_name, link, sizeof link - 1);
        if (n <= 10) continue;
        link[n] = '\0';
        if (std::strcmp(link + n - 10, " (deleted)") != 0) continue;
        struct stat st {};
        if (::fstatat(::dirfd(fds), entry->d_name, &st, 0) != 0) continue;  // follows the fd
        if (!S_ISREG(st.st_mode) || st.st_dev != device || st.st_nlink != 0) continue;
        if (seen.insert({st.st_dev, st.st_ino}).second) total += static_cast<uint64_t>(st.st_blocks) * 512;
      }
      ::closedir(fds);
    }
    return total;
  } catch (...) {
    return 0;
  }
}

std::optional<uint64_t> workdir_usage(const std::string& path, pid_t session_root) noexcept {
  auto walked = disk_usage(path);
  if (!walked || *walked == UINT64_MAX || session_root <= 0) return walked;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return walked;
  return *walked + deleted_open_bytes(session_root, st.st_dev);
}

}  // namespace sandbox_exec
