#include "ipc/shared_region.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include <boost/interprocess/detail/os_file_functions.hpp>

#include "common/sys_error.h"

namespace sandbox_exec {

namespace {
namespace bip = boost::interprocess;

// Boost.Interprocess maps any object with get_mapping_handle(); a memfd is such a file.
struct FdMappable {
  int fd;
  bip::mapping_handle_t get_mapping_handle() const { return bip::ipcdetail::mapping_handle_from_file_handle(fd); }
};
}  // namespace

SharedRegion::SharedRegion(UniqueFd fd, std::size_t size) : fd_(std::move(fd)), size_(size) {
  try {
    mapping_ = bip::mapped_region(FdMappable{fd_.get()}, bip::read_write, 0, size_);
  } catch (const bip::interprocess_exception& e) {
    throw SandboxError("shared_region", "mmap(MAP_SHARED, " + std::to_string(size_) + ")", e.get_native_error(),
                       e.what());
  }
}

SharedRegion SharedRegion::create(std::size_t size, const char* debug_name) {
  UniqueFd fd(::memfd_create(debug_name, MFD_CLOEXEC | MFD_ALLOW_SEALING));
  if (!fd) throw_sys("shared_region", "memfd_create(MFD_ALLOW_SEALING)");
  if (::ftruncate(fd.get(), static_cast<off_t>(size)) != 0)
    throw_sys("shared_region", "ftruncate(memfd, " + std::to_string(size) + ")");
  if (::fcntl(fd.get(), F_ADD_SEALS, F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL) != 0)
    throw_sys("shared_region", "fcntl(F_ADD_SEALS, SHRINK|GROW|SEAL)");
  return SharedRegion(std::move(fd), size);
}

SharedRegion SharedRegion::attach(UniqueFd fd) {
  struct stat st {};
  if (::fstat(fd.get(), &st) != 0) throw_sys("shared_region", "fstat(ring fd)");
  auto size = static_cast<std::size_t>(st.st_size);
  if (size == 0)
    throw SandboxError("shared_region", "fstat(ring fd) size " + std::to_string(size), 0,
                       "the inherited descriptor is not the session's ring");
  return SharedRegion(std::move(fd), size);
}

}  // namespace sandbox_exec
