#include "supervisor/disk_usage.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <set>
#include <utility>

#include "common/file_io.h"
#include "common/numbers.h"
#include "common/process.h"

namespace sandbox_exec {

namespace {

// At most this many directory descriptors are held during a walk; deeper levels are
// reopened from the nearest open ancestor when they are needed again (a 2000-deep tree
// must not exhaust the backend's descriptors).
constexpr std::size_t kMaxOpenDirs = 64;

struct Child {
  std::string name;
  ino_t ino;
};

struct Frame {
  std::string name;  // in its parent
  ino_t ino = 0;
  int fd = -1;
  std::vector<Child> children;  // subdirectories still to enter
  std::size_t next = 0;
};

class Walk {
 public:
  Walk(std::size_t max_entries) : max_(max_entries) {}
  ~Walk() {
    for (Frame& f : stack_)
      if (f.fd >= 0) ::close(f.fd);
  }

  std::optional<uint64_t> run(const std::string& path) {
    const int fd = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return std::nullopt;
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      return std::nullopt;
    }
    dev_ = st.st_dev;
    total_ = static_cast<uint64_t>(st.st_blocks) * 512;
    entries_ = 1;
    stack_.push_back(Frame{"", st.st_ino, fd, {}, 0});
    open_ = 1;
    if (!read_dir(stack_.back())) return UINT64_MAX;
    while (!stack_.empty()) {
      Frame& top = stack_.back();
      if (top.next == top.children.size()) {
        if (top.fd >= 0) {
          ::close(top.fd);
          --open_;
        }
        stack_.pop_back();
        continue;
      }
      const Child child = top.children[top.next++];
      const int parent = ensure_open(stack_.size() - 1);
      if (parent < 0) {
        // The directory was moved or swapped since it was read: what is left of it is
        // not reachable from the workdir by the path the walk knows.
        stack_.back().next = stack_.back().children.size();
        continue;
      }
      const int cfd = open_verified(parent, child.name, child.ino);
      if (cfd < 0) continue;  // swapped for a symlink or another directory: not entered
      stack_.push_back(Frame{child.name, child.ino, cfd, {}, 0});
      ++open_;
      trim();
      if (!read_dir(stack_.back())) return UINT64_MAX;
    }
    return total_;
  }

 private:
  // Opens `name` under `parent` only if it is still the directory fstatat saw: no symlink
  // is followed (O_NOFOLLOW), and a directory swapped in under the same name (another
  // inode, or another device) is refused.
  int open_verified(int parent, const std::string& name, ino_t ino) const {
    const int fd = ::openat(parent, name.c_str(), O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (fd < 0) return -1;
    struct stat st {};
    if (::fstat(fd, &st) != 0 || st.st_dev != dev_ || st.st_ino != ino) {
      ::close(fd);
      return -1;
    }
    return fd;
  }

  // The descriptor of stack_[i], reopened from its nearest open ancestor when it was
  // closed to stay under kMaxOpenDirs (each step verified like the first time).
  int ensure_open(std::size_t i) {
    if (stack_[i].fd >= 0) return stack_[i].fd;
    std::size_t j = i;
    while (stack_[j].fd < 0) --j;  // stack_[0], the workdir, is never closed
    for (std::size_t k = j + 1; k <= i; ++k) {
      stack_[k].fd = open_verified(stack_[k - 1].fd, stack_[k].name, stack_[k].ino);
      if (stack_[k].fd < 0) return -1;
      ++open_;
    }
    const int fd = stack_[i].fd;
    trim(i);
    return fd;
  }

  // Closes the shallowest open directories (never the workdir, never stack_[keep]) until
  // at most kMaxOpenDirs are open.
  void trim(std::size_t keep = SIZE_MAX) {
    if (keep == SIZE_MAX) keep = stack_.size() - 1;
    for (std::size_t k = 1; open_ > kMaxOpenDirs && k < stack_.size(); ++k) {
      if (k == keep || stack_[k].fd < 0) continue;
      ::close(stack_[k].fd);
      stack_[k].fd = -1;
      --open_;
    }
  }

  // Counts the entries of one directory and lists its subdirectories; false once the
  // walk has seen more than max_ entries.
  bool read_dir(Frame& frame) {
    const int dup = ::fcntl(frame.fd, F_DUPFD_CLOEXEC, 0);
    if (dup < 0) return true;
    DIR* dir = ::fdopendir(dup);
    if (dir == nullptr) {
      ::close(dup);
      return true;
    }
    bool within = true;
    while (dirent* entry = ::readdir(dir)) {
      const char* name = entry->d_name;
      if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) continue;
      if (++entries_ > max_) {
        within = false;  // a lower bound is enough to say "over"
        break;
      }
      struct stat st {};
      if (::fstatat(frame.fd, name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;
      if (st.st_dev != dev_) continue;  // another filesystem mounted here: not the workdir's
      if (S_ISDIR(st.st_mode)) {
        frame.children.push_back(Child{name, st.st_ino});
      } else if (st.st_nlink > 1 && !seen_.insert({st.st_dev, st.st_ino}).second) {
        continue;  // a hard link already counted
      }
      total_ += static_cast<uint64_t>(st.st_blocks) * 512;
    }
    ::closedir(dir);
    return within;
  }

  std::size_t max_;
  dev_t dev_ = 0;
  uint64_t total_ = 0;
  std::size_t entries_ = 0;
  std::size_t open_ = 0;
  std::vector<Frame> stack_;
  std::set<std::pair<dev_t, ino_t>> seen_;
};

constexpr std::size_t kMaxPids = 100000;

void read_pids(const char* file, std::vector<pid_t>& out) {
  numbers::append_all(file_io::read_file(file), out, kMaxPids);
}

}  // namespace

std::optional<uint64_t> disk_usage(const std::string& path, std::size_t max_entries) noexcept {
  try {
    Walk walk(max_entries);
    return walk.run(path);
  } catch (...) {
    return std::nullopt;
  }
}

std::vector<pid_t> session_pids(const std::vector<std::string>& cgroup_dirs, pid_t root_pid) noexcept {
  std::vector<pid_t> out;
  try {
    // The cgroups first: every process of the session is in them, however it was started
    // and however deep its ancestry (the session cannot write the cgroup tree).
    std::vector<std::string> groups(cgroup_dirs.begin(), cgroup_dirs.end());
    for (std::size_t i = 0; i < groups.size() && i < 4096; ++i) {
      read_pids((groups[i] + "/cgroup.procs").c_str(), out);
      if (DIR* d = ::opendir(groups[i].c_str())) {
        while (dirent* e = ::readdir(d))
          if (e->d_type == DT_DIR && e->d_name[0] != '.') groups.push_back(groups[i] + "/" + e->d_name);
        ::closedir(d);
      }
    }
    if (!cgroup_dirs.empty()) {
      std::set<pid_t> unique(out.begin(), out.end());
      return {unique.begin(), unique.end()};
    }
    if (root_pid <= 0) return out;
    // No cgroup: the descendants of the session's init, breadth first (no depth limit).
    std::set<pid_t> seen{root_pid};
    out.push_back(root_pid);
    for (std::size_t i = 0; i < out.size() && out.size() < kMaxPids; ++i) {
      char path[64];
      std::snprintf(path, sizeof path, "/proc/%d/task", out[i]);
      DIR* tasks = ::opendir(path);
      if (tasks == nullptr) continue;
      while (dirent* task = ::readdir(tasks)) {
        if (task->d_name[0] == '.') continue;
        std::vector<pid_t> found;
        const auto tid = numbers::parse<pid_t>(task->d_name);
        if (tid) (void)process::append_children(out[i], *tid, found);
        for (pid_t child : found)
          if (seen.insert(child).second) out.push_back(child);
      }
      ::closedir(tasks);
    }
  } catch (...) {
  }
  return out;
}

uint64_t deleted_open_bytes(const std::vector<pid_t>& pids, dev_t device) noexcept {
  try {
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

std::optional<uint64_t> workdir_usage(const std::string& path, const std::vector<pid_t>& pids) noexcept {
  auto walked = disk_usage(path);
  if (!walked || *walked == UINT64_MAX || pids.empty()) return walked;
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) return walked;
  return *walked + deleted_open_bytes(pids, st.st_dev);
}

}  // namespace sandbox_exec
