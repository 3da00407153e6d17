// Tests of the launcher's command-line format (spawn_spec.h): launcher_argv and
// parse_launcher_argv round trip (limits and the isolation options), the exact argv shape,
// bad numbers, unknown options, missing values, a missing '--' worker command or --workdir,
// relative paths, malformed --ids / --symlink values -> ConfigError.
#include "launch/spawn_spec.h"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

#include "common/sys_error.h"

namespace sandbox_exec {
namespace {

SpawnSpec parse(const std::vector<std::string>& args) {
  std::vector<const char*> c;
  for (const auto& a : args) c.push_back(a.c_str());
  c.push_back(nullptr);
  return parse_launcher_argv(static_cast<int>(args.size()), c.data());
}

std::string config_error(const std::vector<std::string>& args) {
  try {
    (void)parse(args);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "<no ConfigError>";
}

void expect_same(const SpawnSpec& a, const SpawnSpec& b) {
  EXPECT_EQ(a.launcher, b.launcher);
  EXPECT_EQ(a.argv, b.argv);
  EXPECT_EQ(a.workdir, b.workdir);
  EXPECT_EQ(a.limits.cpu_seconds, b.limits.cpu_seconds);
  EXPECT_EQ(a.limits.file_bytes, b.limits.file_bytes);
  EXPECT_EQ(a.limits.open_files, b.limits.open_files);
  EXPECT_EQ(a.limits.address_space, b.limits.address_space);
  EXPECT_EQ(a.limits.core_dumps, b.limits.core_dumps);
  EXPECT_EQ(a.limits.processes, b.limits.processes);
  const Isolation &x = a.isolation, &y = b.isolation;
  EXPECT_EQ(x.namespaces, y.namespaces);
  EXPECT_EQ(x.network, y.network);
  EXPECT_EQ(x.inside_uid, y.inside_uid);
  EXPECT_EQ(x.inside_gid, y.inside_gid);
  EXPECT_EQ(x.outside_uid, y.outside_uid);
  EXPECT_EQ(x.outside_gid, y.outside_gid);
  EXPECT_EQ(x.mountpoint, y.mountpoint);
  EXPECT_EQ(x.readonly, y.readonly);
  EXPECT_EQ(x.symlinks, y.symlinks);
  EXPECT_EQ(x.tmp_bytes, y.tmp_bytes);
  EXPECT_EQ(x.hostname, y.hostname);
  EXPECT_EQ(x.cgroups, y.cgroups);
  EXPECT_EQ(x.drop_caps, y.drop_caps);
  EXPECT_EQ(x.landlock, y.landlock);
  EXPECT_EQ(x.seccomp, y.seccomp);
  EXPECT_EQ(x.mounts, y.mounts);
}

// Every layer explicitly off: the shape of a launch without any isolation.
Isolation unprotected() {
  Isolation iso;
  iso.namespaces = false;
  iso.drop_caps = false;
  iso.landlock = false;
  iso.seccomp = false;
  return iso;
}

SpawnSpec namespaced() {
  SpawnSpec spec;
  spec.isolation = unprotected();
  spec.launcher = "/x/launcher";
  spec.workdir = "/work";
  spec.argv = {"/usr/bin/python3", "-I"};
  spec.isolation.namespaces = true;
  spec.isolation.mountpoint = "/run/sandbox/root";
  return spec;
}

TEST(LauncherArgv, MinimalSpecShape) {
  SpawnSpec spec;
  spec.isolation = unprotected();
  spec.launcher = "/opt/sandbox_exec_launcher";
  spec.workdir = "/tmp/session";
  spec.argv = {"/usr/bin/python3", "-I", "-m", "sandbox_exec._worker"};
  spec.env = {"A=1"};  // travels as envp, never in argv
  const std::vector<std::string> expected = {"/opt/sandbox_exec_launcher",
                                             "--workdir",
                                             "/tmp/session",
                                             "--no-namespaces",
                                             "--keep-caps",
                                             "--no-landlock",
                                             "--no-seccomp",
                                             "--",
                                             "/usr/bin/python3",
                                             "-I",
                                             "-m",
                                             "sandbox_exec._worker"};
  EXPECT_EQ(launcher_argv(spec), expected);
}

TEST(LauncherArgv, AllLimitsShape) {
  SpawnSpec spec;
  spec.isolation = unprotected();
  spec.launcher = "L";
  spec.workdir = "W";
  spec.argv = {"prog"};
  spec.limits.cpu_seconds = 5;
  spec.limits.file_bytes = 1024;
  spec.limits.open_files = 64;
  spec.limits.address_space = 1ull << 33;
  spec.limits.processes = 32;
  spec.limits.core_dumps = true;
  const std::vector<std::string> expected = {"L",
                                             "--workdir",
                                             "W",
                                             "--cpu-seconds",
                                             "5",
                                             "--file-bytes",
                                             "1024",
                                             "--open-files",
                                             "64",
                                             "--address-space",
                                             "8589934592",
                                             "--processes",
                                             "32",
                                             "--core-dumps",
                                             "--no-namespaces",
                                             "--keep-caps",
                                             "--no-landlock",
                                             "--no-seccomp",
                                             "--",
                                             "prog"};
  EXPECT_EQ(launcher_argv(spec), expected);
}

TEST(LauncherArgv, RoundTripMinimal) {
  SpawnSpec spec;
  spec.isolation = unprotected();
  spec.launcher = "/x/launcher";
  spec.workdir = "/w";
  spec.argv = {"/bin/true"};
  const SpawnSpec back = parse(launcher_argv(spec));
  expect_same(back, spec);
  EXPECT_FALSE(back.limits.cpu_seconds.has_value());
  EXPECT_FALSE(back.limits.core_dumps);
  EXPECT_TRUE(back.env.empty());
}

TEST(LauncherArgv, RoundTripEverythingIncludingAwkwardWorkerArguments) {
  SpawnSpec spec;
  spec.isolation = unprotected();
  spec.launcher = "/x/launcher";
  spec.workdir = "/dir with spaces/--workdir";
  // Arguments after '--' belong to the worker even when they look like launcher options.
  spec.argv = {"/usr/bin/python3", "--", "--workdir", "--cpu-seconds", "abc", "", "--core-dumps"};
  spec.limits.cpu_seconds = 0;
  spec.limits.file_bytes = UINT64_MAX;
  spec.limits.open_files = 1;
  spec.limits.address_space = 123456789012345ull;
  spec.limits.core_dumps = true;
  const SpawnSpec back = parse(launcher_argv(spec));
  expect_same(back, spec);
  ASSERT_TRUE(back.limits.file_bytes.has_value());
  EXPECT_EQ(*back.limits.file_bytes, UINT64_MAX);
  ASSERT_TRUE(back.limits.cpu_seconds.has_value());
  EXPECT_EQ(*back.limits.cpu_seconds, 0u);
}

TEST(LauncherArgv, RoundTripEachLimitAlone) {
  for (int which = 0; which < 5; ++which) {
    SpawnSpec spec;
    spec.isolation = unprotected();
    spec.launcher = "l";
    spec.workdir = "/";
    spec.argv = {"w"};
    std::optional<uint64_t>* fields[] = {&spec.limits.cpu_seconds, &spec.limits.file_bytes, &spec.limits.open_files,
                                         &spec.limits.address_space, &spec.limits.processes};
    *fields[which] = 1000 + which;
    const SpawnSpec back = parse(launcher_argv(spec));
    SCOPED_TRACE(which);
    expect_same(back, spec);
  }
}

TEST(LauncherArgv, RoundTripEveryIsolationOption) {
  SpawnSpec spec = namespaced();
  spec.limits.processes = 64;
  Isolation& iso = spec.isolation;
  iso.network = true;
  iso.inside_uid = 0;
  iso.inside_gid = 1;
  iso.outside_uid = 4294967295u;
  iso.outside_gid = 100000;
  iso.readonly = {"/usr", "/opt/python with space"};
  iso.symlinks = {{"/bin", "usr/bin"}, {"/lib64", "/usr/lib64"}};
  iso.tmp_bytes = 1ull << 40;
  iso.hostname = "box";
  iso.cgroups = {"/sys/fs/cgroup/a", "/sys/fs/cgroup/b"};
  iso.mounts = {{"/srv/up loads", "data", false}, {"/srv/a=b", "out/run 1", true}};
  iso.drop_caps = true;
  iso.landlock = true;
  iso.seccomp = true;
  expect_same(parse(launcher_argv(spec)), spec);
}

TEST(LauncherArgv, RoundTripIsolationDefaults) {
  const SpawnSpec spec = namespaced();
  const SpawnSpec back = parse(launcher_argv(spec));
  expect_same(back, spec);
  EXPECT_EQ(back.isolation.inside_uid, 1000u);
  EXPECT_EQ(back.isolation.outside_uid, 65534u);
  EXPECT_EQ(back.isolation.tmp_bytes, 256ull << 20);
  EXPECT_EQ(back.isolation.hostname, "sandbox");
  EXPECT_FALSE(back.isolation.network);
}

TEST(LauncherArgv, LayersWithoutNamespacesRoundTrip) {
  SpawnSpec spec;
  spec.isolation = unprotected();
  spec.launcher = "l";
  spec.workdir = "/w";
  spec.argv = {"w"};
  spec.isolation.cgroups = {"/sys/fs/cgroup/x"};
  spec.isolation.drop_caps = true;
  spec.isolation.seccomp = true;
  const SpawnSpec back = parse(launcher_argv(spec));
  expect_same(back, spec);
  EXPECT_FALSE(back.isolation.namespaces);
}

TEST(LauncherArgv, SymlinkPathContainingEqualsIsNotSilentlyChanged) {
  // "PATH=TARGET" in one argument cannot carry a path with '=' (a legal file name
  // character): launcher_argv must refuse it, or it must come back unchanged -- never be
  // split at the wrong '=' into another link.
  SpawnSpec spec = namespaced();
  spec.isolation.symlinks = {{"/opt/a=b", "/usr/lib/x"}};
  std::vector<std::string> argv;
  try {
    argv = launcher_argv(spec);
  } catch (const ConfigError&) {
    return;  // refused: fine
  }
  const SpawnSpec back = parse(argv);
  ASSERT_EQ(back.isolation.symlinks.size(), 1u);
  EXPECT_EQ(back.isolation.symlinks[0].first, "/opt/a=b");
  EXPECT_EQ(back.isolation.symlinks[0].second, "/usr/lib/x");
}

TEST(LauncherArgv, DataMountsShape) {
  SpawnSpec spec = namespaced();
  spec.isolation.mounts = {{"/srv/data", "data", false}, {"/srv/out", "results/out", true}};
  const auto argv = launcher_argv(spec);
  const auto at = [&](const std::string& option) {
    for (std::size_t i = 0; i + 1 < argv.size(); ++i)
      if (argv[i] == option) return argv[i + 1];
    return std::string("<none>");
  };
  EXPECT_EQ(at("--mount-ro"), "data=/srv/data");
  EXPECT_EQ(at("--mount-rw"), "results/out=/srv/out");
}

TEST(LauncherArgv, DataMountPathsAreCheckedBothWays) {
  // A path the launcher could not parse back, or that leaves the workdir, is refused when
  // the command line is made, and when it is read.
  for (const char* bad : {"", "/abs", "..", "../x", "a/../b", ".", "./a", "a/.", "a/", "a//b", ".sandbox_exec",
                          ".sandbox_exec/state", "a=b"}) {
    SCOPED_TRACE(bad);
    SpawnSpec spec = namespaced();
    spec.isolation.mounts = {{"/srv/data", bad, false}};
    EXPECT_THROW((void)launcher_argv(spec), ConfigError);
    EXPECT_NE(
        config_error({"l", "--workdir", "/", "--mountpoint", "/m", "--mount-ro", std::string(bad) + "=/srv", "--", "w"})
            .find("--mount-ro"),
        std::string::npos);
    EXPECT_NE(check_data_mount_path(bad), "");
  }
  for (const char* good : {"data", "a/b/c", "..data", "data..", ".hidden", "x/.sandbox_exec", "with space"})
    EXPECT_EQ(check_data_mount_path(good), "") << good;
}

TEST(ParseLauncherArgv, DataMounts) {
  EXPECT_NE(config_error({"l", "--workdir", "/", "--mountpoint", "/m", "--mount-rw", "data", "--", "w"})
                .find("--mount-rw expects PATH=HOST"),
            std::string::npos);
  EXPECT_NE(config_error({"l", "--workdir", "/", "--mountpoint", "/m", "--mount-ro", "data=srv", "--", "w"})
                .find("must be absolute"),
            std::string::npos);
  EXPECT_NE(config_error({"l", "--workdir", "/", "--mountpoint", "/m", "--mount-ro", "data=", "--", "w"})
                .find("must be absolute"),
            std::string::npos);
  // Without the new root there is nowhere to bind them.
  EXPECT_NE(config_error({"l", "--no-namespaces", "--workdir", "/", "--mount-ro", "data=/srv", "--", "w"})
                .find("need namespaces"),
            std::string::npos);
  // Repeated or nested paths: a mountpoint would be made inside another mount.
  for (const auto& [a, b] : {std::pair{"data", "data"}, std::pair{"data", "data/x"}, std::pair{"a/b/c", "a/b"}}) {
    EXPECT_NE(config_error({"l", "--workdir", "/", "--mountpoint", "/m", "--mount-ro", std::string(a) + "=/s1",
                            "--mount-rw", std::string(b) + "=/s2", "--", "w"})
                  .find("may not repeat or nest"),
              std::string::npos)
        << a << " " << b;
  }
  const SpawnSpec ok = parse({"l", "--workdir", "/", "--mountpoint", "/m", "--mount-ro", "data=/srv/a=b", "--mount-rw",
                              "data2=/out", "--", "w"});
  ASSERT_EQ(ok.isolation.mounts.size(), 2u);
  EXPECT_EQ(ok.isolation.mounts[0], (DataMount{"/srv/a=b", "data", false}));
  EXPECT_EQ(ok.isolation.mounts[1], (DataMount{"/out", "data2", true}));
}

TEST(ParseLauncherArgv, IdsNeedFourColonSeparatedNumbers) {
  for (const char* bad : {"", "1:2:3", "1:2:3:4:5", "a:b:c:d", "1:2:3:4x", "1:2:3:4 ", "1;2;3;4"}) {
    EXPECT_NE(config_error({"l", "--workdir", "/", "--ids", bad, "--", "w"}).find("--ids expects"), std::string::npos)
        << "'" << bad << "'";
  }
  const SpawnSpec ok = parse({"l", "--workdir", "/", "--ids", "0:0:4294967295:7", "--mountpoint", "/m", "--", "w"});
  EXPECT_EQ(ok.isolation.inside_uid, 0u);
  EXPECT_EQ(ok.isolation.outside_uid, 4294967295u);
  EXPECT_EQ(ok.isolation.outside_gid, 7u);
}

TEST(ParseLauncherArgv, IdsAreStrictUnsigned32BitNumbers) {
  // As strict as every other number on this command line (parse_u64): no sign, no blanks,
  // no value outside 32 bits. 4294967296 must not wrap around to uid 0 (root in the
  // sandbox's user namespace), nor -1 become 4294967295 ((uid_t)-1, "no change" to
  // setresuid).
  for (const char* bad : {"4294967296:1000:65534:65534", "1000:1000:4294967296:65534", "-1:1000:65534:65534",
                          "1000:-1000:65534:65534", "+1000:1000:65534:65534", " 1000:1000:65534:65534",
                          "1000: 1000:65534:65534", "99999999999999999999:1000:65534:65534"}) {
    const std::string msg = config_error({"l", "--workdir", "/", "--ids", bad, "--", "w"});
    EXPECT_NE(msg.find("--ids"), std::string::npos) << "'" << bad << "' was accepted: " << msg;
  }
}

TEST(ParseLauncherArgv, MalformedSymlinks) {
  for (const char* bad : {"no-equals", "=target", "/path=", "="}) {
    EXPECT_NE(config_error({"l", "--workdir", "/", "--symlink", bad, "--", "w"}).find("--symlink expects PATH=TARGET"),
              std::string::npos)
        << "'" << bad << "'";
  }
  const SpawnSpec ok = parse({"l", "--workdir", "/", "--symlink", "/bin=usr/bin", "--mountpoint", "/m", "--", "w"});
  ASSERT_EQ(ok.isolation.symlinks.size(), 1u);
  EXPECT_EQ(ok.isolation.symlinks[0], (std::pair<std::string, std::string>{"/bin", "usr/bin"}));
}

TEST(ParseLauncherArgv, PathsMustBeAbsolute) {
  EXPECT_NE(config_error({"l", "--no-namespaces", "--workdir", "work", "--", "w"}).find("--workdir must be absolute"),
            std::string::npos);
  EXPECT_NE(config_error({"l", "--no-namespaces", "--workdir", "/", "--ro", "usr", "--", "w"})
                .find("--ro paths must be absolute: usr"),
            std::string::npos);
  EXPECT_NE(config_error({"l", "--no-namespaces", "--workdir", "/", "--ro", "", "--", "w"}).find("--ro paths"),
            std::string::npos);
}

TEST(ParseLauncherArgv, NamespacesNeedAMountpoint) {
  EXPECT_NE(config_error({"l", "--workdir", "/", "--", "w"}).find("--namespaces needs --mountpoint"),
            std::string::npos);
  const SpawnSpec ok = parse({"l", "--workdir", "/", "--mountpoint", "/m", "--", "w"});
  EXPECT_TRUE(ok.isolation.namespaces);
  EXPECT_EQ(ok.isolation.mountpoint, "/m");
}

TEST(ParseLauncherArgv, BadNumbers) {
  for (const char* bad :
       {"", "-1", "+1", "1x", "x1", " 1", "1 ", "0x10", "1.5", "18446744073709551616", "99999999999999999999999"}) {
    const std::string msg = config_error({"l", "--workdir", "/", "--cpu-seconds", bad, "--", "w"});
    EXPECT_NE(msg.find("--cpu-seconds expects an unsigned integer"), std::string::npos) << "'" << bad << "': " << msg;
  }
  EXPECT_NE(config_error({"l", "--workdir", "/", "--file-bytes", "k", "--", "w"}).find("--file-bytes"),
            std::string::npos);
  EXPECT_NE(config_error({"l", "--workdir", "/", "--open-files", "-5", "--", "w"}).find("--open-files"),
            std::string::npos);
  EXPECT_NE(config_error({"l", "--workdir", "/", "--address-space", "1e9", "--", "w"}).find("--address-space"),
            std::string::npos);
  EXPECT_NE(config_error({"l", "--workdir", "/", "--processes", "many", "--", "w"}).find("--processes"),
            std::string::npos);
  EXPECT_NE(config_error({"l", "--workdir", "/", "--tmp-bytes", "-1", "--", "w"}).find("--tmp-bytes"),
            std::string::npos);
  // The largest value parses.
  const SpawnSpec ok =
      parse({"l", "--workdir", "/", "--open-files", "18446744073709551615", "--no-namespaces", "--", "w"});
  EXPECT_EQ(ok.limits.open_files, UINT64_MAX);
}

TEST(ParseLauncherArgv, UnknownOptions) {
  EXPECT_NE(config_error({"l", "--workdir", "/", "--verbose", "--", "w"}).find("unknown option '--verbose'"),
            std::string::npos);
  EXPECT_NE(config_error({"l", "--workdir", "/", "python", "--", "w"}).find("unknown option 'python'"),
            std::string::npos);
  EXPECT_NE(config_error({"l", "--workdir=/", "--", "w"}).find("unknown option"), std::string::npos);
  EXPECT_NE(config_error({"l", "-w", "/", "--", "w"}).find("unknown option"), std::string::npos);
}

TEST(ParseLauncherArgv, OptionMissingItsValue) {
  EXPECT_NE(config_error({"l", "--workdir"}).find("--workdir needs a value"), std::string::npos);
  EXPECT_NE(config_error({"l", "--workdir", "/", "--cpu-seconds"}).find("--cpu-seconds needs a value"),
            std::string::npos);
}

TEST(ParseLauncherArgv, MissingWorkerCommand) {
  EXPECT_NE(config_error({"l", "--workdir", "/"}).find("no worker command"), std::string::npos);
  EXPECT_NE(config_error({"l", "--workdir", "/", "--"}).find("no worker command"), std::string::npos);
  EXPECT_NE(config_error({"l"}).find("no worker command"), std::string::npos);
}

TEST(ParseLauncherArgv, MissingWorkdir) {
  EXPECT_NE(config_error({"l", "--", "w"}).find("--workdir is required"), std::string::npos);
  EXPECT_NE(config_error({"l", "--workdir", "", "--", "w"}).find("--workdir is required"), std::string::npos);
}

TEST(ParseLauncherArgv, ConfigErrorIsAnInvalidArgument) {
  EXPECT_THROW((void)parse({"l", "--bogus"}), std::invalid_argument);
  EXPECT_THROW((void)parse({"l", "--bogus"}), ConfigError);
}

TEST(ParseLauncherArgv, LaterOptionWinsAndOrderIsFree) {
  const SpawnSpec s = parse({"l", "--no-namespaces", "--core-dumps", "--cpu-seconds", "1", "--workdir", "/a",
                             "--cpu-seconds", "2", "--", "w", "x"});
  EXPECT_EQ(s.workdir, "/a");
  EXPECT_EQ(s.limits.cpu_seconds, 2u);
  EXPECT_TRUE(s.limits.core_dumps);
  EXPECT_EQ(s.argv, (std::vector<std::string>{"w", "x"}));
  EXPECT_EQ(s.launcher, "l");
}

TEST(LauncherArgv, EveryProtectionIsOnUnlessItsOptOutIsNamed) {
  // A command line that names no layer gets all of them: a lost or misspelled flag can only
  // make the launch stricter. Namespaces then need a mountpoint, so this one is refused.
  EXPECT_THROW((void)parse({"l", "--workdir", "/w", "--", "w"}), ConfigError);
  const SpawnSpec back = parse({"l", "--workdir", "/w", "--mountpoint", "/m", "--", "w"});
  EXPECT_TRUE(back.isolation.namespaces);
  EXPECT_TRUE(back.isolation.drop_caps);
  EXPECT_TRUE(back.isolation.landlock);
  EXPECT_TRUE(back.isolation.seccomp);
  EXPECT_FALSE(back.isolation.network);
  // The old opt-in spellings are unknown options now, not silently ignored.
  EXPECT_THROW((void)parse({"l", "--workdir", "/w", "--no-namespaces", "--seccomp", "--", "w"}), ConfigError);
}

}  // namespace
}  // namespace sandbox_exec
