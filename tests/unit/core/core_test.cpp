#include <gtest/gtest.h>

#include "core/error.h"
#include "core/log.h"

namespace mustdrop {
namespace {

TEST(Errors, KindsAndMessages) {
  try {
    throw InputError("clip.mp4: no such file");
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kInput);
    EXPECT_STREQ(e.what(), "clip.mp4: no such file");
  }
  EXPECT_EQ(StreamError("x").kind(), ErrorKind::kStream);
  EXPECT_EQ(ModelError("x").kind(), ErrorKind::kModel);
  EXPECT_EQ(ConfigError("x").kind(), ErrorKind::kConfig);
  EXPECT_EQ(InternalError("x").kind(), ErrorKind::kInternal);
  EXPECT_STREQ(error_kind_name(ErrorKind::kStream), "stream");
}

TEST(Log, LevelsParseAndFilter) {
  EXPECT_EQ(log::parse_level("debug"), log::Level::kDebug);
  EXPECT_EQ(log::parse_level("warning"), log::Level::kWarn);
  EXPECT_THROW(log::parse_level("loud"), ConfigError);
  log::set_level(log::Level::kWarn);
  EXPECT_FALSE(log::enabled(log::Level::kInfo));
  EXPECT_TRUE(log::enabled(log::Level::kError));
  int evaluated = 0;
  MD_LOG_INFO("test", "skipped " << ++evaluated);
  EXPECT_EQ(evaluated, 0);  // below the threshold the message is not even built
  MD_LOG_ERROR("test", "written " << ++evaluated);
  EXPECT_EQ(evaluated, 1);
  log::set_level(log::Level::kInfo);
}

}  // namespace
}  // namespace mustdrop
