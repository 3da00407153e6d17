// process: a process's children from /proc, and no_new_privs.
#include "common/process.h"

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <vector>

#include <gtest/gtest.h>

namespace sandbox_exec {
namespace {

TEST(Process, ListsOwnChildren) {
  std::vector<pid_t> started;
  for (int i = 0; i < 3; ++i) {
    const pid_t pid = ::fork();
    ASSERT_GE(pid, 0);
    if (pid == 0) {
      ::pause();
      ::_exit(0);
    }
    started.push_back(pid);
  }
  std::vector<pid_t> found;
  ASSERT_TRUE(process::append_children(::getpid(), ::getpid(), found));
  for (pid_t pid : started) {
    EXPECT_NE(std::find(found.begin(), found.end(), pid), found.end()) << pid;
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  found.clear();
  ASSERT_TRUE(process::append_children(::getpid(), ::getpid(), found));
  for (pid_t pid : started) EXPECT_EQ(std::find(found.begin(), found.end(), pid), found.end()) << pid;
}

TEST(Process, AppendsWithoutClearing) {
  std::vector<pid_t> found{12345};
  ASSERT_TRUE(process::append_children(::getpid(), ::getpid(), found));
  ASSERT_FALSE(found.empty());
  EXPECT_EQ(found.front(), 12345);
}

TEST(Process, AGoneProcessIsReportedNotInvented) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) ::_exit(0);
  ::waitpid(pid, nullptr, 0);
  std::vector<pid_t> found;
  EXPECT_FALSE(process::append_children(pid, pid, found));
  EXPECT_TRUE(found.empty());
}

TEST(Process, NoNewPrivsIsSetAndSticks) {
  const pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {  // in a child: the flag cannot be cleared again
    if (::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) != 0) ::_exit(2);
    if (process::set_no_new_privs() != 0) ::_exit(3);
    ::_exit(::prctl(PR_GET_NO_NEW_PRIVS, 0, 0, 0, 0) == 1 ? 0 : 4);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(pid, &status, 0), pid);
  ASSERT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
}

}  // namespace
}  // namespace sandbox_exec
