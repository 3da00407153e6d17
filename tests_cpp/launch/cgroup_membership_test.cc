// cgroup_membership: joining a session's groups and the one cleanup routine, on a tree of
// plain directories and files (cgroupfs semantics where they matter are in cgroup_test).
#include "launch/cgroup_membership.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include <gtest/gtest.h>

namespace sandbox_exec {
namespace {

class Membership : public ::testing::Test {
 protected:
  void SetUp() override {
    char templ[] = "/tmp/cgroup_membership_test-XXXXXX";
    ASSERT_NE(::mkdtemp(templ), nullptr);
    root_ = templ;
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  void dir(const std::string& rel) { std::filesystem::create_directories(root_ + rel); }
  void file(const std::string& rel) { std::ofstream(root_ + rel).flush(); }
  bool exists(const std::string& rel) const { return std::filesystem::exists(root_ + rel); }
  std::string read(const std::string& rel) const {
    std::ifstream f(root_ + rel);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }
  std::string root_;
};

TEST(BackendGroupName, OnlyOurPatternMatches) {
  EXPECT_TRUE(cgroup::is_backend_group("sandbox_exec-4242"));
  EXPECT_TRUE(cgroup::is_backend_group("sandbox_exec-4242-00c0ffee"));
  EXPECT_FALSE(cgroup::is_backend_group("sandbox_exec"));  // the shared parent
  EXPECT_FALSE(cgroup::is_backend_group("sandbox_exec-"));
  EXPECT_FALSE(cgroup::is_backend_group("sandbox_exec-abc"));  // no pid
  EXPECT_FALSE(cgroup::is_backend_group("sandbox_exec-42-"));  // no hex after the dash
  EXPECT_FALSE(cgroup::is_backend_group("sandbox_exec-42-xyz"));
  EXPECT_FALSE(cgroup::is_backend_group("sandbox_exec-42-ab/c"));
  EXPECT_FALSE(cgroup::is_backend_group("user.slice"));
}

// rmdir(2) of a directory that holds only files, as cgroupfs does for a group's knobs.
int tree_rmdir(const char* path) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(path, ec)) {
    if (entry.is_directory()) return ENOTEMPTY;
  }
  if (ec) return ENOENT;
  std::filesystem::remove_all(path, ec);
  return ec ? EIO : 0;
}

TEST_F(Membership, CleanupRemovesTheLeafAndAnEmptyBackendGroupOnly) {
  dir("/shared/sandbox_exec-7-ab/s1");
  dir("/shared/sandbox_exec-7-ab/s2");
  cgroup::remove_session_groups({root_ + "/shared/sandbox_exec-7-ab/s1"}, &tree_rmdir);
  EXPECT_FALSE(exists("/shared/sandbox_exec-7-ab/s1"));
  EXPECT_TRUE(exists("/shared/sandbox_exec-7-ab/s2"));  // another session keeps the parent
  cgroup::remove_session_groups({root_ + "/shared/sandbox_exec-7-ab/s2"}, &tree_rmdir);
  EXPECT_FALSE(exists("/shared/sandbox_exec-7-ab"));
  EXPECT_TRUE(exists("/shared"));  // never above the per-backend group
}

TEST_F(Membership, CleanupNeverRemovesAParentThatIsNotOurs) {
  dir("/delegated/s1");
  cgroup::remove_session_groups({root_ + "/delegated/s1"}, &tree_rmdir);
  EXPECT_FALSE(exists("/delegated/s1"));
  EXPECT_TRUE(exists("/delegated"));
}

TEST_F(Membership, CleanupWaitsForABusyGroupThenGivesUpQuietly) {
  static int calls;
  calls = 0;
  auto busy_then_free = [](const char* path) -> int {
    if (++calls < 3) return EBUSY;
    return tree_rmdir(path);
  };
  dir("/sandbox_exec-1/s");
  cgroup::remove_session_groups({root_ + "/sandbox_exec-1/s"}, +busy_then_free);
  EXPECT_FALSE(exists("/sandbox_exec-1"));
  EXPECT_GE(calls, 3);
}

TEST_F(Membership, JoinWritesThePidToEveryGroup) {
  dir("/a");
  dir("/b");
  file("/a/cgroup.procs");
  file("/b/cgroup.procs");
  EXPECT_EQ(cgroup::join({root_ + "/a", root_ + "/b"}, 77), 0);
  EXPECT_EQ(read("/a/cgroup.procs"), "77");
  EXPECT_EQ(read("/b/cgroup.procs"), "77");
  EXPECT_EQ(cgroup::join({root_ + "/missing"}, 77), ENOENT);
}

TEST_F(Membership, JoinRefusesAPathTooLongForTheKernel) {
  EXPECT_EQ(cgroup::join({root_ + "/" + std::string(5000, 'x')}, 1), ENAMETOOLONG);
}

}  // namespace
}  // namespace sandbox_exec
