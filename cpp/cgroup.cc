#include "cgroup.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "sys_error.h"

namespace sandbox_exec {

namespace {

const char* kRoot = "/sys/fs/cgroup";

std::string read_file(const std::string& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

int write_file(const std::string& path, const std::string& text) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  const int err = ::write(fd, text.data(), text.size()) == static_cast<ssize_t>(text.size()) ? 0 : errno;
  ::close(fd);
  return err;
}

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

// This process's own group in hierarchy `controller` ("" for v2), from /proc/self/cgroup.
std::optional<std::string> own_path(const std::string& controller) {
  std::istringstream lines(read_file("/proc/self/cgroup"));
  std::string line;
  while (std::getline(lines, line)) {
    const auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string list = line.substr(a + 1, b - a - 1);
    if (controller.empty() ? list.empty() : ("," + list + ",").find("," + controller + ",") != std::string::npos)
      return line.substr(b + 1);
  }
  return std::nullopt;
}

// The v1 directory for `controller` under which sessions get their groups.
std::optional<std::string> v1_base(const std::string& controller) {
  const std::string mount = std::string(kRoot) + "/" + controller;
  if (!exists(mount + "/cgroup.procs")) return std::nullopt;
  auto own = own_path(controller);
  if (!own) return std::nullopt;
  return mount + (*own == "/" ? "" : *own) + "/sandbox_exec-" + std::to_string(::getpid());
}

// v2: a directory whose subtree_control already enables memory and pids (a delegated
// subtree). SANDBOX_EXEC_CGROUP names one explicitly; else our own group's parent must be
// such a directory... which the no-internal-process rule only allows when we are not in it.
std::optional<std::string> v2_base() {
  if (const char* env = std::getenv("SANDBOX_EXEC_CGROUP")) return std::string(env);
  for (const std::string& mount : {std::string(kRoot), std::string(kRoot) + "/unified"}) {
    if (!exists(mount + "/cgroup.controllers")) continue;
    auto own = own_path("");
    if (!own) continue;
    const std::string dir = mount + (*own == "/" ? "" : *own);
    const std::string enabled = read_file(dir + "/cgroup.subtree_control");
    if (enabled.find("memory") != std::string::npos && enabled.find("pids") != std::string::npos)
      return dir;
  }
  return std::nullopt;
}

int make_dir(const std::string& path) {
  if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) return errno;
  return 0;
}

void remove_dir(const std::string& path) {
  // A group empties a moment after its last process is reaped.
  for (int i = 0; i < 50 && ::rmdir(path.c_str()) != 0 && errno == EBUSY; ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
}

}  // namespace

CgroupSupport Cgroups::detect() {
  CgroupSupport s;
  try {
    Cgroups probe("probe-" + std::to_string(::getpid()), Limits{});
    s.version = probe.version_;
    s.memory = !probe.memory_.empty();
    s.pids = !probe.pids_.empty();
    s.cpu = !probe.cpu_.empty();
    s.detail = probe.version_ == "v1" ? "v1 controllers under " + std::string(kRoot) + "/<controller>"
                                      : "v2 at " + probe.memory_;
    if (!s.memory && !s.pids) s.detail = "no writable memory or pids controller";
    probe.remove();
  } catch (const std::exception& e) {
    s.detail = e.what();
  }
  return s;
}

Cgroups::Cgroups(const std::string& name, const Limits& limits) {
  auto fail = [&](const std::string& call, int err) {
    remove();
    throw SandboxError("cgroup", call, err);
  };
  if (auto base = v2_base()) {
    version_ = "v2";
    const std::string dir = *base + "/sandbox_exec-" + name;
    if (int err = make_dir(dir)) fail("mkdir(" + dir + ")", err);
    memory_ = pids_ = cpu_ = dir;
    dirs_.push_back(dir);
    if (limits.memory_bytes) {
      if (int err = write_file(dir + "/memory.max", std::to_string(*limits.memory_bytes)))
        fail("write " + dir + "/memory.max", err);
      (void)write_file(dir + "/memory.swap.max", "0");
    }
    if (limits.max_processes) {
      if (int err = write_file(dir + "/pids.max", std::to_string(*limits.max_processes)))
        fail("write " + dir + "/pids.max", err);
    }
    open_counters();
    return;
  }
  version_ = "v1";
  for (const char* controller : {"memory", "pids", "cpuacct"}) {
    auto base = v1_base(controller);
    if (!base) continue;
    if (make_dir(*base) != 0) continue;  // not delegated to us: try the next controller
    const std::string dir = *base + "/" + name;
    if (make_dir(dir) != 0) continue;
    dirs_.push_back(dir);
    if (std::strcmp(controller, "memory") == 0) memory_ = dir;
    if (std::strcmp(controller, "pids") == 0) pids_ = dir;
    if (std::strcmp(controller, "cpuacct") == 0) cpu_ = dir;
  }
  if (limits.memory_bytes) {
    if (memory_.empty()) fail("mkdir(memory cgroup)", EACCES);
    const std::string v = std::to_string(*limits.memory_bytes);
    if (int err = write_file(memory_ + "/memory.limit_in_bytes", v))
      fail("write " + memory_ + "/memory.limit_in_bytes", err);
    // No swapping past the limit either (present only with swap accounting).
    if (exists(memory_ + "/memory.memsw.limit_in_bytes")) (void)write_file(memory_ + "/memory.memsw.limit_in_bytes", v);
  }
  if (limits.max_processes) {
    if (pids_.empty()) fail("mkdir(pids cgroup)", EACCES);
    if (int err = write_file(pids_ + "/pids.max", std::to_string(*limits.max_processes)))
      fail("write " + pids_ + "/pids.max", err);
  }
  if (dirs_.empty()) version_.clear();
  open_counters();
}

void Cgroups::open_counters() noexcept {
  auto open_at = [](const std::string& dir, const char* name, int flags) {
    return dir.empty() ? UniqueFd() : UniqueFd(::open((dir + name).c_str(), flags | O_CLOEXEC));
  };
  const bool v2 = version_ == "v2";
  peak_fd_ = open_at(memory_, v2 ? "/memory.peak" : "/memory.max_usage_in_bytes", O_RDWR);
  cpu_fd_ = open_at(cpu_, v2 ? "/cpu.stat" : "/cpuacct.usage", O_RDONLY);
  oom_fd_ = open_at(memory_, v2 ? "/memory.events" : "/memory.oom_control", O_RDONLY);
}

Cgroups::~Cgroups() { remove(); }

namespace {
// A whole small counter file through a kept descriptor, as text.
std::string pread_text(const UniqueFd& fd) {
  if (!fd) return {};
  char buffer[1024];
  const ssize_t n = ::pread(fd.get(), buffer, sizeof buffer - 1, 0);
  return n > 0 ? std::string(buffer, static_cast<std::size_t>(n)) : std::string();
}

uint64_t keyed_text(const std::string& text, const std::string& key) {
  std::istringstream lines(text);
  std::string k;
  uint64_t v;
  while (lines >> k >> v) {
    if (k == key) return v;
  }
  return 0;
}
}  // namespace

void Cgroups::remove() noexcept {
  peak_fd_.reset();
  cpu_fd_.reset();
  oom_fd_.reset();
  for (auto it = dirs_.rbegin(); it != dirs_.rend(); ++it) {
    remove_dir(*it);
    // v1: the per-backend-process parent goes too once its last session is gone.
    if (version_ == "v1") ::rmdir(it->substr(0, it->rfind('/')).c_str());
  }
  dirs_.clear();
}

uint64_t Cgroups::oom_kills() const noexcept {
  try {
    return keyed_text(pread_text(oom_fd_), "oom_kill");
  } catch (...) {
    return 0;
  }
}

std::optional<uint64_t> Cgroups::peak_memory() const noexcept {
  try {
    const std::string text = pread_text(peak_fd_);
    if (text.empty()) return std::nullopt;
    return std::stoull(text);
  } catch (...) {
    return std::nullopt;
  }
}

void Cgroups::reset_peak_memory() const noexcept {
  // v1: writing 0 resets max_usage_in_bytes; v2 (6.12+): any write resets memory.peak for
  // this descriptor's reads.
  if (peak_fd_) {
    [[maybe_unused]] ssize_t n = ::pwrite(peak_fd_.get(), "0", 1, 0);
  }
}

std::optional<double> Cgroups::cpu_seconds() const noexcept {
  try {
    const std::string text = pread_text(cpu_fd_);
    if (text.empty()) return std::nullopt;
    if (version_ == "v2") return static_cast<double>(keyed_text(text, "usage_usec")) / 1e6;
    return static_cast<double>(std::stoull(text)) / 1e9;
  } catch (...) {
    return std::nullopt;
  }
}

}  // namespace sandbox_exec
