// Tests of the supervisor's log (logging.h): one spdlog logger named "sandbox_exec" writing
// to stderr; set_level() takes trace, debug, info, warn, error and off (and spdlog's other
// spellings: warning, err, critical); any other word turns logging off, as spdlog's
// level::from_str does. SANDBOX_EXEC_LOG sets the first level, warn when unset. With
// queue_records(true) the records wait in a bounded queue (for Python's logging) instead.
#include "supervisor/logging.h"

#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "common/sys_error.h"

namespace sandbox_exec {
namespace {

using spdlog::level::level_enum;

bool contains(const std::string& text, const std::string& part) { return text.find(part) != std::string::npos; }

// The level the logger starts with when SANDBOX_EXEC_LOG is `env` (nullptr: unset), asked
// in a forked child so the logger is created there for the first time. -1 when it failed.
int initial_level(const char* env) {
  const pid_t pid = ::fork();
  if (pid < 0) return -1;
  if (pid == 0) {
    if (env != nullptr) {
      ::setenv("SANDBOX_EXEC_LOG", env, 1);
    } else {
      ::unsetenv("SANDBOX_EXEC_LOG");
    }
    ::_exit(static_cast<int>(log::logger().level()));
  }
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid || !WIFEXITED(status)) return -1;
  return WEXITSTATUS(status);
}

// First in the file: the logger must not exist yet in this process for the children to
// create it afresh (gtest_discover_tests runs each test in its own process).
TEST(LoggingStart, LevelFromTheEnvironmentDefaultWarn) {
  if (spdlog::get("sandbox_exec") != nullptr) GTEST_SKIP() << "the logger was created by an earlier test";
  EXPECT_EQ(initial_level(nullptr), level_enum::warn);
  EXPECT_EQ(initial_level("debug"), level_enum::debug);
  EXPECT_EQ(initial_level("trace"), level_enum::trace);
  EXPECT_EQ(initial_level("error"), level_enum::err);
  EXPECT_EQ(initial_level("off"), level_enum::off);
  EXPECT_EQ(initial_level("nonsense"), level_enum::warn);  // a misspelling keeps the default
}

class Logging : public ::testing::Test {
 protected:
  void TearDown() override { log::set_level("warn"); }
};

TEST_F(Logging, LoggerIsNamedSandboxExecAndRegistered) {
  spdlog::logger& logger = log::logger();
  EXPECT_EQ(logger.name(), "sandbox_exec");
  EXPECT_EQ(spdlog::get("sandbox_exec").get(), &logger);
  EXPECT_EQ(&log::logger(), &logger);  // one logger, created once
}

TEST_F(Logging, SetLevelTakesTheDocumentedNames) {
  const struct {
    const char* name;
    level_enum level;
  } cases[] = {
      {"trace", level_enum::trace}, {"debug", level_enum::debug}, {"info", level_enum::info},
      {"warn", level_enum::warn},   {"error", level_enum::err},   {"off", level_enum::off},
  };
  for (const auto& c : cases) {
    log::set_level("info");
    log::set_level(c.name);
    EXPECT_EQ(log::logger().level(), c.level) << c.name;
  }
}

TEST_F(Logging, SetLevelTakesSpdlogsOtherSpellings) {
  log::set_level("warning");
  EXPECT_EQ(log::logger().level(), level_enum::warn);
  log::set_level("err");
  EXPECT_EQ(log::logger().level(), level_enum::err);
  log::set_level("critical");
  EXPECT_EQ(log::logger().level(), level_enum::critical);
}

TEST_F(Logging, AnyOtherNameIsRefusedAndTheLevelKept) {
  for (const char* name : {"verbose", "DEBUG", "Warn", " info", "", "3"}) {
    log::set_level("debug");
    EXPECT_THROW(log::set_level(name), ConfigError) << '"' << name << '"';
    EXPECT_EQ(log::logger().level(), level_enum::debug) << '"' << name << '"';
  }
}

TEST_F(Logging, LevelDecidesWhatReachesStderr) {
  log::set_level("warn");
  ::testing::internal::CaptureStderr();
  log::debug("hidden debug {}", 1);
  log::info("hidden info {}", 2);
  log::warn("shown warning {}", 3);
  log::logger().flush();
  std::string out = ::testing::internal::GetCapturedStderr();
  EXPECT_FALSE(contains(out, "hidden")) << out;
  EXPECT_TRUE(contains(out, "shown warning 3")) << out;
  EXPECT_TRUE(contains(out, "[sandbox_exec]")) << out;

  log::set_level("debug");
  ::testing::internal::CaptureStderr();
  log::debug("now debug {}", 4);
  log::info("now info {}", 5);
  log::logger().flush();
  out = ::testing::internal::GetCapturedStderr();
  EXPECT_TRUE(contains(out, "now debug 4")) << out;
  EXPECT_TRUE(contains(out, "now info 5")) << out;

  log::set_level("off");
  ::testing::internal::CaptureStderr();
  log::warn("silenced {}", 6);
  log::logger().flush();
  out = ::testing::internal::GetCapturedStderr();
  EXPECT_EQ(out, "");
}

class QueuedLogging : public Logging {
 protected:
  void SetUp() override {
    log::drain();
    log::queue_records(true);
  }
  void TearDown() override {
    log::queue_records(false);
    log::drain();
    Logging::TearDown();
  }
};

TEST_F(QueuedLogging, RecordsWaitInTheQueueNotOnStderr) {
  log::set_level("info");
  const double before = std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
  ::testing::internal::CaptureStderr();
  log::debug("below the level {}", 0);
  log::info("queued info {}", 1);
  log::warn("queued warning {}", 2);
  log::logger().flush();
  EXPECT_EQ(::testing::internal::GetCapturedStderr(), "");

  log::Drained d = log::drain();
  ASSERT_EQ(d.records.size(), 2U);
  EXPECT_EQ(d.dropped, 0U);
  EXPECT_EQ(d.records[0].level, spdlog::level::info);
  EXPECT_EQ(d.records[0].text, "queued info 1");  // the message alone, no pattern
  EXPECT_EQ(d.records[1].level, spdlog::level::warn);
  EXPECT_EQ(d.records[1].text, "queued warning 2");
  EXPECT_GE(d.records[0].time_s, before - 1);
  EXPECT_LE(d.records[0].time_s, before + 60);
  EXPECT_NE(d.records[0].thread, 0U);
  EXPECT_TRUE(log::drain().records.empty());  // taken: a second drain has nothing
}

TEST_F(QueuedLogging, RecordsFromAnotherThreadKeepItsId) {
  std::thread t([] { log::warn("from a thread"); });
  t.join();
  log::Drained d = log::drain();
  ASSERT_EQ(d.records.size(), 1U);
  EXPECT_EQ(d.records[0].text, "from a thread");
  EXPECT_NE(d.records[0].thread, static_cast<uint64_t>(spdlog::details::os::thread_id()));
}

TEST_F(QueuedLogging, AFullQueueCountsWhatItDrops) {
  for (std::size_t i = 0; i < log::kQueueCapacity + 10; ++i) log::warn("record {}", i);
  log::Drained d = log::drain();
  EXPECT_EQ(d.records.size(), log::kQueueCapacity);
  EXPECT_EQ(d.dropped, 10U);
  EXPECT_EQ(d.records.back().text, "record " + std::to_string(log::kQueueCapacity - 1));  // the oldest kept
  d = log::drain();
  EXPECT_EQ(d.dropped, 0U);  // the count is taken with the records
}

TEST_F(QueuedLogging, BackToStderrWhenTurnedOff) {
  log::queue_records(false);
  ::testing::internal::CaptureStderr();
  log::warn("on stderr again");
  log::logger().flush();
  EXPECT_TRUE(contains(::testing::internal::GetCapturedStderr(), "on stderr again"));
  EXPECT_TRUE(log::drain().records.empty());
}

}  // namespace
}  // namespace sandbox_exec
