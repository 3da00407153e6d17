#include "supervisor/cell_runner.h"

#include <poll.h>

#include <algorithm>

#include "common/sys_error.h"
#include "supervisor/cell_run.h"
#include "supervisor/disk_usage.h"
#include "supervisor/json_guard.h"
#include "supervisor/logging.h"

namespace sandbox_exec {

namespace {
using Clock = std::chrono::steady_clock;

Clock::time_point after(Clock::time_point t, double seconds) {
  return t + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(seconds));
}

int ms_until(Clock::time_point deadline) {
  const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

}  // namespace

CellRunner::CellRunner(const SpawnSpec& spec, ChannelGeometry geometry, double start_timeout_s,
                       std::optional<Cgroups::Limits> cgroup_limits, ZygoteLink* zygote)
    : channel_(std::make_unique<SupervisorChannel>(geometry)) {
  const auto start_ms = std::chrono::milliseconds(static_cast<long long>(start_timeout_s * 1000));
  std::unique_ptr<Cgroups> cgroups;
  if (cgroup_limits) {
    static std::atomic<uint64_t> counter{0};
    cgroups = std::make_unique<Cgroups>(std::to_string(::getpid()) + "-" + std::to_string(++counter), *cgroup_limits);
  }
  process_ = std::make_unique<WorkerProcess>(spec, *channel_, start_ms, std::move(cgroups), zygote);
  if (process_->cgroups()) oom_baseline_ = process_->cgroups()->oom_kills();
  FrameHeader header{};
  const auto deadline = after(Clock::now(), start_timeout_s);
  MessageAssembler assembler(1 << 16);
  for (;;) {
    std::string payload;
    const auto wait = channel_->next_frame(header, payload, ms_until(deadline), process_->pidfd());
    if (wait == SupervisorChannel::Wait::kFrame) {
      if (header.type != static_cast<uint16_t>(FrameType::kReady)) {
        terminate();
        throw SandboxError("worker", "startup handshake", 0,
                           "the worker sent frame type " + std::to_string(header.type) + " before kReady");
      }
      if (assembler.feed(header, payload.data(), payload.size()) == MessageAssembler::Result::kIncomplete) continue;
      ready_ = assembler.message();
      // The handshake: a worker that speaks another protocol (a _core of another build in
      // the sandbox's Python) never gets a cell.
      const std::optional<int64_t> protocol = ready_protocol(ready_);
      if (protocol != static_cast<int64_t>(kProtocolVersion)) {
        terminate();
        throw SandboxError("worker", "startup handshake", EPROTO,
                           "the worker speaks protocol " + (protocol ? std::to_string(*protocol) : "?") +
                               ", the supervisor " + std::to_string(kProtocolVersion) +
                               " (the sandbox's sandbox_exec is another build than the backend's)");
      }
      return;
    }
    if (wait == SupervisorChannel::Wait::kPeerExited) {
      process_->terminate();
      throw SandboxError("worker", "interpreter start", 0,
                         "the worker " + process_->exit_info().describe() +
                             " before it was ready (is sandbox_exec importable by " + spec.argv.front() + "?)");
    }
    if (Clock::now() >= deadline) {
      terminate();
      throw SandboxError("worker", "interpreter start", ETIMEDOUT,
                         "the worker was not ready within " + std::to_string(start_timeout_s) + " s");
    }
  }
}

CellRunner::~CellRunner() { terminate(); }

void CellRunner::interrupt() noexcept {
  std::lock_guard lock(lifecycle_);
  if (!dead_) process_->interrupt();
}

void CellRunner::terminate() noexcept {
  std::lock_guard lock(lifecycle_);
  process_->terminate();
  dead_ = true;
}

bool CellRunner::alive() noexcept {
  std::lock_guard lock(lifecycle_);
  if (dead_) return false;
  if (process_->reap()) dead_ = true;
  return !dead_;
}

CellRunner::DiskCheck CellRunner::check_disk(const std::string& workdir, uint64_t limit) {
  {
    std::lock_guard lock(lifecycle_);
    if (dead_) return {};
  }
  return measure_disk(workdir, limit);
}

CellRunner::DiskCheck CellRunner::measure_disk(const std::string& workdir, uint64_t limit) {
  // The one disk rule, for cells and between them: the workdir is over when it holds more
  // than `limit`, whatever it held before. No baseline: the Python Session refuses new
  // cells while the workdir is over (a restart must not take an over-full workdir as its
  // new normal), so a cell always starts within the cap.
  DiskCheck check;
  // The groups' list is copied under the lock (terminate() on another thread clears it);
  // the walk itself runs without it, so an interrupt() is never held up by it. A dead
  // session has no processes: its files on disk are all there is to count.
  std::vector<std::string> dirs;
  read_live([&](const WorkerProcess& process) {
    if (const Cgroups* cgroups = process.cgroups()) dirs = cgroups->dirs();
  });
  const std::vector<pid_t> pids = session_pids(dirs, process_->worker_parent());
  check.used = workdir_usage(workdir, pids);
  check.over = check.used && *check.used > limit;
  return check;
}

std::string CellRunner::exit_description() {
  std::lock_guard lock(lifecycle_);
  return process_->exit_info().describe();
}

std::string CellRunner::reap_dead_worker() {
  std::lock_guard lock(lifecycle_);
  process_->terminate(std::chrono::milliseconds(2000));
  dead_ = true;
  return process_->exit_info().describe();
}

CellOutcome CellRunner::run_cell(const std::string& request, const CellLimits& limits, const EventSink& sink,
                                 const Tick& tick) {
  CellRun run(*this, request, limits, sink, tick);
  // Without a deadline the loop still wakes once a second; the worker's frames and its exit
  // wake it at once.
  for (;;) {
    if (auto outcome = run.step(1000)) return *outcome;
  }
}

}  // namespace sandbox_exec
