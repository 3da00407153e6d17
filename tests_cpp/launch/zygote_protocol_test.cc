// Tests of the zygote's wire format (zygote_protocol.h): a request round trips the spec
// (the launcher's argv and the env); every malformed request is a ConfigError, never a
// partial spec; descriptors travel with a datagram and arrive close-on-exec; a datagram
// with more descriptors than expected is refused and its descriptors closed.
#include "launch/zygote_protocol.h"

#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "common/sys_error.h"

namespace sandbox_exec::zygote_protocol {
namespace {

SpawnSpec sample() {
  SpawnSpec spec;
  spec.launcher = "/opt/launcher";
  spec.argv = {"/usr/bin/python3", "-I", "-m", "sandbox_exec._worker"};
  spec.env = {"HOME=/srv/nb/1", "LANG=C.UTF-8", "EMPTY="};
  spec.workdir = "/srv/nb/1";
  spec.limits.cpu_seconds = 30;
  spec.isolation.outside_uid = 2000000007;
  spec.isolation.mountpoint = "/srv/nb/.mnt/1";
  return spec;
}

std::string refusal(const std::string& bytes) {
  try {
    (void)decode_fork_request(bytes);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(ZygoteProtocol, ARequestRoundTripsTheSpec) {
  const SpawnSpec in = sample();
  const SpawnSpec out = decode_fork_request(encode_fork_request(in));
  EXPECT_EQ(out.launcher, in.launcher);
  EXPECT_EQ(out.argv, in.argv);
  EXPECT_EQ(out.env, in.env);
  EXPECT_EQ(out.workdir, in.workdir);
  EXPECT_EQ(out.limits.cpu_seconds, in.limits.cpu_seconds);
  EXPECT_EQ(out.isolation.outside_uid, in.isolation.outside_uid);
  EXPECT_EQ(out.isolation.mountpoint, in.isolation.mountpoint);
}

TEST(ZygoteProtocol, MalformedRequestsAreRefusedWhole) {
  const std::string good = encode_fork_request(sample());
  EXPECT_NE(refusal(good.substr(0, 8)), "");                // shorter than its header
  EXPECT_NE(refusal(good.substr(0, good.size() - 1)), "");  // the last string's NUL missing
  EXPECT_NE(refusal(good + std::string("extra", 6)), "");   // a string more than the header says
  std::string wrong_magic = good;
  wrong_magic[0] ^= 1;
  EXPECT_NE(refusal(wrong_magic), "");
  std::string fewer = good;
  ForkRequestHeader h{};
  std::memcpy(&h, fewer.data(), sizeof h);
  ++h.envc;  // claims one more variable than it carries
  std::memcpy(fewer.data(), &h, sizeof h);
  EXPECT_NE(refusal(fewer), "");
  ForkRequestHeader none{kMagic, kVersion, 0, 0};
  EXPECT_NE(refusal(std::string(reinterpret_cast<const char*>(&none), sizeof none)), "");  // no argv at all
}

TEST(ZygoteProtocol, ANulInsideAStringCannotBeEncoded) {
  SpawnSpec spec = sample();
  spec.env.push_back(std::string("A=1\0B=2", 7));
  EXPECT_THROW((void)encode_fork_request(spec), ConfigError);
}

TEST(ZygoteProtocol, DescriptorsTravelWithTheDatagramCloseOnExec) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const int fds[] = {pipe_fds[0], pipe_fds[1]};
  ASSERT_EQ(send_with_fds(sv[0], "hi", 2, fds, 2), 0);
  char buffer[8];
  std::vector<UniqueFd> got;
  ASSERT_EQ(receive_with_fds(sv[1], buffer, sizeof buffer, got, kForkFdCount), 2);
  ASSERT_EQ(got.size(), 2u);
  for (const auto& fd : got) EXPECT_EQ(::fcntl(fd.get(), F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
  // The received write end reaches the original read end.
  ASSERT_EQ(::write(got[1].get(), "x", 1), 1);
  char c = 0;
  ASSERT_EQ(::read(pipe_fds[0], &c, 1), 1);
  EXPECT_EQ(c, 'x');
  ::close(pipe_fds[0]);
  ::close(pipe_fds[1]);
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST(ZygoteProtocol, MoreDescriptorsThanExpectedAreRefusedAndClosed) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  int pipe_fds[2];
  ASSERT_EQ(::pipe(pipe_fds), 0);
  const int fds[] = {pipe_fds[1], pipe_fds[1]};
  ASSERT_EQ(send_with_fds(sv[0], "hi", 2, fds, 2), 0);
  ::close(pipe_fds[1]);  // ours: the only write ends left are the two in flight
  char buffer[8];
  std::vector<UniqueFd> got;
  EXPECT_EQ(receive_with_fds(sv[1], buffer, sizeof buffer, got, 1), -EMSGSIZE);
  EXPECT_TRUE(got.empty());
  char c;
  EXPECT_EQ(::read(pipe_fds[0], &c, 1), 0) << "a refused descriptor stayed open";
  ::close(pipe_fds[0]);
  ::close(sv[0]);
  ::close(sv[1]);
}

TEST(ZygoteProtocol, ATruncatedDatagramIsRefused) {
  int sv[2];
  ASSERT_EQ(::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
  ASSERT_EQ(send_with_fds(sv[0], "0123456789", 10, nullptr, 0), 0);
  char buffer[4];
  std::vector<UniqueFd> got;
  EXPECT_EQ(receive_with_fds(sv[1], buffer, sizeof buffer, got, 1), -EMSGSIZE);
  ::close(sv[0]);
  ::close(sv[1]);
}

}  // namespace
}  // namespace sandbox_exec::zygote_protocol
