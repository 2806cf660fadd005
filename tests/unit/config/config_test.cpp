// Config loading: configs/default.yaml, round trips, file:line:col errors and --set overrides.
#include "config/config.h"
#include "config/job_config.h"
#include "config/monitor_config.h"
#include "config/pipeline_config.h"

#include <gtest/gtest.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cstddef>
#include <cstdio>
#include <fstream>
#include <functional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "core/error.h"

namespace mustdrop::config {
namespace {

const std::string kDefaultYaml = std::string(MUSTDROP_SOURCE_DIR) + "/configs/default.yaml";

// The ConfigError message `f` throws; fails the test when it throws nothing.
std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const ConfigError& e) {
    EXPECT_EQ(e.kind(), ErrorKind::kConfig);
    return e.what();
  }
  ADD_FAILURE() << "expected a ConfigError";
  return "";
}

std::string load_error(const std::string& yaml) {
  return error_of([&] { load_string(yaml, "t.yaml"); });
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

#define EXPECT_STARTS_WITH(s, prefix) EXPECT_TRUE(starts_with(s, prefix)) << "message: " << (s)
#define EXPECT_CONTAINS(s, part) EXPECT_NE((s).find(part), std::string::npos) << "message: " << (s)

// Writes `text` to a file named after the running test and removes it at scope exit.
class TempFile {
 public:
  explicit TempFile(const std::string& text) {
    path_ = testing::TempDir() + "mustdrop_config_" +
            testing::UnitTest::GetInstance()->current_test_info()->name() + ".yaml";
    std::ofstream(path_) << text;
  }
  ~TempFile() { std::remove(path_.c_str()); }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

// Leaf key paths of a YAML map, dotted, in document order.
void collect_paths(const YAML::Node& node, const std::string& prefix, std::vector<std::string>& out) {
  for (const auto& kv : node) {
    std::string path = prefix.empty() ? kv.first.Scalar() : prefix + "." + kv.first.Scalar();
    if (kv.second.IsMap()) {
      collect_paths(kv.second, path, out);
    } else {
      out.push_back(path);
    }
  }
}

// A configuration in which every field differs from its default.
Config non_default_config() {
  Config c;
  c.log_level = "off";
  c.video.frame_dir_fps = 29.97;
  c.video.decoder_threads = 3;
  c.video.sampler.kind = SamplerKind::kInterval;
  c.video.sampler.frames = 0;
  c.video.sampler.fps = 0.1 + 0.2;  // 0.30000000000000004
  c.video.sampler.interval_sec = 1.0 / 3.0;
  c.video.sampler.seek_threshold_sec = 12345.678901234567;
  c.video.preprocess.size = 224;
  c.video.preprocess.resize = "pad";
  c.video.preprocess.interpolation = "lanczos";
  c.video.preprocess.mean = {0.48145466, -2.5e-7, 10.0};
  c.video.preprocess.stddev = {1e-6, 0.26130258, 5.0};
  c.video.live.transport = "udp";
  c.video.live.read_timeout_ms = 1;
  c.video.live.open_timeout_ms = 3600000;
  c.video.live.initial_connect_sec = 0.0;
  c.video.live.watchdog_sec = 2.5;
  c.video.live.queue_frames = 100000;
  c.video.live.reconnect.initial_delay_ms = 7;
  c.video.live.reconnect.max_delay_ms = 0;
  c.video.live.reconnect.max_attempts = 1000000000;
  c.model.dir = "/models/llava 1.5: \"quoted\"";
  c.model.dtype = ComputeDtype::kBf16;
  c.model.device = "cuda:1";
  c.generation.max_new_tokens = 99999;
  c.generation.temperature = 0.7;
  c.generation.top_p = 0.95;
  c.generation.seed = 2147483647;
  c.memory.max_tokens = 3000;
  c.memory.max_mb = 512.5;
  c.memory.evict_to = 0.75;
  c.memory.prefix_cache = false;
  c.memory.position_reserve = 1024;
  c.threads.answers = 2;
  c.threads.total = 3;
  c.threads.torch_intra_op = 1;
  c.threads.frames_in_flight = 4096;
  return c;
}

// Every leaf of a configuration as "path = value", in declaration order, read through the
// config's own visit() so a field added later is compared too.
struct LeafPrinter {
  std::string prefix;
  std::vector<std::string>* out;

  static std::string text(const std::string& v) { return "'" + v + "'"; }
  static std::string text(double v) {
    std::ostringstream s;
    s.precision(17);
    s << v;
    return s.str();
  }
  static std::string text(int v) { return std::to_string(v); }
  static std::string text(bool v) { return v ? "true" : "false"; }
  template <class E, std::enable_if_t<std::is_enum<E>::value, int> = 0>
  static std::string text(E v) {
    return enum_name(v);
  }
  template <class T>
  static std::string text(const std::vector<T>& v) {
    std::string r = "[";
    for (const auto& x : v) r += text(x) + ",";
    return r + "]";
  }
  template <class T, class Check>
  void operator()(const char* name, T& field, const Check&) {
    out->push_back(prefix + name + " = " + text(field));
  }
  template <class Section>
  void operator()(const char* name, Section& section) {
    LeafPrinter inner{prefix + name + ".", out};
    section.visit(inner);
  }
};

std::vector<std::string> leaves(Config c) {
  std::vector<std::string> out;
  LeafPrinter p{"", &out};
  c.visit(p);
  return out;
}

void expect_same(const Config& a, const Config& b) { EXPECT_EQ(leaves(a), leaves(b)); }

TEST(NonDefaultConfig, EveryLeafDiffersFromItsDefault) {
  std::vector<std::string> changed = leaves(non_default_config()), defaults = leaves(Config{});
  ASSERT_EQ(changed.size(), defaults.size());
  ASSERT_EQ(changed.size(), key_paths().size());
  for (size_t i = 0; i < changed.size(); ++i) EXPECT_NE(changed[i], defaults[i]);
}

// ---- configs/default.yaml and the key list ----

TEST(DefaultYaml, LoadsToTheBuiltInDefaults) {
  Config loaded = load(kDefaultYaml);
  expect_same(loaded, Config{});
  EXPECT_EQ(to_yaml(loaded), to_yaml(Config{}));
}

TEST(DefaultYaml, ListsEveryKeyInDeclarationOrder) {
  std::vector<std::string> in_file;
  collect_paths(YAML::LoadFile(kDefaultYaml), "", in_file);
  EXPECT_EQ(in_file, key_paths());
}

// Checks that every key line with a value in `path` carries a " # " comment after it; returns
// how many such lines there are. A section header (no value, or only a comment) is not one.
int expect_comment_on_every_value(const std::string& path) {
  std::ifstream in(path);
  EXPECT_TRUE(in) << path;
  std::string line;
  int n_values = 0;
  while (std::getline(in, line)) {
    std::size_t colon = line.find(':');
    if (line.empty() || line.find_first_not_of(' ') == line.find('#') || colon == std::string::npos) continue;
    std::size_t value = line.find_first_not_of(' ', colon + 1);
    if (value == std::string::npos || line[value] == '#') continue;  // a section header
    ++n_values;
    EXPECT_NE(line.find(" # ", value), std::string::npos) << path << ": no comment on: " << line;
  }
  return n_values;
}

TEST(DefaultYaml, EveryKeyLineHasAComment) {
  EXPECT_EQ(expect_comment_on_every_value(kDefaultYaml), static_cast<int>(key_paths().size()));
}

TEST(KeyPaths, AreDottedLeavesWithoutDuplicates) {
  std::vector<std::string> paths = key_paths();
  ASSERT_FALSE(paths.empty());
  EXPECT_EQ(paths.front(), "log_level");
  EXPECT_EQ(paths.back(), "threads.answers");
  EXPECT_EQ(std::set<std::string>(paths.begin(), paths.end()).size(), paths.size());
  auto pos = [&](const std::string& p) { return std::find(paths.begin(), paths.end(), p) - paths.begin(); };
  EXPECT_LT(pos("video.sampler.kind"), pos("video.sampler.frames"));
  EXPECT_LT(pos("video.sampler.frames"), pos("video.preprocess.mean"));
  EXPECT_LT(pos("video.preprocess.mean"), static_cast<std::ptrdiff_t>(paths.size()));
  EXPECT_EQ(pos("video.sampler"), static_cast<std::ptrdiff_t>(paths.size())) << "sections are not leaves";
}

// ---- reading and printing ----

TEST(ToYaml, RoundTripPreservesEveryValueExactly) {
  Config original = non_default_config();
  std::string text = to_yaml(original);
  Config back = load_string(text, "roundtrip");
  expect_same(back, original);
  EXPECT_EQ(to_yaml(back), text);
  EXPECT_CONTAINS(text, "0.48145466,");  // shortest form, not 0.48145466000000002
  EXPECT_CONTAINS(text, "0.30000000000000004");
}

TEST(ToYaml, PrintsNestedMapsInDeclarationOrder) {
  std::string text = to_yaml(Config{});
  EXPECT_TRUE(starts_with(text, "log_level: info\nvideo:\n  frame_dir_fps: 1.0\n  decoder_threads: 0\n  sampler:\n"))
      << text;
  EXPECT_CONTAINS(text, "\n    mean: [0.48145466, 0.4578275, 0.40821073]\n");
  EXPECT_CONTAINS(text, "\n      max_attempts: 0\n");
}

TEST(LoadString, EmptyAndNullDocumentsGiveDefaults) {
  for (const char* text : {"", "~\n", "# nothing but a comment\n", "video:\n"}) {
    EXPECT_EQ(to_yaml(load_string(text, "t.yaml")), to_yaml(Config{})) << "document: " << text;
  }
}

TEST(LoadString, AbsentKeysKeepTheirDefaults) {
  Config c = load_string("video:\n  sampler:\n    frames: 16\n  preprocess:\n    mean: [0, 0.5, 1]\n", "t.yaml");
  EXPECT_EQ(c.video.sampler.frames, 16);
  EXPECT_EQ(c.video.preprocess.mean, (std::vector<double>{0.0, 0.5, 1.0}));
  Config expected;
  expected.video.sampler.frames = 16;
  expected.video.preprocess.mean = {0.0, 0.5, 1.0};
  expect_same(c, expected);
}

TEST(LoadString, IntegersAreAcceptedForFloatFields) {
  Config c = load_string("video:\n  sampler:\n    fps: 5\n", "t.yaml");
  EXPECT_EQ(c.video.sampler.fps, 5.0);
}

// ---- errors: file:line:col, key path, what was expected ----

TEST(LoadErrors, UnknownKeyNamesPathValidKeysAndSuggestion) {
  std::string m = load_error("log_level: info\nvideo:\n  samplr:\n    frames: 4\n");
  EXPECT_STARTS_WITH(m, "t.yaml:3:3: unknown key 'video.samplr'");
  EXPECT_CONTAINS(m, "frame_dir_fps, decoder_threads, sampler, preprocess, live");
  EXPECT_CONTAINS(m, "did you mean 'sampler'?");
}

TEST(LoadErrors, UnknownTopLevelKey) {
  std::string m = load_error("log_level: info\nworkers: 4\n");
  EXPECT_STARTS_WITH(m, "t.yaml:2:1: unknown key 'workers'");
  EXPECT_CONTAINS(m, "log_level, video, model, generation, memory, threads");
}

TEST(LoadErrors, UnknownDeepKey) {
  std::string m = load_error("video:\n  live:\n    reconnect:\n      max_attempt: 3\n");
  EXPECT_STARTS_WITH(m, "t.yaml:4:7: unknown key 'video.live.reconnect.max_attempt'");
  EXPECT_CONTAINS(m, "did you mean 'max_attempts'?");
}

TEST(LoadErrors, StringWhereIntegerExpected) {
  std::string m = load_error("video:\n  sampler:\n    frames: eight\n");
  EXPECT_STARTS_WITH(m, "t.yaml:3:13: video.sampler.frames: expected an integer");
  EXPECT_CONTAINS(m, "'eight'");
}

TEST(LoadErrors, FloatWhereIntegerExpected) {
  std::string m = load_error("video:\n  sampler:\n    frames: 2.5\n");
  EXPECT_STARTS_WITH(m, "t.yaml:3:13: video.sampler.frames: expected an integer");
  EXPECT_CONTAINS(m, "2.5");
}

TEST(LoadErrors, QuotedNumberIsAString) {
  std::string m = load_error("video:\n  sampler:\n    frames: \"16\"\n");
  EXPECT_STARTS_WITH(m, "t.yaml:3:13: video.sampler.frames: expected an integer, found the string \"16\"");
}

TEST(LoadErrors, MapWhereScalarExpected) {
  std::string m = load_error("log_level:\n  level: info\n");
  EXPECT_STARTS_WITH(m, "t.yaml:2:3: log_level: expected a string, found a map");
}

TEST(LoadErrors, EmptyValueForALeafPointsAtTheKey) {
  std::string m = load_error("video:\n  decoder_threads:\n  frame_dir_fps: 2\n");
  EXPECT_STARTS_WITH(m, "t.yaml:2:3: video.decoder_threads: expected an integer, found an empty value");
}

TEST(LoadErrors, ScalarWhereSectionExpected) {
  std::string m = load_error("video:\n  sampler: uniform\n");
  EXPECT_STARTS_WITH(m, "t.yaml:2:12: video.sampler: expected a section (a map of keys), found the string 'uniform'");
}

TEST(LoadErrors, BooleanWhereNumberExpected) {
  std::string m = load_error("video:\n  frame_dir_fps: true\n");
  EXPECT_STARTS_WITH(m, "t.yaml:2:18: video.frame_dir_fps: expected a number, found the boolean true");
}

TEST(LoadErrors, OutOfRangeQuotesValueAndRange) {
  std::string m = load_error("video:\n  preprocess:\n    size: 4\n");
  EXPECT_STARTS_WITH(m, "t.yaml:3:11: video.preprocess.size: value 4 is out of range (allowed: [8, 8192])");
}

TEST(LoadErrors, OutOfRangeFloat) {
  std::string m = load_error("video:\n  live:\n    watchdog_sec: 0.05\n");
  EXPECT_STARTS_WITH(m, "t.yaml:3:19: video.live.watchdog_sec: value 0.05 is out of range (allowed: [0.1, 86400])");
}

TEST(LoadErrors, BadChoiceListsChoices) {
  std::string m = load_error("log_level: loud\n");
  EXPECT_STARTS_WITH(m, "t.yaml:1:12: log_level: 'loud' is not one of: trace, debug, info, warn, error, off");
}

TEST(LoadErrors, WrongListLength) {
  std::string m = load_error("video:\n  preprocess:\n    mean: [0.5, 0.5]\n");
  EXPECT_STARTS_WITH(m, "t.yaml:3:11: video.preprocess.mean: expected a list of 3 numbers, found 2 elements");
}

TEST(LoadErrors, ListElementOutOfRangeNamesIndex) {
  std::string m = load_error("video:\n  preprocess:\n    stddev: [0.2, 0, 0.2]\n");
  EXPECT_STARTS_WITH(m, "t.yaml:3:19: video.preprocess.stddev[1]: value 0 is out of range");
}

TEST(LoadErrors, ScalarWhereListExpected) {
  std::string m = load_error("video:\n  preprocess:\n    mean: 0.5\n");
  EXPECT_STARTS_WITH(m, "t.yaml:3:11: video.preprocess.mean: expected a list of numbers, found the number 0.5");
}

TEST(LoadErrors, DocumentThatIsNotAMap) {
  EXPECT_STARTS_WITH(load_error("- log_level\n- video\n"),
                     "t.yaml:1:1: expected a map of keys at the top level, found a list");
  EXPECT_STARTS_WITH(load_error("\n  just text\n"), "t.yaml:2:3: expected a map of keys at the top level");
}

TEST(LoadErrors, SyntaxErrorGivesLineAndColumn) {
  // yaml-cpp stops at the second ':' on line 3 (column 16).
  std::string m = load_error("log_level: info\nvideo:\n  sampler: kind: fps\n");
  EXPECT_STARTS_WITH(m, "t.yaml:3:16: ");
  EXPECT_CONTAINS(m, "illegal map value");
}

TEST(LoadErrors, UnclosedFlowListIsASyntaxError) {
  std::string m = load_error("video:\n  preprocess:\n    mean: [0.5, 0.5\n");
  EXPECT_STARTS_WITH(m, "t.yaml:4:1: ");
  EXPECT_CONTAINS(m, "end of sequence flow not found");
}

TEST(LoadErrors, DuplicateKey) {
  std::string m = load_error("video:\n  sampler:\n    frames: 4\n    frames: 5\n");
  EXPECT_STARTS_WITH(m, "t.yaml:4:5: duplicate key 'video.sampler.frames'");
}

TEST(LoadErrors, SeveralDocuments) {
  EXPECT_STARTS_WITH(load_error("log_level: info\n---\nlog_level: debug\n"), "t.yaml:3:1: expected one YAML document");
}

TEST(Load, ErrorsNameTheFile) {
  TempFile file("video:\n  sampler:\n    kind: every_frame\n");
  std::string m = error_of([&] { load(file.path()); });
  EXPECT_STARTS_WITH(m, file.path() + ":3:11: video.sampler.kind: 'every_frame' is not one of: uniform, fps, interval");
}

TEST(Load, MissingFileIsAConfigErrorNamingIt) {
  std::string path = testing::TempDir() + "mustdrop_no_such_config.yaml";
  std::string m = error_of([&] { load(path); });
  EXPECT_STARTS_WITH(m, path + ":");
  EXPECT_CONTAINS(m, "not found");
}

TEST(Load, DirectoryIsAConfigError) {
  std::string m = error_of([&] { load(MUSTDROP_SOURCE_DIR); });
  EXPECT_STARTS_WITH(m, std::string(MUSTDROP_SOURCE_DIR) + ":");
}

// ---- --set overrides ----

TEST(Overrides, NestedScalar) {
  Config c = defaults_with({"video.sampler.frames=16", "log_level=debug", "video.live.transport=udp"});
  EXPECT_EQ(c.video.sampler.frames, 16);
  EXPECT_EQ(c.log_level, "debug");
  EXPECT_EQ(c.video.live.transport, "udp");
  EXPECT_EQ(c.video.sampler.kind, SamplerKind::kUniform);
}

TEST(Overrides, List) {
  Config c = defaults_with({"video.preprocess.mean=[0.5,0.25,0.125]"});
  EXPECT_EQ(c.video.preprocess.mean, (std::vector<double>{0.5, 0.25, 0.125}));
}

TEST(Overrides, LaterOverrideWins) {
  Config c = defaults_with({"video.sampler.frames=16", "video.sampler.frames=4"});
  EXPECT_EQ(c.video.sampler.frames, 4);
}

TEST(Overrides, AppliedAfterTheFile) {
  TempFile file("video:\n  sampler:\n    frames: 4\n    kind: fps\n");
  Config c = load(file.path(), {"video.sampler.frames=12"});
  EXPECT_EQ(c.video.sampler.frames, 12);
  EXPECT_EQ(c.video.sampler.kind, SamplerKind::kFps);  // from the file, untouched by --set
  Config s = load_string("log_level: warn\n", "t.yaml", {"log_level=error"});
  EXPECT_EQ(s.log_level, "error");
}

TEST(Overrides, WholeSectionMergesIntoIt) {
  Config c = defaults_with({"video.live.reconnect={max_attempts: 3, initial_delay_ms: 100}"});
  EXPECT_EQ(c.video.live.reconnect.max_attempts, 3);
  EXPECT_EQ(c.video.live.reconnect.initial_delay_ms, 100);
  EXPECT_EQ(c.video.live.reconnect.max_delay_ms, 30000);
}

TEST(Overrides, UnknownPathNamesArgumentKeyAndValidKeys) {
  std::string m = error_of([] { defaults_with({"video.sampler.frame=3"}); });
  EXPECT_STARTS_WITH(m, "--set video.sampler.frame=3: unknown key 'video.sampler.frame'");
  EXPECT_CONTAINS(m, "kind, frames, fps, interval_sec, seek_threshold_sec");
  EXPECT_CONTAINS(m, "did you mean 'frames'?");
  EXPECT_STARTS_WITH(error_of([] { defaults_with({"vidoe.sampler.frames=3"}); }),
                     "--set vidoe.sampler.frames=3: unknown key 'vidoe'");
  EXPECT_STARTS_WITH(error_of([] { defaults_with({"log_level.x=1"}); }),
                     "--set log_level.x=1: unknown key 'log_level.x'");
  EXPECT_STARTS_WITH(error_of([] { defaults_with({"video.live.reconnect={tries: 3}"}); }),
                     "--set video.live.reconnect={tries: 3}: unknown key 'video.live.reconnect.tries'");
}

TEST(Overrides, BadTypeAndRange) {
  EXPECT_STARTS_WITH(error_of([] { defaults_with({"video.sampler.frames=many"}); }),
                     "--set video.sampler.frames=many: video.sampler.frames: expected an integer, "
                     "found the string 'many'");
  EXPECT_STARTS_WITH(error_of([] { defaults_with({"video.sampler.frames=-1"}); }),
                     "--set video.sampler.frames=-1: video.sampler.frames: value -1 is out of range");
  EXPECT_STARTS_WITH(error_of([] { defaults_with({"video.preprocess.mean=[1,2]"}); }),
                     "--set video.preprocess.mean=[1,2]: video.preprocess.mean: expected a list of 3 numbers");
  EXPECT_STARTS_WITH(error_of([] { defaults_with({"video.sampler=8"}); }),
                     "--set video.sampler=8: video.sampler: expected a section");
  EXPECT_STARTS_WITH(error_of([] { defaults_with({"log_level="}); }),
                     "--set log_level=: log_level: expected a string, found an empty value");
}

TEST(Overrides, MissingEqualsOrKey) {
  EXPECT_STARTS_WITH(error_of([] { defaults_with({"video.sampler.frames"}); }),
                     "--set video.sampler.frames: expected KEY=VALUE");
  EXPECT_STARTS_WITH(error_of([] { defaults_with({"=3"}); }), "--set =3: ");
  EXPECT_STARTS_WITH(error_of([] { defaults_with({"video..frames=3"}); }), "--set video..frames=3: ");
}

TEST(Overrides, ErrorAfterAGoodFileStillNamesTheArgument) {
  TempFile file("log_level: info\n");
  std::string m = error_of([&] { load(file.path(), {"video.sampler.fps=0"}); });
  EXPECT_STARTS_WITH(m, "--set video.sampler.fps=0: video.sampler.fps: value 0 is out of range");
}

}  // namespace
}  // namespace mustdrop::config

namespace mustdrop::config {
namespace {

TEST(PipelineConfig, OwnKeysDecodeAndPrunerSectionsAreKeptAsWritten) {
  PipelineConfig p = load_pipeline_string(
      "name: t\nchain: [mustdrop.dual_attention]\nmustdrop:\n  dual_attention:\n    layers: [1, 3]\n", "p.yaml");
  EXPECT_EQ(p.name, "t");
  EXPECT_EQ(p.chain, std::vector<std::string>{"mustdrop.dual_attention"});
  Section s = p.section("mustdrop.dual_attention");
  EXPECT_EQ(s.path, "mustdrop.dual_attention");
  EXPECT_EQ(s.origin.name, "p.yaml");
  ASSERT_TRUE(s.node.is_map());
  const Node* layers = s.node.find("layers");
  ASSERT_NE(layers, nullptr);
  ASSERT_TRUE(layers->is_sequence());
  EXPECT_EQ(layers->items.size(), 2u);
  EXPECT_EQ(layers->mark.line, 4);  // 0-based: the fifth line
  EXPECT_TRUE(p.section("mustdrop.lsm").node.is_null()) << "absent: defaults";
  EXPECT_TRUE(p.section("fastv").node.is_null());
  EXPECT_TRUE(load_pipeline_string("mustdrop:\n", "p.yaml").section("mustdrop.lsm").node.is_null());
}

TEST(Config, ARecursiveAliasIsAnErrorNotACrash) {
  std::string e = error_of([] { load_string("log_level: &a [*a]\n", "t.yaml"); });
  EXPECT_STARTS_WITH(e, "t.yaml:");
  EXPECT_NE(e.find("recursive alias"), std::string::npos) << e;
  e = error_of([] { load_pipeline_string("name: t\nx: &a [*a]\n", "p.yaml"); });
  EXPECT_NE(e.find("recursive alias"), std::string::npos) << e;
  e = error_of([] { defaults_with({"log_level=&a [*a]"}); });
  EXPECT_NE(e.find("recursive alias"), std::string::npos) << e;
}

TEST(PipelineConfig, ErrorsInItsOwnKeysAndInTheShapeOfSectionsNameFileLineColumn) {
  auto err = [](const std::string& yaml) {
    return error_of([&] { load_pipeline_string(yaml, "p.yaml").section("mustdrop.lsm"); });
  };
  std::string e = err("chain: 3\n");
  EXPECT_STARTS_WITH(e, "p.yaml:1:8: chain: expected a list of strings, found the integer 3");
  e = err("name: a\nname: b\n");
  EXPECT_STARTS_WITH(e, "p.yaml:2:1: duplicate key 'name'");
  e = err("mustdrop: 3\n");
  EXPECT_STARTS_WITH(e, "p.yaml:1:11: mustdrop: expected a section (a map of keys), found the integer 3");
  e = err("mustdrop:\n  lsm: [1]\n");
  EXPECT_STARTS_WITH(e, "p.yaml:2:8: mustdrop.lsm: expected a section (a map of keys), found a list");
}

// A section decoded on its own, as a pruner decodes its options: strict, with the document's
// file:line:col, enums by name.
struct ProbeOptions {
  int layer = 2;                                // a layer
  SamplerKind kind = SamplerKind::kInterval;    // an enum field
  std::vector<int> layers = {1};                // a list

  template <class V>
  void visit(V& v) {
    v("layer", layer, range(0, 10));
    v("kind", kind, one_of({"interval", "fps"}));
    v("layers", layers, range(0, 10));
  }
};

TEST(Section, DecodesStrictlyWithMarksAndEnumsByName) {
  PipelineConfig p = load_pipeline_string("probe:\n  kind: fps\n  layers: [3, 4]\n", "p.yaml");
  ProbeOptions o = decode<ProbeOptions>(p.section("probe"));
  EXPECT_EQ(o.layer, 2);
  EXPECT_EQ(o.kind, SamplerKind::kFps);
  EXPECT_EQ(o.layers, (std::vector<int>{3, 4}));
  EXPECT_EQ(print_yaml(o), "layer: 2\nkind: fps\nlayers: [3, 4]\n");
  auto err = [](const std::string& yaml) {
    return error_of([&] { decode<ProbeOptions>(load_pipeline_string(yaml, "p.yaml").section("probe")); });
  };
  EXPECT_STARTS_WITH(err("probe:\n  kind: uniform\n"),
                     "p.yaml:2:9: probe.kind: 'uniform' is not one of: interval, fps");
  EXPECT_STARTS_WITH(err("probe:\n  layr: 3\n"),
                     "p.yaml:2:3: unknown key 'probe.layr' (valid keys under 'probe': layer, kind, layers; did you mean 'layer'?)");
  EXPECT_STARTS_WITH(err("probe:\n  layers: [1, 11]\n"), "p.yaml:2:15: probe.layers[1]: value 11 is out of range");
  SamplerKind k = SamplerKind::kUniform;
  EXPECT_TRUE(enum_from_name("interval", k));
  EXPECT_EQ(k, SamplerKind::kInterval);
  EXPECT_FALSE(enum_from_name("every", k));
}

// ---- configs/jobs/*.yaml ----

TEST(JobYaml, ShippedJobsLoadAndTheFullExampleDocumentsEveryJobKey) {
  const std::string dir = std::string(MUSTDROP_SOURCE_DIR) + "/configs/jobs/";
  for (const char* name : {"sample.yaml", "activitynet-qa.yaml"}) EXPECT_NO_THROW(load_job(dir + name)) << name;
  const std::string full = dir + "activitynet-qa.yaml";
  std::vector<std::string> in_file;
  collect_paths(YAML::LoadFile(full), "", in_file);
  std::set<std::string> present(in_file.begin(), in_file.end());
  for (const auto& key : job_key_paths()) {
    bool shared = false;  // sections of configs/default.yaml: the file shows the usual keys only
    for (const char* section : {"model.", "video.", "generation.", "memory.", "threads."}) {
      shared = shared || key.rfind(section, 0) == 0;
    }
    if (!shared) {
      EXPECT_TRUE(present.count(key)) << full << " lacks " << key;
    }
  }
  EXPECT_GT(expect_comment_on_every_value(full), 0);
}

TEST(JobYaml, OverridesAndErrorsNameTheKey) {
  JobConfig job = load_job_string("dataset:\n  split: test\nworkers: 2\n", "job.yaml", {"workers=3", "dataset.format=jsonl"});
  EXPECT_EQ(job.workers, 3);
  EXPECT_EQ(job.dataset.format, "jsonl");
  EXPECT_EQ(job.dataset.split, "test");
  try {
    load_job_string("scorers: [exact, bleu]\n", "job.yaml");
    FAIL() << "expected ConfigError";
  } catch (const ConfigError& e) {
    EXPECT_CONTAINS(std::string(e.what()), "job.yaml:1:");
    EXPECT_CONTAINS(std::string(e.what()), "scorers[1]");
  }
  EXPECT_THROW(load_job_string("replay: live\n", "job.yaml"), ConfigError);
  EXPECT_THROW(load_job_string("workers: 1\n", "job.yaml", {"dataset.colour=red"}), ConfigError);
}

// Key paths of a YAML file, list elements as "key[]" (each element's keys once).
void collect_list_paths(const YAML::Node& node, const std::string& prefix, std::set<std::string>& out) {
  for (const auto& kv : node) {
    std::string path = prefix.empty() ? kv.first.Scalar() : prefix + "." + kv.first.Scalar();
    if (kv.second.IsMap()) {
      collect_list_paths(kv.second, path, out);
    } else if (kv.second.IsSequence() && kv.second.size() > 0 && kv.second[0].IsMap()) {
      for (const auto& element : kv.second) collect_list_paths(element, path + "[]", out);
    } else {
      out.insert(path);
    }
  }
}

TEST(MonitorYaml, TheShippedFileLoadsAndShowsEveryMonitorKeyWithAComment) {
  const std::string path = std::string(MUSTDROP_SOURCE_DIR) + "/configs/monitor.yaml";
  MonitorConfig m = load_monitor(path);
  ASSERT_EQ(m.sources.size(), 2u);
  EXPECT_EQ(m.sources[0].id, "door");
  EXPECT_EQ(m.sources[1].sampler.kind, SamplerKind::kFps);
  EXPECT_EQ(m.sources[1].transport, "tcp");  // not in the file: the default
  ASSERT_EQ(m.questions.size(), 2u);
  EXPECT_EQ(m.questions[1].on, "scene_change");
  EXPECT_TRUE(m.questions[1].sources.empty());
  EXPECT_EQ(m.http.bind, "127.0.0.1");
  std::set<std::string> present;
  collect_list_paths(YAML::LoadFile(path), "", present);
  for (const auto& key : monitor_key_paths()) {
    bool shared = false;  // sections of configs/default.yaml: the file shows the usual keys only
    for (const char* section : {"model.", "video.", "generation.", "memory.", "threads."}) {
      shared = shared || key.rfind(section, 0) == 0;
    }
    if (!shared) {
      EXPECT_TRUE(present.count(key)) << path << " lacks " << key;
    }
  }
  EXPECT_GT(expect_comment_on_every_value(path), 0);
}

TEST(MonitorYaml, ListsOfSectionsDecodeStrictlyAndTakeOverrides) {
  const std::string yaml =
      "sources:\n"
      "  - id: a\n"
      "    url: a.mp4\n"
      "  - id: b\n"
      "    url: rtsp://h/b\n"
      "    sampler: {kind: fps, fps: 2}\n"
      "questions:\n"
      "  - id: q\n"
      "    text: hi\n"
      "    every_sec: 5\n";
  MonitorConfig m = load_monitor_string(yaml, "m.yaml", {"sources.1.sampler.fps=4", "sources.0.loop=true", "http.port=0"});
  EXPECT_EQ(m.sources[1].sampler.fps, 4);
  EXPECT_EQ(m.sources[1].sampler.kind, SamplerKind::kFps);
  EXPECT_TRUE(m.sources[0].loop);
  EXPECT_FALSE(m.sources[1].loop);
  EXPECT_EQ(m.sources[0].sampler.kind, SamplerKind::kInterval);  // each element starts from the defaults
  EXPECT_EQ(m.http.port, 0);
  // The printed form loads back to the same thing.
  MonitorConfig again = load_monitor_string(to_yaml(m), "printed");
  EXPECT_EQ(to_yaml(again), to_yaml(m));
  // The bracket form that messages print works as well.
  EXPECT_EQ(load_monitor_string(yaml, "m.yaml", {"sources[1].sampler.fps=5"}).sources[1].sampler.fps, 5);
  // A key another YAML reader would take for a boolean is quoted when printed.
  EXPECT_NE(to_yaml(m).find("\"on\":"), std::string::npos) << to_yaml(m);
  // A whole list replaced from --set.
  MonitorConfig one = load_monitor_string(yaml, "m.yaml", {"sources=[{id: c, url: c.mp4}]", "questions=[]"});
  ASSERT_EQ(one.sources.size(), 1u);
  EXPECT_EQ(one.sources[0].id, "c");

  std::string e = error_of([&] { load_monitor_string(yaml + "    evry_sec: 1\n", "m.yaml"); });
  EXPECT_NE(e.find("m.yaml:11:"), std::string::npos) << e;
  EXPECT_NE(e.find("questions[0].evry_sec"), std::string::npos) << e;
  EXPECT_NE(e.find("did you mean 'every_sec'"), std::string::npos) << e;
  e = error_of([&] { load_monitor_string("sources:\n  - id: a\n    url: x\n    sampler: {kind: uniform}\n", "m.yaml"); });
  EXPECT_NE(e.find("m.yaml:4:"), std::string::npos) << e;
  EXPECT_NE(e.find("sources[0].sampler.kind"), std::string::npos) << e;
  e = error_of([&] { load_monitor_string("sources:\n  - a.mp4\n", "m.yaml"); });
  EXPECT_NE(e.find("sources[0]: expected a section"), std::string::npos) << e;
  e = error_of([&] { load_monitor_string(yaml, "m.yaml", {"sources.2.url=x"}); });
  EXPECT_NE(e.find("expected an index 0..1"), std::string::npos) << e;
}

TEST(MonitorYaml, IdsTriggersAndSourcesAreChecked) {
  const std::string two = "sources:\n  - {id: a, url: a.mp4}\n  - {id: b, url: b.mp4}\n";
  EXPECT_NE(error_of([&] { load_monitor_string("http: {port: 0}\n", "m.yaml"); }).find("at least one source"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_monitor_string("sources:\n  - {id: a, url: x}\n  - {id: a, url: y}\n", "m.yaml"); })
                .find("'a' names two sources"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_monitor_string("sources:\n  - {id: 'a b', url: x}\n", "m.yaml"); }).find("sources[0].id"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_monitor_string("sources:\n  - {id: a}\n", "m.yaml"); }).find("sources[0].url"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_monitor_string(two + "questions:\n  - {id: q, text: hi}\n", "m.yaml"); }).find("no trigger"),
            std::string::npos);
  EXPECT_NE(error_of([&] {
              load_monitor_string(two + "questions:\n  - {id: q, text: hi, every_sec: 1, sources: [c]}\n", "m.yaml");
            }).find("unknown source 'c'"),
            std::string::npos);
  EXPECT_NE(error_of([&] { load_monitor_string(two + "questions:\n  - {id: q, text: hi, on: motion}\n", "m.yaml"); })
                .find("questions[0].on"),
            std::string::npos);
  EXPECT_NO_THROW(load_monitor_string(two + "questions:\n  - {id: q, text: hi, on: scene_change, sources: [b]}\n", "m.yaml"));
}

}  // namespace
}  // namespace mustdrop::config
