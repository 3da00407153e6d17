#pragma once
// single_threaded_child(): for tests whose forked child must be single-threaded, under
// ThreadSanitizer; nothing in other builds.
//
// TSan's runtime starts its background thread in every forked child, even of a
// single-threaded parent. A process with a second thread cannot unshare a user namespace
// (unshare(2): EINVAL), and the zygote refuses to fork beside a thread (EDEADLK, by design:
// fork_server.cc), so the launcher's and the zygote's tests would fail for the runtime's
// thread, not ours. The child calls single_threaded_child() first: it stops that thread
// through the sanitizers' hook for processes about to enter a sandbox
// (__sanitizer_sandbox_on_notify), which the runtime honours once it has registered its
// callback, on the process's first pthread_create. A thread started and joined at the test
// program's start (below) does that in the parent, before any fork.
#if defined(__SANITIZE_THREAD__)
#include <sanitizer/common_interface_defs.h>

#include <thread>

namespace sandbox_exec::test_support {
inline const bool tsan_sandbox_hook_registered = [] {
  std::thread([] {}).join();
  return true;
}();
inline void single_threaded_child() { __sanitizer_sandbox_on_notify(nullptr); }
}  // namespace sandbox_exec::test_support
#else
namespace sandbox_exec::test_support {
inline void single_threaded_child() {}
}  // namespace sandbox_exec::test_support
#endif
