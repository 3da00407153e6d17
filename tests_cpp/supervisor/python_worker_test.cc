// End-to-end sessions through this build's supervisor and launcher with the real Python
// worker: CellRunner (cell_runner.h) spawns this build's sandbox_exec_launcher, which execs
// `python -I -m sandbox_exec._worker` from the project's .venv, exactly the argv the package
// uses (sandbox.py). Built in the asan and tsan presets, this is the sanitizers' run over
// real sessions (docs/reliability.md, "Sanitizers"): the supervisor's side of every frame
// the real worker sends, not only the fake worker's (fake_worker.cc).
//
// Each test is one session: output and results (stdout, an execute_result, state kept
// between cells, an error report), a stream flood past the output cap, a crash (SIGSEGV),
// an interrupt honoured (the deadline's and interrupt() from another thread), a cell that
// ignores SIGINT (killed after the grace), a restart (a new session after a dead one), and
// close (terminate() and the destructor leave no process).
//
// The in-process layers are on (capabilities dropped, Landlock, seccomp), namespaces off:
// the sandbox's mount view is assembled by the Python backend (_system_view), and the
// launcher's own tests (tests_cpp/launcher) cover the namespace steps.
//
// SANDBOX_EXEC_TEST_PYTHON names the interpreter (CMake cache variable of that name; by
// default the .venv scripts/setup.sh builds, where sandbox_exec is installed). A missing one
// is a failure, not a skip: the run must not look clean for having run nothing.
#include "collected_events.h"
#include "supervisor/cell_runner.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <system_error>
#include <thread>
#include <vector>

#ifndef SANDBOX_EXEC_LAUNCHER
#error "SANDBOX_EXEC_LAUNCHER must name sandbox_exec_launcher"
#endif
#ifndef SANDBOX_EXEC_TEST_PYTHON
#error "SANDBOX_EXEC_TEST_PYTHON must name the Python interpreter with sandbox_exec installed"
#endif

namespace sandbox_exec {
namespace {

using Clock = std::chrono::steady_clock;
using std::chrono::milliseconds;
constexpr double kStartTimeout = 60.0;  // a cold interpreter on a loaded 2-CPU machine
constexpr uint16_t kStdout = static_cast<uint16_t>(FrameType::kStdout);
constexpr uint16_t kStderr = static_cast<uint16_t>(FrameType::kStderr);
constexpr uint16_t kMessage = static_cast<uint16_t>(FrameType::kMessage);

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// Is `pid` gone? kill(pid, 0) fails with ESRCH. Waits up to 5 s.
bool process_gone(pid_t pid) {
  for (int i = 0; i < 500; ++i) {
    if (::kill(pid, 0) != 0 && errno == ESRCH) return true;
    std::this_thread::sleep_for(milliseconds(10));
  }
  return false;
}

// A JSON string literal of `text` (the cells below use only printable ASCII and newlines).
std::string json_string(const std::string& text) {
  std::string out = "\"";
  for (const char ch : text) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += ch;
    } else if (ch == '\n') {
      out += "\\n";
    } else {
      out += ch;
    }
  }
  return out + "\"";
}

std::string request(const std::string& code, int count) {
  return R"({"code":)" + json_string(code) + R"(,"execution_count":)" + std::to_string(count) + "}";
}

// A fresh workdir, removed with everything in it at the end of the test.
class Workdir {
 public:
  Workdir() {
    char dir[] = "/tmp/python_worker_test.XXXXXX";
    if (::mkdtemp(dir) == nullptr) throw std::runtime_error("mkdtemp");
    path_ = dir;
  }
  ~Workdir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  Workdir(const Workdir&) = delete;
  Workdir& operator=(const Workdir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// The session as the package starts it (sandbox.py: argv, the essential environment),
// with the in-process isolation layers on and namespaces off (see the header).
SpawnSpec python_worker_spec(const std::string& workdir) {
  SpawnSpec spec;
  spec.launcher = SANDBOX_EXEC_LAUNCHER;
  spec.argv = {SANDBOX_EXEC_TEST_PYTHON, "-I", "-m", "sandbox_exec._worker"};
  spec.env = {"PATH=/usr/local/bin:/usr/bin:/bin",
              "HOME=" + workdir,
              "LANG=C.UTF-8",
              "LC_ALL=C.UTF-8",
              "PYTHONDONTWRITEBYTECODE=1",
              "TMPDIR=/tmp",
              "TERM=dumb",
              "OMP_NUM_THREADS=1",
              "OPENBLAS_NUM_THREADS=1",
              "JE_ARROW_MALLOC_CONF=background_thread:false"};
  spec.workdir = workdir;
  spec.isolation.namespaces = false;
  spec.isolation.drop_caps = true;
  spec.isolation.landlock = true;
  spec.isolation.seccomp = true;
  return spec;
}

using test_support::Collected;

CellLimits generous() {
  CellLimits l;
  l.timeout_s = 60;
  l.interrupt_grace_s = 5;
  return l;
}

// Fails the test (not a skip) when the interpreter is missing.
void require_python() {
  ASSERT_EQ(::access(SANDBOX_EXEC_TEST_PYTHON, X_OK), 0)
      << SANDBOX_EXEC_TEST_PYTHON << " is missing: run scripts/setup.sh (or set SANDBOX_EXEC_TEST_PYTHON)";
}

class PythonWorker : public ::testing::Test {
 protected:
  void SetUp() override { require_python(); }
  Workdir workdir_;
};

TEST_F(PythonWorker, OutputResultsStateAndErrors) {
  CellRunner runner(python_worker_spec(workdir_.path()), ChannelGeometry{}, kStartTimeout);
  EXPECT_TRUE(contains(runner.ready_payload(), R"("protocol":)" + std::to_string(kProtocolVersion)))
      << runner.ready_payload();
  EXPECT_TRUE(contains(runner.ready_payload(), R"("pid":)" + std::to_string(runner.worker_pid())))
      << runner.ready_payload();
  // The real interpreter names its version (the fake worker says "fake").
  EXPECT_TRUE(contains(runner.ready_payload(), R"("python":"3.)")) << runner.ready_payload();

  Collected first;
  const CellOutcome out = runner.run_cell(request("x = 6\nprint('hello')\nx * 7", 1), generous(), first.sink());
  ASSERT_EQ(out.end, CellEnd::kDone) << out.reason;
  EXPECT_TRUE(contains(out.done_payload, R"("status":"ok")")) << out.done_payload;
  EXPECT_TRUE(contains(out.done_payload, R"("execution_count":1)")) << out.done_payload;
  EXPECT_EQ(first.joined(kStdout), "hello\n");
  const std::string messages = first.joined(kMessage);
  EXPECT_TRUE(contains(messages, R"("output_type":"execute_result")")) << messages;
  EXPECT_TRUE(contains(messages, R"("text/plain":"42")")) << messages;
  ASSERT_TRUE(out.cpu_s.has_value());
  ASSERT_TRUE(out.peak_rss_bytes.has_value());
  EXPECT_GT(*out.peak_rss_bytes, 0u);

  // The namespace lives on; stderr and fd-level output arrive too.
  Collected second;
  const CellOutcome kept =
      runner.run_cell(request("import os, sys\nprint(x + 1, file=sys.stderr)\nos.write(1, b'fd1\\n')\nNone", 2),
                      generous(), second.sink());
  ASSERT_EQ(kept.end, CellEnd::kDone) << kept.reason;
  EXPECT_EQ(second.joined(kStderr), "7\n");
  EXPECT_EQ(second.joined(kStdout), "fd1\n");

  // An exception is a done cell with an error report and an error output.
  Collected third;
  const CellOutcome failed = runner.run_cell(request("1 / 0", 3), generous(), third.sink());
  ASSERT_EQ(failed.end, CellEnd::kDone) << failed.reason;
  EXPECT_TRUE(contains(failed.done_payload, R"("status":"error")")) << failed.done_payload;
  EXPECT_TRUE(contains(failed.done_payload, "ZeroDivisionError")) << failed.done_payload;
  EXPECT_TRUE(contains(third.joined(kMessage), R"("output_type":"error")")) << third.joined(kMessage);
  EXPECT_TRUE(runner.alive());
}

TEST_F(PythonWorker, StreamFloodIsCappedAndCounted) {
  CellRunner runner(python_worker_spec(workdir_.path()), ChannelGeometry{}, kStartTimeout);
  CellLimits limits = generous();
  limits.max_output_bytes = 200000;
  Collected c;
  // About 6.9 MB of print() and 2 MB written to fd 1 past the 200 kB cap.
  const CellOutcome out = runner.run_cell(
      request("import os\nfor i in range(1000000):\n    print(i)\nos.write(1, b'y' * 2000000)\nNone", 1), limits,
      c.sink());
  ASSERT_EQ(out.end, CellEnd::kDone) << out.reason;
  EXPECT_TRUE(contains(out.done_payload, R"("status":"ok")")) << out.done_payload;
  const std::string text = c.joined(kStdout);
  EXPECT_EQ(text.substr(0, 8), "0\n1\n2\n3\n");
  EXPECT_LE(text.size(), limits.max_output_bytes);
  EXPECT_GT(text.size(), limits.max_output_bytes / 2);
  EXPECT_GT(out.dropped_output_bytes, 6000000u);
  // The session is usable after the flood.
  Collected after;
  const CellOutcome next = runner.run_cell(request("print('after')", 2), generous(), after.sink());
  ASSERT_EQ(next.end, CellEnd::kDone) << next.reason;
  EXPECT_EQ(after.joined(kStdout), "after\n");
}

TEST_F(PythonWorker, CrashIsReportedAndANewSessionStarts) {
  pid_t crashed_worker = -1;
  {
    CellRunner runner(python_worker_spec(workdir_.path()), ChannelGeometry{}, kStartTimeout);
    crashed_worker = runner.worker_pid();
    Collected c;
    const CellOutcome out = runner.run_cell(
        request("import os, signal\nprint('before', flush=True)\nos.kill(os.getpid(), signal.SIGSEGV)", 1), generous(),
        c.sink());
    EXPECT_EQ(out.end, CellEnd::kCrashed) << out.reason;
    EXPECT_TRUE(contains(out.reason, "SIGSEGV")) << out.reason;
    EXPECT_FALSE(runner.alive());
    EXPECT_EQ(c.joined(kStdout), "before\n");
  }
  ASSERT_GT(crashed_worker, 0);
  EXPECT_TRUE(process_gone(crashed_worker));
  // The restart: a new session in the same supervisor process.
  CellRunner again(python_worker_spec(workdir_.path()), ChannelGeometry{}, kStartTimeout);
  EXPECT_NE(again.worker_pid(), crashed_worker);
  Collected c;
  const CellOutcome out = again.run_cell(request("print('x' in globals())", 1), generous(), c.sink());
  ASSERT_EQ(out.end, CellEnd::kDone) << out.reason;
  EXPECT_EQ(c.joined(kStdout), "False\n");
}

TEST_F(PythonWorker, DeadlineAndInterruptRaiseKeyboardInterrupt) {
  CellRunner runner(python_worker_spec(workdir_.path()), ChannelGeometry{}, kStartTimeout);
  CellLimits limits = generous();
  limits.timeout_s = 1.0;
  Collected c;
  const CellOutcome out = runner.run_cell(request("import time\ntime.sleep(60)", 1), limits, c.sink());
  ASSERT_EQ(out.end, CellEnd::kDone) << out.reason;
  EXPECT_TRUE(out.deadline_hit);
  EXPECT_TRUE(contains(out.done_payload, "KeyboardInterrupt")) << out.done_payload;
  EXPECT_LT(out.duration_s, 30.0);

  // interrupt() from another thread while the cell runs (the backend's Session.interrupt).
  std::thread interrupter([&] {
    std::this_thread::sleep_for(milliseconds(1000));
    runner.interrupt();
  });
  Collected d;
  CellLimits no_deadline = generous();
  no_deadline.timeout_s = 0;
  const CellOutcome interrupted =
      runner.run_cell(request("import time\nprint('sleeping', flush=True)\ntime.sleep(60)", 2), no_deadline, d.sink());
  interrupter.join();
  ASSERT_EQ(interrupted.end, CellEnd::kDone) << interrupted.reason;
  EXPECT_FALSE(interrupted.deadline_hit);
  EXPECT_TRUE(contains(interrupted.done_payload, "KeyboardInterrupt")) << interrupted.done_payload;
  EXPECT_TRUE(runner.alive());
}

TEST_F(PythonWorker, IgnoredInterruptIsATimeoutThatEndsTheSession) {
  CellRunner runner(python_worker_spec(workdir_.path()), ChannelGeometry{}, kStartTimeout);
  const pid_t worker = runner.worker_pid();
  const pid_t launcher = runner.launcher_pid();
  CellLimits limits = generous();
  limits.timeout_s = 1.0;
  limits.interrupt_grace_s = 0.5;
  Collected c;
  const CellOutcome out =
      runner.run_cell(request("import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(60)", 1),
                      limits, c.sink());
  EXPECT_EQ(out.end, CellEnd::kTimeout) << out.reason;
  EXPECT_TRUE(out.deadline_hit);
  EXPECT_TRUE(contains(out.reason, "ignored the interrupt")) << out.reason;
  EXPECT_FALSE(runner.alive());
  EXPECT_TRUE(process_gone(worker));
  EXPECT_TRUE(process_gone(launcher));
}

TEST_F(PythonWorker, CloseLeavesNoProcess) {
  pid_t worker = -1, launcher = -1;
  {
    CellRunner runner(python_worker_spec(workdir_.path()), ChannelGeometry{}, kStartTimeout);
    worker = runner.worker_pid();
    launcher = runner.launcher_pid();
    Collected c;
    ASSERT_EQ(runner.run_cell(request("print(1)", 1), generous(), c.sink()).end, CellEnd::kDone);
    runner.terminate();
    EXPECT_FALSE(runner.alive());
    const CellOutcome after = runner.run_cell(request("print(2)", 2), generous(), c.sink());
    EXPECT_NE(after.end, CellEnd::kDone);
  }
  EXPECT_TRUE(process_gone(worker));
  EXPECT_TRUE(process_gone(launcher));
  // And the destructor alone, with the worker idle.
  {
    CellRunner runner(python_worker_spec(workdir_.path()), ChannelGeometry{}, kStartTimeout);
    worker = runner.worker_pid();
    launcher = runner.launcher_pid();
  }
  EXPECT_TRUE(process_gone(worker));
  EXPECT_TRUE(process_gone(launcher));
}

}  // namespace
}  // namespace sandbox_exec
