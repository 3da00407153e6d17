// net: the sandbox's network namespace has only a loopback interface, which starts down;
// bring_up_loopback() raises it so local servers (multiprocessing managers, local dask,
// a test HTTP server) work inside while nothing leaves the sandbox.
#pragma once

namespace sandbox_exec::net {

// Returns 0 or errno. Needs CAP_NET_ADMIN in the network namespace's user namespace.
[[nodiscard]] int bring_up_loopback() noexcept;

}  // namespace sandbox_exec::net
