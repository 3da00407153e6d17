// Unit tests for cpp/launcher/userns.cc. write_maps() is called, as the launcher calls it,
// from outside on a child that sits in a new user namespace; self_map() and become() run in
// the child itself, which reads back its /proc/self/{uid_map,gid_map,setgroups} and ids.
#include "launcher/userns.h"

#include <fcntl.h>
#include <grp.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <string>

#include <gtest/gtest.h>

#include "child_probe.h"
#include "common/file_io.h"

namespace {

using sandbox_exec::LaunchStep;

// "inside outside count" lines of an id map, with the kernel's padding squeezed.
std::string id_map(const char* path) {
  const std::string text = sandbox_exec::file_io::read_file(path);
  std::string out;
  unsigned a, b, c;
  int used = 0;
  const char* p = text.c_str();
  while (std::sscanf(p, "%u %u %u%n", &a, &b, &c, &used) == 3) {
    out += std::to_string(a) + " " + std::to_string(b) + " " + std::to_string(c) + ";";
    p += used;
  }
  return out;
}

std::string trimmed(const std::string& text) {
  const auto end = text.find_last_not_of(" \n");
  return end == std::string::npos ? "" : text.substr(0, end + 1);
}

void put_ids(const probe::Report& out, const char* key) {
  uid_t ru, eu, su;
  gid_t rg, eg, sg;
  if (::getresuid(&ru, &eu, &su) != 0 || ::getresgid(&rg, &eg, &sg) != 0) {
    out.put(key, "getresuid failed");
    return;
  }
  char text[96];
  std::snprintf(text, sizeof text, "%u %u %u / %u %u %u", ru, eu, su, rg, eg, sg);
  out.put(key, text);
}

// The host ids the sandbox's ids map to: 65534 as root (the launcher's default), our own
// otherwise (an unprivileged writer may map only itself).
unsigned outside_uid() { return ::geteuid() == 0 ? 65534 : ::geteuid(); }
unsigned outside_gid() { return ::geteuid() == 0 ? 65534 : ::getegid(); }

// The child's ids in its new namespace before become(): as root, its host ids (0) have no
// mapping there and show as the overflow ids; otherwise its own ids are the mapped ones.
std::string ids_before(unsigned inside_uid, unsigned inside_gid) {
  const std::string u = std::to_string(::geteuid() == 0 ? 65534 : inside_uid);
  const std::string g = std::to_string(::geteuid() == 0 ? 65534 : inside_gid);
  return u + " " + u + " " + u + " / " + g + " " + g + " " + g;
}

// The child unshares its user namespace, tells us, and waits for its maps; then `body`.
template <class F>
probe::Result in_mapped_child(unsigned inside_uid, unsigned inside_gid, sandbox_exec::StepFailure* write_result,
                              F body) {
  int ready[2], go[2];
  if (::pipe2(ready, O_CLOEXEC) != 0 || ::pipe2(go, O_CLOEXEC) != 0) return {};
  // probe::run blocks until the child is done, so the maps are written from a helper
  // process that waits for the child's "ready": we (its parent) learn the child's pid
  // through the ready pipe itself.
  const pid_t writer = ::fork();
  if (writer == 0) {
    ::close(ready[1]);
    ::close(go[0]);
    pid_t child = 0;
    if (::read(ready[0], &child, sizeof child) != sizeof child) ::_exit(100);
    const auto f = sandbox_exec::userns::write_maps(child, inside_uid, inside_gid, outside_uid(), outside_gid());
    const int32_t record[2] = {static_cast<int32_t>(f.step), f.error};
    [[maybe_unused]] ssize_t n = ::write(go[1], record, sizeof record);
    ::_exit(0);
  }
  auto result = probe::run([&](const probe::Report& out) {
    ::close(ready[0]);
    ::close(go[1]);
    if (::unshare(CLONE_NEWUSER) != 0) {
      out.put("setup", errno);
      return 2;
    }
    const pid_t me = ::getpid();
    if (::write(ready[1], &me, sizeof me) != sizeof me) return 3;
    int32_t written[2];
    if (::read(go[0], written, sizeof written) != sizeof written) return 4;
    out.put("write_step", written[0]);
    out.put("write_errno", written[1]);
    return body(out);
  });
  ::close(ready[0]);
  ::close(ready[1]);
  ::close(go[0]);
  ::close(go[1]);
  int status = 0;
  ::waitpid(writer, &status, 0);
  if (write_result != nullptr) *write_result = {result.step("write"), result.err("write")};
  return result;
}

TEST(Userns, WriteMapsMapsExactlyOneIdAndDeniesSetgroups) {
  sandbox_exec::StepFailure written;
  const auto r = in_mapped_child(1000, 1001, &written, [](const probe::Report& out) {
    out.put("uid_map", id_map("/proc/self/uid_map"));
    out.put("gid_map", id_map("/proc/self/gid_map"));
    out.put("setgroups", trimmed(sandbox_exec::file_io::read_file("/proc/self/setgroups")));
    // Once maps are written, they cannot be rewritten.
    out.put("rewrite", sandbox_exec::file_io::write_file("/proc/self/uid_map", "0 0 1\n"));
    return 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(written.step, LaunchStep::kNone) << r.dump();
  EXPECT_EQ(r.str("uid_map"), "1000 " + std::to_string(outside_uid()) + " 1;");
  EXPECT_EQ(r.str("gid_map"), "1001 " + std::to_string(outside_gid()) + " 1;");
  EXPECT_EQ(r.str("setgroups"), "deny");
  EXPECT_EQ(r.num("rewrite"), EPERM);
}

TEST(Userns, BecomeSwitchesToTheSandboxIds) {
  const auto r = in_mapped_child(1000, 1001, nullptr, [](const probe::Report& out) {
    put_ids(out, "ids_before");
    // setgroups is denied in this namespace: even its root (all capabilities in it) cannot
    // add a supplementary group.
    const gid_t groups[] = {1001};
    out.put_errno("setgroups", ::setgroups(1, groups));
    out.put("f", sandbox_exec::userns::become(1000, 1001));
    put_ids(out, "ids_after");
    // And, no longer root in the namespace, the ids cannot change back.
    out.put("back", sandbox_exec::userns::become(0, 0));
    put_ids(out, "ids_end");
    return 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.num("write_step"), 0) << r.dump();
  EXPECT_EQ(r.str("ids_before"), ids_before(1000, 1001)) << r.dump();
  EXPECT_EQ(r.step("f"), LaunchStep::kNone) << r.dump();
  EXPECT_EQ(r.str("ids_after"), "1000 1000 1000 / 1001 1001 1001");
  EXPECT_EQ(r.num("setgroups"), EPERM);
  EXPECT_EQ(r.step("back"), LaunchStep::kSetIds);
  EXPECT_EQ(r.str("ids_end"), "1000 1000 1000 / 1001 1001 1001");
}

TEST(Userns, BecomeUnmappedIdFailsAsSetIds) {
  const auto r = in_mapped_child(1000, 1000, nullptr, [](const probe::Report& out) {
    // gid 2000 has no mapping: setresgid refuses it (EINVAL) and nothing changes.
    out.put("gid", sandbox_exec::userns::become(1000, 2000));
    put_ids(out, "ids_after_gid");
    // uid 2000 has none either: the gid switch happens, the uid one fails.
    out.put("uid", sandbox_exec::userns::become(2000, 1000));
    put_ids(out, "ids_after_uid");
    return 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.step("gid"), LaunchStep::kSetIds);
  EXPECT_EQ(r.err("gid"), EINVAL);
  EXPECT_EQ(r.str("ids_after_gid"), ids_before(1000, 1000));
  EXPECT_EQ(r.step("uid"), LaunchStep::kSetIds);
  EXPECT_EQ(r.err("uid"), EINVAL);
  EXPECT_EQ(r.str("ids_after_uid"),
            ids_before(1000, 1000).substr(0, ids_before(1000, 1000).find(" / ")) + " / 1000 1000 1000");
}

TEST(Userns, WriteMapsFailureNamesIdMap) {
  // A process that is gone has no maps to write.
  const pid_t pid = ::fork();
  if (pid == 0) ::_exit(0);
  ASSERT_GT(pid, 0);
  ASSERT_EQ(::waitpid(pid, nullptr, 0), pid);
  const auto gone = sandbox_exec::userns::write_maps(pid, 1000, 1000, outside_uid(), outside_gid());
  EXPECT_EQ(gone.step, LaunchStep::kIdMap);
  EXPECT_EQ(gone.error, ENOENT);
  // A process in our own (already mapped) namespace: the kernel refuses a second map.
  const auto r = probe::run([](const probe::Report& out) {
    out.put("f", sandbox_exec::userns::write_maps(::getpid(), 1000, 1000, outside_uid(), outside_gid()));
    out.put("uid_map", id_map("/proc/self/uid_map"));
    return 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.step("f"), LaunchStep::kIdMap);
  EXPECT_EQ(r.err("f"), EPERM);
  EXPECT_NE(r.str("uid_map"), "1000 " + std::to_string(outside_uid()) + " 1;");
}

TEST(Userns, SelfMapMapsRootToTheCaller) {
  const unsigned uid = ::geteuid(), gid = ::getegid();
  const auto r = probe::run([uid, gid](const probe::Report& out) {
    if (::unshare(CLONE_NEWUSER) != 0) {
      out.put("setup", errno);
      return 2;
    }
    out.put("f", sandbox_exec::userns::self_map(uid, gid));
    out.put("uid_map", id_map("/proc/self/uid_map"));
    out.put("gid_map", id_map("/proc/self/gid_map"));
    out.put("setgroups", trimmed(sandbox_exec::file_io::read_file("/proc/self/setgroups")));
    put_ids(out, "ids");
    return 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.step("f"), LaunchStep::kNone) << r.dump();
  EXPECT_EQ(r.str("uid_map"), "0 " + std::to_string(uid) + " 1;");
  EXPECT_EQ(r.str("gid_map"), "0 " + std::to_string(gid) + " 1;");
  EXPECT_EQ(r.str("setgroups"), "deny");
  EXPECT_EQ(r.str("ids"), "0 0 0 / 0 0 0");
}

TEST(Userns, SelfMapOutsideANewNamespaceFailsAsOuterIdMap) {
  const auto r = probe::run([](const probe::Report& out) {
    // Our namespace's maps were written long ago.
    out.put("f", sandbox_exec::userns::self_map(::geteuid(), ::getegid()));
    return 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.step("f"), LaunchStep::kOuterIdMap);
  EXPECT_EQ(r.err("f"), EPERM);
}

}  // namespace
