#pragma once
// file_io: the small file operations every layer needs, in one place.
//
// All of them return errno (0 on success) instead of throwing, and the ones marked
// async-signal-safe allocate nothing, so the launcher's clone child may call them.

#include <sys/types.h>

#include <string>
#include <string_view>

namespace sandbox_exec::file_io {

// Writes `text` to `path` in one write(2). `flags` is added to O_WRONLY|O_CLOEXEC: pass
// O_CREAT|O_TRUNC for a regular file (as a shell's `echo x > file`), nothing for a kernel
// knob that exists already (/proc/<pid>/uid_map refuses truncation). Async-signal-safe.
[[nodiscard]] int write_file(const char* path, std::string_view text, int flags = 0) noexcept;

// The whole text of a (small) file; empty when it cannot be read. `open_error`, when
// given, gets the open's errno (0 when it opened): a caller that must tell "no such file"
// from "no descriptor left" (EMFILE) reads it.
[[nodiscard]] std::string read_file(const std::string& path, int* open_error = nullptr);

// mkdir -p: every missing component of `path` with `mode`; an existing one is fine.
[[nodiscard]] int make_dirs(const std::string& path, mode_t mode = 0755);

}  // namespace sandbox_exec::file_io
