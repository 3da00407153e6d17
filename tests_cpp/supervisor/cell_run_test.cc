// Tests of CellRun (cell_run.h) stepped by a caller that waits itself, as the Python
// binding's event loop does: the real launcher spawns tests_cpp's fake_worker. The cell must
// end with the same outcomes as CellRunner::run_cell (its own tests cover those rules in
// depth), while no step(0) blocks and the caller sleeps on wait_fds()/next_timer_ms()
// between steps instead of spinning.
#include "supervisor/cell_run.h"
#include "fake_worker_spec.h"

#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <vector>

namespace sandbox_exec {
namespace {

using Clock = std::chrono::steady_clock;
constexpr ChannelGeometry kGeometry{4096, 16384};

SpawnSpec spec_for(const std::string& mode) { return test_support::fake_worker_spec(mode); }

struct Stepped {
  CellOutcome outcome;
  int steps = 0;
  double longest_step_s = 0;
  std::string stdout_text;
};

// Drives a cell the way an event loop does: arm, sleep on the descriptors or the timer,
// then step without waiting.
Stepped step_to_end(CellRunner& runner, const std::string& request, const CellLimits& limits) {
  Stepped s;
  EventSink sink = [&s](EventBatch& batch) {
    for (const auto& e : batch)
      if (e.type == static_cast<uint16_t>(FrameType::kStdout)) s.stdout_text += e.payload;
    return true;
  };
  CellRun run(runner, request, limits, sink);
  for (;;) {
    const auto before = Clock::now();
    auto outcome = run.step(0);
    s.longest_step_s = std::max(s.longest_step_s, std::chrono::duration<double>(Clock::now() - before).count());
    ++s.steps;
    if (outcome) {
      s.outcome = *outcome;
      // Finished is final: the same outcome again, nothing to wait for.
      EXPECT_TRUE(run.finished());
      EXPECT_FALSE(run.arm());
      EXPECT_EQ(run.step(0)->end, outcome->end);
      return s;
    }
    if (!run.arm()) continue;
    const auto [bell, pidfd] = run.wait_fds();
    pollfd fds[2] = {{bell, POLLIN, 0}, {pidfd, POLLIN, 0}};
    (void)::poll(fds, 2, run.next_timer_ms());
  }
}

TEST(CellRun, StepsACellToItsEndWithoutBlockingOrSpinning) {
  CellRunner runner(spec_for("slow-echo"), kGeometry, 10.0);
  CellLimits limits;
  limits.timeout_s = 20;
  const Stepped s = step_to_end(runner, "after\n", limits);
  EXPECT_EQ(s.outcome.end, CellEnd::kDone) << s.outcome.reason;
  EXPECT_EQ(s.stdout_text, "before\nafter\n");
  EXPECT_GE(s.outcome.duration_s, 0.9);  // the worker paused 1 s in the middle
  // No step waited for the worker: the pause was spent in poll(), not in step(0)...
  EXPECT_LT(s.longest_step_s, 0.5);
  // ...and poll() slept: a caller that spun would step thousands of times in that second.
  EXPECT_LT(s.steps, 60);
}

TEST(CellRun, TheDeadlineEscalatesOnTheTimerAlone) {
  CellRunner runner(spec_for("ignore-sigint"), kGeometry, 10.0);
  CellLimits limits;
  limits.timeout_s = 0.2;
  limits.interrupt_grace_s = 0.2;
  const Stepped s = step_to_end(runner, "{}", limits);
  EXPECT_EQ(s.outcome.end, CellEnd::kTimeout);
  EXPECT_TRUE(s.outcome.deadline_hit);
  EXPECT_NE(s.outcome.reason.find("ignored the interrupt"), std::string::npos) << s.outcome.reason;
  EXPECT_LT(s.steps, 60);
  EXPECT_FALSE(runner.alive());
}

TEST(CellRun, AWorkerThatDiesWakesTheCallerThroughItsPidfd) {
  CellRunner runner(spec_for("segv"), kGeometry, 10.0);
  CellLimits limits;  // no deadline: only the pidfd can end this cell
  const Stepped s = step_to_end(runner, "{}", limits);
  EXPECT_EQ(s.outcome.end, CellEnd::kCrashed);
  EXPECT_NE(s.outcome.reason.find("SIGSEGV"), std::string::npos) << s.outcome.reason;
  EXPECT_LT(s.steps, 20);
}

// A caller that steps late (a loaded machine, an event loop busy elsewhere) first looks
// after the deadline, or after the deadline and the grace period, when the worker has long
// died of SIGSEGV: the cell crashed, it did not time out. (Found by the soak: under load a
// segfault was reported as "the cell ignored the interrupt".)
TEST(CellRun, ACrashSeenOnlyAfterTheDeadlineIsACrash) {
  for (const double late_s : {0.4, 0.9}) {  // past the deadline; past the deadline and the grace
    CellRunner runner(spec_for("segv"), kGeometry, 10.0);
    CellLimits limits;
    limits.timeout_s = 0.2;
    limits.interrupt_grace_s = 0.3;
    CellRun run(runner, "{}", limits, [](EventBatch&) { return true; });
    ::usleep(static_cast<useconds_t>(late_s * 1e6));  // the worker dies within this
    std::optional<CellOutcome> outcome;
    for (int i = 0; i < 100 && !(outcome = run.step(100)); ++i) {
    }
    ASSERT_TRUE(outcome.has_value());
    EXPECT_EQ(outcome->end, CellEnd::kCrashed) << late_s << ": " << outcome->reason;
    EXPECT_NE(outcome->reason.find("SIGSEGV"), std::string::npos) << outcome->reason;
  }
}

TEST(CellRun, AClosedDoorbellFallsBackToTheTimerNotToASpin) {
  // The worker closes its event doorbell: the pipe reads ready forever. The caller must be
  // told to stop waiting on it (wait_fds().first == -1) and poll on the timer instead.
  CellRunner runner(spec_for("close-bell"), kGeometry, 10.0);
  CellLimits limits;
  limits.timeout_s = 0.5;
  limits.interrupt_grace_s = 0.1;
  const Stepped s = step_to_end(runner, "{}", limits);
  EXPECT_NE(s.outcome.end, CellEnd::kDone);
  EXPECT_LT(s.steps, 200);  // about one step per 10 ms pause at worst, not a busy loop
}

TEST(CellRun, ACellOnADeadSessionEndsAtOnce) {
  CellRunner runner(spec_for("echo"), kGeometry, 10.0);
  runner.terminate();
  CellRun run(runner, "{}", CellLimits{}, [](EventBatch&) { return true; });
  EXPECT_TRUE(run.finished());
  EXPECT_EQ(run.step(0)->end, CellEnd::kCrashed);
  EXPECT_EQ(run.next_timer_ms(), 0);
}

}  // namespace
}  // namespace sandbox_exec
