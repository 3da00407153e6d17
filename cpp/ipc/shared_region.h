// SharedRegion: one shared-memory region per session, mapped with Boost.Interprocess.
//
// The supervisor creates it as a sealed memfd: F_SEAL_SHRINK|F_SEAL_GROW|F_SEAL_SEAL make
// its size immutable, so a hostile worker holding the same descriptor cannot ftruncate it
// and turn the supervisor's next read into SIGBUS (the classic shared-memory DoS; see
// memfd_create(2), "File sealing"). The worker maps the descriptor it inherited.
// Neither side ever stores a pointer into the region: only offsets.
#pragma once

#include <boost/interprocess/mapped_region.hpp>
#include <cstddef>
#include <cstdint>

#include "common/unique_fd.h"

namespace sandbox_exec {

class SharedRegion {
 public:
  // Supervisor side: a new sealed, zero-filled region of `size` bytes.
  static SharedRegion create(std::size_t size, const char* debug_name);
  // Worker side: maps an inherited descriptor; its size is read once here (fstat).
  static SharedRegion attach(UniqueFd fd);

  SharedRegion(SharedRegion&&) noexcept = default;
  SharedRegion& operator=(SharedRegion&&) noexcept = default;

  [[nodiscard]] std::byte* data() const noexcept { return static_cast<std::byte*>(mapping_.get_address()); }
  [[nodiscard]] std::size_t size() const noexcept { return size_; }
  [[nodiscard]] int fd() const noexcept { return fd_.get(); }

 private:
  SharedRegion(UniqueFd fd, std::size_t size);
  UniqueFd fd_;
  std::size_t size_ = 0;
  boost::interprocess::mapped_region mapping_;
};

}  // namespace sandbox_exec
