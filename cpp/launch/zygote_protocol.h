// The zygote's wire protocol: the supervisor asks a zygote (a fork server that has a
// prelude loaded, cpp/zygote/) to fork one session, and gets the new keeper's pidfd back.
//
// One SOCK_SEQPACKET socket pair per zygote, created by the backend: every request and
// reply is one datagram, so neither side ever parses a partial message.
//
//   request: ForkRequestHeader, then argc + envc NUL-terminated strings (the launcher's
//            command line for the session, launcher_argv(), then the worker's environment),
//            with exactly kForkFdCount descriptors in SCM_RIGHTS: the report pipe, the
//            lifeline and the four channel descriptors, in launcher_fd order (3..8);
//   reply:   ForkReply; with error 0, one descriptor in SCM_RIGHTS: a pidfd of the keeper.
//
// The zygote trusts the supervisor (its parent, on a private socket pair) but still checks
// every field: a malformed request is refused with EINVAL, never half-applied.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "common/unique_fd.h"
#include "launch/spawn_spec.h"

namespace sandbox_exec::zygote_protocol {

inline constexpr uint32_t kMagic = 0x5a79676fu;  // "Zygo"
inline constexpr uint32_t kVersion = 1;
inline constexpr std::size_t kForkFdCount = 6;            // launcher_fd::kReport .. kSpaceBell
inline constexpr std::size_t kMaxRequestBytes = 1 << 20;  // a spec is a few KiB

struct ForkRequestHeader {
  uint32_t magic;
  uint32_t version;
  uint32_t argc;
  uint32_t envc;
};

struct ForkReply {
  int32_t error;  // 0, or the errno that stopped the fork
  int32_t pid;    // the keeper, in the zygote's (= the backend's) pid namespace
};

// The request's bytes for `spec` (its launcher argv and its env).
std::string encode_fork_request(const SpawnSpec& spec);
// The spec back from a request's bytes; throws ConfigError when they are not one.
SpawnSpec decode_fork_request(std::string_view bytes);

// One datagram with descriptors attached. send: 0 or errno. receive: the byte count
// (0: the peer closed), or -errno; the descriptors arrive close-on-exec. A datagram that
// was truncated, or came with more descriptors than `max_fds`, is refused (-EMSGSIZE)
// and whatever descriptors it carried are closed.
int send_with_fds(int socket, const void* data, std::size_t size, const int* fds, std::size_t nfds) noexcept;
ssize_t receive_with_fds(int socket, void* data, std::size_t size, std::vector<UniqueFd>& fds,
                         std::size_t max_fds) noexcept;

}  // namespace sandbox_exec::zygote_protocol
