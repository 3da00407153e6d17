#include "launch/zygote_protocol.h"

#include <sys/socket.h>

#include <cerrno>
#include <cstring>

#include "common/sys_error.h"

namespace sandbox_exec::zygote_protocol {

std::string encode_fork_request(const SpawnSpec& spec) {
  const std::vector<std::string> argv = launcher_argv(spec);
  const ForkRequestHeader h{kMagic, kVersion, static_cast<uint32_t>(argv.size()),
                            static_cast<uint32_t>(spec.env.size())};
  std::string out(reinterpret_cast<const char*>(&h), sizeof h);
  auto append = [&out](const std::string& s) {
    if (s.find('\0') != std::string::npos) throw ConfigError("a launch argument or variable contains a NUL byte");
    out += s;
    out += '\0';
  };
  for (const auto& a : argv) append(a);
  for (const auto& e : spec.env) append(e);
  if (out.size() > kMaxRequestBytes) throw ConfigError("the session's launch request is larger than 1 MiB");
  return out;
}

SpawnSpec decode_fork_request(std::string_view bytes) {
  ForkRequestHeader h{};
  if (bytes.size() < sizeof h) throw ConfigError("fork request: shorter than its header");
  std::memcpy(&h, bytes.data(), sizeof h);
  if (h.magic != kMagic || h.version != kVersion) throw ConfigError("fork request: unknown magic or version");
  bytes.remove_prefix(sizeof h);
  // Every string ends in a NUL; the count must match exactly, with nothing after.
  const uint64_t expected = uint64_t{h.argc} + h.envc;
  std::vector<std::string> strings;
  while (!bytes.empty()) {
    const std::size_t end = bytes.find('\0');
    if (end == std::string_view::npos) throw ConfigError("fork request: a string without its NUL");
    if (strings.size() == expected) throw ConfigError("fork request: more strings than its header says");
    strings.emplace_back(bytes.substr(0, end));
    bytes.remove_prefix(end + 1);
  }
  if (strings.size() != expected || h.argc == 0) throw ConfigError("fork request: fewer strings than its header says");
  std::vector<const char*> argv;
  argv.reserve(h.argc + 1);
  for (uint32_t i = 0; i < h.argc; ++i) argv.push_back(strings[i].c_str());
  argv.push_back(nullptr);
  SpawnSpec spec = parse_launcher_argv(static_cast<int>(h.argc), argv.data());
  spec.env.assign(strings.begin() + h.argc, strings.end());
  return spec;
}

int send_with_fds(int socket, const void* data, std::size_t size, const int* fds, std::size_t nfds) noexcept {
  iovec iov{const_cast<void*>(data), size};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kForkFdCount)];
  if (nfds > kForkFdCount) return EINVAL;
  if (nfds > 0) {
    msg.msg_control = control;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * nfds);
    cmsghdr* c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    std::memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  do {
    n = ::sendmsg(socket, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return errno;
  return n == static_cast<ssize_t>(size) ? 0 : EMSGSIZE;
}

ssize_t receive_with_fds(int socket, void* data, std::size_t size, std::vector<UniqueFd>& fds,
                         std::size_t max_fds) noexcept {
  fds.clear();
  iovec iov{data, size};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * (kForkFdCount + 1))];
  msg.msg_control = control;
  msg.msg_controllen = sizeof control;
  ssize_t n;
  do {
    n = ::recvmsg(socket, &msg, MSG_CMSG_CLOEXEC);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    const std::size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (std::size_t i = 0; i < count; ++i) {
      int fd;
      std::memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof fd);
      fds.emplace_back(fd);
    }
  }
  if ((msg.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) != 0 || fds.size() > max_fds) {
    fds.clear();
    return -EMSGSIZE;
  }
  return n;
}

}  // namespace sandbox_exec::zygote_protocol
