// workdir_image: a session's workdir as a size-capped filesystem of its own.
//
// Where the backend is root, each session's workdir is an ext4 filesystem in a sparse image
// file (formatted once by the Python layer with mkfs.ext4), attached to a loop device and
// mounted at the workdir's host path for as long as the Session lives. The kernel then
// enforces disk_bytes on every write, whatever its timing or form: fallocate, files
// unlinked but held open, descriptors in flight in a UNIX socket, leftover processes all
// count against the same filesystem, and a write past the cap fails with ENOSPC inside the
// cell. The supervisor's disk watchdog (disk_usage.h) is the fallback where this cannot be
// done (not root, no loop devices, no mkfs.ext4).
//
// Only the ioctls and mounts live here; sizing, formatting and the fallback decision are
// the Python layer's (python/sandbox_exec/_workdir_image.py).
#pragma once

#include <string>

namespace sandbox_exec::workdir_image {

// Attaches `image` to a free loop device (LOOP_CTL_GET_FREE, then LOOP_CONFIGURE, or
// LOOP_SET_FD + LOOP_SET_STATUS64 on older kernels; LO_FLAGS_AUTOCLEAR so the device
// frees itself when the filesystem is finally unmounted) and mounts it as ext4 at `target`
// with nosuid and nodev. Returns the loop device's path. Throws SandboxError (layer
// "workdir") naming the call and errno.
std::string mount_image(const std::string& image, const std::string& target);

// Attaches `image` to a free loop device as mount_image does and mounts it detached (the
// new mount API: fsopen, fsconfig, fsmount; ext4, nosuid, nodev, noatime), attached to no
// path: the returned descriptor (O_CLOEXEC) is the only handle on it. Closing it unmounts
// it (and autoclear frees the device), also when the process dies. For spare workdir
// images made ready ahead (python/sandbox_exec/_spare_images.py).
int mount_detached(const std::string& image);

// Attaches the detached mount `mount_fd` at `target` (move_mount). The caller still closes
// `mount_fd`; the mount stays where it now is.
void attach_detached(int mount_fd, const std::string& target);

// Renames `from` to `to` unless `to` exists (renameat2 RENAME_NOREPLACE): false with
// EEXIST. Throws on any other failure.
bool rename_noreplace(const std::string& from, const std::string& to);

// Detaches the filesystem mounted at `target` (MNT_DETACH: lazily, once nothing uses it;
// UMOUNT_NOFOLLOW). False when nothing was mounted there.
bool unmount(const std::string& target) noexcept;

// The image file behind the loop-device filesystem mounted at `target` (its root, not a
// directory inside it); "" when `target` is no such mount.
std::string mounted_image(const std::string& target);

}  // namespace sandbox_exec::workdir_image
