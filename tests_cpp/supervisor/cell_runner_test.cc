// Tests of CellRunner (cell_runner.h) end to end: the real sandbox_exec_launcher spawns
// tests_cpp/fake_worker (a C++ stand-in for the Python worker, see fake_worker.cc) and the
// tests check every CellOutcome: done (output delivered, caps and UTF-8-safe truncation,
// usage), crashed (SIGSEGV named in the reason, exit status), protocol violation (a
// scribbled event ring, an unknown frame type, a sink that rejects a message), timeout
// (SIGINT honoured, SIGINT fatal, SIGINT ignored -> killed after the grace period),
// interrupt() from another thread, terminate(); and the start failures: a nonexistent
// workdir (SandboxError naming the workdir layer, chdir and ENOENT), a missing worker
// program or launcher, a worker that exits or talks before kReady, a start timeout.
#include "supervisor/cell_runner.h"
#include "collected_events.h"
#include "fake_worker_spec.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/wait.h>
#include <time.h>

#include <chrono>
#include <cstdlib>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "common/sys_error.h"

namespace sandbox_exec {

// Readable CellEnd values in failure messages.
void PrintTo(CellEnd end, std::ostream* os) {
  if (end == CellEnd::kDone)
    *os << "kDone";
  else if (end == CellEnd::kTimeout)
    *os << "kTimeout";
  else if (end == CellEnd::kCrashed)
    *os << "kCrashed";
  else if (end == CellEnd::kViolation)
    *os << "kViolation";
  else
    *os << "CellEnd(" << static_cast<int>(end) << ")";
}

namespace {

using Clock = std::chrono::steady_clock;
constexpr ChannelGeometry kGeometry{4096, 16384};
constexpr double kStartTimeout = 10.0;
constexpr uint16_t kStdout = static_cast<uint16_t>(FrameType::kStdout);
constexpr uint16_t kStderr = static_cast<uint16_t>(FrameType::kStderr);
constexpr uint16_t kMessage = static_cast<uint16_t>(FrameType::kMessage);

SpawnSpec spec_for(const std::string& mode) { return test_support::fake_worker_spec(mode); }

using test_support::Collected;

CellLimits generous() {
  CellLimits l;
  l.timeout_s = 20;
  l.interrupt_grace_s = 2;
  return l;
}

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Is `pid` gone (or a zombie nobody will see again)? kill(pid, 0) fails with ESRCH.
bool process_gone(pid_t pid) {
  for (int i = 0; i < 200; ++i) {
    if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

// ---- done ---------------------------------------------------------------------------------

TEST(CellRunner, ReadyHandshakeAndEchoCells) {
  CellRunner runner(spec_for("echo"), kGeometry, kStartTimeout);
  EXPECT_GT(runner.worker_pid(), 0);
  EXPECT_GT(runner.launcher_pid(), 0);
  EXPECT_NE(runner.worker_pid(), runner.launcher_pid());
  EXPECT_EQ(runner.ready_payload(), R"({"protocol":)" + std::to_string(kProtocolVersion) + R"(,"pid":)" +
                                        std::to_string(runner.worker_pid()) + R"(,"python":"fake"})");
  EXPECT_TRUE(runner.alive());

  for (int i = 0; i < 3; ++i) {
    Collected c;
    const std::string request = R"j({"code":"print()","execution_count":)j" + std::to_string(i) + "}";
    const CellOutcome out = runner.run_cell(request, generous(), c.sink());
    EXPECT_EQ(out.end, CellEnd::kDone) << out.reason;
    EXPECT_EQ(out.done_payload, R"({"status":"ok"})");
    EXPECT_TRUE(out.reason.empty()) << out.reason;
    EXPECT_FALSE(out.deadline_hit);
    ASSERT_EQ(c.events.size(), 1u);
    EXPECT_EQ(c.events[0].type, kStdout);
    EXPECT_EQ(c.events[0].payload, request);
    // each event is charged kEventOverheadBytes beyond its bytes (cell_runner.h), the
    // end-of-cell report included
    EXPECT_EQ(out.output_bytes, request.size() + out.done_payload.size() + 2 * kEventOverheadBytes);
    EXPECT_EQ(out.dropped_output_bytes, 0u);
    EXPECT_GE(out.duration_s, 0.0);
    EXPECT_LT(out.duration_s, 5.0);
    ASSERT_TRUE(out.cpu_s.has_value());
    EXPECT_GE(*out.cpu_s, 0.0);
    ASSERT_TRUE(out.peak_rss_bytes.has_value());
    EXPECT_GT(*out.peak_rss_bytes, 0u);
  }
  EXPECT_TRUE(runner.alive());
}

TEST(CellRunner, RequestLargerThanTheRequestRing) {
  CellRunner runner(spec_for("echo"), kGeometry, kStartTimeout);
  std::string request(20000, 'q');  // five request rings' worth, echoed back in frames
  request.front() = '<';
  request.back() = '>';
  Collected c;
  const CellOutcome out = runner.run_cell(request, generous(), c.sink());
  EXPECT_EQ(out.end, CellEnd::kDone) << out.reason;
  EXPECT_EQ(c.joined(kStdout), request);
  // the bytes, plus the per-event charge for each frame it came in
  const uint64_t overhead = out.output_bytes - request.size() - out.done_payload.size();
  EXPECT_EQ(overhead % kEventOverheadBytes, 0u);
  EXPECT_GE(overhead / kEventOverheadBytes, c.events.size() + 1);
}

TEST(CellRunner, OutputAndMessageCapsDropAndCountWithoutSplittingUtf8) {
  CellRunner runner(spec_for("big-output"), kGeometry, kStartTimeout);
  CellLimits limits = generous();
  limits.max_output_bytes = 10000;
  limits.max_message_bytes = 50000;
  Collected c;
  const CellOutcome out = runner.run_cell("{}", limits, c.sink());
  ASSERT_EQ(out.end, CellEnd::kDone) << out.reason;
  EXPECT_EQ(out.done_payload, R"({"status":"ok"})");
  // Each event is charged 256 bytes beyond its size (kEventOverheadBytes). The 7-byte
  // message is kept (263 charged); the 100000-byte message over max_message_bytes is dropped
  // whole; then 2 x 3000 stdout bytes are kept (3256 charged each: 6775), of the third only
  // 2968 (room 10000 - 6775 - 256 = 2969, and 2969 would split a character), the fourth not.
  ASSERT_GE(c.events.size(), 2u);
  EXPECT_EQ(c.events[0].type, kMessage);
  EXPECT_EQ(c.events[0].payload, R"({"m":1})");
  const std::string text = c.joined(kStdout);
  EXPECT_EQ(text.size(), 8968u);
  for (std::size_t i = 0; i + 1 < text.size(); i += 2) {
    ASSERT_EQ(static_cast<unsigned char>(text[i]), 0xC3u) << i;
    ASSERT_EQ(static_cast<unsigned char>(text[i + 1]), 0xA9u) << i;
  }
  for (const auto& e : c.events) EXPECT_NE(e.payload.size(), 100000u) << "oversized message delivered";
  // 9999 of output, then the end-of-cell report (15 bytes + 256), charged past the cap: the
  // report always ends the cell, cut to what is left when it is large.
  EXPECT_EQ(out.output_bytes, 9999u + 15u + kEventOverheadBytes);
  EXPECT_EQ(out.dropped_output_bytes, 100000u + 32u + 3000u);
  EXPECT_TRUE(runner.alive());
}

TEST(CellRunner, SinkRejectingAMessageIsAProtocolViolation) {
  CellRunner runner(spec_for("echo"), kGeometry, kStartTimeout);
  const EventSink reject = [](EventBatch&) { return false; };
  const CellOutcome out = runner.run_cell("{}", generous(), reject);
  EXPECT_EQ(out.end, CellEnd::kViolation);
  EXPECT_TRUE(contains(out.reason, "protocol violation")) << out.reason;
  EXPECT_TRUE(contains(out.reason, "malformed output message")) << out.reason;
  EXPECT_FALSE(runner.alive());
}

TEST(CellRunner, OversizedCellDoneReportStillEndsTheCell) {
  // The Python worker's kCellDone carries the exception (evalue, traceback), so its size is
  // up to the user's code. When it passes max_message_bytes the assembler discards it --
  // but the cell has ended all the same, and the supervisor must notice. It must not wait
  // for a kCellDone that will never come (until the deadline, or forever without one).
  CellRunner runner(spec_for("big-done"), kGeometry, kStartTimeout);
  CellLimits limits = generous();
  limits.timeout_s = 1.5;
  limits.interrupt_grace_s = 0.2;
  limits.max_message_bytes = 50000;
  Collected c;
  const CellOutcome out = runner.run_cell("{}", limits, c.sink());
  EXPECT_NE(out.end, CellEnd::kTimeout) << out.reason;
  EXPECT_FALSE(out.deadline_hit) << out.reason;
  EXPECT_LT(out.duration_s, 1.0) << "the cell's end went unnoticed; reason: " << out.reason;
  // Read whole (reports up to 1 MiB are, whatever max_message_bytes), then rebuilt: this one
  // has no ename or traceback, so it stands as a small ProtocolError.
  EXPECT_LE(out.done_payload.size(), 1000u) << "an oversized report was kept";
  EXPECT_TRUE(contains(out.done_payload, "ProtocolError")) << out.done_payload;
}

// ---- crashed ------------------------------------------------------------------------------

TEST(CellRunner, WorkerKilledBySigsegvIsCrashed) {
  CellRunner runner(spec_for("segv"), kGeometry, kStartTimeout);
  const pid_t worker = runner.worker_pid();
  Collected c;
  const CellOutcome out = runner.run_cell("{}", generous(), c.sink());
  EXPECT_EQ(out.end, CellEnd::kCrashed);
  EXPECT_TRUE(contains(out.reason, "SIGSEGV")) << out.reason;
  EXPECT_TRUE(contains(out.reason, "killed by signal 11")) << out.reason;
  EXPECT_FALSE(out.deadline_hit);
  EXPECT_TRUE(c.events.empty());
  EXPECT_FALSE(runner.alive());
  EXPECT_TRUE(contains(runner.exit_description(), "SIGSEGV")) << runner.exit_description();
  EXPECT_TRUE(process_gone(worker));
  // The session stays dead.
  const CellOutcome again = runner.run_cell("{}", generous(), c.sink());
  EXPECT_EQ(again.end, CellEnd::kCrashed);
  EXPECT_TRUE(contains(again.reason, "not running")) << again.reason;
}

TEST(CellRunner, WorkerExitingMidCellIsCrashedWithItsStatus) {
  CellRunner runner(spec_for("exit3"), kGeometry, kStartTimeout);
  Collected c;
  const CellOutcome out = runner.run_cell("{}", generous(), c.sink());
  EXPECT_EQ(out.end, CellEnd::kCrashed);
  EXPECT_TRUE(contains(out.reason, "exited with status 3")) << out.reason;
  EXPECT_FALSE(runner.alive());
}

// ---- violation ----------------------------------------------------------------------------

TEST(CellRunner, ScribbledEventRingIsAViolationAndEndsTheSession) {
  CellRunner runner(spec_for("garbage"), kGeometry, kStartTimeout);
  const pid_t worker = runner.worker_pid();
  Collected c;
  const CellOutcome out = runner.run_cell("{}", generous(), c.sink());
  EXPECT_EQ(out.end, CellEnd::kViolation);
  EXPECT_TRUE(contains(out.reason, "protocol violation")) << out.reason;
  EXPECT_TRUE(contains(out.reason, "producer tail 12345")) << out.reason;
  EXPECT_LT(out.duration_s, 5.0);
  EXPECT_FALSE(runner.alive());
  EXPECT_TRUE(process_gone(worker)) << "the offending worker must be killed";
}

TEST(CellRunner, UnknownEventTypeIsAViolation) {
  CellRunner runner(spec_for("bad-type"), kGeometry, kStartTimeout);
  Collected c;
  const CellOutcome out = runner.run_cell("{}", generous(), c.sink());
  EXPECT_EQ(out.end, CellEnd::kViolation);
  EXPECT_TRUE(contains(out.reason, "unexpected event frame type 99")) << out.reason;
  EXPECT_FALSE(runner.alive());
}

// ---- timeout and interrupt ----------------------------------------------------------------

TEST(CellRunner, DeadlineInterruptHonouredEndsTheCellNormally) {
  CellRunner runner(spec_for("honour-sigint"), kGeometry, kStartTimeout);
  CellLimits limits = generous();
  limits.timeout_s = 0.2;
  limits.interrupt_grace_s = 5;
  Collected c;
  const CellOutcome out = runner.run_cell("{}", limits, c.sink());
  EXPECT_EQ(out.end, CellEnd::kDone) << out.reason;
  EXPECT_TRUE(out.deadline_hit);
  EXPECT_EQ(out.done_payload, R"({"status":"error"})");
  EXPECT_EQ(c.joined(kStderr), "KeyboardInterrupt\n");
  EXPECT_GE(out.duration_s, 0.2);
  EXPECT_LT(out.duration_s, 3.0);
  EXPECT_TRUE(runner.alive()) << "an interrupted cell leaves the session usable";
}

TEST(CellRunner, DeadlineInterruptFatalIsATimeout) {
  CellRunner runner(spec_for("default-sigint"), kGeometry, kStartTimeout);
  CellLimits limits = generous();
  limits.timeout_s = 0.2;
  limits.interrupt_grace_s = 5;
  Collected c;
  const CellOutcome out = runner.run_cell("{}", limits, c.sink());
  EXPECT_EQ(out.end, CellEnd::kTimeout);
  EXPECT_TRUE(out.deadline_hit);
  EXPECT_TRUE(contains(out.reason, "killed by signal 2 (SIGINT)")) << out.reason;
  EXPECT_TRUE(contains(out.reason, "after the deadline")) << out.reason;
  EXPECT_LT(out.duration_s, 3.0);
  EXPECT_FALSE(runner.alive());
}

TEST(CellRunner, DeadlineInterruptIgnoredKillsTheSessionAfterTheGrace) {
  CellRunner runner(spec_for("ignore-sigint"), kGeometry, kStartTimeout);
  const pid_t worker = runner.worker_pid();
  const pid_t launcher = runner.launcher_pid();
  CellLimits limits = generous();
  limits.timeout_s = 0.2;
  limits.interrupt_grace_s = 0.3;
  Collected c;
  const auto start = Clock::now();
  const CellOutcome out = runner.run_cell("{}", limits, c.sink());
  const double took = std::chrono::duration<double>(Clock::now() - start).count();
  EXPECT_EQ(out.end, CellEnd::kTimeout);
  EXPECT_TRUE(out.deadline_hit);
  EXPECT_TRUE(contains(out.reason, "ignored the interrupt")) << out.reason;
  EXPECT_GE(out.duration_s, 0.5);  // deadline + grace
  EXPECT_LT(took, 4.0);
  EXPECT_FALSE(runner.alive());
  EXPECT_TRUE(process_gone(worker));
  EXPECT_TRUE(process_gone(launcher));
}

TEST(CellRunner, InterruptFromAnotherThread) {
  CellRunner runner(spec_for("honour-sigint"), kGeometry, kStartTimeout);
  std::thread interrupter([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    runner.interrupt();
  });
  CellLimits limits = generous();
  limits.timeout_s = 0;  // no deadline
  Collected c;
  const CellOutcome out = runner.run_cell("{}", limits, c.sink());
  interrupter.join();
  EXPECT_EQ(out.end, CellEnd::kDone) << out.reason;
  EXPECT_FALSE(out.deadline_hit);
  EXPECT_EQ(out.done_payload, R"({"status":"error"})");
  EXPECT_TRUE(runner.alive());
}

TEST(CellRunner, TerminateFromAnotherThreadEndsARunningCell) {
  CellRunner runner(spec_for("ignore-sigint"), kGeometry, kStartTimeout);
  const pid_t worker = runner.worker_pid();
  std::thread killer([&] {
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
    runner.terminate();
  });
  CellLimits limits = generous();
  limits.timeout_s = 0;  // only terminate() can end this cell
  Collected c;
  const CellOutcome out = runner.run_cell("{}", limits, c.sink());
  killer.join();
  EXPECT_EQ(out.end, CellEnd::kCrashed) << out.reason;
  EXPECT_FALSE(out.deadline_hit);
  EXPECT_LT(out.duration_s, 3.0);
  EXPECT_FALSE(runner.alive());
  EXPECT_TRUE(process_gone(worker));
}

TEST(CellRunner, TerminateEndsTheSession) {
  CellRunner runner(spec_for("echo"), kGeometry, kStartTimeout);
  const pid_t worker = runner.worker_pid();
  ASSERT_TRUE(runner.alive());
  runner.terminate();
  EXPECT_FALSE(runner.alive());
  EXPECT_TRUE(process_gone(worker));
  Collected c;
  const CellOutcome out = runner.run_cell("{}", generous(), c.sink());
  EXPECT_EQ(out.end, CellEnd::kCrashed);
  runner.terminate();  // idempotent
}

TEST(CellRunner, WorkerClosingItsEventDoorbellDoesNotMakeTheSupervisorSpin) {
  // Any cell can close fd 7 (os.closerange(3, 100) will do). The supervisor's thread must
  // keep sleeping between checks while it waits for the deadline, not burn a core.
  CellRunner runner(spec_for("close-bell"), kGeometry, kStartTimeout);
  CellLimits limits = generous();
  limits.timeout_s = 0.5;
  limits.interrupt_grace_s = 0.2;
  Collected c;
  timespec t0{}, t1{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
  const CellOutcome out = runner.run_cell("{}", limits, c.sink());
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t1);
  const double cpu = static_cast<double>(t1.tv_sec - t0.tv_sec) + static_cast<double>(t1.tv_nsec - t0.tv_nsec) / 1e9;
  EXPECT_EQ(out.end, CellEnd::kTimeout) << out.reason;
  EXPECT_GE(out.duration_s, 0.5);
  EXPECT_LT(cpu, 0.25 * out.duration_s) << "run_cell used " << cpu << " s of CPU in " << out.duration_s
                                        << " s of waiting";
}

// ---- start failures -----------------------------------------------------------------------

SandboxError start_error(const SpawnSpec& spec, double start_timeout = kStartTimeout) {
  try {
    CellRunner runner(spec, kGeometry, start_timeout);
  } catch (const SandboxError& e) {
    return e;
  }
  ADD_FAILURE() << "CellRunner started";
  return SandboxError("none", "none", 0);
}

TEST(CellRunnerStart, NonexistentWorkdirNamesTheWorkdirLayerChdirAndEnoent) {
  SpawnSpec spec = spec_for("echo");
  spec.workdir = "/nonexistent/sandbox_exec/workdir";
  const SandboxError e = start_error(spec);
  EXPECT_EQ(e.layer(), "workdir");
  EXPECT_EQ(e.call(), "chdir(workdir)");
  EXPECT_EQ(e.error_number(), ENOENT);
  EXPECT_TRUE(contains(e.what(), "workdir: chdir(workdir) failed")) << e.what();
  EXPECT_TRUE(contains(e.what(), "ENOENT")) << e.what();
}

TEST(CellRunnerStart, CommandLineTheLauncherRefusesNamesItsParseStep) {
  SpawnSpec spec = spec_for("echo");
  spec.workdir = "";  // --workdir "" is refused by parse_launcher_argv in the launcher
  const SandboxError e = start_error(spec);
  EXPECT_EQ(e.layer(), "launcher");
  EXPECT_EQ(e.call(), "parse arguments");
  EXPECT_EQ(e.error_number(), EINVAL);
}

TEST(CellRunnerStart, MissingWorkerProgramNamesExecAndEnoent) {
  SpawnSpec spec = spec_for("echo");
  spec.argv = {"/nonexistent/python3"};
  const SandboxError e = start_error(spec);
  EXPECT_EQ(e.layer(), "exec");
  EXPECT_EQ(e.call(), "execve(worker)");
  EXPECT_EQ(e.error_number(), ENOENT);
}

TEST(CellRunnerStart, MissingLauncherNamesSpawnAndEnoent) {
  SpawnSpec spec = spec_for("echo");
  spec.launcher = "/nonexistent/sandbox_exec_launcher";
  const SandboxError e = start_error(spec);
  EXPECT_EQ(e.layer(), "spawn");
  EXPECT_EQ(e.error_number(), ENOENT);
  EXPECT_TRUE(contains(e.what(), "/nonexistent/sandbox_exec_launcher")) << e.what();
}

TEST(CellRunnerStart, WorkerExitingBeforeReady) {
  const SandboxError e = start_error(spec_for("exit-before-ready"));
  EXPECT_EQ(e.layer(), "worker");
  EXPECT_EQ(e.call(), "interpreter start");
  EXPECT_TRUE(contains(e.what(), "exited with status 3")) << e.what();
}

TEST(CellRunnerStart, WorkerTalkingBeforeReady) {
  const SandboxError e = start_error(spec_for("stdout-before-ready"));
  EXPECT_EQ(e.layer(), "worker");
  EXPECT_EQ(e.call(), "startup handshake");
  EXPECT_TRUE(contains(e.what(), "frame type 17 before kReady")) << e.what();
}

TEST(CellRunnerStart, WorkerOfAnotherProtocolVersionIsRefused) {
  const SandboxError e = start_error(spec_for("old-protocol"));
  EXPECT_EQ(e.layer(), "worker");
  EXPECT_EQ(e.call(), "startup handshake");
  EXPECT_EQ(e.error_number(), EPROTO);
  EXPECT_TRUE(contains(e.what(), "speaks protocol " + std::to_string(kProtocolVersion + 1))) << e.what();
}

TEST(CellRunnerStart, WorkerNeverReadyTimesOut) {
  const auto start = Clock::now();
  const SandboxError e = start_error(spec_for("never-ready"), 0.5);
  EXPECT_EQ(e.layer(), "worker");
  EXPECT_EQ(e.error_number(), ETIMEDOUT);
  EXPECT_LT(Clock::now() - start, std::chrono::seconds(5));
}

TEST(CellRunnerStart, RefusedResourceLimitNamesTheRlimitsLayer) {
  // RLIMIT_NOFILE above fs.nr_open (at most about 2^30) is refused with EPERM even for root.
  SpawnSpec spec = spec_for("echo");
  spec.limits.open_files = uint64_t{1} << 40;
  const SandboxError e = start_error(spec);
  EXPECT_EQ(e.layer(), "rlimits") << e.what();
  EXPECT_EQ(e.call(), "setrlimit(RLIMIT_NOFILE)");
  EXPECT_EQ(e.error_number(), EPERM) << e.what();
}

}  // namespace
}  // namespace sandbox_exec
