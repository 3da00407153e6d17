// child_probe: the launcher tests' way to apply a step where it cannot hurt the test process.
//
// run() forks; the child applies the step (it may unshare namespaces, drop capabilities,
// install Landlock or seccomp: none of it reaches the parent), then reports what it observed
// as "key=value" lines on a pipe, with write(2) only (no allocation: reports stay possible
// after rlimits, Landlock and seccomp). The child's return value is its exit code (0: the
// body ran to its end; anything else: the setup it needed failed, see the "setup" key).
// The parent gets every value and the wait status, and asserts. SANDBOX_EXEC_TEST_DUMP=1
// prints every report.
#pragma once

#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <map>
#include <string>
#include <string_view>

#include "../single_threaded_child.h"
#include "launch/launcher_protocol.h"

namespace probe {

// The child's side: one line per put(); newlines and backslashes in values are escaped.
class Report {
 public:
  explicit Report(int fd) : fd_(fd) {}
  int fd() const { return fd_; }

  void put(const char* key, std::string_view value) const {
    emit(key);
    emit("=");
    char buf[256];
    std::size_t n = 0;
    for (char c : value) {
      if (n + 2 > sizeof buf) {
        raw(buf, n);
        n = 0;
      }
      if (c == '\n') {
        buf[n++] = '\\';
        buf[n++] = 'n';
      } else if (c == '\\') {
        buf[n++] = '\\';
        buf[n++] = '\\';
      } else {
        buf[n++] = c;
      }
    }
    raw(buf, n);
    emit("\n");
  }
  void put(const char* key, const char* value) const { put(key, std::string_view(value)); }
  void put(const char* key, long long value) const {
    char text[32];
    std::snprintf(text, sizeof text, "%lld", value);
    put(key, std::string_view(text));
  }
  void put(const char* key, int value) const { put(key, static_cast<long long>(value)); }
  void put(const char* key, long value) const { put(key, static_cast<long long>(value)); }
  void put(const char* key, unsigned long value) const { put(key, static_cast<long long>(value)); }
  void put(const char* key, unsigned long long value) const { put(key, static_cast<long long>(value)); }
  void put(const char* key, unsigned value) const { put(key, static_cast<long long>(value)); }
  void put(const char* key, bool value) const { put(key, value ? 1LL : 0LL); }
  // A StepFailure as "<key>_step" and "<key>_errno".
  void put(const char* key, sandbox_exec::StepFailure f) const {
    char name[128];
    std::snprintf(name, sizeof name, "%s_step", key);
    put(name, static_cast<long long>(f.step));
    std::snprintf(name, sizeof name, "%s_errno", key);
    put(name, static_cast<long long>(f.error));
  }
  // The errno of a call that returned -1, or 0 when it did not.
  void put_errno(const char* key, long rc) const { put(key, rc < 0 ? static_cast<long long>(errno) : 0LL); }

 private:
  void emit(const char* text) const { raw(text, std::strlen(text)); }
  void raw(const char* data, std::size_t n) const {
    while (n > 0) {
      const ssize_t w = ::write(fd_, data, n);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) return;
      data += w;
      n -= static_cast<std::size_t>(w);
    }
  }
  int fd_;
};

// The parent's side.
struct Result {
  int status = -1;  // waitpid status; -1 when fork or wait failed
  std::map<std::string, std::string> values;

  bool exited(int code = 0) const { return status != -1 && WIFEXITED(status) && WEXITSTATUS(status) == code; }
  bool has(const std::string& key) const { return values.count(key) != 0; }
  std::string str(const std::string& key) const {
    auto it = values.find(key);
    return it == values.end() ? "<missing " + key + ">" : it->second;
  }
  long long num(const std::string& key) const {
    auto it = values.find(key);
    if (it == values.end()) return -999999;
    return std::strtoll(it->second.c_str(), nullptr, 10);
  }
  sandbox_exec::LaunchStep step(const std::string& key) const {
    return static_cast<sandbox_exec::LaunchStep>(num(key + "_step"));
  }
  int err(const std::string& key) const { return static_cast<int>(num(key + "_errno")); }
  // Everything the child said, for failure messages.
  std::string dump() const {
    std::string out = "status=" + std::to_string(status);
    for (const auto& [k, v] : values) out += "\n  " + k + "=" + v;
    return out;
  }
};

inline std::string unescape(std::string_view text) {
  std::string out;
  for (std::size_t i = 0; i < text.size(); ++i) {
    if (text[i] == '\\' && i + 1 < text.size()) {
      out += text[i + 1] == 'n' ? '\n' : text[i + 1];
      ++i;
    } else {
      out += text[i];
    }
  }
  return out;
}

// Runs `body(const Report&)` (returning the exit code) in a forked child. `report_fd`: where
// the child's end of the pipe is placed (-1: wherever pipe2 put it), for tests that close
// descriptors in the child.
template <class F>
Result run(F body, int report_fd = -1) {
  Result result;
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) return result;
  // The read end well out of the way of the low numbers a test may want for report_fd.
  const int read_end = ::fcntl(fds[0], F_DUPFD_CLOEXEC, 100);
  ::close(fds[0]);
  const pid_t pid = ::fork();
  if (pid < 0) {
    ::close(read_end);
    ::close(fds[1]);
    return result;
  }
  if (pid == 0) {
    sandbox_exec::test_support::single_threaded_child();  // as a launcher is (TSan's thread stopped)
    ::close(read_end);
    int w = fds[1];
    if (report_fd >= 0 && report_fd != w) {
      if (::dup2(w, report_fd) < 0) ::_exit(250);
      ::close(w);
      w = report_fd;
    }
    ::fcntl(w, F_SETFD, 0);  // kept across an exec or a grandchild's fork alike
    const Report report(w);
    ::_exit(body(report) & 0xff);
  }
  ::close(fds[1]);
  std::string text;
  char buf[4096];
  for (;;) {
    const ssize_t n = ::read(read_end, buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    text.append(buf, static_cast<std::size_t>(n));
  }
  ::close(read_end);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0) {
    if (errno != EINTR) return result;
  }
  result.status = status;
  std::size_t start = 0;
  while (start < text.size()) {
    std::size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + start, end - start);
    const auto eq = line.find('=');
    if (eq != std::string_view::npos) result.values[std::string(line.substr(0, eq))] = unescape(line.substr(eq + 1));
    start = end + 1;
  }
  // SANDBOX_EXEC_TEST_DUMP=1: every child's report on stderr, to see what a passing test saw.
  if (const char* dump = std::getenv("SANDBOX_EXEC_TEST_DUMP"); dump != nullptr && *dump == '1')
    std::fprintf(stderr, "child report: %s\n", result.dump().c_str());
  return result;
}

// A fresh directory (mkdtemp) under `base`, removed with everything in it by the destructor.
class TempDir {
 public:
  explicit TempDir(const char* base = "/tmp", const char* prefix = "sandbox_exec_launcher_test") {
    std::string templ = std::string(base) + "/" + prefix + ".XXXXXX";
    if (::mkdtemp(templ.data()) != nullptr) path_ = templ;
  }
  ~TempDir() {
    std::error_code ignored;
    if (!path_.empty()) std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }
  std::string operator/(const std::string& name) const { return path_ + "/" + name; }

 private:
  std::string path_;
};

}  // namespace probe
