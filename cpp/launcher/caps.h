// caps: the worker runs with no capability at all and cannot gain one.
//
// In order: securebits locked (no "root is special" semantics), every capability dropped
// from the bounding set, the ambient set cleared, permitted/effective/inheritable emptied
// (capset), then PR_SET_NO_NEW_PRIVS so that no execve (setuid binaries, file caps) can
// give any back. Inside the sandbox's user namespace these caps would only ever reach the
// namespace's own resources; dropping them closes that door too (mount, unshare, raw
// sockets, ...). Async-signal-safe.
#pragma once

#include "launch/launcher_protocol.h"

namespace sandbox_exec::caps {

using Failure = StepFailure;

[[nodiscard]] Failure drop_all() noexcept;

}  // namespace sandbox_exec::caps
