#include "launch/spawn_spec.h"

#include <algorithm>
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
    for (const auto& m : iso.mounts) {
      if (const std::string why = check_data_mount_path(m.path); !why.empty())
        throw ConfigError("launcher: mount path " + why);
      out.insert(out.end(), {m.writable ? "--mount-rw" : "--mount-ro", m.path + "=" + m.host});
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

namespace {

// INSIDE_UID:INSIDE_GID:OUTSIDE_UID:OUTSIDE_GID, each an unsigned 32-bit number.
void parse_ids(std::string_view ids, Isolation& iso) {
  const std::string usage =
      "launcher: --ids expects INSIDE_UID:INSIDE_GID:OUTSIDE_UID:OUTSIDE_GID (unsigned 32-bit numbers), got '" +
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
  iso.inside_uid = parsed[0];
  iso.inside_gid = parsed[1];
  iso.outside_uid = parsed[2];
  iso.outside_gid = parsed[3];
}

// PATH=TARGET, both non-empty.
std::pair<std::string, std::string> parse_symlink(std::string_view link) {
  const auto eq = link.find('=');
  if (eq == std::string_view::npos || eq == 0 || eq + 1 == link.size())
    throw ConfigError("launcher: --symlink expects PATH=TARGET");
  return {std::string(link.substr(0, eq)), std::string(link.substr(eq + 1))};
}

// PATH=HOST for --mount-ro/--mount-rw: PATH a valid data-mount path (no '='), HOST absolute
// (it may contain '=': the first one separates).
DataMount parse_mount(std::string_view option, std::string_view value, bool writable) {
  const auto eq = value.find('=');
  if (eq == std::string_view::npos) throw ConfigError("launcher: " + std::string(option) + " expects PATH=HOST");
  DataMount m{std::string(value.substr(eq + 1)), std::string(value.substr(0, eq)), writable};
  if (const std::string why = check_data_mount_path(m.path); !why.empty())
    throw ConfigError("launcher: " + std::string(option) + " path " + why);
  if (m.host.empty() || m.host[0] != '/')
    throw ConfigError("launcher: " + std::string(option) + " host directory must be absolute: " + m.host);
  return m;
}

// One launcher option: its name, whether a value follows it, and what it sets.
struct Option {
  std::string_view name;
  bool takes_value;
  void (*apply)(SpawnSpec& spec, std::string_view option, std::string_view value);
};

// The inverse of launcher_argv() above, option by option.
constexpr Option kOptions[] = {
    {"--workdir", true, [](SpawnSpec& s, auto, auto v) { s.workdir = v; }},
    {"--cpu-seconds", true, [](SpawnSpec& s, auto o, auto v) { s.limits.cpu_seconds = parse_u64(o, v); }},
    {"--file-bytes", true, [](SpawnSpec& s, auto o, auto v) { s.limits.file_bytes = parse_u64(o, v); }},
    {"--open-files", true, [](SpawnSpec& s, auto o, auto v) { s.limits.open_files = parse_u64(o, v); }},
    {"--address-space", true, [](SpawnSpec& s, auto o, auto v) { s.limits.address_space = parse_u64(o, v); }},
    {"--processes", true, [](SpawnSpec& s, auto o, auto v) { s.limits.processes = parse_u64(o, v); }},
    {"--core-dumps", false, [](SpawnSpec& s, auto, auto) { s.limits.core_dumps = true; }},
    {"--no-namespaces", false, [](SpawnSpec& s, auto, auto) { s.isolation.namespaces = false; }},
    {"--ids", true, [](SpawnSpec& s, auto, auto v) { parse_ids(v, s.isolation); }},
    {"--mountpoint", true, [](SpawnSpec& s, auto, auto v) { s.isolation.mountpoint = v; }},
    {"--ro", true, [](SpawnSpec& s, auto, auto v) { s.isolation.readonly.emplace_back(v); }},
    {"--symlink", true, [](SpawnSpec& s, auto, auto v) { s.isolation.symlinks.push_back(parse_symlink(v)); }},
    {"--mount-ro", true, [](SpawnSpec& s, auto o, auto v) { s.isolation.mounts.push_back(parse_mount(o, v, false)); }},
    {"--mount-rw", true, [](SpawnSpec& s, auto o, auto v) { s.isolation.mounts.push_back(parse_mount(o, v, true)); }},
    {"--tmp-bytes", true, [](SpawnSpec& s, auto o, auto v) { s.isolation.tmp_bytes = parse_u64(o, v); }},
    {"--hostname", true, [](SpawnSpec& s, auto, auto v) { s.isolation.hostname = v; }},
    {"--host-network", false, [](SpawnSpec& s, auto, auto) { s.isolation.network = true; }},
    {"--cgroup", true, [](SpawnSpec& s, auto, auto v) { s.isolation.cgroups.emplace_back(v); }},
    {"--keep-caps", false, [](SpawnSpec& s, auto, auto) { s.isolation.drop_caps = false; }},
    {"--no-landlock", false, [](SpawnSpec& s, auto, auto) { s.isolation.landlock = false; }},
    {"--no-seccomp", false, [](SpawnSpec& s, auto, auto) { s.isolation.seccomp = false; }},
};

// Data mounts need the new root, and no two may share or nest their paths: a mountpoint
// inside another mount would be made in the host directory of the outer one.
void check_data_mounts(const Isolation& iso) {
  if (iso.mounts.empty()) return;
  if (!iso.namespaces) throw ConfigError("launcher: --mount-ro/--mount-rw need namespaces");
  for (std::size_t i = 0; i < iso.mounts.size(); ++i) {
    for (std::size_t j = 0; j < iso.mounts.size(); ++j) {
      const std::string &a = iso.mounts[i].path, &b = iso.mounts[j].path;
      if (i != j && (a == b || (b.size() > a.size() && b.compare(0, a.size(), a) == 0 && b[a.size()] == '/')))
        throw ConfigError("launcher: mount paths may not repeat or nest: " + a + " and " + b);
    }
  }
}

// What every launch needs, whatever the options said.
void check_complete(const SpawnSpec& spec) {
  if (spec.argv.empty()) throw ConfigError("launcher: no worker command after '--'");
  if (spec.workdir.empty()) throw ConfigError("launcher: --workdir is required");
  if (spec.isolation.namespaces && spec.isolation.mountpoint.empty())
    throw ConfigError("launcher: --namespaces needs --mountpoint");
  for (const auto& p : spec.isolation.readonly)
    if (p.empty() || p[0] != '/') throw ConfigError("launcher: --ro paths must be absolute: " + p);
  if (spec.workdir[0] != '/') throw ConfigError("launcher: --workdir must be absolute");
  check_data_mounts(spec.isolation);
}

}  // namespace

std::string check_data_mount_path(std::string_view path) {
  if (path.empty()) return "must not be empty";
  if (path[0] == '/') return "must be relative to the workdir: " + std::string(path);
  if (path.find('=') != std::string_view::npos) return "may not contain '=': " + std::string(path);
  if (path.find('\0') != std::string_view::npos) return "may not contain NUL";
  std::size_t start = 0;
  for (bool first = true;; first = false) {
    const std::size_t end = std::min(path.find('/', start), path.size());
    const std::string_view part = path.substr(start, end - start);
    if (part.empty() || part == "." || part == "..")
      return "must be normalized, without '.', '..' or empty parts: " + std::string(path);
    if (first && part == ".sandbox_exec") return "may not be in the workdir's .sandbox_exec: " + std::string(path);
    if (end == path.size()) return {};
    start = end + 1;
  }
}

SpawnSpec parse_launcher_argv(int argc, const char* const* argv) {
  SpawnSpec spec;
  if (argc > 0) spec.launcher = argv[0];
  int i = 1;
  for (; i < argc; ++i) {
    const std::string_view arg = argv[i];
    if (arg == "--") {
      ++i;
      break;
    }
    const Option* option = nullptr;
    for (const Option& o : kOptions)
      if (o.name == arg) option = &o;
    if (option == nullptr) throw ConfigError("launcher: unknown option '" + std::string(arg) + "'");
    std::string_view value;
    if (option->takes_value) {
      if (i + 1 >= argc) throw ConfigError("launcher: " + std::string(arg) + " needs a value");
      value = argv[++i];
    }
    option->apply(spec, arg, value);
  }
  for (; i < argc; ++i) spec.argv.emplace_back(argv[i]);
  check_complete(spec);
  return spec;
}

}  // namespace sandbox_exec
