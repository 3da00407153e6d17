#include "launch/spawn_spec.h"

#include <charconv>
#include <cstdio>
#include <string_view>

#include "common/sys_error.h"

namespace sandbox_exec {

namespace {
void add_limit(std::vector<std::string>& out, const char* name, const std::optional<uint64_t>& v) {
  if (v) {
    out.emplace_back(name);
    out.push_back(std::to_string(*v));
  }
}

uint64_t parse_u64(std::string_view option, std::string_view text) {
  uint64_t value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc() || end != text.data() + text.size())
    throw ConfigError("launcher: " + std::string(option) + " expects an unsigned integer, got '" + std::string(text) +
                      "'");
  return value;
}
}  // namespace

std::vector<std::string> launcher_argv(const SpawnSpec& spec) {
  std::vector<std::string> out{spec.launcher, "--workdir", spec.workdir};
  add_limit(out, "--cpu-seconds", spec.limits.cpu_seconds);
  add_limit(out, "--file-bytes", spec.limits.file_bytes);
  add_limit(out, "--open-files", spec.limits.open_files);
  add_limit(out, "--address-space", spec.limits.address_space);
  add_limit(out, "--processes", spec.limits.processes);
  if (spec.limits.core_dumps) out.emplace_back("--core-dumps");
  const Isolation& iso = spec.isolation;
  // Every protection is on unless the command line names its opt-out: a flag lost on the
  // way can only make the sandbox stricter (or fail to start), never turn a layer off.
  if (!iso.namespaces) out.emplace_back("--no-namespaces");
  if (iso.namespaces) {
    out.insert(out.end(), {"--ids", std::to_string(iso.inside_uid) + ":" + std::to_string(iso.inside_gid) + ":" +
                                        std::to_string(iso.outside_uid) + ":" + std::to_string(iso.outside_gid)});
    out.insert(out.end(), {"--mountpoint", iso.mountpoint});
    for (const auto& p : iso.readonly) out.insert(out.end(), {"--ro", p});
    for (const auto& [path, target] : iso.symlinks) {
      if (path.find('=') != std::string::npos)
        throw ConfigError("launcher: a symlink path may not contain '=': " + path);
      out.insert(out.end(), {"--symlink", path + "=" + target});
    }
    out.insert(out.end(), {"--tmp-bytes", std::to_string(iso.tmp_bytes)});
    out.insert(out.end(), {"--hostname", iso.hostname});
    if (iso.network) out.emplace_back("--host-network");
  }
  for (const auto& c : iso.cgroups) out.insert(out.end(), {"--cgroup", c});
  if (!iso.drop_caps) out.emplace_back("--keep-caps");
  if (!iso.landlock) out.emplace_back("--no-landlock");
  if (!iso.seccomp) out.emplace_back("--no-seccomp");
  out.emplace_back("--");
  out.insert(out.end(), spec.argv.begin(), spec.argv.end());
  return out;
}

SpawnSpec parse_launcher_argv(int argc, const char* const* argv) {
  SpawnSpec spec;
  if (argc > 0) spec.launcher = argv[0];
  int i = 1;
  auto value = [&](std::string_view option) -> std::string_view {
    if (i + 1 >= argc) throw ConfigError("launcher: " + std::string(option) + " needs a value");
    return argv[++i];
  };
  for (; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") {
      ++i;
      break;
    } else if (arg == "--workdir") {
      spec.workdir = value(arg);
    } else if (arg == "--cpu-seconds") {
      spec.limits.cpu_seconds = parse_u64(arg, value(arg));
    } else if (arg == "--file-bytes") {
      spec.limits.file_bytes = parse_u64(arg, value(arg));
    } else if (arg == "--open-files") {
      spec.limits.open_files = parse_u64(arg, value(arg));
    } else if (arg == "--address-space") {
      spec.limits.address_space = parse_u64(arg, value(arg));
    } else if (arg == "--processes") {
      spec.limits.processes = parse_u64(arg, value(arg));
    } else if (arg == "--core-dumps") {
      spec.limits.core_dumps = true;
    } else if (arg == "--no-namespaces") {
      spec.isolation.namespaces = false;
    } else if (arg == "--ids") {
      const std::string_view ids = value(arg);
      const std::string usage =
          "launcher: --ids expects INSIDE_UID:INSIDE_GID:OUTSIDE_UID:OUTSIDE_GID "
          "(unsigned 32-bit numbers), got '" +
          std::string(ids) + "'";
      uint32_t parsed[4];
      std::size_t start = 0;
      for (int k = 0; k < 4; ++k) {
        const std::size_t end = k < 3 ? ids.find(':', start) : ids.size();
        if (end == std::string_view::npos || end == start) throw ConfigError(usage);
        const auto [ptr, ec] = std::from_chars(ids.data() + start, ids.data() + end, parsed[k]);
        if (ec != std::errc() || ptr != ids.data() + end) throw ConfigError(usage);
        start = end + 1;
      }
      spec.isolation.inside_uid = parsed[0];
      spec.isolation.inside_gid = parsed[1];
      spec.isolation.outside_uid = parsed[2];
      spec.isolation.outside_gid = parsed[3];
    } else if (arg == "--mountpoint") {
      spec.isolation.mountpoint = value(arg);
    } else if (arg == "--ro") {
      spec.isolation.readonly.emplace_back(value(arg));
    } else if (arg == "--symlink") {
      const std::string link(value(arg));
      const auto eq = link.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == link.size())
        throw ConfigError("launcher: --symlink expects PATH=TARGET");
      spec.isolation.symlinks.emplace_back(link.substr(0, eq), link.substr(eq + 1));
    } else if (arg == "--tmp-bytes") {
      spec.isolation.tmp_bytes = parse_u64(arg, value(arg));
    } else if (arg == "--hostname") {
      spec.isolation.hostname = value(arg);
    } else if (arg == "--host-network") {
      spec.isolation.network = true;
    } else if (arg == "--cgroup") {
      spec.isolation.cgroups.emplace_back(value(arg));
    } else if (arg == "--keep-caps") {
      spec.isolation.drop_caps = false;
    } else if (arg == "--no-landlock") {
      spec.isolation.landlock = false;
    } else if (arg == "--no-seccomp") {
      spec.isolation.seccomp = false;
    } else {
      throw ConfigError("launcher: unknown option '" + std::string(arg) + "'");
    }
  }
  for (; i < argc; ++i) spec.argv.emplace_back(argv[i]);
  if (spec.argv.empty()) throw ConfigError("launcher: no worker command after '--'");
  if (spec.workdir.empty()) throw ConfigError("launcher: --workdir is required");
  if (spec.isolation.namespaces && spec.isolation.mountpoint.empty())
    throw ConfigError("launcher: --namespaces needs --mountpoint");
  for (const auto& p : spec.isolation.readonly)
    if (p.empty() || p[0] != '/') throw ConfigError("launcher: --ro paths must be absolute: " + p);
  if (spec.workdir[0] != '/') throw ConfigError("launcher: --workdir must be absolute");
  return spec;
}

}  // namespace sandbox_exec
