// Tests of the zygote's fork server (fork_server.h) with the supervisor's ZygoteLink and
// CellRunner, without Python: the "zygote" is a fork of this test process serving on a
// socket pair; its forked worker execs tests_cpp/fake_worker (so the cells are the fake
// worker's). A warm session answers cells like a spawned one; its keeper is the zygote's
// child, not ours, and still ends with terminate(); malformed requests are refused and the
// server goes on; a zygote with a thread refuses to fork; sessions outlive their zygote;
// closing the link ends the zygote.
#include "zygote/fork_server.h"

#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "../single_threaded_child.h"
#include "../supervisor/fake_worker_spec.h"
#include "common/sys_error.h"
#include "launch/zygote_protocol.h"
#include "supervisor/cell_runner.h"
#include "supervisor/zygote_link.h"

namespace sandbox_exec {
namespace {

constexpr ChannelGeometry kGeometry{4096, 16384};

// A zygote: a child of this test serving on one end of a socket pair.
struct TestZygote {
  pid_t pid = -1;
  UniqueFd control;  // our end

  explicit TestZygote(bool with_thread = false) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) != 0) throw_sys("test", "socketpair");
    pid = ::fork();
    if (pid == 0) {
      test_support::single_threaded_child();  // as a zygote is (TSan's thread stopped)
      ::close(sv[0]);
      if (with_thread) std::thread([] { ::pause(); }).detach();
      fork_server::Served served;
      try {
        served = fork_server::serve(sv[1], {});
      } catch (...) {
        ::_exit(3);
      }
      if (!served.is_worker) ::_exit(0);
      // The contained worker: become the fake worker (its channel is at 5..8 already).
      std::vector<char*> argv;
      for (auto& a : served.spec.argv) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
    ::close(sv[1]);
    control.reset(sv[0]);
  }
  ~TestZygote() {
    if (pid <= 0) return;  // reaped by the test (kill(-1) would signal every process)
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
};

CellLimits generous() {
  CellLimits limits;
  limits.timeout_s = 10;
  return limits;
}

std::string echo(CellRunner& runner, const std::string& text) {
  std::string out;
  const EventSink sink = [&](EventBatch& batch) {
    for (const auto& e : batch)
      if (e.type == static_cast<uint16_t>(FrameType::kStdout)) out += e.payload;
    return true;
  };
  const CellOutcome outcome = runner.run_cell(text, generous(), sink);
  EXPECT_EQ(outcome.end, CellEnd::kDone) << outcome.reason;
  return out;
}

bool gone(pid_t pid) {
  for (int i = 0; i < 200; ++i) {
    if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

TEST(ForkServer, AWarmSessionAnswersCellsAndItsKeeperIsTheZygotesChild) {
  TestZygote zygote;
  ZygoteLink link(zygote.control.get());
  pid_t keeper;
  {
    CellRunner runner(test_support::fake_worker_spec("echo"), kGeometry, 10, std::nullopt, &link);
    EXPECT_EQ(echo(runner, "hello"), "hello");
    EXPECT_EQ(echo(runner, "again"), "again");
    keeper = runner.launcher_pid();
    EXPECT_NE(keeper, zygote.pid);
    errno = 0;
    EXPECT_EQ(::waitpid(keeper, nullptr, WNOHANG), -1);
    EXPECT_EQ(errno, ECHILD) << "the keeper should be the zygote's child, not ours";
    runner.terminate();
    EXPECT_FALSE(runner.alive());
  }
  EXPECT_TRUE(gone(keeper)) << "terminate() left the keeper running";
}

TEST(ForkServer, MalformedRequestsAreRefusedAndTheServerGoesOn) {
  TestZygote zygote;
  const int s = zygote.control.get();
  auto reply = [&]() {
    zygote_protocol::ForkReply r{};
    std::vector<UniqueFd> fds;
    EXPECT_EQ(zygote_protocol::receive_with_fds(s, &r, sizeof r, fds, 1), static_cast<ssize_t>(sizeof r));
    EXPECT_TRUE(fds.empty());
    return r.error;
  };
  ASSERT_EQ(zygote_protocol::send_with_fds(s, "garbage", 7, nullptr, 0), 0);
  EXPECT_EQ(reply(), EINVAL);
  // A well-formed spec without its six descriptors.
  const std::string request = zygote_protocol::encode_fork_request(test_support::fake_worker_spec("echo"));
  ASSERT_EQ(zygote_protocol::send_with_fds(s, request.data(), request.size(), nullptr, 0), 0);
  EXPECT_EQ(reply(), EINVAL);
  // Still serving.
  ZygoteLink link(s);
  CellRunner runner(test_support::fake_worker_spec("echo"), kGeometry, 10, std::nullopt, &link);
  EXPECT_EQ(echo(runner, "still"), "still");
}

TEST(ForkServer, AZygoteWithAThreadRefusesToFork) {
  TestZygote zygote(/*with_thread=*/true);
  ZygoteLink link(zygote.control.get());
  try {
    CellRunner runner(test_support::fake_worker_spec("echo"), kGeometry, 10, std::nullopt, &link);
    FAIL() << "a multi-threaded zygote forked";
  } catch (const SandboxError& e) {
    EXPECT_EQ(e.layer(), "zygote");
    EXPECT_EQ(e.error_number(), EDEADLK);
  }
}

TEST(ForkServer, SessionsOutliveTheirZygote) {
  auto zygote = std::make_unique<TestZygote>();
  ZygoteLink link(zygote->control.get());
  CellRunner runner(test_support::fake_worker_spec("echo"), kGeometry, 10, std::nullopt, &link);
  zygote.reset();  // SIGKILL and reaped
  EXPECT_EQ(echo(runner, "alive"), "alive");
  EXPECT_THROW(CellRunner(test_support::fake_worker_spec("echo"), kGeometry, 10, std::nullopt, &link), SandboxError);
}

TEST(ForkServer, ClosingTheLinkEndsTheZygote) {
  TestZygote zygote;
  {
    ZygoteLink link(zygote.control.get());
    zygote.control.reset();
    link.close();
  }
  int status = 0;
  ASSERT_EQ(::waitpid(zygote.pid, &status, 0), zygote.pid);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << status;
  zygote.pid = -1;
}

}  // namespace
}  // namespace sandbox_exec
