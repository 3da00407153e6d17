// sys_error: SandboxError's message names the layer, the call, errno (name, number and
// text) and a hint (errno_hint's for the errnos it knows, the caller's when given); the
// accessors return what was given; throw_sys takes errno by default; ConfigError and
// ProtocolViolation are the standard exception types they claim to be.
#include "common/sys_error.h"

#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include <gtest/gtest.h>

namespace sandbox_exec {
namespace {

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

TEST(SandboxError, MessageNamesLayerCallAndErrno) {
  const SandboxError e("rlimits", "setrlimit(RLIMIT_AS, 1024)", EINVAL);
  const std::string msg = e.what();
  EXPECT_EQ(msg.rfind("rlimits: setrlimit(RLIMIT_AS, 1024) failed", 0), 0u) << msg;
  EXPECT_TRUE(contains(msg, "EINVAL")) << msg;
  EXPECT_TRUE(contains(msg, "(" + std::to_string(EINVAL) + ", ")) << msg;
  EXPECT_TRUE(contains(msg, std::strerror(EINVAL))) << msg;
  // EINVAL has no known cause: no hint
  EXPECT_FALSE(contains(msg, "hint")) << msg;
}

TEST(SandboxError, Accessors) {
  const SandboxError e("mount", "mount(proc)", EBUSY);
  EXPECT_EQ(e.layer(), "mount");
  EXPECT_EQ(e.call(), "mount(proc)");
  EXPECT_EQ(e.error_number(), EBUSY);
}

TEST(SandboxError, KnownErrnoGetsItsHint) {
  const SandboxError e("spawn", "pipe2()", EMFILE);
  const std::string msg = e.what();
  EXPECT_TRUE(contains(msg, "EMFILE")) << msg;
  EXPECT_TRUE(contains(msg, "; hint: " + errno_hint("spawn", EMFILE))) << msg;
  EXPECT_TRUE(contains(msg, "RLIMIT_NOFILE")) << msg;
}

TEST(SandboxError, ExplicitHintWins) {
  const SandboxError e("spawn", "pipe2()", EMFILE, "close some notebooks");
  const std::string msg = e.what();
  EXPECT_TRUE(contains(msg, "; hint: close some notebooks")) << msg;
  EXPECT_FALSE(contains(msg, "RLIMIT_NOFILE")) << msg;
}

TEST(SandboxError, ExplicitHintForAnErrnoWithoutOne) {
  const SandboxError e("workdir", "chdir(/nope)", ENOENT, "the workdir does not exist");
  const std::string msg = e.what();
  EXPECT_TRUE(contains(msg, "ENOENT")) << msg;
  EXPECT_TRUE(contains(msg, "; hint: the workdir does not exist")) << msg;
}

TEST(SandboxError, ErrnoZeroNamesNoErrno) {
  const SandboxError e("spawn", "launcher start", 0, "no start report");
  const std::string msg = e.what();
  EXPECT_EQ(msg, "spawn: launcher start failed; hint: no start report");
  EXPECT_EQ(e.error_number(), 0);
  const SandboxError bare("spawn", "launcher start", 0);
  EXPECT_EQ(std::string(bare.what()), "spawn: launcher start failed");
}

TEST(SandboxError, IsARuntimeError) {
  static_assert(std::is_base_of_v<std::runtime_error, SandboxError>);
  try {
    throw SandboxError("x", "y()", EPERM);
  } catch (const std::runtime_error& e) {
    EXPECT_TRUE(contains(e.what(), "x: y() failed")) << e.what();
  }
}

TEST(ErrnoHint, KnownCauses) {
  EXPECT_TRUE(contains(errno_hint("any", EMFILE), "RLIMIT_NOFILE"));
  EXPECT_EQ(errno_hint("any", ENFILE), errno_hint("any", EMFILE));
  EXPECT_TRUE(contains(errno_hint("any", ENOMEM), "out of memory"));
  EXPECT_TRUE(contains(errno_hint("any", EPERM), "forbids"));
  EXPECT_EQ(errno_hint("any", EACCES), errno_hint("any", EPERM));
}

TEST(ErrnoHint, LayerSpecificCauses) {
  EXPECT_TRUE(contains(errno_hint("shared_region", ENOSPC), "memfd"));
  EXPECT_EQ(errno_hint("workdir", ENOSPC), "");
  EXPECT_TRUE(contains(errno_hint("spawn", ENOENT), "missing"));
  EXPECT_EQ(errno_hint("mount", ENOENT), "");
  // and the message carries the layer-specific hint only in its layer
  EXPECT_TRUE(contains(SandboxError("spawn", "posix_spawn(x)", ENOENT).what(), "; hint: "));
  EXPECT_FALSE(contains(SandboxError("mount", "mount(x)", ENOENT).what(), "hint"));
}

TEST(ErrnoHint, UnknownErrnoHasNone) {
  EXPECT_EQ(errno_hint("spawn", EINVAL), "");
  EXPECT_EQ(errno_hint("spawn", 0), "");
  EXPECT_EQ(errno_hint("spawn", EXDEV), "");
}

TEST(ThrowSys, UsesErrnoByDefault) {
  errno = ENOMEM;
  try {
    throw_sys("shared_region", "mmap(4096)");
    FAIL() << "throw_sys returned";
  } catch (const SandboxError& e) {
    EXPECT_EQ(e.layer(), "shared_region");
    EXPECT_EQ(e.call(), "mmap(4096)");
    EXPECT_EQ(e.error_number(), ENOMEM);
    EXPECT_TRUE(contains(e.what(), "ENOMEM")) << e.what();
    EXPECT_TRUE(contains(e.what(), "; hint: " + errno_hint("shared_region", ENOMEM))) << e.what();
  }
}

TEST(ThrowSys, ErrnoOfAFailedCall) {
  errno = 0;
  ASSERT_NE(::close(-1), 0);  // EBADF
  try {
    throw_sys("fds", "close(-1)");
    FAIL() << "throw_sys returned";
  } catch (const SandboxError& e) {
    EXPECT_EQ(e.error_number(), EBADF);
    EXPECT_TRUE(contains(e.what(), "EBADF")) << e.what();
  }
}

TEST(ThrowSys, ExplicitErrnoWins) {
  errno = ENOMEM;
  try {
    throw_sys("net", "socket()", EAFNOSUPPORT);
    FAIL() << "throw_sys returned";
  } catch (const SandboxError& e) {
    EXPECT_EQ(e.error_number(), EAFNOSUPPORT);
    EXPECT_TRUE(contains(e.what(), "EAFNOSUPPORT")) << e.what();
    EXPECT_FALSE(contains(e.what(), "ENOMEM")) << e.what();
  }
}

TEST(OtherErrors, ConfigErrorIsInvalidArgument) {
  static_assert(std::is_base_of_v<std::invalid_argument, ConfigError>);
  static_assert(!std::is_base_of_v<SandboxError, ConfigError>);
  try {
    throw ConfigError("bad memory_bytes: -1");
  } catch (const std::invalid_argument& e) {
    EXPECT_STREQ(e.what(), "bad memory_bytes: -1");
  }
}

TEST(OtherErrors, ProtocolViolationIsRuntimeErrorButNotSandboxError) {
  static_assert(std::is_base_of_v<std::runtime_error, ProtocolViolation>);
  static_assert(!std::is_base_of_v<SandboxError, ProtocolViolation>);
  static_assert(!std::is_base_of_v<SandboxError, ConfigError>);
  try {
    throw ProtocolViolation("event ring tail beyond head");
  } catch (const SandboxError&) {
    FAIL() << "caught as SandboxError";
  } catch (const std::runtime_error& e) {
    EXPECT_STREQ(e.what(), "event ring tail beyond head");
  }
}

}  // namespace
}  // namespace sandbox_exec
