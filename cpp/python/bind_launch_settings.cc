// The launch settings as typed objects: ResourceLimits, CgroupLimits, Isolation.
#include "python/bindings.h"

#include <cmath>
#include <optional>
#include <tuple>
#include "common/sys_error.h"
#include "launch/spawn_spec.h"
#include "supervisor/cgroup.h"

namespace sandbox_exec::python {

void bind_launch_settings(py::module_& m) {
  // The launch settings cross from Python as typed objects, never as a string-keyed dict:
  // a misspelled name is a TypeError, and every protection is on unless the caller names it
  // off (with a dict, a missing key would silently mean "layer off").
  py::class_<ResourceLimits>(m, "ResourceLimits", "The worker's rlimits (None: not set).")
      .def(py::init([](std::optional<uint64_t> cpu_seconds, std::optional<uint64_t> file_bytes,
                       std::optional<uint64_t> open_files, std::optional<uint64_t> address_space,
                       std::optional<uint64_t> processes) {
             return ResourceLimits{cpu_seconds, file_bytes, open_files, address_space, processes, false};
           }),
           py::kw_only(), py::arg("cpu_seconds"), py::arg("file_bytes"), py::arg("open_files"),
           py::arg("address_space"), py::arg("processes"))
      .def_readonly("cpu_seconds", &ResourceLimits::cpu_seconds)
      .def_readonly("file_bytes", &ResourceLimits::file_bytes)
      .def_readonly("open_files", &ResourceLimits::open_files)
      .def_readonly("address_space", &ResourceLimits::address_space)
      .def_readonly("processes", &ResourceLimits::processes);

  py::class_<Cgroups::Limits>(m, "CgroupLimits", "The session's cgroup limits (None: not set).")
      .def(py::init([](std::optional<uint64_t> memory_bytes, std::optional<uint64_t> max_processes,
                       std::optional<double> cpus) {
             if (cpus && !(std::isfinite(*cpus) && *cpus > 0))
               throw ConfigError("CgroupLimits: cpus must be a positive finite number");
             return Cgroups::Limits{memory_bytes, max_processes, cpus};
           }),
           py::kw_only(), py::arg("memory_bytes"), py::arg("max_processes"), py::arg("cpus"))
      .def_readonly("memory_bytes", &Cgroups::Limits::memory_bytes)
      .def_readonly("max_processes", &Cgroups::Limits::max_processes)
      .def_readonly("cpus", &Cgroups::Limits::cpus);

  py::class_<Isolation>(m, "Isolation", "The isolation layers; every protection defaults to on.")
      .def(py::init([](bool namespaces, bool network, bool drop_caps, bool landlock, bool seccomp,
                       std::string mountpoint, std::vector<std::string> readonly,
                       std::vector<std::pair<std::string, std::string>> symlinks, uint64_t tmp_bytes,
                       uint32_t outside_uid, uint32_t outside_gid, std::string hostname,
                       const std::vector<std::tuple<std::string, std::string, bool>>& mounts) {
             Isolation iso;
             iso.namespaces = namespaces;
             iso.network = network;
             iso.drop_caps = drop_caps;
             iso.landlock = landlock;
             iso.seccomp = seccomp;
             if (namespaces && mountpoint.empty()) throw ConfigError("Isolation: namespaces need a mountpoint");
             iso.mountpoint = std::move(mountpoint);
             iso.readonly = std::move(readonly);
             iso.symlinks = std::move(symlinks);
             iso.tmp_bytes = tmp_bytes;
             iso.outside_uid = outside_uid;
             iso.outside_gid = outside_gid;
             iso.hostname = std::move(hostname);
             for (const auto& [host, path, writable] : mounts) {
               if (const std::string why = check_data_mount_path(path); !why.empty())
                 throw ConfigError("Isolation: a mount path " + why);
               if (host.empty() || host[0] != '/' || host.find('\0') != std::string::npos)
                 throw ConfigError("Isolation: a mount's host directory must be an absolute path: " + host);
               iso.mounts.push_back({host, path, writable});
             }
             return iso;
           }),
           py::kw_only(), py::arg("namespaces") = true, py::arg("network") = false, py::arg("drop_caps") = true,
           py::arg("landlock") = true, py::arg("seccomp") = true, py::arg("mountpoint") = std::string(),
           py::arg("readonly") = std::vector<std::string>(),
           py::arg("symlinks") = std::vector<std::pair<std::string, std::string>>(),
           py::arg("tmp_bytes") = Isolation{}.tmp_bytes, py::arg("outside_uid") = Isolation{}.outside_uid,
           py::arg("outside_gid") = Isolation{}.outside_gid, py::arg("hostname") = Isolation{}.hostname,
           py::arg("mounts") = std::vector<std::tuple<std::string, std::string, bool>>())
      .def_readonly("namespaces", &Isolation::namespaces)
      .def_readonly("network", &Isolation::network)
      .def_readonly("drop_caps", &Isolation::drop_caps)
      .def_readonly("landlock", &Isolation::landlock)
      .def_readonly("seccomp", &Isolation::seccomp)
      .def_readonly("mountpoint", &Isolation::mountpoint)
      .def_readonly("readonly", &Isolation::readonly)
      .def_readonly("tmp_bytes", &Isolation::tmp_bytes)
      .def_readonly("outside_uid", &Isolation::outside_uid)
      .def_readonly("outside_gid", &Isolation::outside_gid)
      .def_readonly("hostname", &Isolation::hostname)
      .def_property_readonly("mounts", [](const Isolation& iso) {
        std::vector<std::tuple<std::string, std::string, bool>> out;
        for (const auto& m : iso.mounts) out.emplace_back(m.host, m.path, m.writable);
        return out;
      });
}

}  // namespace sandbox_exec::python
