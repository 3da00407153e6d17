#include "supervisor/cgroup.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <sstream>
#include <utility>

#include "common/file_io.h"
#include "common/sys_error.h"
#include "launch/cgroup_membership.h"

namespace sandbox_exec {

namespace {

// A cgroup file's text, "" when it is not there (a controller the host lacks). Out of
// descriptors or memory (EMFILE, ENFILE, ENOMEM) the open fails for no reason of the
// file's: that is thrown, named, and never read as "" (no controllers), which would end
// the start as "no memory controller" and send an operator to the cgroup setup.
std::string read_file(const std::string& path) {
  int err = 0;
  std::string text = file_io::read_file(path, &err);
  if (err == EMFILE || err == ENFILE || err == ENOMEM) throw SandboxError("cgroup", "open(" + path + ")", err);
  return text;
}

int write_file(const std::string& path, const std::string& text) {
  // O_CREAT|O_TRUNC as a shell's `echo x > file`: on cgroupfs the knob exists already (a
  // missing one still fails: cgroupfs creates no files), and a test tree of plain files
  // then holds exactly what was written.
  return file_io::write_file(path.c_str(), text, O_CREAT | O_TRUNC);
}

int make_one_dir(const std::string& path) { return ::mkdir(path.c_str(), 0755) != 0 ? errno : 0; }

constexpr const char* kSharedParent = "sandbox_exec";  // v2, as root: under the mount
constexpr const char* kWanted[] = {"memory", "pids", "cpu"};

bool exists(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0;
}

std::string parent_of(const std::string& path) {
  const auto slash = path.rfind('/');
  return slash == std::string::npos || slash == 0 ? std::string("/") : path.substr(0, slash);
}

// "<pid>-<16 hex digits>", drawn once per process (again in a forked child: new pid).
std::string backend_tag() {
  static pid_t drawn_for = 0;
  static std::string tag;
  if (drawn_for != ::getpid()) {
    uint64_t r = 0;
    if (::getrandom(&r, sizeof r, 0) != static_cast<ssize_t>(sizeof r))
      throw SandboxError("cgroup", "getrandom", errno);
    char text[48];
    std::snprintf(text, sizeof text, "%d-%016llx", static_cast<int>(::getpid()), static_cast<unsigned long long>(r));
    tag = text;
    drawn_for = ::getpid();
  }
  return tag;
}

// The controllers a cgroup.controllers or cgroup.subtree_control file lists. The kernel
// writes "cpu memory pids"; a leading '+' (what we wrote, as a test tree holds it) is the same.
std::vector<std::string> controllers_in(const std::string& text) {
  std::istringstream words(text);
  std::vector<std::string> out;
  std::string w;
  while (words >> w) out.push_back(w[0] == '+' ? w.substr(1) : w);
  return out;
}

bool has(const std::vector<std::string>& list, const std::string& c) {
  for (const auto& x : list) {
    if (x == c) return true;
  }
  return false;
}

// Enables memory, pids and cpu (those of them `available` lists) for the children of `dir`
// and returns what its subtree_control enables afterwards. One write: enabling an enabled
// controller is a no-op, and the write fails as a whole (EBUSY where `dir` holds processes).
std::vector<std::string> enable_for_children(const std::string& dir, const std::vector<std::string>& available,
                                             int& err) {
  auto wanted = [&](bool cpu) {
    std::string text;
    for (const char* c : kWanted) {
      if (has(available, c) && (cpu || std::strcmp(c, "cpu") != 0))
        text += (text.empty() ? "+" : " +") + std::string(c);
    }
    return text;
  };
  const std::string all = wanted(true), essential = wanted(false);
  err = all.empty() ? 0 : write_file(dir + "/cgroup.subtree_control", all);
  // cpu is needed only for a quota (cpu.max; cpu.stat is there without it), and enabling it
  // can be refused where memory and pids are not (real-time processes in a child group:
  // EINVAL): then the groups go without it, and a session that asks for a quota is refused.
  if (err && all != essential && !essential.empty()) err = write_file(dir + "/cgroup.subtree_control", essential);
  return controllers_in(read_file(dir + "/cgroup.subtree_control"));
}

// This process's own group in hierarchy `controller` ("" for v2), from /proc/self/cgroup's text.
std::optional<std::string> own_path(const std::string& self_cgroup, const std::string& controller) {
  std::istringstream lines(self_cgroup);
  std::string line;
  while (std::getline(lines, line)) {
    const auto a = line.find(':'), b = line.find(':', a + 1);
    if (a == std::string::npos || b == std::string::npos) continue;
    const std::string list = line.substr(a + 1, b - a - 1);
    if (controller.empty() ? (list.empty() && line.compare(0, a, "0") == 0)
                           : ("," + list + ",").find("," + controller + ",") != std::string::npos)
      return line.substr(b + 1);
  }
  return std::nullopt;
}

// The cgroup v2 mount that has controllers: the root itself (a v2-only host) or
// <root>/unified (a hybrid one, whose v2 tree usually has none: they are bound to v1).
std::optional<std::string> v2_mount(const CgroupHost& host) {
  for (const std::string& mount : {host.root, host.root + "/unified"}) {
    if (!exists(mount + "/cgroup.controllers")) continue;
    const auto list = controllers_in(read_file(mount + "/cgroup.controllers"));
    if (has(list, "memory") || has(list, "pids")) return mount;
  }
  return std::nullopt;
}

}  // namespace

CgroupHost CgroupHost::current() {
  CgroupHost h;
  // Not thrown here (detect() takes this as a default argument, outside its try): create() does.
  h.self_cgroup = file_io::read_file("/proc/self/cgroup", &h.self_cgroup_error);
  if (const char* env = std::getenv("SANDBOX_EXEC_CGROUP"); env && *env) h.delegated = std::string(env);
  h.privileged = ::geteuid() == 0;
  h.tag = backend_tag();
  return h;
}

CgroupSupport Cgroups::detect(const CgroupHost& host) {
  CgroupSupport s;
  try {
    Cgroups probe(Probe{}, host);
    s.version = probe.version_;
    s.memory = !probe.memory_.empty();
    s.pids = !probe.pids_.empty();
    s.cpu = !probe.cpu_.empty();
    s.cpu_limit = !probe.cpu_limit_.empty();
    if (probe.version_ == "v1") {
      s.detail = "v1 controllers under " + host.root + "/<controller>";
    } else if (probe.version_ == "v2") {
      s.detail = "v2 under " + parent_of(parent_of(probe.memory_.empty() ? probe.pids_ : probe.memory_)) +
                 (host.delegated ? " (SANDBOX_EXEC_CGROUP)" : "");
    }
    if (!s.memory && !s.pids) s.detail = "no writable memory or pids controller";
    probe.remove();
  } catch (const std::exception& e) {
    s = CgroupSupport{};
    s.detail = e.what();
  }
  return s;
}

uint64_t Cgroups::cpu_quota_us(double cpus) noexcept {
  constexpr double kMinUs = 1000, kMaxUs = static_cast<double>(uint64_t{1} << 40);
  const double us = cpus * static_cast<double>(kCpuPeriodUs);
  // NaN and anything below the minimum: the minimum (Policy refuses both before here).
  if (!(us >= kMinUs)) return static_cast<uint64_t>(kMinUs);
  return static_cast<uint64_t>(std::llround(std::min(us, kMaxUs)));
}

Cgroups::Cgroups(const std::string& name, const Limits& limits, const CgroupHost& host) : remove_dir_(host.remove_dir) {
  create(name, limits, host, false);
}

Cgroups::Cgroups(Probe /*unused*/, const CgroupHost& host) : remove_dir_(host.remove_dir) {
  create("probe", Limits{}, host, true);
}

void Cgroups::create(const std::string& name, const Limits& limits, const CgroupHost& host, bool probe) {
  try {
    // Unread, it would look like a process in no group at all: every controller skipped,
    // and the start refused as "no memory controller" for what is really, say, EMFILE.
    if (host.self_cgroup_error != 0) throw SandboxError("cgroup", "open(/proc/self/cgroup)", host.self_cgroup_error);
    if (host.delegated) {
      // Named explicitly: it must work, or the session (and detect) says why.
      if (!exists(*host.delegated + "/cgroup.controllers"))
        throw SandboxError("cgroup", "SANDBOX_EXEC_CGROUP=" + *host.delegated, ENOENT, "not a cgroup v2 directory");
      create_v2(*host.delegated, controllers_in(read_file(*host.delegated + "/cgroup.controllers")), name, host);
    } else if (auto mount = v2_mount(host)) {
      std::string base;
      std::vector<std::string> available;
      if (host.privileged) {
        // The root group may hold processes and still enable controllers (the rule has
        // that one exception); the shared parent below it holds none.
        int err = 0;
        available = enable_for_children(*mount, controllers_in(read_file(*mount + "/cgroup.controllers")), err);
        if (err) throw SandboxError("cgroup", "write " + *mount + "/cgroup.subtree_control", err);
        base = *mount + "/" + kSharedParent;
        if (int e = make_one_dir(base); e && e != EEXIST) throw SandboxError("cgroup", "mkdir(" + base + ")", e);
      } else {
        auto own = own_path(host.self_cgroup, "");
        const std::string parent = own && *own != "/" ? *mount + parent_of(*own) : std::string();
        // Moving the session's init from our group to one below the parent takes write
        // access to the common ancestor's cgroup.procs (cgroup v2's delegation rule): the parent's.
        if (parent.empty() || *own == "/" || ::access((parent + "/cgroup.subtree_control").c_str(), W_OK) != 0 ||
            ::access((parent + "/cgroup.procs").c_str(), W_OK) != 0 || ::access(parent.c_str(), W_OK) != 0)
          throw SandboxError("cgroup", "cgroup v2 at " + *mount, EACCES,
                             "no delegated group: set SANDBOX_EXEC_CGROUP to a directory delegated to this user");
        base = parent;
        available = controllers_in(read_file(base + "/cgroup.controllers"));
      }
      create_v2(base, available, name, host);
    } else {
      create_v1(name, host, probe || limits.cpus.has_value());
    }
    if (limits.memory_bytes) {
      if (memory_.empty()) throw SandboxError("cgroup", "mkdir(memory cgroup)", EACCES, "no memory controller");
      const std::string v = std::to_string(*limits.memory_bytes);
      const std::string knob = memory_ + (version_ == "v2" ? "/memory.max" : "/memory.limit_in_bytes");
      if (int err = write_file(knob, v)) throw SandboxError("cgroup", "write " + knob, err);
      // No swapping past the limit either (present only with swap accounting).
      if (version_ == "v2") {
        if (exists(memory_ + "/memory.swap.max")) (void)write_file(memory_ + "/memory.swap.max", "0");
      } else if (exists(memory_ + "/memory.memsw.limit_in_bytes")) {
        (void)write_file(memory_ + "/memory.memsw.limit_in_bytes", v);
      }
    }
    if (limits.max_processes) {
      if (pids_.empty()) throw SandboxError("cgroup", "mkdir(pids cgroup)", EACCES, "no pids controller");
      if (int err = write_file(pids_ + "/pids.max", std::to_string(*limits.max_processes)))
        throw SandboxError("cgroup", "write " + pids_ + "/pids.max", err);
    }
    if (limits.cpus) {
      if (cpu_limit_.empty()) throw SandboxError("cgroup", "mkdir(cpu cgroup)", EACCES, "no cpu controller");
      const std::string quota = std::to_string(cpu_quota_us(*limits.cpus)), period = std::to_string(kCpuPeriodUs);
      if (version_ == "v2") {
        if (int err = write_file(cpu_limit_ + "/cpu.max", quota + " " + period))
          throw SandboxError("cgroup", "write " + cpu_limit_ + "/cpu.max", err);
      } else {
        // The period first: the quota is checked against it. EINVAL on the quota where the
        // backend's own group has a smaller one (v1 refuses a child more than its parent).
        for (const auto& [knob, value] : {std::pair{"/cpu.cfs_period_us", period}, {"/cpu.cfs_quota_us", quota}}) {
          if (int err = write_file(cpu_limit_ + knob, value))
            throw SandboxError("cgroup", "write " + cpu_limit_ + knob, err);
        }
      }
    }
  } catch (...) {
    remove();
    throw;
  }
  if (dirs_.empty()) version_.clear();
  open_counters();
}

void Cgroups::create_v2(const std::string& base, const std::vector<std::string>& available, const std::string& name,
                        const CgroupHost& host) {
  version_ = "v2";
  const std::string parent = base + "/" + cgroup::kBackendGroupPrefix + host.tag;
  const std::string leaf = parent + "/" + name;
  int err = 0;
  const auto base_enabled = enable_for_children(base, available, err);
  if (err)
    throw SandboxError("cgroup", "write " + base + "/cgroup.subtree_control", err,
                       "a delegated group must hold no process itself (keep them in a child group)");
  std::vector<std::string> for_leaf;
  // A launcher removing the per-backend group as its own session ends may race with us
  // creating the next one in it: on ENOENT, create it again.
  for (int attempt = 0;; ++attempt) {
    if (int e = make_one_dir(parent); e && e != EEXIST) throw SandboxError("cgroup", "mkdir(" + parent + ")", e);
    // A new child's cgroup.controllers is its parent's subtree_control.
    for_leaf = enable_for_children(parent, base_enabled, err);
    const int e = err ? ENOENT : make_one_dir(leaf);
    if (e == 0) break;
    if (e == ENOENT && attempt < 3) continue;  // the parent went in between: again
    drop_backend_group(parent);
    if (err) throw SandboxError("cgroup", "write " + parent + "/cgroup.subtree_control", err);
    throw SandboxError("cgroup", "mkdir(" + leaf + ")", e, e == EEXIST ? "a group of that name exists: not ours" : "");
  }
  dirs_.push_back(leaf);
  if (has(for_leaf, "memory")) memory_ = leaf;
  if (has(for_leaf, "pids")) pids_ = leaf;
  // cpu.stat (usage_usec) is in every v2 group, with the cpu controller or without;
  // cpu.max only with it.
  cpu_ = leaf;
  if (has(for_leaf, "cpu")) cpu_limit_ = leaf;
}

void Cgroups::drop_backend_group(const std::string& parent) const noexcept {
  // Ours (named for our pid); still holding another session's group, it stays (EBUSY).
  (void)(remove_dir_ ? remove_dir_ : &cgroup::remove_dir_now)(parent.c_str());
}

void Cgroups::create_v1(const std::string& name, const CgroupHost& host, bool want_cpu) {
  version_ = "v1";
  // The hierarchies made so far, by where their mount really is: cpu and cpuacct are often
  // one hierarchy (cpu,cpuacct, with cpu and cpuacct as links to it), whose group is made once.
  std::vector<std::pair<std::string, std::string>> made;  // (real mount, leaf)
  for (const char* controller : {"memory", "pids", "cpuacct", "cpu"}) {
    if (!want_cpu && std::strcmp(controller, "cpu") == 0) continue;
    const std::string mount = host.root + "/" + controller;
    if (!exists(mount + "/cgroup.procs")) continue;
    auto own = own_path(host.self_cgroup, controller);
    if (!own) continue;
    const std::string parent = mount + (*own == "/" ? "" : *own) + "/" + cgroup::kBackendGroupPrefix + host.tag;
    std::string leaf = parent + "/" + name;
    char* real = ::realpath(mount.c_str(), nullptr);
    const std::string real_mount = real != nullptr ? real : mount;
    std::free(real);  // NOLINT(cppcoreguidelines-no-malloc): realpath's allocation
    bool shared = false;
    for (const auto& [m, l] : made) {
      if (m == real_mount) {
        leaf = l;
        shared = true;
      }
    }
    if (!shared) {
      int e = 0;
      for (int attempt = 0; attempt < 4; ++attempt) {  // ENOENT: see create_v2
        if (int p = make_one_dir(parent); p && p != EEXIST) {
          e = p;
          break;
        }
        e = make_one_dir(leaf);
        if (e != ENOENT) break;
      }
      if (e != 0) drop_backend_group(parent);
      if (e == EEXIST) throw SandboxError("cgroup", "mkdir(" + leaf + ")", e, "a group of that name exists: not ours");
      if (e != 0) continue;  // not delegated to us: try the next controller
      dirs_.push_back(leaf);
      made.emplace_back(real_mount, leaf);
    }
    if (std::strcmp(controller, "memory") == 0) memory_ = leaf;
    if (std::strcmp(controller, "pids") == 0) pids_ = leaf;
    if (std::strcmp(controller, "cpuacct") == 0) cpu_ = leaf;
    if (std::strcmp(controller, "cpu") == 0) cpu_limit_ = leaf;
  }
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

void Cgroups::forget() noexcept {
  peak_fd_.reset();
  cpu_fd_.reset();
  oom_fd_.reset();
  dirs_.clear();
}

void Cgroups::remove() noexcept {
  peak_fd_.reset();
  cpu_fd_.reset();
  oom_fd_.reset();
  cgroup::remove_session_groups(dirs_, remove_dir_);
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
