// Unit tests for cpp/launcher/rlimits.cc: apply() runs in a forked child, which reads its
// limits back with getrlimit and reports them.
#include "launcher/rlimits.h"

#include <linux/capability.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>

#include <gtest/gtest.h>

#include "child_probe.h"

namespace {

using sandbox_exec::LaunchStep;
using sandbox_exec::ResourceLimits;

void put_limit(const probe::Report& out, const char* name, int resource) {
  rlimit rl{};
  if (::getrlimit(resource, &rl) != 0) {
    out.put(name, "getrlimit failed");
    return;
  }
  char text[64];
  std::snprintf(text, sizeof text, "%llu/%llu", static_cast<unsigned long long>(rl.rlim_cur),
                static_cast<unsigned long long>(rl.rlim_max));
  out.put(name, text);
}

std::string both(uint64_t v) { return std::to_string(v) + "/" + std::to_string(v); }

// The process's address space now, in bytes (VmSize): RLIMIT_AS must stay above it, or the
// child (an ASan one reserves terabytes of shadow) could not allocate any more.
uint64_t vm_size() {
  FILE* f = std::fopen("/proc/self/status", "r");
  if (f == nullptr) return 0;
  char line[256];
  unsigned long long kb = 0;
  while (std::fgets(line, sizeof line, f)) {
    if (std::sscanf(line, "VmSize: %llu kB", &kb) == 1) break;
  }
  std::fclose(f);
  return kb * 1024;
}

// Root may raise a hard limit with CAP_SYS_RESOURCE; without it in the effective set, it
// cannot, like any user. Dropping from the effective set needs no privilege.
bool drop_sys_resource() {
  __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
  __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
  if (::syscall(SYS_capget, &header, data) != 0) return false;
  data[CAP_TO_INDEX(CAP_SYS_RESOURCE)].effective &= ~CAP_TO_MASK(CAP_SYS_RESOURCE);
  return ::syscall(SYS_capset, &header, data) == 0;
}

TEST(Rlimits, AppliesEachGivenLimitSoftAndHard) {
  const uint64_t address_space = vm_size() + (8ull << 30);
  ASSERT_GT(address_space, 8ull << 30);
  const auto r = probe::run([address_space](const probe::Report& out) {
    // An unset limit keeps whatever it was: give RLIMIT_NPROC a recognizable value first.
    const rlimit nproc{777, 888};
    if (::setrlimit(RLIMIT_NPROC, &nproc) != 0) return 2;
    // And a non-zero core limit, so setting it to 0 is visible.
    const rlimit core{4096, RLIM_INFINITY};
    if (::setrlimit(RLIMIT_CORE, &core) != 0) return 3;
    put_limit(out, "core_before", RLIMIT_CORE);
    ResourceLimits limits;
    limits.cpu_seconds = 123;
    limits.file_bytes = 5u << 20;
    limits.open_files = 77;
    limits.address_space = address_space;
    // processes: not given
    out.put("f", sandbox_exec::rlimits::apply(limits));
    put_limit(out, "cpu", RLIMIT_CPU);
    put_limit(out, "fsize", RLIMIT_FSIZE);
    put_limit(out, "nofile", RLIMIT_NOFILE);
    put_limit(out, "as", RLIMIT_AS);
    put_limit(out, "nproc", RLIMIT_NPROC);
    put_limit(out, "core", RLIMIT_CORE);
    return 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.step("f"), LaunchStep::kNone) << r.dump();
  EXPECT_EQ(r.str("cpu"), both(123));
  EXPECT_EQ(r.str("fsize"), both(5u << 20));
  EXPECT_EQ(r.str("nofile"), both(77));
  EXPECT_EQ(r.str("as"), both(address_space));
  EXPECT_EQ(r.str("nproc"), "777/888");  // left alone
  EXPECT_EQ(r.str("core_before"), "4096/" + std::to_string(static_cast<unsigned long long>(RLIM_INFINITY)));
  EXPECT_EQ(r.str("core"), both(0));
}

TEST(Rlimits, ProcessesAndCoreDumpsOnRequest) {
  const auto r = probe::run([](const probe::Report& out) {
    const rlimit cpu{500, 600};
    if (::setrlimit(RLIMIT_CPU, &cpu) != 0) return 2;
    const rlimit core{4096, 8192};
    if (::setrlimit(RLIMIT_CORE, &core) != 0) return 3;
    ResourceLimits limits;
    limits.processes = 321;
    limits.core_dumps = true;  // RLIMIT_CORE is then left as it was
    out.put("f", sandbox_exec::rlimits::apply(limits));
    put_limit(out, "nproc", RLIMIT_NPROC);
    put_limit(out, "cpu", RLIMIT_CPU);
    put_limit(out, "core", RLIMIT_CORE);
    return 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.step("f"), LaunchStep::kNone) << r.dump();
  EXPECT_EQ(r.str("nproc"), both(321));
  EXPECT_EQ(r.str("cpu"), "500/600");
  EXPECT_EQ(r.str("core"), "4096/8192");
}

// Each limit, asked above a hard limit the child lowered first, fails as its own step with
// EPERM; the limits before it in apply()'s order are set, the ones after it are not.
TEST(Rlimits, RaisingAboveTheHardLimitNamesTheStep) {
  struct Case {
    int resource;
    LaunchStep step;
    uint64_t hard;
  };
  const Case cases[] = {
      {RLIMIT_CPU, LaunchStep::kRlimitCpu, 100},
      {RLIMIT_FSIZE, LaunchStep::kRlimitFileSize, 1u << 20},
      {RLIMIT_NOFILE, LaunchStep::kRlimitOpenFiles, 200},
      {RLIMIT_AS, LaunchStep::kRlimitAddressSpace, vm_size() + (8ull << 30)},
      {RLIMIT_NPROC, LaunchStep::kRlimitProcesses, 900},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(static_cast<int>(c.step));
    const auto r = probe::run([&c](const probe::Report& out) {
      const rlimit lowered{c.hard, c.hard};
      if (::setrlimit(c.resource, &lowered) != 0) return 2;
      if (!drop_sys_resource()) return 3;
      const rlimit core{4096, 4096};
      if (::setrlimit(RLIMIT_CORE, &core) != 0) return 4;
      ResourceLimits limits;
      auto want = [&](int resource, uint64_t ok_value) -> std::optional<uint64_t> {
        return resource == c.resource ? c.hard + 1 : ok_value;
      };
      limits.cpu_seconds = want(RLIMIT_CPU, 50);
      limits.file_bytes = want(RLIMIT_FSIZE, 1u << 19);
      limits.open_files = want(RLIMIT_NOFILE, 100);
      limits.address_space = want(RLIMIT_AS, vm_size() + (4ull << 30));
      limits.processes = want(RLIMIT_NPROC, 800);
      out.put("f", sandbox_exec::rlimits::apply(limits));
      put_limit(out, "limit", c.resource);
      put_limit(out, "cpu", RLIMIT_CPU);    // the first one apply() sets
      put_limit(out, "core", RLIMIT_CORE);  // the last one apply() sets: never reached
      return 0;
    });
    ASSERT_TRUE(r.exited()) << r.dump();
    EXPECT_EQ(r.step("f"), c.step) << r.dump();
    EXPECT_EQ(r.err("f"), EPERM) << r.dump();
    EXPECT_EQ(r.str("limit"), both(c.hard)) << "the refused limit stays as it was";
    EXPECT_EQ(r.str("cpu"), both(c.resource == RLIMIT_CPU ? 100 : 50)) << "the ones before it are set";
    EXPECT_EQ(r.str("core"), both(4096)) << "apply() stops at the first failure";
  }
}

}  // namespace
