#include "disk_usage.h"

#include <ftw.h>
#include <sys/stat.h>

#include <set>
#include <utility>

namespace sandbox_exec {

namespace {
// nftw takes a plain function: the walk's state lives here, one walk per thread.
thread_local uint64_t t_total = 0;
thread_local std::size_t t_entries = 0;
thread_local std::size_t t_max = 0;
thread_local std::set<std::pair<dev_t, ino_t>>* t_seen = nullptr;

int visit(const char*, const struct stat* st, int type, FTW*) {
  if (++t_entries > t_max) return 1;  // stop: a lower bound is enough to say "over"
  if (type == FTW_F && st->st_nlink > 1 && !t_seen->insert({st->st_dev, st->st_ino}).second) return 0;
  if (type == FTW_F || type == FTW_D || type == FTW_SL)
    t_total += static_cast<uint64_t>(st->st_blocks) * 512;
  return 0;
}
}  // namespace

std::optional<uint64_t> disk_usage(const std::string& path, std::size_t max_entries) noexcept {
  try {
    std::set<std::pair<dev_t, ino_t>> seen;
    t_total = 0;
    t_entries = 0;
    t_max = max_entries;
    t_seen = &seen;
    const int rc = ::nftw(path.c_str(), visit, 32, FTW_PHYS | FTW_MOUNT);
    t_seen = nullptr;
    if (rc < 0) return std::nullopt;
    if (t_entries > t_max) return UINT64_MAX;
    return t_total;
  } catch (...) {
    return std::nullopt;
  }
}

}  // namespace sandbox_exec
