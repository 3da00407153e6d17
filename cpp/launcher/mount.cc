#include "launcher/mount.h"

#include "common/file_io.h"
#include "common/numbers.h"
#include "launcher/data_mounts.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace sandbox_exec::mount {

namespace {

// The sandbox's own views of host-wide /proc files, written into the root tmpfs under its
// /proc directory: once the fresh proc is mounted over that directory they are reachable
// only through the bind mounts enter_root() puts over the proc files.
constexpr const char* kProcViews = "/proc/.sandbox_exec";
struct ProcView {
  const char* file;    // in kProcViews
  const char* target;  // under /proc
};
constexpr ProcView kViews[] = {
    {"meminfo", "meminfo"},                    // MemTotal = the session's memory limit
    {"loadavg", "loadavg"},                    // zeros: the host's load and task count are not the cell's
    {"stat", "stat"},                          // the host's CPU times, forks and interrupts, zeroed
    {"boot_id", "sys/kernel/random/boot_id"},  // a per-session id, not the host's
};
// Host-wide facts a cell does not need, as container runtimes mask them (runc's
// maskedPaths and more): /dev/null over files, an empty read-only tmpfs over directories.
// A name this kernel lacks is skipped.
constexpr const char* kMaskedFiles[] = {
    "kcore", "keys", "key-users", "timer_list", "timer_stats", "sched_debug", "schedstat", "latency_stats",
    "interrupts", "softirqs", "diskstats", "partitions", "swaps", "mdstat", "vmstat", "zoneinfo", "slabinfo",
    "buddyinfo", "pagetypeinfo", "vmallocinfo", "kallsyms", "modules", "iomem", "ioports", "locks", "cmdline",
    "config.gz", "sysrq-trigger", "kmsg", "kpagecount", "kpageflags", "kpagecgroup", "mtrr", "dma", "consoles",
    // Host-wide counters that move with other sessions' activity (a covert channel and a
    // view of the host's load): cgroups created, open files, inodes and dentries in use.
    "cgroups", "sys/fs/file-nr", "sys/fs/inode-nr", "sys/fs/inode-state", "sys/fs/dentry-state"};
constexpr const char* kMaskedDirs[] = {"acpi", "scsi", "pressure", "fs", "bus", "irq", "driver"};

// tmpfs options for the private /tmp and /dev/shm: a byte cap and an inode cap. Without
// nr_inodes a tmpfs's inodes are bounded only by memory, so a cell could make millions of
// empty files (each an unaccounted ~1 KiB of kernel memory) within any byte cap. One inode
// per 16 KiB is the ratio mke2fs uses by default for ext4 (inode_ratio = 16384): a disk
// of that size would hold as many files; at ~1 KiB of kernel memory per inode that caps the
// inodes' memory at about 1/16 of the size. At least 1024, so a small cap still holds
// the few hundred files a package install or a test run makes.
std::string tmpfs_opts(uint64_t bytes) {
  const uint64_t inodes = bytes / (16u << 10) > 1024 ? bytes / (16u << 10) : 1024;
  return "size=" + std::to_string(bytes) + ",nr_inodes=" + std::to_string(inodes) + ",mode=1777";
}

// The host's "<key>: <n> kB" from /proc/meminfo, in bytes (0 if absent).
uint64_t meminfo_bytes(const std::string& text, const std::string& key) {
  std::istringstream lines(text);
  std::string k;
  uint64_t v = 0;
  std::string unit;
  while (lines >> k >> v) {
    std::getline(lines, unit);
    if (k == key + ":") return v * 1024;
  }
  return 0;
}

// The memory this session may use: its memory cgroup's limit (already written by the
// supervisor), else RLIMIT_AS, at most the host's memory.
uint64_t session_memory(const SpawnSpec& spec, uint64_t host_total) {
  uint64_t limit = host_total;
  for (const auto& dir : spec.isolation.cgroups) {
    for (const char* knob : {"/memory.max", "/memory.limit_in_bytes"}) {
      try {
        const std::string text = file_io::read_file(dir + knob);
        if (!text.empty() && text[0] >= '0' && text[0] <= '9') limit = std::min<uint64_t>(limit, std::stoull(text));
      } catch (...) {
      }
    }
  }
  if (spec.limits.address_space) limit = std::min<uint64_t>(limit, *spec.limits.address_space);
  return limit;
}

std::string meminfo_text(uint64_t total) {
  // Every field a reader such as psutil parses, so it stays parseable: the session's memory
  // as total, free and available, the rest zero.
  const uint64_t kb = total / 1024;
  const std::pair<const char*, uint64_t> fields[] = {
      {"MemTotal", kb},    {"MemFree", kb},       {"MemAvailable", kb},  {"Buffers", 0},        {"Cached", 0},
      {"SwapCached", 0},   {"Active", 0},         {"Inactive", 0},       {"Active(anon)", 0},   {"Inactive(anon)", 0},
      {"Active(file)", 0}, {"Inactive(file)", 0}, {"Unevictable", 0},    {"Mlocked", 0},        {"SwapTotal", 0},
      {"SwapFree", 0},     {"Dirty", 0},          {"Writeback", 0},      {"AnonPages", 0},      {"Mapped", 0},
      {"Shmem", 0},        {"KReclaimable", 0},   {"Slab", 0},           {"SReclaimable", 0},   {"SUnreclaim", 0},
      {"KernelStack", 0},  {"PageTables", 0},     {"NFS_Unstable", 0},   {"Bounce", 0},         {"WritebackTmp", 0},
      {"CommitLimit", kb}, {"Committed_AS", 0},   {"VmallocTotal", 0},   {"VmallocUsed", 0},    {"VmallocChunk", 0},
      {"Percpu", 0},       {"AnonHugePages", 0},  {"ShmemHugePages", 0}, {"ShmemPmdMapped", 0}, {"FileHugePages", 0},
      {"FilePmdMapped", 0}};
  std::string out;
  char line[96];
  for (const auto& [key, value] : fields) {
    std::snprintf(line, sizeof line, "%-16s%8llu kB\n", (std::string(key) + ":").c_str(),
                  static_cast<unsigned long long>(value));
    out += line;
  }
  out +=
      "HugePages_Total:       0\nHugePages_Free:        0\nHugePages_Rsvd:        0\n"
      "HugePages_Surp:        0\nHugepagesize:       2048 kB\nHugetlb:               0 kB\n";
  return out;
}

// /proc/stat with the host's CPU lines (their number is what os.cpu_count() reads when
// /sys is absent, as in the sandbox) and every counter zero. btime stays: it is now minus
// CLOCK_BOOTTIME, which the vDSO gives any process anyway.
std::string stat_text(const std::string& host) {
  std::istringstream lines(host);
  std::string line, out;
  while (std::getline(lines, line)) {
    if (line.compare(0, 3, "cpu") == 0) {
      out += line.substr(0, line.find(' ')) + (line.compare(0, 4, "cpu ") == 0 ? " " : "") + " 0 0 0 0 0 0 0 0 0 0\n";
    } else if (line.compare(0, 6, "btime ") == 0) {
      out += line + "\n";
    }
  }
  out += "intr 0\nctxt 0\nprocesses 1\nprocs_running 1\nprocs_blocked 0\nsoftirq 0 0 0 0 0 0 0 0 0 0 0\n";
  return out;
}

std::string random_uuid() {
  unsigned char b[16] = {};
  if (::getrandom(b, sizeof b, 0) != static_cast<ssize_t>(sizeof b)) throw std::runtime_error("getrandom");
  b[6] = static_cast<unsigned char>((b[6] & 0x0f) | 0x40);  // version 4
  b[8] = static_cast<unsigned char>((b[8] & 0x3f) | 0x80);  // RFC 4122 variant
  char text[40];
  std::snprintf(text, sizeof text, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x\n", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
  return text;
}

// Runs in the launcher before clone(): allocation is fine here (single-threaded, fresh).
std::string under(const SpawnSpec& spec, const std::string& path) { return spec.isolation.mountpoint + path; }

int write_text(const std::string& path, std::string_view text) {
  return file_io::write_file(path.c_str(), text, O_CREAT | O_TRUNC);
}

int touch(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0) {
    if (int err = file_io::make_dirs(path.substr(0, slash))) return err;
  }
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return errno;
  ::close(fd);
  return 0;
}

// The flags the kernel refuses to clear on a remount inside a user namespace.
unsigned long locked_flags(const char* path) {
  struct statvfs st {};
  if (::statvfs(path, &st) != 0) return 0;
  return mount::locked_flags(st);
}

Failure bind(const std::string& source, const std::string& target, bool read_only) {
  struct stat st {};
  if (::stat(source.c_str(), &st) != 0) return {LaunchStep::kMountBind, errno};
  if (int err = S_ISDIR(st.st_mode) ? file_io::make_dirs(target) : touch(target)) return {LaunchStep::kMountBind, err};
  if (::mount(source.c_str(), target.c_str(), nullptr, MS_BIND | MS_REC, nullptr) != 0)
    return {LaunchStep::kMountBind, errno};
  unsigned long flags = MS_BIND | MS_REMOUNT | MS_NOSUID | locked_flags(source.c_str());
  if (read_only) flags |= MS_RDONLY;
  if (!S_ISCHR(st.st_mode)) flags |= MS_NODEV;
  if (::mount(nullptr, target.c_str(), nullptr, flags, nullptr) != 0) return {LaunchStep::kMountRemountRo, errno};
  return {};
}

Failure write_etc(const SpawnSpec& spec) {
  const Isolation& iso = spec.isolation;
  const std::string etc = under(spec, "/etc");
  if (int err = file_io::make_dirs(etc)) return {LaunchStep::kMountEtc, err};
  // Only the sandbox's own users: nothing of the host's accounts or secrets.
  const std::string uid = std::to_string(iso.inside_uid), gid = std::to_string(iso.inside_gid);
  const std::pair<const char*, std::string> files[] = {
      {"/passwd", "root:x:0:0:root:/root:/usr/sbin/nologin\nsandbox:x:" + uid + ":" + gid + ":sandbox:" + spec.workdir +
                      ":/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"},
      {"/group", "root:x:0:\nsandbox:x:" + gid + ":\nnogroup:x:65534:\n"},
      {"/hostname", iso.hostname + "\n"},
      {"/hosts", "127.0.0.1 localhost " + iso.hostname + "\n::1 localhost ip6-localhost\n"},
      {"/nsswitch.conf", "passwd: files\ngroup: files\nhosts: files dns\n"},
  };
  for (const auto& [name, text] : files) {
    if (int err = write_text(etc + name, text)) return {LaunchStep::kMountEtc, err};
  }
  if (!iso.network) {
    if (int err = write_text(etc + "/resolv.conf", "")) return {LaunchStep::kMountEtc, err};
  }
  return {};
}

Failure make_dev(const SpawnSpec& spec) {
  const std::string dev = under(spec, "/dev");
  if (int err = file_io::make_dirs(dev)) return {LaunchStep::kMountDev, err};
  if (::mount("tmpfs", dev.c_str(), "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=0755") != 0)
    return {LaunchStep::kMountDev, errno};
  for (const char* node : {"null", "zero", "full", "random", "urandom"}) {
    // As root: a node of our own on this tmpfs (same device numbers). A bind of the host's
    // node would show the host's devtmpfs in /proc/self/mountinfo, whose size option is
    // half the host's memory. Unprivileged (no mknod): the bind.
    const std::string host = std::string("/dev/") + node, path = dev + "/" + node;
    struct stat st {};
    if (::geteuid() == 0 && ::stat(host.c_str(), &st) == 0 && S_ISCHR(st.st_mode) &&
        ::mknod(path.c_str(), S_IFCHR | 0666, st.st_rdev) == 0 && ::chmod(path.c_str(), 0666) == 0)
      continue;
    ::unlink(path.c_str());
    if (Failure f = bind(host, path, false); f.failed()) return {LaunchStep::kMountDev, f.error};
  }
  const std::pair<const char*, const char*> links[] = {{"/fd", "/proc/self/fd"},
                                                       {"/stdin", "/proc/self/fd/0"},
                                                       {"/stdout", "/proc/self/fd/1"},
                                                       {"/stderr", "/proc/self/fd/2"},
                                                       {"/ptmx", "pts/ptmx"}};
  for (const auto& [name, target] : links) {
    if (::symlink(target, (dev + name).c_str()) != 0) return {LaunchStep::kMountDev, errno};
  }
  const std::string shm = dev + "/shm";
  if (int err = file_io::make_dirs(shm)) return {LaunchStep::kMountDev, err};
  const std::string opts = tmpfs_opts(spec.isolation.tmp_bytes);
  if (::mount("tmpfs", shm.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) != 0)
    return {LaunchStep::kMountTmp, errno};
  // /dev itself read-only from now on: the cell may write the device nodes, not add any.
  if (::mount(nullptr, dev.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NOEXEC, nullptr) != 0)
    return {LaunchStep::kMountRemountRo, errno};
  return {};
}

int write_proc_views(const SpawnSpec& spec) {
  const std::string dir = spec.isolation.mountpoint + kProcViews;
  if (int err = file_io::make_dirs(dir)) return err;
  const std::string host_meminfo = file_io::read_file("/proc/meminfo");
  const std::pair<const char*, std::string> files[] = {
      {"meminfo", meminfo_text(session_memory(spec, meminfo_bytes(host_meminfo, "MemTotal")))},
      {"loadavg", "0.00 0.00 0.00 1/1 1\n"},
      {"stat", stat_text(file_io::read_file("/proc/stat"))},
      {"boot_id", random_uuid()},
  };
  for (const auto& [name, text] : files) {
    if (int err = write_text(dir + "/" + name, text)) return err;
  }
  // The mask for a proc file the cell could not open anyway (kcore, kmsg, sysrq-trigger...):
  // mode 0 and read-only, so masking never makes a file more accessible than it was.
  if (int err = write_text(dir + "/denied", "")) return err;
  if (::chmod((dir + "/denied").c_str(), 0) != 0) return errno;
  return 0;
}

// Over the fresh /proc (at <root>/proc, before the pivot): the sandbox's own views, then the
// masks. `views` is an O_PATH descriptor of kProcViews, opened before proc hid it; the
// host's /proc (still mounted here) resolves /proc/self/fd/<views>. No allocation.
Failure mask_proc(const char* root, int views) noexcept {
  char source[4096], target[4096];
  for (const ProcView& v : kViews) {
    std::snprintf(source, sizeof source, "/proc/self/fd/%d/%s", views, v.file);
    std::snprintf(target, sizeof target, "%s/proc/%s", root, v.target);
    if (::mount(source, target, nullptr, MS_BIND, nullptr) != 0) {
      if (errno == ENOENT) continue;  // this kernel has no such file
      return {LaunchStep::kMountProc, errno};
    }
    if (::mount(nullptr, target, nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | locked_flags(source), nullptr) != 0)
      return {LaunchStep::kMountRemountRo, errno};
  }
  char null_dev[4096], denied[4096];
  std::snprintf(null_dev, sizeof null_dev, "%s/dev/null", root);
  std::snprintf(denied, sizeof denied, "/proc/self/fd/%d/denied", views);
  for (const char* name : kMaskedFiles) {
    std::snprintf(target, sizeof target, "%s/proc/%s", root, name);
    struct stat st {};
    if (::stat(target, &st) != 0) {
      if (errno == ENOENT) continue;  // this kernel has no such file
      return {LaunchStep::kMountProc, errno};
    }
    // World-readable: reads as empty, as runc's masks do. Otherwise (root-only files): still
    // refused, by a mode-0 file.
    const char* mask = (st.st_mode & S_IROTH) ? null_dev : denied;
    if (::mount(mask, target, nullptr, MS_BIND, nullptr) != 0) return {LaunchStep::kMountProc, errno};
  }
  for (const char* name : kMaskedDirs) {
    std::snprintf(target, sizeof target, "%s/proc/%s", root, name);
    if (::mount("tmpfs", target, "tmpfs", MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
                "size=4k,nr_inodes=1,mode=0555") != 0 &&
        errno != ENOENT)
      return {LaunchStep::kMountProc, errno};
  }
  return {};
}

// Undoes mountinfo's escapes (\040 for a space, \011, \012, \134) in place, NUL-terminates
// the field, and returns its start. The field must be followed by a separator byte.
char* unescape_in_place(char* field, std::size_t size) {
  const auto oct = [](char c) { return c >= '0' && c <= '7'; };
  std::size_t out = 0;
  for (std::size_t i = 0; i < size; ++i) {
    if (field[i] == '\\' && i + 3 < size && oct(field[i + 1]) && oct(field[i + 2]) && oct(field[i + 3])) {
      field[out++] = static_cast<char>((field[i + 1] - '0') * 64 + (field[i + 2] - '0') * 8 + (field[i + 3] - '0'));
      i += 3;
    } else {
      field[out++] = field[i];
    }
  }
  field[out] = '\0';
  return field;
}

// The keeper's copy of the host's mount table holds every filesystem mounted when it
// unshared, other sessions' workdir images (loop devices) among them: a copy keeps a loop
// device busy after its session unmounted it, so that session's next start would wait for
// it. The keeper needs none of them: those outside its new root go (detached lazily).
//
// The table names other sessions' workdirs. A warm session's worker is a fork of this
// process, with its memory: so the table is read into a private mapping, used in place
// and unmapped, never copied into the heap, where a freed copy would outlive this call.
void drop_foreign_loop_mounts(const std::string& root) {
  constexpr std::size_t kMax = 4u << 20;  // a larger table is left alone (this is only tidying)
  void* map = ::mmap(nullptr, kMax, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (map == MAP_FAILED) return;
  char* text = static_cast<char*>(map);
  // A second look, after the first pass: a neighbour that closed meanwhile renames its
  // workdir (a pool slot's files move to their notebook's directory), and an unmount by the
  // path read a moment before then finds nothing there (measured: a start overlapping a
  // neighbour's close kept that neighbour's image busy). The table then names the new path.
  for (int pass = 0; pass < 3; ++pass) {
    std::size_t size = 0;
    const int fd = ::open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      for (ssize_t n; size < kMax - 1 && (n = ::read(fd, text + size, kMax - 1 - size)) != 0;) {
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) break;
        size += static_cast<std::size_t>(n);
      }
      ::close(fd);
    }
    std::vector<const char*> targets;  // pointers into the mapping only
    if (size < kMax - 1) {
      text[size] = '\n';
      for (char* line = text; line < text + size;) {
        char* end = static_cast<char*>(std::memchr(line, '\n', static_cast<std::size_t>(text + size + 1 - line)));
        const std::string_view view(line, static_cast<std::size_t>(end - line));
        const std::size_t dash = view.find(" - ");
        if (dash != std::string_view::npos) {
          const auto before = numbers::words(view.substr(0, dash));
          const auto after = numbers::words(view.substr(dash + 3));
          if (before.size() >= 5 && after.size() >= 2 && after[1].rfind("/dev/loop", 0) == 0) {
            char* target = unescape_in_place(const_cast<char*>(before[4].data()), before[4].size());
            const std::string_view t(target);
            if (t != root && !(t.size() > root.size() && t.compare(0, root.size(), root) == 0 && t[root.size()] == '/'))
              targets.push_back(target);
          }
        }
        line = end + 1;
      }
    }
    std::sort(targets.begin(), targets.end(),
              [](const char* a, const char* b) { return std::strlen(a) > std::strlen(b); });
    bool missed = false;
    for (const char* t : targets) missed |= ::umount2(t, MNT_DETACH) != 0;
    if (!missed) break;
  }
  ::munmap(map, kMax);
}

}  // namespace

Failure build_root(const SpawnSpec& spec) noexcept {
  try {
    const Isolation& iso = spec.isolation;
    const std::string& root = iso.mountpoint;
    // Nothing we mount may propagate back to the host (shared subtrees, mount_namespaces(7)).
    if (::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) != 0) return {LaunchStep::kMountPrivate, errno};
    if (::mount("tmpfs", root.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, "size=4m,mode=0755") != 0)
      return {LaunchStep::kMountRootTmpfs, errno};
    for (const char* dir : {"/proc", "/tmp", "/etc"}) {
      if (int err = file_io::make_dirs(under(spec, dir))) return {LaunchStep::kMountRootTmpfs, err};
    }
    for (const auto& [path, target] : iso.symlinks) {
      if (::symlink(target.c_str(), under(spec, path).c_str()) != 0 && errno != EEXIST)
        return {LaunchStep::kMountRootTmpfs, errno};
    }
    if (Failure f = write_etc(spec); f.failed()) return f;
    if (int err = write_proc_views(spec)) return {LaunchStep::kMountProc, err};
    // /tmp first: binds below it (a workdir under /tmp, as a default Sandbox root is) must
    // land on top of this tmpfs, not under it.
    const std::string tmp_opts = tmpfs_opts(iso.tmp_bytes);
    if (::mount("tmpfs", under(spec, "/tmp").c_str(), "tmpfs", MS_NOSUID | MS_NODEV, tmp_opts.c_str()) != 0)
      return {LaunchStep::kMountTmp, errno};
    for (const auto& path : iso.readonly) {
      if (Failure f = bind(path, under(spec, path), true); f.failed()) return f;
    }
    if (Failure f = bind(spec.workdir, under(spec, spec.workdir), false); f.failed()) return f;
    // The policy's data mounts, in the workdir just bound (data_mounts.h).
    if (Failure f = data_mounts::bind_all(spec, under(spec, spec.workdir)); f.failed()) return f;
    if (Failure f = make_dev(spec); f.failed()) return f;
    // The root tmpfs itself read-only: no new files next to /usr or in /etc.
    if (::mount(nullptr, root.c_str(), nullptr, MS_BIND | MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV, nullptr) != 0)
      return {LaunchStep::kMountRemountRo, errno};
    drop_foreign_loop_mounts(root);
    return {};
  } catch (...) {
    return {LaunchStep::kMountRootTmpfs, ENOMEM};
  }
}

Failure enter_root(const SpawnSpec&) noexcept {
  // The launcher cloned us with the new root as our working directory: no host path is
  // walked here (with the session's host id, we could not search a root-only directory),
  // so every path below is relative to it.
  char views_path[4096];
  std::snprintf(views_path, sizeof views_path, ".%s", kProcViews);
  const int views = ::open(views_path, O_PATH | O_DIRECTORY | O_CLOEXEC);
  if (views < 0) return {LaunchStep::kMountProc, errno};
  // Only our pid namespace's processes are in this /proc.
  if (::mount("proc", "proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, nullptr) != 0) {
    const int err = errno;
    ::close(views);
    return {LaunchStep::kMountProc, err};
  }
  const Failure masked = mask_proc(".", views);
  ::close(views);
  if (masked.failed()) return masked;
  // pivot_root(".", "."): the old root ends up stacked on the new one and is detached at
  // once, without needing a directory for it (pivot_root(2), NOTES).
  if (::syscall(SYS_pivot_root, ".", ".") == 0) {
    if (::umount2(".", MNT_DETACH) != 0) return {LaunchStep::kPivotRoot, errno};
    if (::chdir("/") != 0) return {LaunchStep::kPivotRoot, errno};
    return {};
  }
  if (errno != EINVAL) return {LaunchStep::kPivotRoot, errno};
  // EINVAL: the host's "/" is itself stacked on the initramfs (switch_root moved it there)
  // and the sandbox's copy of it is locked (mount_namespaces(7)), so neither pivot_root nor
  // MS_MOVE can work. chroot into the new root instead, as runc's no-pivot mode does: the
  // host tree stays mounted underneath, unreachable by any path; leaving a chroot takes
  // chroot() or a directory descriptor from outside, and the worker has neither (no
  // CAP_SYS_CHROOT, chroot refused by seccomp, every inherited descriptor closed).
  if (::chroot(".") != 0) return {LaunchStep::kPivotRoot, errno};
  if (::chdir("/") != 0) return {LaunchStep::kPivotRoot, errno};
  return {};
}

unsigned long locked_flags(const struct statvfs& st) noexcept {
  unsigned long flags = 0;
  if (st.f_flag & ST_NOSUID) flags |= MS_NOSUID;
  if (st.f_flag & ST_NODEV) flags |= MS_NODEV;
  if (st.f_flag & ST_NOEXEC) flags |= MS_NOEXEC;
  if (st.f_flag & ST_NOATIME) flags |= MS_NOATIME;
  if (st.f_flag & ST_NODIRATIME) flags |= MS_NODIRATIME;
  if (st.f_flag & ST_RELATIME) flags |= MS_RELATIME;
  return flags;
}

}  // namespace sandbox_exec::mount
