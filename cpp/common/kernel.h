#pragma once
// kernel: what the running kernel offers, asked without changing anything. Read by the
// launcher (to apply a layer) and by the supervisor (to report it: doctor, enforcement).

namespace sandbox_exec::kernel {

// The kernel's Landlock ABI version; 0 when Landlock is unavailable or disabled.
[[nodiscard]] int landlock_abi() noexcept;

}  // namespace sandbox_exec::kernel
