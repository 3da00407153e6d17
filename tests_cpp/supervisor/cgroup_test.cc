// Tests of the cgroup layout and cleanup (cgroup.h) against a directory tree standing in for
// cgroupfs: cgroup v2 root detection (v2-only host, hybrid host with an empty unified tree),
// the per-backend subtree and its controller-enabling writes (no-internal-processes rule),
// the v1 layout per controller, a delegated directory (SANDBOX_EXEC_CGROUP) that is never
// removed, a cleanup that removes only the groups it created (also when the launcher and the
// supervisor both run it), a failed creation that leaves nothing behind, and the CPU quota
// (v2 cpu.max; v1 cpu.cfs_period_us and cpu.cfs_quota_us, cpu and cpuacct apart or co-mounted).
//
// The stand-in differs from cgroupfs in two ways the code allows for: knob files are plain
// files (written with O_CREAT|O_TRUNC, so they hold exactly what was written), and rmdir of
// a group must unlink its knob files first (fake_rmdir below; cgroupfs does that itself).
#include "supervisor/cgroup.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "common/sys_error.h"

namespace sandbox_exec {
namespace {

// rmdir as cgroupfs does it: a group with child groups is busy; its knob files go with it.
int fake_rmdir(const char* path) {
  DIR* d = ::opendir(path);
  if (d == nullptr) return errno;
  std::vector<std::string> files;
  bool has_children = false;
  while (dirent* e = ::readdir(d)) {
    const std::string name = e->d_name;
    if (name == "." || name == "..") continue;
    struct stat st {};
    if (::lstat((std::string(path) + "/" + name).c_str(), &st) == 0 && S_ISDIR(st.st_mode)) has_children = true;
    files.push_back(name);
  }
  ::closedir(d);
  if (has_children) return EBUSY;
  for (const auto& f : files) ::unlink((std::string(path) + "/" + f).c_str());
  return ::rmdir(path) != 0 ? errno : 0;
}

class CgroupTree : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/cgroup_test.XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { (void)std::system(("rm -rf '" + root_ + "'").c_str()); }

  void dir(const std::string& rel) const { ASSERT_EQ(std::system(("mkdir -p '" + root_ + rel + "'").c_str()), 0); }
  void file(const std::string& rel, const std::string& text) const {
    dir(rel.substr(0, rel.rfind('/')));
    std::ofstream(root_ + rel) << text;
  }
  [[nodiscard]] std::string read(const std::string& rel) const {
    std::ifstream f(root_ + rel);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }
  [[nodiscard]] bool exists(const std::string& rel) const {
    struct stat st {};
    return ::stat((root_ + rel).c_str(), &st) == 0;
  }
  // Every directory under the tree, relative to it.
  [[nodiscard]] std::set<std::string> dirs() const {
    std::set<std::string> out;
    walk("", out);
    return out;
  }
  void walk(const std::string& rel, std::set<std::string>& out) const {
    DIR* d = ::opendir((root_ + rel).c_str());
    if (d == nullptr) return;
    while (dirent* e = ::readdir(d)) {
      const std::string name = e->d_name;
      if (name == "." || name == "..") continue;
      struct stat st {};
      if (::lstat((root_ + rel + "/" + name).c_str(), &st) == 0 && S_ISDIR(st.st_mode)) {
        out.insert(rel + "/" + name);
        walk(rel + "/" + name, out);
      }
    }
    ::closedir(d);
  }

  // A v2-only host: the root group lists every controller, enables none yet.
  void v2_host(const std::string& controllers = "cpuset cpu io memory hugetlb pids rdma misc") const {
    file("/cgroup.controllers", controllers + "\n");
    file("/cgroup.subtree_control", "");
    file("/cgroup.procs", "1\n");
  }
  [[nodiscard]] CgroupHost host(bool privileged, const std::string& self = "0::/user.slice/session-1.scope\n") const {
    CgroupHost h;
    h.root = root_;
    h.self_cgroup = self;
    h.privileged = privileged;
    h.tag = "4242-00c0ffee";
    h.remove_dir = &fake_rmdir;
    return h;
  }

  std::string root_;
};

TEST_F(CgroupTree, V2AsRootCreatesASubtreeWithControllersEnabled) {
  v2_host();
  const std::string slice = "/sandbox_exec", backend = slice + "/sandbox_exec-4242-00c0ffee", leaf = backend + "/s1";
  {
    Cgroups cg("s1", {uint64_t{128} << 20, 64}, host(true));
    EXPECT_EQ(cg.version(), "v2");
    ASSERT_EQ(cg.dirs(), std::vector<std::string>{root_ + leaf});
    EXPECT_EQ(cg.memory_dir(), root_ + leaf);
    EXPECT_EQ(cg.pids_dir(), root_ + leaf);
    // Every level enables the controllers for the next; only the leaf will hold processes.
    EXPECT_EQ(read("/cgroup.subtree_control"), "+memory +pids +cpu");
    EXPECT_EQ(read(slice + "/cgroup.subtree_control"), "+memory +pids +cpu");
    EXPECT_EQ(read(backend + "/cgroup.subtree_control"), "+memory +pids +cpu");
    EXPECT_FALSE(exists(leaf + "/cgroup.subtree_control"));
    EXPECT_EQ(read(leaf + "/memory.max"), std::to_string(uint64_t{128} << 20));
    EXPECT_EQ(read(leaf + "/pids.max"), "64");
    cg.remove();
  }
  // The session's group and the per-backend group go; the shared parent stays.
  EXPECT_EQ(dirs(), (std::set<std::string>{slice}));
}

TEST_F(CgroupTree, V2EnablesOnlyTheControllersTheHostHas) {
  v2_host("memory pids");
  Cgroups cg("s1", {std::nullopt, 10}, host(true));
  EXPECT_EQ(read("/cgroup.subtree_control"), "+memory +pids");
  EXPECT_EQ(read("/sandbox_exec/sandbox_exec-4242-00c0ffee/cgroup.subtree_control"), "+memory +pids");
}

TEST_F(CgroupTree, DetectOnV2ReportsTheControllersAndLeavesOnlyTheSharedParent) {
  v2_host();
  const CgroupSupport s = Cgroups::detect(host(true));
  EXPECT_EQ(s.version, "v2");
  EXPECT_TRUE(s.memory && s.pids && s.cpu) << s.detail;
  EXPECT_EQ(dirs(), (std::set<std::string>{"/sandbox_exec"}));
}

TEST_F(CgroupTree, HybridHostWithAnEmptyUnifiedTreeUsesV1PerController) {
  file("/unified/cgroup.controllers", "\n");  // this machine's layout: v2 mounted, no controllers
  for (const char* c : {"memory", "pids", "cpuacct"}) file(std::string("/") + c + "/cgroup.procs", "");
  dir("/memory/a/b");
  const std::string self = "9:name=systemd:/\n8:pids:/\n4:memory:/a/b\n2:cpuacct:/\n0::/\n";
  const auto before = dirs();
  {
    Cgroups cg("s1", {uint64_t{1} << 30, 32}, host(true, self));
    EXPECT_EQ(cg.version(), "v1");
    EXPECT_EQ(cg.dirs(), (std::vector<std::string>{root_ + "/memory/a/b/sandbox_exec-4242-00c0ffee/s1",
                                                   root_ + "/pids/sandbox_exec-4242-00c0ffee/s1",
                                                   root_ + "/cpuacct/sandbox_exec-4242-00c0ffee/s1"}));
    EXPECT_EQ(read("/memory/a/b/sandbox_exec-4242-00c0ffee/s1/memory.limit_in_bytes"), "1073741824");
    EXPECT_EQ(read("/pids/sandbox_exec-4242-00c0ffee/s1/pids.max"), "32");
    EXPECT_FALSE(exists("/unified/sandbox_exec"));
  }
  EXPECT_EQ(dirs(), before);  // the destructor removed exactly what it made
}

TEST_F(CgroupTree, ADelegatedDirectoryIsUsedAndNeverRemoved) {
  v2_host();
  file("/deleg/cgroup.controllers", "memory pids cpu\n");
  file("/deleg/cgroup.subtree_control", "");
  dir("/deleg/supervisor");              // where the backend itself lives (DelegateSubgroup=)
  dir("/deleg/sandbox_exec-999/other");  // another backend's session: not ours
  auto h = host(false);
  h.delegated = root_ + "/deleg";
  const auto before = dirs();
  {
    Cgroups a("s1", {uint64_t{64} << 20, 16}, h);
    Cgroups b("s2", {uint64_t{64} << 20, 16}, h);
    EXPECT_EQ(a.dirs(), std::vector<std::string>{root_ + "/deleg/sandbox_exec-4242-00c0ffee/s1"});
    EXPECT_EQ(read("/deleg/cgroup.subtree_control"), "+memory +pids +cpu");
    EXPECT_FALSE(exists("/sandbox_exec"));  // the delegated directory, not the root's subtree
    a.remove();
    EXPECT_TRUE(exists("/deleg/sandbox_exec-4242-00c0ffee/s2"));  // b's parent stays while b is there
    // The launcher runs the same cleanup after the supervisor did: nothing more goes.
    cgroup::remove_session_groups({root_ + "/deleg/sandbox_exec-4242-00c0ffee/s1"}, &fake_rmdir);
    EXPECT_TRUE(exists("/deleg/sandbox_exec-4242-00c0ffee/s2"));
  }
  EXPECT_EQ(dirs(), before);
  EXPECT_TRUE(exists("/deleg/cgroup.controllers"));
  // Even asked to clean a group directly inside it, the routine leaves the delegated
  // directory: only a per-backend group (sandbox_exec-<digits>) is removed as a parent.
  dir("/deleg/x");
  cgroup::remove_session_groups({root_ + "/deleg/x"}, &fake_rmdir);
  EXPECT_EQ(dirs(), before);
}

TEST_F(CgroupTree, ADelegatedDirectoryNamedLikeOursIsStillNotRemoved) {
  file("/sandbox_exec-7-ab/cgroup.controllers", "memory pids\n");
  auto h = host(false);
  h.delegated = root_ + "/sandbox_exec-7-ab";
  { Cgroups cg("s1", {std::nullopt, 8}, h); }
  EXPECT_EQ(dirs(), (std::set<std::string>{"/sandbox_exec-7-ab"}));
}

TEST_F(CgroupTree, TwoBackendsWithTheSamePidKeepApart) {
  // Containers with their own pid namespaces sharing one cgroup tree: both backends pid 7.
  file("/deleg/cgroup.controllers", "memory pids\n");
  auto a = host(false), b = host(false);
  a.delegated = b.delegated = root_ + "/deleg";
  a.tag = "7-aaaa";
  b.tag = "7-bbbb";
  Cgroups first("7-1", {std::nullopt, 8}, a);
  {
    Cgroups second("7-1", {std::nullopt, 8}, b);  // the same session name too
    EXPECT_NE(first.dirs(), second.dirs());
  }
  EXPECT_TRUE(exists("/deleg/sandbox_exec-7-aaaa/7-1"));
  EXPECT_FALSE(exists("/deleg/sandbox_exec-7-bbbb"));
}

TEST_F(CgroupTree, AFailedCreationLeavesNothingBehindV2) {
  file("/deleg/cgroup.controllers", "pids cpu\n");  // no memory controller delegated
  auto h = host(false);
  h.delegated = root_ + "/deleg";
  const auto before = dirs();
  EXPECT_THROW(Cgroups("s1", {uint64_t{64} << 20, 16}, h), SandboxError);
  EXPECT_EQ(dirs(), before);
  // The delegated directory holds processes: enabling controllers in it is refused
  // (EBUSY on cgroupfs; here a subtree_control that cannot be written).
  ::unlink((root_ + "/deleg/cgroup.subtree_control").c_str());
  dir("/deleg/cgroup.subtree_control");
  EXPECT_THROW(Cgroups("s1", {std::nullopt, 16}, h), SandboxError);
  EXPECT_EQ(dirs(), (std::set<std::string>{"/deleg", "/deleg/cgroup.subtree_control"}));
}

TEST_F(CgroupTree, AFailedCreationLeavesNothingBehindV1) {
  for (const char* c : {"pids", "cpuacct"}) file(std::string("/") + c + "/cgroup.procs", "");  // no memory
  const auto before = dirs();
  EXPECT_THROW(Cgroups("s1", {uint64_t{64} << 20, 16}, host(true, "8:pids:/\n2:cpuacct:/\n")), SandboxError);
  EXPECT_EQ(dirs(), before);
}

TEST_F(CgroupTree, AGroupThatExistsAlreadyIsNotTakenOverNorRemoved) {
  file("/deleg/cgroup.controllers", "memory pids\n");
  dir("/deleg/sandbox_exec-4242-00c0ffee/s1");
  auto h = host(false);
  h.delegated = root_ + "/deleg";
  const auto before = dirs();
  EXPECT_THROW(Cgroups("s1", {std::nullopt, 16}, h), SandboxError);
  EXPECT_EQ(dirs(), before);
}

TEST_F(CgroupTree, UnprivilegedWithoutADelegatedGroupSaysHow) {
  v2_host();
  const CgroupSupport s = Cgroups::detect(host(false, "0::/\n"));
  EXPECT_EQ(s.version, "");
  EXPECT_FALSE(s.memory || s.pids);
  EXPECT_NE(s.detail.find("SANDBOX_EXEC_CGROUP"), std::string::npos) << s.detail;
  EXPECT_TRUE(dirs().empty());
}

TEST_F(CgroupTree, UnprivilegedUsesTheParentOfItsOwnGroupWhereItMayWrite) {
  v2_host();
  file("/user.slice/cgroup.controllers", "memory pids\n");
  file("/user.slice/cgroup.subtree_control", "");
  file("/user.slice/cgroup.procs", "");
  dir("/user.slice/session-1.scope");
  Cgroups cg("s1", {std::nullopt, 16}, host(false));
  EXPECT_EQ(cg.dirs(), std::vector<std::string>{root_ + "/user.slice/sandbox_exec-4242-00c0ffee/s1"});
  EXPECT_FALSE(exists("/sandbox_exec"));
}

TEST(CgroupCpuQuota, IsCpusTimesTheHundredMillisecondPeriodWithinTheKernelsBounds) {
  EXPECT_EQ(Cgroups::kCpuPeriodUs, 100000U);
  EXPECT_EQ(Cgroups::cpu_quota_us(0.5), 50000U);
  EXPECT_EQ(Cgroups::cpu_quota_us(1), 100000U);
  EXPECT_EQ(Cgroups::cpu_quota_us(2.5), 250000U);
  EXPECT_EQ(Cgroups::cpu_quota_us(0.123456), 12346U);  // rounded to the microsecond
  EXPECT_EQ(Cgroups::cpu_quota_us(0.001), 1000U);      // the kernel's 1 ms minimum
  EXPECT_EQ(Cgroups::cpu_quota_us(0.0001), 1000U);
  EXPECT_EQ(Cgroups::cpu_quota_us(1e300), uint64_t{1} << 40);  // no overflow
}

TEST_F(CgroupTree, V2CpusIsWrittenToCpuMax) {
  v2_host();
  const std::string leaf = "/sandbox_exec/sandbox_exec-4242-00c0ffee/s1";
  Cgroups::Limits limits;
  limits.cpus = 0.5;
  Cgroups cg("s1", limits, host(true));
  EXPECT_EQ(cg.cpu_limit_dir(), root_ + leaf);
  EXPECT_EQ(read(leaf + "/cpu.max"), "50000 100000");
  EXPECT_FALSE(exists(leaf + "/memory.max"));  // only what was asked for
}

TEST_F(CgroupTree, AnUnreadableProcSelfCgroupIsNamedNotTakenForNoController) {
  // Out of descriptors, /proc/self/cgroup cannot be opened: read as "" it looked like a
  // process in no group, and the start failed as "no memory controller" (an attack's finding).
  file("/unified/cgroup.controllers", "\n");
  for (const char* c : {"memory", "pids", "cpuacct"}) file(std::string("/") + c + "/cgroup.procs", "");
  CgroupHost h = host(true, "");
  h.self_cgroup_error = EMFILE;
  const auto before = dirs();
  try {
    Cgroups cg("s1", {uint64_t{1} << 30, 32}, h);
    ADD_FAILURE() << "a start that could not read /proc/self/cgroup went on";
  } catch (const SandboxError& e) {
    EXPECT_EQ(e.error_number(), EMFILE) << e.what();
    EXPECT_NE(std::string(e.what()).find("RLIMIT_NOFILE"), std::string::npos) << e.what();
    EXPECT_EQ(std::string(e.what()).find("no memory controller"), std::string::npos) << e.what();
  }
  EXPECT_FALSE(Cgroups::detect(h).memory);
  EXPECT_EQ(dirs(), before);
}

TEST_F(CgroupTree, V2WithoutTheCpuControllerRefusesCpusAndLeavesNothing) {
  v2_host("memory pids");
  EXPECT_FALSE(Cgroups::detect(host(true)).cpu_limit);
  EXPECT_TRUE(Cgroups::detect(host(true)).cpu);  // usage (cpu.stat) still
  const auto before = dirs();
  Cgroups::Limits limits;
  limits.cpus = 1.5;
  try {
    Cgroups cg("s1", limits, host(true));
    ADD_FAILURE() << "a quota without a cpu controller was accepted";
  } catch (const SandboxError& e) {
    EXPECT_NE(std::string(e.what()).find("no cpu controller"), std::string::npos) << e.what();
  }
  EXPECT_EQ(dirs(), before);
}

TEST_F(CgroupTree, V1CpusIsACfsQuotaInTheCpuHierarchyMadeOnlyWhenAsked) {
  // This machine's layout: cpu and cpuacct as separate hierarchies.
  file("/unified/cgroup.controllers", "\n");
  for (const char* c : {"memory", "pids", "cpuacct", "cpu"}) file(std::string("/") + c + "/cgroup.procs", "");
  const std::string self = "8:pids:/\n4:memory:/\n2:cpuacct:/\n1:cpu:/\n0::/\n";
  const std::string cpu_leaf = "/cpu/sandbox_exec-4242-00c0ffee/s1";
  const auto before = dirs();
  {
    Cgroups plain("s1", {uint64_t{1} << 30, 32}, host(true, self));
    EXPECT_EQ(plain.dirs().size(), 3U);  // memory, pids, cpuacct: no cpu group without a quota
    EXPECT_EQ(plain.cpu_limit_dir(), "");
    EXPECT_FALSE(exists("/cpu/sandbox_exec-4242-00c0ffee"));
  }
  EXPECT_TRUE(Cgroups::detect(host(true, self)).cpu_limit);  // the probe makes one
  EXPECT_EQ(dirs(), before);
  {
    Cgroups::Limits limits{uint64_t{1} << 30, 32, 0.5};
    Cgroups cg("s1", limits, host(true, self));
    ASSERT_EQ(cg.dirs().size(), 4U);
    EXPECT_EQ(cg.dirs().back(), root_ + cpu_leaf);  // the session's init joins it too
    EXPECT_EQ(cg.cpu_limit_dir(), root_ + cpu_leaf);
    EXPECT_EQ(cg.cpu_dir(), root_ + "/cpuacct/sandbox_exec-4242-00c0ffee/s1");
    EXPECT_EQ(read(cpu_leaf + "/cpu.cfs_period_us"), "100000");
    EXPECT_EQ(read(cpu_leaf + "/cpu.cfs_quota_us"), "50000");
  }
  EXPECT_EQ(dirs(), before);
}

TEST_F(CgroupTree, V1CoMountedCpuAndCpuacctShareOneGroup) {
  // The common v1 layout: one cpu,cpuacct hierarchy, cpu and cpuacct links to it.
  file("/cpu,cpuacct/cgroup.procs", "");
  file("/memory/cgroup.procs", "");
  ASSERT_EQ(::symlink("cpu,cpuacct", (root_ + "/cpu").c_str()), 0);
  ASSERT_EQ(::symlink("cpu,cpuacct", (root_ + "/cpuacct").c_str()), 0);
  const std::string self = "4:memory:/\n2:cpu,cpuacct:/\n0::/\n";
  const auto before = dirs();
  {
    Cgroups::Limits limits;
    limits.cpus = 2;
    Cgroups cg("s1", limits, host(true, self));
    EXPECT_EQ(cg.dirs().size(), 2U);  // memory, and the one cpu,cpuacct group
    EXPECT_EQ(cg.cpu_dir(), cg.cpu_limit_dir());
    EXPECT_EQ(read("/cpu,cpuacct/sandbox_exec-4242-00c0ffee/s1/cpu.cfs_quota_us"), "200000");
  }
  EXPECT_EQ(dirs(), before);
}

TEST_F(CgroupTree, V1WithoutACpuHierarchyRefusesCpusAndLeavesNothing) {
  for (const char* c : {"memory", "pids", "cpuacct"}) file(std::string("/") + c + "/cgroup.procs", "");
  const std::string self = "8:pids:/\n4:memory:/\n2:cpuacct:/\n";
  EXPECT_FALSE(Cgroups::detect(host(true, self)).cpu_limit);
  const auto before = dirs();
  Cgroups::Limits limits;
  limits.cpus = 1;
  EXPECT_THROW(Cgroups("s1", limits, host(true, self)), SandboxError);
  EXPECT_EQ(dirs(), before);
}

}  // namespace
}  // namespace sandbox_exec
