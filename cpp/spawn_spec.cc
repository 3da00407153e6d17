#include "spawn_spec.h"

#include <charconv>
#include <string_view>

#include "sys_error.h"

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
    throw ConfigError("launcher: " + std::string(option) + " expects an unsigned integer, got '" +
                      std::string(text) + "'");
  return value;
}
}  // namespace

std::vector<std::string> launcher_argv(const SpawnSpec& spec) {
  std::vector<std::string> out{spec.launcher, "--workdir", spec.workdir};
  add_limit(out, "--cpu-seconds", spec.limits.cpu_seconds);
  add_limit(out, "--file-bytes", spec.limits.file_bytes);
  add_limit(out, "--open-files", spec.limits.open_files);
  add_limit(out, "--address-space", spec.limits.address_space);
  if (spec.limits.core_dumps) out.emplace_back("--core-dumps");
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
    } else if (arg == "--core-dumps") {
      spec.limits.core_dumps = true;
    } else {
      throw ConfigError("launcher: unknown option '" + std::string(arg) + "'");
    }
  }
  for (; i < argc; ++i) spec.argv.emplace_back(argv[i]);
  if (spec.argv.empty()) throw ConfigError("launcher: no worker command after '--'");
  if (spec.workdir.empty()) throw ConfigError("launcher: --workdir is required");
  return spec;
}

}  // namespace sandbox_exec
