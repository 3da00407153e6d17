// Errors of the sandbox machinery itself (never of the user's cell).
//
// Each error names the layer that failed, the call with its arguments, and errno, and
// carries a hint for the errnos we know the cause of, in the manner of nsjail's
// PLOG_E("setrlimit(RLIMIT_AS, %lu)"). The Python binding maps these classes onto the
// sandbox_exec.SandboxError hierarchy.
#pragma once

#include <cerrno>
#include <stdexcept>
#include <string>

namespace sandbox_exec {

// The sandbox could not be provided (spawn, isolation step, mapping, ...).
class SandboxError : public std::runtime_error {
 public:
  SandboxError(std::string layer, std::string call, int err, const std::string& hint = {});
  const std::string& layer() const noexcept { return layer_; }
  const std::string& call() const noexcept { return call_; }
  int error_number() const noexcept { return errno_; }

 private:
  std::string layer_, call_;
  int errno_;
};

// Bad argument or configuration from the caller (bad policy value, bad path, ...).
class ConfigError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// The other side broke the protocol. Ends that one session, nothing else.
class ProtocolViolation : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Throws SandboxError for `call` in `layer` with the current errno.
[[noreturn]] void throw_sys(const std::string& layer, const std::string& call, int err = errno);

// A one-line hint for errnos whose usual cause we know; empty otherwise.
std::string errno_hint(const std::string& layer, int err);

}  // namespace sandbox_exec
