// net: the sandbox's network namespace has only a loopback interface, which starts down;
// bring_up_loopback() raises it so local servers (multiprocessing managers, local dask,
// a test HTTP server) work inside while nothing leaves the sandbox.
#pragma once

#include "launch/launcher_protocol.h"

namespace sandbox_exec::net {

// Fails as kLoopback. Needs CAP_NET_ADMIN in the network namespace's user namespace.
[[nodiscard]] StepFailure bring_up_loopback() noexcept;

}  // namespace sandbox_exec::net
