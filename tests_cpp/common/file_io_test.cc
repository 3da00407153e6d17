// file_io: the shared file helpers, on a private temporary tree.
#include "common/file_io.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <filesystem>
#include <string>

#include <gtest/gtest.h>

namespace sandbox_exec {
namespace {

class FileIo : public ::testing::Test {
 protected:
  void SetUp() override {
    char templ[] = "/tmp/file_io_test-XXXXXX";
    ASSERT_NE(::mkdtemp(templ), nullptr);
    root_ = templ;
  }
  void TearDown() override { std::filesystem::remove_all(root_); }
  std::string root_;
};

TEST_F(FileIo, WriteThenReadRoundTrips) {
  const std::string path = root_ + "/a";
  ASSERT_EQ(file_io::write_file(path.c_str(), "hello\n", O_CREAT | O_TRUNC), 0);
  EXPECT_EQ(file_io::read_file(path), "hello\n");
  // O_TRUNC: a shorter second write leaves no tail of the first.
  ASSERT_EQ(file_io::write_file(path.c_str(), "x", O_CREAT | O_TRUNC), 0);
  EXPECT_EQ(file_io::read_file(path), "x");
}

TEST_F(FileIo, WriteWithoutCreateNeedsAnExistingFile) {
  // A kernel knob exists already; a missing one is an error, never a new plain file.
  const std::string path = root_ + "/missing";
  EXPECT_EQ(file_io::write_file(path.c_str(), "1"), ENOENT);
  EXPECT_FALSE(std::filesystem::exists(path));
}

TEST_F(FileIo, ReadOfAMissingFileIsEmpty) { EXPECT_EQ(file_io::read_file(root_ + "/nope"), ""); }

TEST_F(FileIo, ReadsALargeFileWhole) {
  const std::string path = root_ + "/big";
  const std::string text(100000, 'z');
  ASSERT_EQ(file_io::write_file(path.c_str(), text, O_CREAT | O_TRUNC), 0);
  EXPECT_EQ(file_io::read_file(path), text);
}

TEST_F(FileIo, MakeDirsCreatesEveryMissingComponentAndAcceptsExistingOnes) {
  const std::string deep = root_ + "/x/y/z";
  ASSERT_EQ(file_io::make_dirs(deep, 0700), 0);
  struct stat st {};
  ASSERT_EQ(::stat(deep.c_str(), &st), 0);
  EXPECT_TRUE(S_ISDIR(st.st_mode));
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  EXPECT_EQ(file_io::make_dirs(deep), 0);  // again: nothing to do, no error
}

TEST_F(FileIo, MakeDirsStopsAtAFileInTheWay) {
  const std::string file = root_ + "/f";
  ASSERT_EQ(file_io::write_file(file.c_str(), "", O_CREAT | O_TRUNC), 0);
  EXPECT_EQ(file_io::make_dirs(file + "/sub"), ENOTDIR);
}

}  // namespace
}  // namespace sandbox_exec
