// Tests of WorkerProcess (worker_process.h) without Python: the real sandbox_exec_launcher
// spawns tests_cpp/fake_worker (fake_worker_spec.h) with every isolation layer off. The
// pidfd stays quiet while the worker lives and becomes readable when it dies (exit, signal,
// interrupt(), a killed launcher); exit_info() then describes the worker's end; usage()
// gives valid figures for a live worker and none once it is gone; terminate() and the
// destructor end and reap both processes; a launcher that is missing, exits without
// reporting or never reports is a SandboxError of layer "spawn" that leaves no process.
// ExitInfo::describe() on its own for every kind of wait status.
#include "supervisor/worker_process.h"
#include "fake_worker_spec.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "common/sys_error.h"
#include "ipc/channel.h"

namespace sandbox_exec {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
constexpr ChannelGeometry kGeometry{4096, 16384};
constexpr milliseconds kStartTimeout(10000);

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Is the pidfd readable (the process exited) within `timeout_ms`?
bool pidfd_readable(int pidfd, int timeout_ms) {
  pollfd p{pidfd, POLLIN, 0};
  return ::poll(&p, 1, timeout_ms) == 1 && (p.revents & POLLIN) != 0;
}

// Is `pid` gone (no such process, not even a zombie)? Waits up to 2 s for it.
bool process_gone(pid_t pid) {
  for (int i = 0; i < 200; ++i) {
    if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return false;
}

// The reap() loop a caller runs once the pidfd is readable.
bool reaped_within(WorkerProcess& worker, milliseconds limit) {
  const auto deadline = Clock::now() + limit;
  while (Clock::now() < deadline) {
    if (worker.reap()) return true;
    std::this_thread::sleep_for(milliseconds(5));
  }
  return worker.reap();
}

std::string read_file(const std::string& path) {
  std::ifstream in(path);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

// Waits for the fake worker's kReady: it is then idle, waiting for requests.
void await_ready(SupervisorChannel& channel, const WorkerProcess& worker) {
  FrameHeader header{};
  std::string payload;
  ASSERT_EQ(channel.next_frame(header, payload, 10000, worker.pidfd()), SupervisorChannel::Wait::kFrame);
  ASSERT_EQ(header.type, static_cast<uint16_t>(FrameType::kReady));
}

// A kExecute request, as CellRunner would send it: the fake worker then acts out its mode.
void execute(SupervisorChannel& channel, const WorkerProcess& worker) {
  ASSERT_TRUE(channel.send(FrameType::kExecute, R"({"code":""})", Clock::now() + milliseconds(5000), worker.pidfd()));
}

TEST(WorkerProcess, SpawnsTheWorkerThroughTheLauncher) {
  SupervisorChannel channel(kGeometry);
  WorkerProcess worker(test_support::fake_worker_spec("echo"), channel, kStartTimeout);
  ASSERT_GT(worker.launcher_pid(), 0);
  ASSERT_GT(worker.worker_pid(), 0);
  EXPECT_NE(worker.worker_pid(), worker.launcher_pid());
  // without namespaces the worker is the launcher's own child
  EXPECT_EQ(worker.worker_parent(), worker.launcher_pid());
  EXPECT_EQ(worker.cgroups(), nullptr);
  const std::string cmdline = read_file("/proc/" + std::to_string(worker.worker_pid()) + "/cmdline");
  EXPECT_TRUE(contains(cmdline, "fake_worker")) << cmdline;
  EXPECT_TRUE(contains(cmdline, std::string("echo"))) << cmdline;
  const std::string stat = read_file("/proc/" + std::to_string(worker.worker_pid()) + "/stat");
  const std::string after_name = stat.substr(stat.rfind(')') + 2);
  EXPECT_EQ(after_name.substr(2, after_name.find(' ', 2) - 2), std::to_string(worker.launcher_pid())) << stat;
  // the launcher leads a session of its own
  EXPECT_EQ(::getsid(worker.launcher_pid()), worker.launcher_pid());
  // the worker's doorbell ends went to the launcher: ours are closed (the region stays mapped)
  const WorkerFds fds = channel.worker_fds();
  EXPECT_GE(fds.region, 0);
  EXPECT_LT(fds.request_bell, 0);
  EXPECT_LT(fds.event_bell, 0);
  EXPECT_LT(fds.space_bell, 0);
}

TEST(WorkerProcess, PidfdIsQuietWhileTheWorkerLives) {
  SupervisorChannel channel(kGeometry);
  WorkerProcess worker(test_support::fake_worker_spec("echo"), channel, kStartTimeout);
  ASSERT_GE(worker.pidfd(), 0);
  EXPECT_NE(::fcntl(worker.pidfd(), F_GETFD) & FD_CLOEXEC, 0);
  EXPECT_FALSE(pidfd_readable(worker.pidfd(), 200));
  EXPECT_FALSE(worker.reap());
  EXPECT_FALSE(worker.exit_info().wait_status.has_value());
}

TEST(WorkerProcess, PidfdReadableWhenTheWorkerExits) {
  SupervisorChannel channel(kGeometry);
  WorkerProcess worker(test_support::fake_worker_spec("exit3"), channel, kStartTimeout);
  EXPECT_FALSE(pidfd_readable(worker.pidfd(), 50));
  execute(channel, worker);  // exit3: _exit(3) in the middle of the cell
  ASSERT_TRUE(pidfd_readable(worker.pidfd(), 10000));
  ASSERT_TRUE(reaped_within(worker, milliseconds(5000)));
  ASSERT_TRUE(worker.exit_info().wait_status.has_value());
  const int st = *worker.exit_info().wait_status;
  EXPECT_TRUE(WIFEXITED(st)) << st;
  EXPECT_EQ(WEXITSTATUS(st), 3);
  EXPECT_EQ(worker.exit_info().describe(), "exited with status 3");
  EXPECT_TRUE(process_gone(worker.worker_pid()));
  EXPECT_TRUE(process_gone(worker.launcher_pid()));
  EXPECT_TRUE(worker.reap());  // final
}

TEST(WorkerProcess, ExitInfoNamesTheSignalThatKilledTheWorker) {
  SupervisorChannel channel(kGeometry);
  WorkerProcess worker(test_support::fake_worker_spec("echo"), channel, kStartTimeout);
  ASSERT_EQ(::kill(worker.worker_pid(), SIGKILL), 0);
  ASSERT_TRUE(pidfd_readable(worker.pidfd(), 10000));
  ASSERT_TRUE(reaped_within(worker, milliseconds(5000)));
  ASSERT_TRUE(worker.exit_info().wait_status.has_value());
  const int st = *worker.exit_info().wait_status;
  EXPECT_TRUE(WIFSIGNALED(st)) << st;
  EXPECT_EQ(WTERMSIG(st), SIGKILL);
  EXPECT_EQ(worker.exit_info().describe(), "killed by signal 9 (SIGKILL)");
}

TEST(WorkerProcess, InterruptReachesTheWorker) {
  SupervisorChannel channel(kGeometry);
  WorkerProcess worker(test_support::fake_worker_spec("default-sigint"), channel, kStartTimeout);
  execute(channel, worker);  // default-sigint: sleeps with SIGINT's default action
  // the request may not have been read yet: interrupt until the worker is gone
  bool exited = false;
  for (int i = 0; i < 100 && !exited; ++i) {
    std::this_thread::sleep_for(milliseconds(50));
    worker.interrupt();
    exited = pidfd_readable(worker.pidfd(), 50);
  }
  ASSERT_TRUE(exited);
  ASSERT_TRUE(reaped_within(worker, milliseconds(5000)));
  ASSERT_TRUE(worker.exit_info().wait_status.has_value());
  EXPECT_EQ(worker.exit_info().describe(), "killed by signal 2 (SIGINT)");
  worker.interrupt();  // after the end: nothing to signal, no harm
}

TEST(WorkerProcess, KilledLauncherLeavesNoExitStatus) {
  SupervisorChannel channel(kGeometry);
  WorkerProcess worker(test_support::fake_worker_spec("echo"), channel, kStartTimeout);
  const pid_t worker_pid = worker.worker_pid();
  ASSERT_EQ(::kill(worker.launcher_pid(), SIGKILL), 0);
  ASSERT_TRUE(pidfd_readable(worker.pidfd(), 10000));
  ASSERT_TRUE(reaped_within(worker, milliseconds(5000)));
  EXPECT_FALSE(worker.exit_info().wait_status.has_value());
  EXPECT_TRUE(contains(worker.exit_info().describe(), "launcher was killed")) << worker.exit_info().describe();
  // the worker dies with its launcher (PR_SET_PDEATHSIG)
  EXPECT_TRUE(process_gone(worker_pid));
}

TEST(WorkerProcess, UsageOfALiveWorker) {
  SupervisorChannel channel(kGeometry);
  WorkerProcess worker(test_support::fake_worker_spec("echo"), channel, kStartTimeout);
  await_ready(channel, worker);  // its memory no longer grows
  const Usage u = worker.usage();
  ASSERT_TRUE(u.valid);
  EXPECT_GE(u.cpu_seconds, 0.0);
  EXPECT_LT(u.cpu_seconds, 60.0);
  EXPECT_GT(u.peak_rss_bytes, 0u);
  // VmHWM in bytes: at least the VmRSS the kernel reports now
  const std::string status = read_file("/proc/" + std::to_string(worker.worker_pid()) + "/status");
  const auto at = status.find("VmRSS:");
  ASSERT_NE(at, std::string::npos);
  const unsigned long long rss_kb = std::stoull(status.substr(at + 6));
  EXPECT_GE(u.peak_rss_bytes, rss_kb * 1024) << status;
  EXPECT_EQ(u.peak_rss_bytes % 1024, 0u);

  const Usage no_peak = worker.usage(false);
  EXPECT_TRUE(no_peak.valid);
  EXPECT_EQ(no_peak.peak_rss_bytes, 0u);
  EXPECT_GE(no_peak.cpu_seconds, u.cpu_seconds);

  worker.reset_peak_rss();
  const Usage after_reset = worker.usage();
  EXPECT_TRUE(after_reset.valid);
  EXPECT_GT(after_reset.peak_rss_bytes, 0u);
  EXPECT_LE(after_reset.peak_rss_bytes, u.peak_rss_bytes);
}

TEST(WorkerProcess, UsageOfAGoneWorkerIsInvalid) {
  SupervisorChannel channel(kGeometry);
  WorkerProcess worker(test_support::fake_worker_spec("echo"), channel, kStartTimeout);
  worker.terminate();
  EXPECT_FALSE(worker.usage().valid);
  worker.reset_peak_rss();  // no effect, no crash
}

TEST(WorkerProcess, TerminateReapsBothProcesses) {
  SupervisorChannel channel(kGeometry);
  WorkerProcess worker(test_support::fake_worker_spec("ignore-sigint"), channel, kStartTimeout);
  const pid_t launcher = worker.launcher_pid();
  const pid_t worker_pid = worker.worker_pid();
  const auto start = Clock::now();
  worker.terminate(milliseconds(2000));
  EXPECT_LT(Clock::now() - start, milliseconds(2000));  // the launcher obeyed SIGTERM
  EXPECT_TRUE(worker.reap());
  // reaped by terminate(): no zombie left, no child of ours any more
  errno = 0;
  EXPECT_EQ(::waitpid(launcher, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
  EXPECT_TRUE(process_gone(launcher));
  EXPECT_TRUE(process_gone(worker_pid));
  EXPECT_TRUE(pidfd_readable(worker.pidfd(), 0));
  worker.terminate();  // twice: nothing left to do
  EXPECT_TRUE(worker.reap());
}

TEST(WorkerProcess, DestructorEndsTheSession) {
  pid_t launcher = -1, worker_pid = -1;
  {
    SupervisorChannel channel(kGeometry);
    WorkerProcess worker(test_support::fake_worker_spec("echo"), channel, kStartTimeout);
    launcher = worker.launcher_pid();
    worker_pid = worker.worker_pid();
  }
  EXPECT_TRUE(process_gone(launcher));
  EXPECT_TRUE(process_gone(worker_pid));
  errno = 0;
  EXPECT_EQ(::waitpid(launcher, nullptr, WNOHANG), -1);
  EXPECT_EQ(errno, ECHILD);
}

// A temporary shell script standing in for the launcher.
class FakeLauncher {
 public:
  explicit FakeLauncher(const std::string& body) {
    char dir[] = "/tmp/worker_process_test.XXXXXX";
    if (::mkdtemp(dir) == nullptr) throw std::runtime_error("mkdtemp");
    dir_ = dir;
    path_ = dir_ + "/launcher.sh";
    std::ofstream(path_) << "#!/bin/sh\n" << body << "\n";
    ::chmod(path_.c_str(), 0755);
  }
  ~FakeLauncher() {
    ::unlink(path_.c_str());
    ::rmdir(dir_.c_str());
  }
  FakeLauncher(const FakeLauncher&) = delete;
  FakeLauncher& operator=(const FakeLauncher&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string dir_, path_;
};

// True when this process has no child left, not even an unreaped one.
bool no_children_left() {
  errno = 0;
  return ::waitpid(-1, nullptr, WNOHANG) == -1 && errno == ECHILD;
}

TEST(WorkerProcessStart, MissingLauncherIsASpawnError) {
  SupervisorChannel channel(kGeometry);
  SpawnSpec spec = test_support::fake_worker_spec("echo");
  spec.launcher = "/nonexistent/sandbox_exec_launcher";
  try {
    WorkerProcess worker(spec, channel, kStartTimeout);
    FAIL() << "spawned a missing launcher";
  } catch (const SandboxError& e) {
    EXPECT_EQ(e.layer(), "spawn");
    EXPECT_EQ(e.error_number(), ENOENT);
    EXPECT_TRUE(contains(e.call(), "/nonexistent/sandbox_exec_launcher")) << e.what();
  }
}

TEST(WorkerProcessStart, LauncherExitingWithoutAReport) {
  const FakeLauncher launcher("exit 7");
  SupervisorChannel channel(kGeometry);
  SpawnSpec spec = test_support::fake_worker_spec("echo");
  spec.launcher = launcher.path();
  try {
    WorkerProcess worker(spec, channel, kStartTimeout);
    FAIL() << "a launcher that never reported was taken as started";
  } catch (const SandboxError& e) {
    EXPECT_EQ(e.layer(), "spawn");
    EXPECT_TRUE(contains(e.what(), "exited without reporting")) << e.what();
  }
  EXPECT_TRUE(no_children_left());
}

TEST(WorkerProcessStart, LauncherNeverReportingTimesOutAndIsEnded) {
  const FakeLauncher launcher("exec sleep 60");
  SupervisorChannel channel(kGeometry);
  SpawnSpec spec = test_support::fake_worker_spec("echo");
  spec.launcher = launcher.path();
  const auto start = Clock::now();
  try {
    WorkerProcess worker(spec, channel, milliseconds(300));
    FAIL() << "a launcher that never reported was taken as started";
  } catch (const SandboxError& e) {
    EXPECT_EQ(e.layer(), "spawn");
    EXPECT_TRUE(contains(e.what(), "no start report within the start timeout")) << e.what();
  }
  const auto took = Clock::now() - start;
  EXPECT_GE(took, milliseconds(290));
  EXPECT_LT(took, milliseconds(5000));
  // terminate() ended (SIGTERM) and reaped the silent launcher
  EXPECT_TRUE(no_children_left());
}

TEST(ExitInfo, DescribesEveryEnd) {
  ExitInfo none;
  EXPECT_EQ(none.describe(), "ended without an exit status (its launcher was killed)");

  const auto status_of = [](void (*child)()) {
    const pid_t pid = ::fork();
    if (pid == 0) child();
    int st = 0;
    ::waitpid(pid, &st, 0);
    return st;
  };
  ExitInfo exited{status_of([] { ::_exit(3); })};
  EXPECT_EQ(exited.describe(), "exited with status 3");
  ExitInfo ok{status_of([] { ::_exit(0); })};
  EXPECT_EQ(ok.describe(), "exited with status 0");
  ExitInfo segv{status_of([] {
    const rlimit no_core{0, 0};
    ::setrlimit(RLIMIT_CORE, &no_core);
    ::signal(SIGSEGV, SIG_DFL);  // past any sanitizer's handler
    ::raise(SIGSEGV);
    ::_exit(1);
  })};
  EXPECT_EQ(segv.describe(), "killed by signal 11 (SIGSEGV)");

  // wait statuses built by hand (the kernel's layout: signal in the low 7 bits, 0x80 core)
  EXPECT_EQ((ExitInfo{SIGTERM}).describe(), "killed by signal 15 (SIGTERM)");
  EXPECT_EQ((ExitInfo{SIGABRT | 0x80}).describe(), "killed by signal 6 (SIGABRT), core dumped");
  EXPECT_EQ((ExitInfo{42 << 8}).describe(), "exited with status 42");
  // a stopped status (0x7f low byte) is neither an exit nor a signal death
  EXPECT_EQ((ExitInfo{(SIGSTOP << 8) | 0x7f}).describe(),
            "ended with wait status " + std::to_string((SIGSTOP << 8) | 0x7f));
}

}  // namespace
}  // namespace sandbox_exec
