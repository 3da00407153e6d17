// Tests of the disk watchdog's measures (disk_usage.h): the walk by descriptor (blocks,
// hard links once, symlinks not followed, the entry bound, a 3000-deep tree under a small
// descriptor limit) and its resistance to a directory swapped for a symlink mid-walk
// (renameat2 RENAME_EXCHANGE in a loop), with the old path-based walk (nftw) as the
// control that does follow the swap; and the session's processes found without a depth
// limit (a 100-deep process chain holding an unlinked file at its end).
#include "supervisor/disk_usage.h"

#include <fcntl.h>
#include <ftw.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

namespace sandbox_exec {
namespace {

namespace fs = std::filesystem;
constexpr uint64_t MiB = 1 << 20;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "disk_usage_test-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) std::abort();
    path_ = tmpl;
  }
  ~TempDir() {
    // rm walks any depth (fs::remove_all meets PATH_MAX in the 3000-deep tree).
    const std::string cmd = "rm -rf --one-file-system -- '" + path_.string() + "'";
    if (std::system(cmd.c_str()) != 0) std::fprintf(stderr, "could not remove %s\n", path_.c_str());
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// A file of `bytes` real (allocated) bytes.
void write_file(const fs::path& path, uint64_t bytes) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0) << path;
  std::string chunk(1 << 16, 'x');
  for (uint64_t done = 0; done < bytes; done += chunk.size())
    ASSERT_EQ(::write(fd, chunk.data(), chunk.size()), static_cast<ssize_t>(chunk.size()));
  ::close(fd);
}

TEST(DiskUsage, CountsBlocksOnceAndFollowsNoSymlink) {
  TempDir tmp;
  TempDir outside;
  fs::create_directories(tmp.path() / "a" / "b");
  write_file(tmp.path() / "a" / "b" / "f", 2 * MiB);
  fs::create_hard_link(tmp.path() / "a" / "b" / "f", tmp.path() / "a" / "hard");
  write_file(outside.path() / "big", 8 * MiB);
  fs::create_directory_symlink(outside.path(), tmp.path() / "link");
  const auto used = disk_usage(tmp.path());
  ASSERT_TRUE(used.has_value());
  EXPECT_GE(*used, 2 * MiB);
  EXPECT_LT(*used, 3 * MiB);  // the hard link once, the symlinked 8 MiB not at all
}

TEST(DiskUsage, TooManyEntriesCountsAsUnlimited) {
  TempDir tmp;
  for (int i = 0; i < 50; ++i) write_file(tmp.path() / ("f" + std::to_string(i)), 0);
  EXPECT_EQ(disk_usage(tmp.path(), 20), UINT64_MAX);
  EXPECT_NE(disk_usage(tmp.path(), 1000), UINT64_MAX);
  EXPECT_FALSE(disk_usage((tmp.path() / "missing").string()).has_value());
}

TEST(DiskUsage, DeepTreeUnderASmallDescriptorLimit) {
  TempDir tmp;
  // 3000 levels with 200 descriptors: the walk keeps at most 64 directories open and
  // reopens the rest by name (verified) when it comes back to them. Built by descriptor:
  // the deepest paths are longer than PATH_MAX.
  int fd = ::open(tmp.path().c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ASSERT_GE(fd, 0);
  const std::string chunk(1 << 16, 'x');
  auto put_file = [&](int dir, const char* name) {
    const int f = ::openat(dir, name, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(f, 0);
    for (int i = 0; i < 16; ++i) ASSERT_EQ(::write(f, chunk.data(), chunk.size()), static_cast<ssize_t>(chunk.size()));
    ::close(f);
  };
  int files = 0;
  for (int i = 0; i < 3000; ++i) {
    ASSERT_EQ(::mkdirat(fd, "d", 0755), 0) << i;
    if (i % 1000 == 500) {
      // A file here and a side directory the walk only reaches after the deep subtree.
      put_file(fd, "f");
      ASSERT_EQ(::mkdirat(fd, "z-side", 0755), 0);
      const int side = ::openat(fd, "z-side", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
      put_file(side, "g");
      ::close(side);
      files += 2;
    }
    const int next = ::openat(fd, "d", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    ASSERT_GE(next, 0);
    ::close(fd);
    fd = next;
  }
  put_file(fd, "bottom");
  ++files;
  ::close(fd);
  rlimit old{};
  ASSERT_EQ(::getrlimit(RLIMIT_NOFILE, &old), 0);
  rlimit low = old;
  low.rlim_cur = 200;
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &low), 0);
  const auto used = disk_usage(tmp.path());
  ASSERT_EQ(::setrlimit(RLIMIT_NOFILE, &old), 0);
  ASSERT_TRUE(used.has_value());
  EXPECT_NE(*used, UINT64_MAX);
  EXPECT_GE(*used, files * MiB);
  EXPECT_LT(*used, files * MiB + 3010 * 8 * 1024);
}

// The control: the old walk, nftw by path (lstat, then opendir of the path).
thread_local uint64_t t_total = 0;
int path_visit(const char*, const struct stat* st, int type, FTW*) {
  if (type == FTW_F || type == FTW_D || type == FTW_SL) t_total += static_cast<uint64_t>(st->st_blocks) * 512;
  return 0;
}
uint64_t path_walk(const fs::path& root) {
  t_total = 0;
  ::nftw(root.c_str(), path_visit, 32, FTW_PHYS | FTW_MOUNT);
  return t_total;
}

// A cell's leftover process: swaps the directories a<i> with symlinks b<i> to a host
// directory the cell cannot read, as fast as it can.
struct Swapper {
  Swapper(const fs::path& work, int pairs) {
    thread = std::thread([this, work, pairs] {
      while (!stop.load(std::memory_order_relaxed)) {
        for (int i = 0; i < pairs; ++i) {
          const std::string a = (work / ("a" + std::to_string(i))).string();
          const std::string b = (work / ("b" + std::to_string(i))).string();
          ::renameat2(AT_FDCWD, a.c_str(), AT_FDCWD, b.c_str(), RENAME_EXCHANGE);
        }
      }
    });
  }
  ~Swapper() {
    stop = true;
    thread.join();
  }
  std::atomic<bool> stop{false};
  std::thread thread;
};

TEST(DiskUsage, DirectorySwappedForASymlinkMidWalkIsNotFollowed) {
  TempDir work;
  TempDir host;  // stands for a root-only host directory
  write_file(host.path() / "secret-sized", 64 * MiB);
  constexpr int kPairs = 16;
  for (int i = 0; i < kPairs; ++i) {
    fs::create_directory(work.path() / ("a" + std::to_string(i)));
    fs::create_directory_symlink(host.path(), work.path() / ("b" + std::to_string(i)));
  }
  Swapper swapper(work.path(), kPairs);
  // Control: the path-based walk is led into the host directory at least once.
  bool control_leaked = false;
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  int control_tries = 0;
  while (!control_leaked && std::chrono::steady_clock::now() < until) {
    ++control_tries;
    control_leaked = path_walk(work.path()) >= 64 * MiB;
  }
  ASSERT_TRUE(control_leaked) << "the control never followed the swap in " << control_tries << " walks";
  // The walk by descriptor never is, in many more walks than the control needed.
  const int tries = std::max(2000, 4 * control_tries);
  for (int i = 0; i < tries; ++i) {
    const auto used = disk_usage(work.path());
    ASSERT_TRUE(used.has_value());
    ASSERT_LT(*used, 64 * MiB) << "walk " << i << " counted the host directory's file";
  }
  std::printf("control leaked after %d walks; %d walks by descriptor did not\n", control_tries, tries);
}

// A chain of `depth` processes, each the child of the one before; the last one creates
// `file`, unlinks it, writes `bytes` to it and waits. Returns the first pid, with the
// pipe fd on which the last one reports it is ready.
pid_t process_chain(int depth, const fs::path& file, uint64_t bytes) {
  int ready[2];
  if (::pipe2(ready, O_CLOEXEC) != 0) std::abort();
  const std::string path = file.string();
  const std::string chunk(1 << 16, 'x');
  const pid_t first = ::fork();
  if (first == 0) {
    ::setpgid(0, 0);
    ::close(ready[0]);
    for (int level = 1; level < depth; ++level) {
      const pid_t child = ::fork();
      if (child < 0) ::_exit(1);
      if (child > 0) {
        for (;;) ::pause();
      }
    }
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL, 0600);
    if (fd < 0) ::_exit(2);
    ::unlink(path.c_str());
    for (uint64_t done = 0; done < bytes; done += chunk.size())
      if (::write(fd, chunk.data(), chunk.size()) < 0) ::_exit(3);
    (void)::write(ready[1], "r", 1);
    for (;;) ::pause();
  }
  ::close(ready[1]);
  char c;
  if (::read(ready[0], &c, 1) != 1) std::abort();
  ::close(ready[0]);
  return first;
}

TEST(DiskUsage, SessionProcessesAreFoundAtAnyDepth) {
  TempDir work;
  ASSERT_EQ(::prctl(PR_SET_CHILD_SUBREAPER, 1), 0);  // so the chain's orphans are ours to reap
  const pid_t first = process_chain(100, work.path() / "hidden", 4 * MiB);
  const std::vector<pid_t> pids = session_pids({}, first);
  // Control: the chain is deeper than the old walk's limit of 64 levels.
  EXPECT_GE(pids.size(), 100u);
  const auto used = workdir_usage(work.path(), pids);
  ::kill(-first, SIGKILL);
  while (::waitpid(-1, nullptr, 0) > 0) {
  }
  ASSERT_TRUE(used.has_value());
  EXPECT_GE(*used, 4 * MiB) << "the unlinked file held at depth 100 was not counted";
  // Without the process list, the walk alone does not see it.
  EXPECT_LT(*disk_usage(work.path()), MiB);
}

TEST(DiskUsage, SessionProcessesFromCgroupProcs) {
  TempDir groups;  // stands for the session's cgroup directories (cgroup.procs files)
  fs::create_directories(groups.path() / "memory" / "child");
  {
    FILE* f = std::fopen((groups.path() / "memory" / "cgroup.procs").c_str(), "w");
    std::fprintf(f, "%d\n%d\n", ::getpid(), 1);
    std::fclose(f);
    f = std::fopen((groups.path() / "memory" / "child" / "cgroup.procs").c_str(), "w");
    std::fprintf(f, "%d\n", 2);
    std::fclose(f);
  }
  const std::vector<pid_t> pids = session_pids({(groups.path() / "memory").string()}, 424242);
  EXPECT_EQ(pids, (std::vector<pid_t>{1, 2, ::getpid()}));
}

}  // namespace
}  // namespace sandbox_exec
