#include "supervisor/workdir_image.h"

#include <fcntl.h>
#include <linux/loop.h>
#include <linux/mount.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>

#include "common/sys_error.h"
#include "common/unique_fd.h"

namespace sandbox_exec::workdir_image {

namespace {
constexpr const char* kLayer = "workdir";

// Binds `image_fd` to the loop device `loop_fd` with autoclear. LOOP_CONFIGURE does it in
// one call (5.8+); older kernels take LOOP_SET_FD then LOOP_SET_STATUS64.
int configure(int loop_fd, int image_fd) {
  loop_config config{};
  config.fd = static_cast<uint32_t>(image_fd);
  config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
  if (::ioctl(loop_fd, LOOP_CONFIGURE, &config) == 0) return 0;
  if (errno != EINVAL && errno != ENOTTY) return -1;
  if (::ioctl(loop_fd, LOOP_SET_FD, image_fd) != 0) return -1;
  loop_info64 info{};
  info.lo_flags = LO_FLAGS_AUTOCLEAR;
  if (::ioctl(loop_fd, LOOP_SET_STATUS64, &info) != 0) {
    const int saved = errno;
    (void)::ioctl(loop_fd, LOOP_CLR_FD, 0);
    errno = saved;
    return -1;
  }
  return 0;
}

// Attaches `image` to a free loop device (its path into `device`) and calls `use(device)`,
// which mounts it or throws: the device is then let go (LOOP_CLR_FD) and the error passed on.
template <typename Use>
void with_loop_device(const std::string& image, std::string& device, Use use) {
  UniqueFd image_fd(::open(image.c_str(), O_RDWR | O_NOFOLLOW | O_CLOEXEC));
  if (!image_fd) throw_sys(kLayer, "open(" + image + ")");
  UniqueFd control(::open("/dev/loop-control", O_RDWR | O_CLOEXEC));
  if (!control) throw_sys(kLayer, "open(/dev/loop-control)");
  // Another process may take the free device between GET_FREE and the configure (EBUSY):
  // ask again.
  for (int attempt = 0; attempt < 64; ++attempt) {
    const int n = ::ioctl(control.get(), LOOP_CTL_GET_FREE);
    if (n < 0) throw_sys(kLayer, "ioctl(LOOP_CTL_GET_FREE)");
    device = "/dev/loop" + std::to_string(n);
    UniqueFd loop(::open(device.c_str(), O_RDWR | O_CLOEXEC));
    if (!loop) {
      // ENOENT: the node appears a moment after GET_FREE made it. ENXIO: another process
      // took the device after our GET_FREE and is letting it go again (a failed mount, an
      // unmount with autoclear): the kernel refuses opens while a loop device runs down
      // (Lo_rundown) or is removed (Lo_deleting). Either way: ask for a free one again.
      if (errno == ENOENT || errno == ENXIO) continue;
      throw_sys(kLayer, "open(" + device + ")");
    }
    if (configure(loop.get(), image_fd.get()) != 0) {
      if (errno == EBUSY) continue;
      throw_sys(kLayer, "ioctl(" + device + ", LOOP_CONFIGURE)");
    }
    // The mount holds the device from here; closing our descriptors then lets autoclear
    // free it when the filesystem is unmounted.
    try {
      use(device);
    } catch (...) {
      (void)::ioctl(loop.get(), LOOP_CLR_FD, 0);
      throw;
    }
    return;
  }
  throw SandboxError(kLayer, "ioctl(LOOP_CTL_GET_FREE)", EBUSY, "no loop device stayed free");
}

// discard: deleted files give their blocks back to the sparse image (the host's disk);
// noinit_itable: no background thread zeroes the unused inode tables (they would stop
// being sparse).
constexpr const char* kOptions = "discard,noinit_itable";
}  // namespace

std::string mount_image(const std::string& image, const std::string& target) {
  std::string device;
  with_loop_device(image, device, [&](const std::string& dev) {
    if (::mount(dev.c_str(), target.c_str(), "ext4", MS_NOSUID | MS_NODEV | MS_NOATIME, kOptions) != 0)
      throw_sys(kLayer, "mount(" + dev + ", " + target + ", ext4, nosuid|nodev)");
  });
  return device;
}

int mount_detached(const std::string& image) {
  std::string device;
  UniqueFd mount_fd;
  with_loop_device(image, device, [&](const std::string& dev) {
    UniqueFd fs(static_cast<int>(::syscall(SYS_fsopen, "ext4", FSOPEN_CLOEXEC)));
    if (!fs) throw_sys(kLayer, "fsopen(ext4)");
    auto config = [&](unsigned cmd, const char* key, const char* value) {
      if (::syscall(SYS_fsconfig, fs.get(), cmd, key, value, 0) != 0)
        throw_sys(kLayer, std::string("fsconfig(") + (key ? key : "create") + ") for " + dev);
    };
    config(FSCONFIG_SET_STRING, "source", dev.c_str());
    config(FSCONFIG_SET_FLAG, "discard", nullptr);
    config(FSCONFIG_SET_FLAG, "noinit_itable", nullptr);
    config(FSCONFIG_CMD_CREATE, nullptr, nullptr);
    mount_fd = UniqueFd(static_cast<int>(
        ::syscall(SYS_fsmount, fs.get(), FSMOUNT_CLOEXEC, MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOATIME)));
    if (!mount_fd) throw_sys(kLayer, "fsmount(" + dev + ")");
  });
  return mount_fd.release();
}

void attach_detached(int mount_fd, const std::string& target) {
  if (::syscall(SYS_move_mount, mount_fd, "", AT_FDCWD, target.c_str(), MOVE_MOUNT_F_EMPTY_PATH) != 0)
    throw_sys(kLayer, "move_mount(detached, " + target + ")");
}

bool rename_noreplace(const std::string& from, const std::string& to) {
  if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE) == 0) return true;
  if (errno == EEXIST) return false;
  throw_sys(kLayer, "renameat2(" + from + ", " + to + ", RENAME_NOREPLACE)");
}

bool unmount(const std::string& target) noexcept {
  return ::umount2(target.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0;
}

std::string mounted_image(const std::string& target) {
  struct stat st {
  }, parent{};
  if (::lstat(target.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) return {};
  if (::stat((target + "/..").c_str(), &parent) != 0 || parent.st_dev == st.st_dev) return {};
  const std::string sys = "/sys/dev/block/" + std::to_string(major(st.st_dev)) + ":" +
                          std::to_string(minor(st.st_dev)) + "/loop/backing_file";
  std::ifstream in(sys);
  std::string backing;
  if (!in || !std::getline(in, backing)) return {};
  return backing;
}

}  // namespace sandbox_exec::workdir_image
