// Tests of workdir_image (workdir_image.h), as root with loop devices and mkfs.ext4 (skipped
// with the reason otherwise): a small sparse image formatted by mkfs.ext4 in a temporary
// directory is mounted at a target directory as ext4 with nosuid and nodev on an
// autoclearing loop device, caps writes at its size (ENOSPC), is named by mounted_image()
// (only at the mount's root), and is gone after unmount(), which then answers false; a
// symlink to the mount is neither followed by unmount() (UMOUNT_NOFOLLOW) nor by
// mounted_image(); a missing or symlinked image, a target that does not exist and an image
// that is no filesystem are SandboxErrors of layer "workdir" that leave no loop device bound;
// a device that a concurrent start takes and lets go between GET_FREE and open (ENXIO while
// it runs down) is asked for again, not a failure.
//
// Each test runs in a private mount namespace where it can get one, so that a test that dies
// half-way leaves no mount behind on the host (the loop devices autoclear with it); TearDown
// unmounts and detaches whatever the test left in any case.
#include "supervisor/workdir_image.h"

#include <dirent.h>
#include <fcntl.h>
#include <linux/loop.h>
#include <linux/magic.h>
#include <sched.h>
#include <stdlib.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

#include "common/sys_error.h"
#include "common/unique_fd.h"

namespace sandbox_exec {
namespace {

constexpr off_t kImageBytes = 8 << 20;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

std::string first_line(const std::string& path) {
  std::ifstream in(path);
  std::string line;
  if (!in || !std::getline(in, line)) return {};
  return line;
}

// The loop devices (by name, "loop3") whose backing file is `image`.
std::vector<std::string> loops_backed_by(const std::string& image) {
  std::vector<std::string> out;
  DIR* dir = ::opendir("/sys/block");
  if (dir == nullptr) return out;
  while (const dirent* e = ::readdir(dir)) {
    const std::string name = e->d_name;
    if (name.rfind("loop", 0) != 0) continue;
    if (first_line("/sys/block/" + name + "/loop/backing_file") == image) out.push_back(name);
  }
  ::closedir(dir);
  return out;
}

// Waits (autoclear runs when the last user lets go) until no loop device is bound to `image`.
bool no_loop_for(const std::string& image) {
  for (int i = 0; i < 200; ++i) {
    if (loops_backed_by(image).empty()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

std::string find_mkfs() {
  for (const char* dir : {"/usr/sbin", "/sbin", "/usr/bin", "/bin"}) {
    const std::string path = std::string(dir) + "/mkfs.ext4";
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return {};
}

// Runs `argv` with stdout and stderr to /dev/null; its exit status, or -1.
int run(const std::vector<std::string>& argv) {
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    const int null = ::open("/dev/null", O_WRONLY);
    ::dup2(null, 1);
    ::dup2(null, 2);
    std::vector<char*> args;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    ::execv(args[0], args.data());
    ::_exit(127);
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return -1;
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

class WorkdirImage : public ::testing::Test {
 protected:
  void SetUp() override {
    if (::geteuid() != 0) GTEST_SKIP() << "needs root (loop devices and mount)";
    if (::access("/dev/loop-control", R_OK | W_OK) != 0) GTEST_SKIP() << "no /dev/loop-control";
    mkfs_ = find_mkfs();
    if (mkfs_.empty()) GTEST_SKIP() << "no mkfs.ext4";
    // A private mount namespace where possible: nothing here reaches the host's mounts.
    if (::unshare(CLONE_NEWNS) == 0) (void)::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr);

    char dir[] = "/tmp/workdir_image_test.XXXXXX";
    ASSERT_NE(::mkdtemp(dir), nullptr);
    char* real = ::realpath(dir, nullptr);  // backing_file names the resolved path
    ASSERT_NE(real, nullptr);
    dir_ = real;
    ::free(real);
    image_ = dir_ + "/workdir.img";
    target_ = dir_ + "/mnt";
    ASSERT_EQ(::mkdir(target_.c_str(), 0755), 0);
    ASSERT_TRUE(make_image(image_));
  }

  void TearDown() override {
    if (dir_.empty()) return;
    for (const std::string& path : {target_, dir_ + "/other"}) {
      for (int i = 0; i < 4 && ::umount2(path.c_str(), MNT_DETACH | UMOUNT_NOFOLLOW) == 0; ++i) {
      }
    }
    for (const std::string& image :
         {image_, dir_ + "/zeros.img", dir_ + "/other.img", dir_ + "/zeros0.img", dir_ + "/zeros1.img"}) {
      for (const std::string& loop : loops_backed_by(image)) {
        const UniqueFd fd(::open(("/dev/" + loop).c_str(), O_RDWR | O_CLOEXEC));
        if (fd) (void)::ioctl(fd.get(), LOOP_CLR_FD, 0);
      }
    }
    (void)std::system(("rm -rf '" + dir_ + "'").c_str());
  }

  // A sparse file of kImageBytes formatted as ext4.
  bool make_image(const std::string& path) const {
    const UniqueFd fd(::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
    if (!fd || ::ftruncate(fd.get(), kImageBytes) != 0) return false;
    return run({mkfs_, "-q", "-F", "-m", "0", path}) == 0;
  }

  std::string mkfs_, dir_, image_, target_;
};

TEST_F(WorkdirImage, MountsTheImageAsExt4NosuidNodev) {
  const std::string device = workdir_image::mount_image(image_, target_);
  EXPECT_EQ(device.rfind("/dev/loop", 0), 0u) << device;

  struct statfs fs {};
  ASSERT_EQ(::statfs(target_.c_str(), &fs), 0);
  EXPECT_EQ(fs.f_type, EXT4_SUPER_MAGIC);
  struct statvfs vfs {};
  ASSERT_EQ(::statvfs(target_.c_str(), &vfs), 0);
  EXPECT_NE(vfs.f_flag & ST_NOSUID, 0u);
  EXPECT_NE(vfs.f_flag & ST_NODEV, 0u);
  EXPECT_EQ(vfs.f_flag & ST_RDONLY, 0u);
  // the filesystem is the image's size, not the host's
  EXPECT_LE(static_cast<uint64_t>(vfs.f_blocks) * vfs.f_frsize, static_cast<uint64_t>(kImageBytes));

  // on the loop device it named, bound to the image with autoclear
  const std::string loop = device.substr(5);
  EXPECT_EQ(first_line("/sys/block/" + loop + "/loop/backing_file"), image_);
  EXPECT_EQ(first_line("/sys/block/" + loop + "/loop/autoclear"), "1");
  struct stat st {
  }, dev{};
  ASSERT_EQ(::stat(target_.c_str(), &st), 0);
  ASSERT_EQ(::stat(device.c_str(), &dev), 0);
  EXPECT_EQ(st.st_dev, dev.st_rdev);

  // and writable
  std::ofstream(target_ + "/hello") << "hi";
  EXPECT_EQ(first_line(target_ + "/hello"), "hi");
}

TEST_F(WorkdirImage, WritesPastTheImageSizeFailWithEnospc) {
  (void)workdir_image::mount_image(image_, target_);
  const UniqueFd fd(::open((target_ + "/big").c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0600));
  ASSERT_TRUE(fd);
  const std::string chunk(1 << 20, 'x');
  int err = 0;
  off_t written = 0;
  for (int i = 0; i < 4 * (kImageBytes >> 20) && err == 0; ++i) {
    const ssize_t n = ::write(fd.get(), chunk.data(), chunk.size());
    if (n < 0) {
      err = errno;
    } else {
      written += n;
    }
  }
  EXPECT_EQ(err, ENOSPC);
  EXPECT_LT(written, kImageBytes);
  EXPECT_GT(written, 0);
}

TEST_F(WorkdirImage, MountedImageNamesTheImageAtTheMountsRootOnly) {
  EXPECT_EQ(workdir_image::mounted_image(target_), "");  // a plain directory
  (void)workdir_image::mount_image(image_, target_);
  EXPECT_EQ(workdir_image::mounted_image(target_), image_);
  EXPECT_EQ(workdir_image::mounted_image(target_ + "/"), image_);
  ASSERT_EQ(::mkdir((target_ + "/sub").c_str(), 0755), 0);
  EXPECT_EQ(workdir_image::mounted_image(target_ + "/sub"), "");
  std::ofstream(target_ + "/file") << "x";
  EXPECT_EQ(workdir_image::mounted_image(target_ + "/file"), "");
  EXPECT_EQ(workdir_image::mounted_image(dir_ + "/nonexistent"), "");
  EXPECT_EQ(workdir_image::mounted_image(dir_), "");
}

TEST_F(WorkdirImage, MountedImageIsEmptyForAMountThatIsNoLoopDevice) {
  ASSERT_EQ(::mount("tmpfs", target_.c_str(), "tmpfs", 0, "size=1m"), 0) << std::strerror(errno);
  EXPECT_EQ(workdir_image::mounted_image(target_), "");
}

TEST_F(WorkdirImage, UnmountRemovesItAndThenAnswersFalse) {
  const std::string device = workdir_image::mount_image(image_, target_);
  std::ofstream(target_ + "/left-behind") << "x";
  EXPECT_TRUE(workdir_image::unmount(target_));
  EXPECT_EQ(workdir_image::mounted_image(target_), "");
  // the target is the directory of the host's filesystem again
  struct stat st {
  }, parent{};
  ASSERT_EQ(::stat(target_.c_str(), &st), 0);
  ASSERT_EQ(::stat(dir_.c_str(), &parent), 0);
  EXPECT_EQ(st.st_dev, parent.st_dev);
  EXPECT_NE(::access((target_ + "/left-behind").c_str(), F_OK), 0);  // the image's file is not here
  EXPECT_FALSE(workdir_image::unmount(target_));
  // autoclear: the loop device lets go of the image once the filesystem is gone
  EXPECT_TRUE(no_loop_for(image_)) << device;
  // and the image can be mounted again, with its content
  (void)workdir_image::mount_image(image_, target_);
  EXPECT_EQ(first_line(target_ + "/left-behind"), "x");
  EXPECT_TRUE(workdir_image::unmount(target_));
}

TEST_F(WorkdirImage, UnmountOfNothingIsFalse) {
  EXPECT_FALSE(workdir_image::unmount(target_));
  EXPECT_FALSE(workdir_image::unmount(dir_ + "/nonexistent"));
}

TEST_F(WorkdirImage, SymlinkToTheMountIsNotFollowed) {
  (void)workdir_image::mount_image(image_, target_);
  const std::string link = dir_ + "/link";
  ASSERT_EQ(::symlink(target_.c_str(), link.c_str()), 0);
  // UMOUNT_NOFOLLOW: the link is not the mount point; the mount stays
  EXPECT_FALSE(workdir_image::unmount(link));
  EXPECT_EQ(workdir_image::mounted_image(target_), image_);
  // mounted_image() does not follow it either
  EXPECT_EQ(workdir_image::mounted_image(link), "");
  EXPECT_TRUE(workdir_image::unmount(target_));
}

TEST_F(WorkdirImage, MissingImageIsAWorkdirError) {
  try {
    (void)workdir_image::mount_image(dir_ + "/missing.img", target_);
    FAIL() << "mounted a missing image";
  } catch (const SandboxError& e) {
    EXPECT_EQ(e.layer(), "workdir");
    EXPECT_EQ(e.error_number(), ENOENT);
    EXPECT_TRUE(contains(e.call(), "missing.img")) << e.what();
  }
}

TEST_F(WorkdirImage, SymlinkedImageIsRefused) {
  const std::string link = dir_ + "/link.img";
  ASSERT_EQ(::symlink(image_.c_str(), link.c_str()), 0);
  try {
    (void)workdir_image::mount_image(link, target_);
    FAIL() << "followed a symlinked image";
  } catch (const SandboxError& e) {
    EXPECT_EQ(e.layer(), "workdir");
    EXPECT_EQ(e.error_number(), ELOOP);
  }
  EXPECT_EQ(workdir_image::mounted_image(target_), "");
}

TEST_F(WorkdirImage, MissingTargetFailsAndFreesTheLoopDevice) {
  try {
    (void)workdir_image::mount_image(image_, dir_ + "/no-such-dir");
    FAIL() << "mounted on a missing target";
  } catch (const SandboxError& e) {
    EXPECT_EQ(e.layer(), "workdir");
    EXPECT_EQ(e.error_number(), ENOENT);
    EXPECT_TRUE(contains(e.call(), "mount(")) << e.what();
  }
  EXPECT_TRUE(no_loop_for(image_));
}

TEST_F(WorkdirImage, ImageThatIsNoFilesystemFailsAndFreesTheLoopDevice) {
  const std::string zeros = dir_ + "/zeros.img";
  {
    const UniqueFd fd(::open(zeros.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
    ASSERT_TRUE(fd);
    ASSERT_EQ(::ftruncate(fd.get(), kImageBytes), 0);
  }
  try {
    (void)workdir_image::mount_image(zeros, target_);
    FAIL() << "mounted an image with no filesystem";
  } catch (const SandboxError& e) {
    EXPECT_EQ(e.layer(), "workdir");
    EXPECT_NE(e.error_number(), 0);
    EXPECT_TRUE(contains(e.call(), "ext4")) << e.what();
  }
  EXPECT_EQ(workdir_image::mounted_image(target_), "");
  EXPECT_TRUE(no_loop_for(zeros));
}

TEST_F(WorkdirImage, ADeviceAnotherStartLetsGoMeanwhileIsNotAFailure) {
  // Two sessions starting at once (two backends, or two threads of one): each asks
  // LOOP_CTL_GET_FREE, and both may be told the same device. The one that configures it
  // first and fails its mount lets it go again, and the kernel refuses opens of a loop
  // device while it runs down (ENXIO): the other must ask again, not fail its start. Here
  // one thread's mounts fail at once (a missing target: configure, mount, let go, again and
  // again) while the other's fail in ext4 (an image with no filesystem); every failure must
  // be the mount's own, never the open of the device. Without the retry on ENXIO every run
  // of this test failed (tens of opens refused per run, on a 2-core machine).
  constexpr int kRounds = 150;
  std::atomic<bool> done{false};
  std::vector<std::string> errors[2];
  auto hammer = [this, &errors, &done](int t) {
    const std::string zeros = dir_ + "/zeros" + std::to_string(t) + ".img";
    const std::string target = dir_ + "/target" + std::to_string(t);  // made for thread 0 only
    {
      const UniqueFd fd(::open(zeros.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600));
      if (!fd || ::ftruncate(fd.get(), kImageBytes) != 0 || (t == 0 && ::mkdir(target.c_str(), 0755) != 0)) {
        errors[t].push_back("setup failed");
        done = true;
        return;
      }
    }
    for (int i = 0; t == 0 ? i < kRounds : !done.load(); ++i) {
      try {
        (void)workdir_image::mount_image(zeros, target);
        errors[t].push_back("mounted an image with no filesystem");
      } catch (const SandboxError& e) {
        if (!contains(e.call(), "mount(")) errors[t].push_back(e.what());
      }
    }
    done = true;
  };
  std::thread other(hammer, 1);
  hammer(0);
  other.join();
  for (const auto& list : errors) EXPECT_TRUE(list.empty()) << list.size() << " failed, first: " << list.front();
  EXPECT_TRUE(no_loop_for(dir_ + "/zeros0.img"));
  EXPECT_TRUE(no_loop_for(dir_ + "/zeros1.img"));
}

TEST_F(WorkdirImage, TwoImagesGetTwoLoopDevices) {
  const std::string other_image = dir_ + "/other.img", other_target = dir_ + "/other";
  ASSERT_TRUE(make_image(other_image));
  ASSERT_EQ(::mkdir(other_target.c_str(), 0755), 0);
  const std::string a = workdir_image::mount_image(image_, target_);
  const std::string b = workdir_image::mount_image(other_image, other_target);
  EXPECT_NE(a, b);
  EXPECT_EQ(workdir_image::mounted_image(target_), image_);
  EXPECT_EQ(workdir_image::mounted_image(other_target), other_image);
  EXPECT_TRUE(workdir_image::unmount(other_target));
  EXPECT_TRUE(no_loop_for(other_image));
  EXPECT_EQ(workdir_image::mounted_image(target_), image_);
}

}  // namespace
}  // namespace sandbox_exec
