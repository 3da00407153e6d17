#include "common/sys_error.h"

#include <cstring>

namespace sandbox_exec {

namespace {
std::string compose(const std::string& layer, const std::string& call, int err, const std::string& hint) {
  std::string msg = layer + ": " + call + " failed";
  if (err != 0)
    msg += ": " + std::string(::strerrorname_np(err) ? ::strerrorname_np(err) : "E?") + " (" + std::to_string(err) +
           ", " + std::strerror(err) + ")";
  std::string h = hint.empty() ? errno_hint(layer, err) : hint;
  if (!h.empty()) msg += "; hint: " + h;
  return msg;
}
}  // namespace

SandboxError::SandboxError(std::string layer, std::string call, int err, const std::string& hint)
    : std::runtime_error(compose(layer, call, err, hint)),
      layer_(std::move(layer)),
      call_(std::move(call)),
      errno_(err) {}

void throw_sys(const std::string& layer, const std::string& call, int err) { throw SandboxError(layer, call, err); }

std::string errno_hint(const std::string& layer, int err) {
  switch (err) {
    case EMFILE:
    case ENFILE:
      return "the backend process is out of file descriptors; raise its RLIMIT_NOFILE";
    case ENOMEM:
      return "the host is out of memory or address space for the shared region";
    case ENOSPC:
      return layer == "shared_region" ? "the memfd/shm size limit was reached" : "";
    case EPERM:
    case EACCES:
      return "the host forbids this operation for the current user (check sysctls and LSMs)";
    case ENOENT:
      return layer == "spawn" ? "the launcher or the Python executable is missing" : "";
    default:
      return {};
  }
}

}  // namespace sandbox_exec
