// What the host gives: cgroup delegation, workdir images, the disk walk, Landlock, the log level.
#include "python/bindings.h"

#include <optional>
#include "common/kernel.h"
#include "supervisor/cgroup.h"
#include "supervisor/disk_usage.h"
#include "supervisor/logging.h"
#include "supervisor/workdir_image.h"

namespace sandbox_exec::python {

void bind_host(py::module_& m) {
  m.def(
      "cgroup_support",
      [] {
        CgroupSupport c;
        {
          py::gil_scoped_release release;
          c = Cgroups::detect();
        }
        py::dict d;
        d["version"] = c.version;
        d["memory"] = c.memory;
        d["pids"] = c.pids;
        d["cpu"] = c.cpu;
        d["cpu_limit"] = c.cpu_limit;
        d["detail"] = c.detail;
        return d;
      },
      "What cgroup delegation this process can give sessions.");
  py::module_ image = m.def_submodule("workdir_image", "a workdir as a size-capped filesystem (workdir_image.h)");
  image.def("mount", &workdir_image::mount_image, py::arg("image"), py::arg("target"),
            py::call_guard<py::gil_scoped_release>(),
            "Attaches the image to a free loop device (autoclear) and mounts it (ext4, nosuid, nodev) "
            "at target; returns the loop device.");
  image.def("mount_detached", &workdir_image::mount_detached, py::arg("image"),
            py::call_guard<py::gil_scoped_release>(),
            "Attaches the image to a free loop device and mounts it detached (fsmount; ext4, nosuid, nodev); "
            "returns the mount's descriptor (closing it unmounts).");
  image.def("attach_detached", &workdir_image::attach_detached, py::arg("mount_fd"), py::arg("target"),
            py::call_guard<py::gil_scoped_release>(),
            "move_mount(mount_fd, target): the detached mount appears there.");
  image.def("rename_noreplace", &workdir_image::rename_noreplace, py::arg("source"), py::arg("target"),
            py::call_guard<py::gil_scoped_release>(),
            "renameat2(source, target, RENAME_NOREPLACE); False when target exists.");
  image.def("unmount", &workdir_image::unmount, py::arg("target"), py::call_guard<py::gil_scoped_release>(),
            "umount2(target, MNT_DETACH | UMOUNT_NOFOLLOW); False when nothing was mounted there.");
  image.def("mounted_image", &workdir_image::mounted_image, py::arg("target"),
            "The image file behind the loop-device filesystem mounted at target, or ''.");
  m.def(
      "disk_usage",
      [](const std::string& path) {
        std::optional<uint64_t> used;
        {
          py::gil_scoped_release release;
          used = disk_usage(path);
        }
        return used;
      },
      py::arg("path"),
      "Bytes allocated under path, walked by descriptor (disk_usage.h); None when it is no directory; "
      "2**64-1 past a million entries.");
  m.def("landlock_abi", &kernel::landlock_abi, "The kernel's Landlock ABI version (0: unavailable).");
  m.def("set_log_level", &log::set_level, py::arg("level"),
        "Supervisor log level: trace, debug, info, warn, error or off.");
  m.def("log_to_queue", &log::queue_records, py::arg("on"),
        "Supervisor log records go to a bounded queue (drain_log) instead of stderr (logging.h).");
  m.def(
      "drain_log",
      [] {
        // The queue's mutex is taken inside drain() for a swap only: safe with the GIL held
        // (logging.h); the Python objects are made after it is released.
        log::Drained d = log::drain();
        py::list records;
        for (const auto& r : d.records) {
          records.append(py::make_tuple(static_cast<int>(r.level), r.time_s, r.thread, py::bytes(r.text)));
        }
        return py::make_tuple(records, d.dropped);
      },
      "The queued supervisor log records and the count dropped since the last drain: "
      "([(spdlog level 0-6, time in epoch seconds, thread id, message bytes)], dropped).");
}

}  // namespace sandbox_exec::python
