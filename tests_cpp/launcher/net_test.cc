// Unit tests for cpp/launcher/net.cc: bring_up_loopback() runs only in a forked child in a new
// user and network namespace (never in the host's network namespace, whose lo it would
// touch); the child reports lo's flags and what a TCP connection to 127.0.0.1 did.
#include "launcher/net.h"

#include <arpa/inet.h>
#include <linux/capability.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include <gtest/gtest.h>

#include "child_probe.h"

namespace {

using sandbox_exec::LaunchStep;

// lo's interface flags, or -errno.
int lo_flags() {
  const int fd = ::socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  ifreq ifr{};
  std::strncpy(ifr.ifr_name, "lo", IFNAMSIZ - 1);
  const int rc = ::ioctl(fd, SIOCGIFFLAGS, &ifr) == 0 ? (ifr.ifr_flags & 0xffff) : -errno;
  ::close(fd);
  return rc;
}

// A TCP round trip over 127.0.0.1: a listener on an ephemeral port, a connect, one byte
// across. 0 on success, else the errno of the call that failed.
int loopback_round_trip() {
  const int server = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (server < 0) return errno;
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  int err = 0;
  if (::bind(server, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(server, 1) != 0 ||
      ::getsockname(server, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    err = errno;
    ::close(server);
    return err;
  }
  const int client = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (client < 0 || ::connect(client, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    err = errno;
  } else {
    const int conn = ::accept4(server, nullptr, nullptr, SOCK_CLOEXEC);
    char byte = 0;
    if (conn < 0) {
      err = errno;
    } else {
      if (::write(client, "!", 1) != 1 || ::read(conn, &byte, 1) != 1)
        err = errno ? errno : EIO;
      else if (byte != '!')
        err = EBADMSG;
      ::close(conn);
    }
  }
  if (client >= 0) ::close(client);
  ::close(server);
  return err;
}

TEST(Net, BringUpLoopbackInANewNetworkNamespace) {
  const auto r = probe::run([](const probe::Report& out) {
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
      out.put("setup", errno);
      return 2;
    }
    out.put("flags_before", lo_flags());
    out.put("connect_before", loopback_round_trip());
    out.put("f", sandbox_exec::net::bring_up_loopback());
    out.put("flags_after", lo_flags());
    out.put("connect_after", loopback_round_trip());
    return 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  const long long before = r.num("flags_before"), after = r.num("flags_after");
  ASSERT_GE(before, 0) << r.dump();
  EXPECT_FALSE(before & IFF_UP) << "a new network namespace's lo starts down";
  EXPECT_NE(r.num("connect_before"), 0) << "control: nothing answers on a down lo";
  EXPECT_EQ(r.step("f"), LaunchStep::kNone) << r.dump();
  EXPECT_TRUE(after & IFF_UP) << r.dump();
  EXPECT_TRUE(after & IFF_LOOPBACK) << r.dump();
  EXPECT_EQ(r.num("connect_after"), 0) << r.dump();
}

TEST(Net, WithoutNetAdminFailsAsLoopback) {
  const auto r = probe::run([](const probe::Report& out) {
    if (::unshare(CLONE_NEWUSER | CLONE_NEWNET) != 0) {
      out.put("setup", errno);
      return 2;
    }
    // Every capability gone (the namespace's creator had them all).
    __user_cap_header_struct header{_LINUX_CAPABILITY_VERSION_3, 0};
    __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3] = {};
    if (::syscall(SYS_capset, &header, data) != 0) return 3;
    out.put("f", sandbox_exec::net::bring_up_loopback());
    out.put("flags_after", lo_flags());
    return 0;
  });
  ASSERT_TRUE(r.exited()) << r.dump();
  EXPECT_EQ(r.step("f"), LaunchStep::kLoopback) << r.dump();
  EXPECT_EQ(r.err("f"), EPERM) << r.dump();
  EXPECT_FALSE(r.num("flags_after") & IFF_UP) << r.dump();
}

}  // namespace
