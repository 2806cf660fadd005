// Safetensors: write -> read roundtrips, the on-disk layout checked byte by byte, a hand-built
// file read back, and malformed files each rejected with the path and what is wrong.
#include "model/safetensors.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "support/test_support.h"

namespace mustdrop::model {
namespace {

namespace fs = std::filesystem;

// A file name under the test temp dir, unique to the running test.
std::string temp_path(const std::string& suffix = ".safetensors") {
  return test::temp_dir() + "/st_" + testing::UnitTest::GetInstance()->current_test_info()->name() + suffix;
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

// A safetensors file assembled by hand: u64 LE length, `header` verbatim, then `data`.
std::string raw_safetensors(const std::string& header, const std::string& data = "") {
  std::string out;
  uint64_t n = header.size();
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<char>((n >> (8 * i)) & 0xff));
  return out + header + data;
}

// The message of the ModelError opening `path` throws; checks it starts with the path.
std::string open_error(const std::string& path) {
  try {
    SafetensorsFile f(path);
  } catch (const ModelError& e) {
    std::string message = e.what();
    EXPECT_EQ(message.rfind(path + ": ", 0), 0u) << "message does not start with the path: " << message;
    return message;
  }
  ADD_FAILURE() << "expected a ModelError opening " << path;
  return "";
}

// Writes `bytes` as a file and returns the ModelError message opening it.
std::string error_for_bytes(const std::string& bytes) {
  std::string path = temp_path();
  write_file(path, bytes);
  return open_error(path);
}

// Evaluates `s` once (it may parse a file).
#define EXPECT_CONTAINS(s, part)                                                 \
  do {                                                                           \
    const std::string message_ = (s);                                            \
    EXPECT_NE(message_.find(part), std::string::npos) << "message: " << message_; \
  } while (0)

std::vector<uint8_t> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<uint8_t> out(n);
  for (auto& b : out) b = static_cast<uint8_t>(rng() & 0xff);
  return out;
}

TensorData make_tensor(const std::string& name, DType dtype, std::vector<int64_t> shape, uint32_t seed) {
  size_t numel = 1;
  for (int64_t d : shape) numel *= static_cast<size_t>(d);
  TensorData t;
  t.name = name;
  t.dtype = dtype;
  t.shape = std::move(shape);
  t.bytes = random_bytes(numel * dtype_size(dtype), seed);
  return t;
}

TEST(SafetensorsDType, SizesAndNamesFollowTheFormat) {
  const std::vector<std::tuple<DType, size_t, std::string>> cases = {
      {DType::kF64, 8, "F64"}, {DType::kF32, 4, "F32"}, {DType::kF16, 2, "F16"}, {DType::kBF16, 2, "BF16"},
      {DType::kI64, 8, "I64"}, {DType::kI32, 4, "I32"}, {DType::kI16, 2, "I16"}, {DType::kI8, 1, "I8"},
      {DType::kU8, 1, "U8"},   {DType::kBool, 1, "BOOL"}};
  for (const auto& [dtype, size, name] : cases) {
    EXPECT_EQ(dtype_size(dtype), size) << name;
    EXPECT_EQ(std::string(dtype_name(dtype)), name);
  }
}

TEST(SafetensorsRoundtrip, EveryDtypeShapeAndMetadataComesBackByteForByte) {
  const std::vector<TensorData> tensors = {
      make_tensor("model.embed.weight", DType::kF32, {3, 5}, 1),
      make_tensor("bf16", DType::kBF16, {7}, 2),
      make_tensor("scalar", DType::kI64, {}, 3),
      make_tensor("empty", DType::kU8, {0, 4}, 4),
      make_tensor("half", DType::kF16, {1, 2, 3}, 5),
      make_tensor("double", DType::kF64, {2}, 6),
      make_tensor("i32", DType::kI32, {3}, 7),
      make_tensor("i16", DType::kI16, {5}, 8),
      make_tensor("i8", DType::kI8, {9}, 9),
      make_tensor("mask", DType::kBool, {2, 2}, 10),
      make_tensor("a_after_z_in_order", DType::kF32, {1}, 11),
  };
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "é ünïcode"}};
  const std::string path = temp_path();
  write_safetensors(path, tensors, metadata);
  EXPECT_FALSE(fs::exists(path + ".tmp"));

  SafetensorsFile f(path);
  EXPECT_EQ(f.path(), path);
  EXPECT_EQ(f.metadata(), metadata);
  ASSERT_EQ(f.tensors().size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    const TensorData& want = tensors[i];
    const TensorView& got = f.tensors()[i];
    SCOPED_TRACE(want.name);
    EXPECT_EQ(got.name, want.name);  // header order is the written order
    EXPECT_EQ(got.dtype, want.dtype);
    EXPECT_EQ(got.shape, want.shape);
    EXPECT_EQ(got.n_bytes, want.bytes.size());
    EXPECT_EQ(std::vector<uint8_t>(got.data, got.data + got.n_bytes), want.bytes);
    EXPECT_EQ(f.find(want.name), &got);
  }
  EXPECT_EQ(f.find("scalar")->numel(), 1);
  EXPECT_EQ(f.find("empty")->numel(), 0);
  EXPECT_EQ(f.find("half")->numel(), 6);
  EXPECT_EQ(f.find("missing"), nullptr);
}

TEST(SafetensorsRoundtrip, FloatValuesReadBackExactly) {
  std::vector<float> values;
  for (int i = 0; i < 24; ++i) values.push_back(static_cast<float>(i) * 0.25f - 3.0f);
  TensorData t;
  t.name = "w";
  t.dtype = DType::kF32;
  t.shape = {4, 6};
  t.bytes.resize(values.size() * sizeof(float));
  std::memcpy(t.bytes.data(), values.data(), t.bytes.size());
  const std::string path = temp_path();
  write_safetensors(path, {make_tensor("pad", DType::kU8, {3}, 1), t});

  SafetensorsFile f(path);
  const TensorView* w = f.find("w");
  ASSERT_NE(w, nullptr);
  ASSERT_EQ(w->n_bytes, 24 * sizeof(float));
  std::vector<float> got(24);
  std::memcpy(got.data(), w->data, w->n_bytes);  // the data may be unaligned
  for (int i = 0; i < 24; ++i) EXPECT_EQ(got[i], static_cast<float>(i) * 0.25f - 3.0f) << i;
}

TEST(SafetensorsRoundtrip, OverwritesAnExistingFileAndEmptyListWorks) {
  const std::string path = temp_path();
  write_safetensors(path, {make_tensor("old", DType::kF32, {100}, 1)});
  write_safetensors(path, {});
  SafetensorsFile f(path);
  EXPECT_TRUE(f.tensors().empty());
  EXPECT_TRUE(f.metadata().empty());
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(SafetensorsLayout, HeaderIsSpacePaddedToEightBytesWithConsecutiveOffsets) {
  // Names of every length mod 8, so each padding amount occurs.
  for (size_t len = 1; len <= 8; ++len) {
    SCOPED_TRACE("name length " + std::to_string(len));
    const std::vector<TensorData> tensors = {make_tensor(std::string(len, 'n'), DType::kF16, {3}, 1),
                                             make_tensor("b", DType::kF32, {2, 2}, 2),
                                             make_tensor("c", DType::kI8, {0}, 3),
                                             make_tensor("d", DType::kU8, {5}, 4)};
    const std::string path = temp_path();
    write_safetensors(path, tensors, {{"k", "v"}});
    const std::string bytes = test::read_file(path);
    ASSERT_GE(bytes.size(), 8u);
    uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | static_cast<uint8_t>(bytes[i]);
    EXPECT_EQ(n % 8, 0u);
    ASSERT_LE(8 + n, bytes.size());
    const std::string header = bytes.substr(8, n);
    const size_t json_end = header.find_last_not_of(' ') + 1;
    EXPECT_LT(n - json_end, 8u) << "more padding than needed";
    EXPECT_EQ(header[json_end - 1], '}');

    const auto j = nlohmann::ordered_json::parse(header);
    std::vector<std::string> keys;
    for (const auto& [key, value] : j.items()) keys.push_back(key);
    EXPECT_EQ(keys, (std::vector<std::string>{"__metadata__", std::string(len, 'n'), "b", "c", "d"}));
    uint64_t expected_begin = 0;
    for (const TensorData& t : tensors) {
      const auto& offsets = j.at(t.name).at("data_offsets");
      EXPECT_EQ(offsets[0].get<uint64_t>(), expected_begin) << t.name;
      EXPECT_EQ(offsets[1].get<uint64_t>(), expected_begin + t.bytes.size()) << t.name;
      EXPECT_EQ(std::string(bytes.data() + 8 + n + expected_begin, t.bytes.size()),
                std::string(t.bytes.begin(), t.bytes.end()))
          << t.name;
      expected_begin += t.bytes.size();
    }
    EXPECT_EQ(bytes.size(), 8 + n + expected_begin);
  }
}

TEST(SafetensorsRead, HandBuiltFileIsReadIndependentlyOfTheWriter) {
  // Unpadded header, keys out of alphabetical order, tensors not in data order, a gap.
  const float a[2] = {1.5f, -2.0f};
  const int16_t b[3] = {7, -8, 300};
  std::string data(4, '\xee');  // gap
  data.append(reinterpret_cast<const char*>(b), sizeof b);
  data.append(reinterpret_cast<const char*>(a), sizeof a);
  const std::string header =
      R"({"z":{"dtype":"I16","shape":[3],"data_offsets":[4,10]},)"
      R"("__metadata__":{"format":"pt"},)"
      R"("a":{"dtype":"F32","shape":[2,1],"data_offsets":[10,18]}})";
  const std::string path = temp_path();
  write_file(path, raw_safetensors(header, data));

  SafetensorsFile f(path);
  ASSERT_EQ(f.tensors().size(), 2u);
  EXPECT_EQ(f.tensors()[0].name, "z");
  EXPECT_EQ(f.tensors()[1].name, "a");
  EXPECT_EQ(f.metadata().at("format"), "pt");
  const TensorView* z = f.find("z");
  ASSERT_NE(z, nullptr);
  EXPECT_EQ(z->dtype, DType::kI16);
  int16_t zv[3];
  std::memcpy(zv, z->data, sizeof zv);
  EXPECT_EQ(zv[0], 7);
  EXPECT_EQ(zv[1], -8);
  EXPECT_EQ(zv[2], 300);
  const TensorView* av = f.find("a");
  ASSERT_NE(av, nullptr);
  EXPECT_EQ(av->shape, (std::vector<int64_t>{2, 1}));
  float got[2];
  std::memcpy(got, av->data, sizeof got);
  EXPECT_EQ(got[0], 1.5f);
  EXPECT_EQ(got[1], -2.0f);
}

TEST(SafetensorsMalformed, MissingFile) {
  const std::string path = temp_path();
  EXPECT_CONTAINS(open_error(path), "cannot open");
}

TEST(SafetensorsMalformed, EmptyFile) { EXPECT_CONTAINS(error_for_bytes(""), "empty file"); }

TEST(SafetensorsMalformed, FiveByteFile) {
  EXPECT_CONTAINS(error_for_bytes("\x01\x02\x03\x04\x05"), "file is 5 bytes, shorter than the 8-byte header length");
}

TEST(SafetensorsMalformed, HeaderLengthPastEndOfFile) {
  std::string bytes = raw_safetensors(std::string(1016, ' '));
  const uint64_t n = 123456789;
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((n >> (8 * i)) & 0xff);
  ASSERT_EQ(bytes.size(), 1024u);
  EXPECT_CONTAINS(error_for_bytes(bytes), ": header length 123456789 runs past the end of the file (1024 bytes)");
}

TEST(SafetensorsMalformed, HeaderNotJson) {
  EXPECT_CONTAINS(error_for_bytes(raw_safetensors(R"({"a": {"dtype": "F32",)")), "header is not valid JSON");
}

TEST(SafetensorsMalformed, HeaderIsAnArray) {
  EXPECT_CONTAINS(error_for_bytes(raw_safetensors("[1, 2, 3]")), "header must be a JSON object, found an array");
}

TEST(SafetensorsMalformed, UnknownDtype) {
  const std::string m =
      error_for_bytes(raw_safetensors(R"({"w":{"dtype":"F8_E4M3","shape":[4],"data_offsets":[0,4]}})", "abcd"));
  EXPECT_CONTAINS(m, "tensor 'w': unknown dtype 'F8_E4M3'");
}

TEST(SafetensorsMalformed, TruncatedFileHasOffsetsPastTheDataArea) {
  const std::string path = temp_path();
  write_safetensors(path, {make_tensor("w", DType::kF32, {512}, 1), make_tensor("x", DType::kF32, {512}, 2)});
  const uint64_t full = fs::file_size(path);
  fs::resize_file(path, full - 2048);
  EXPECT_CONTAINS(open_error(path), "tensor 'x': data ends at byte 4096 but the data area holds 2048 (truncated file?)");
}

TEST(SafetensorsMalformed, OffsetsDoNotMatchShape) {
  const std::string m = error_for_bytes(raw_safetensors(
      R"({"a.weight":{"dtype":"F32","shape":[5,6],"data_offsets":[0,100]}})", std::string(120, '\0')));
  EXPECT_CONTAINS(m, "tensor 'a.weight': data_offsets [0, 100] do not match shape [5, 6] x F32 (120 bytes)");
}

TEST(SafetensorsMalformed, OverlappingTensors) {
  const std::string m = error_for_bytes(raw_safetensors(
      R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"I32","shape":[2],"data_offsets":[4,12]}})",
      std::string(12, '\0')));
  EXPECT_CONTAINS(m, "tensor 'b': data_offsets [4, 12] overlap tensor 'a' [0, 8]");
}

TEST(SafetensorsMalformed, NegativeDimension) {
  const std::string m = error_for_bytes(
      raw_safetensors(R"({"a":{"dtype":"F32","shape":[2,-1],"data_offsets":[0,0]}})"));
  EXPECT_CONTAINS(m, "tensor 'a': shape [2, -1] has a negative dimension");
}

TEST(SafetensorsMalformed, NonIntegerShapeEntry) {
  const std::string m = error_for_bytes(
      raw_safetensors(R"({"a":{"dtype":"F32","shape":[2,1.5],"data_offsets":[0,12]}})", std::string(12, '\0')));
  EXPECT_CONTAINS(m, "tensor 'a': shape entry 1 is not an integer");
}

TEST(SafetensorsMalformed, OffsetsEndBeforeTheyBegin) {
  const std::string m = error_for_bytes(
      raw_safetensors(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[8,4]}})", std::string(8, '\0')));
  EXPECT_CONTAINS(m, "tensor 'a': data_offsets [8, 4] end before they begin");
}

TEST(SafetensorsMalformed, MissingDataOffsets) {
  const std::string m = error_for_bytes(raw_safetensors(R"({"a":{"dtype":"U8","shape":[0]}})"));
  EXPECT_CONTAINS(m, "tensor 'a': missing \"data_offsets\"");
}

TEST(SafetensorsMalformed, MetadataValueNotAString) {
  const std::string m = error_for_bytes(raw_safetensors(R"({"__metadata__":{"step":3}})"));
  EXPECT_CONTAINS(m, "__metadata__ entry 'step' must be a string");
}

TEST(SafetensorsWrite, ByteCountMismatchIsAnInternalErrorAndWritesNothing) {
  const std::string path = temp_path();
  TensorData bad = make_tensor("w", DType::kF32, {2, 3}, 1);
  bad.bytes.pop_back();
  try {
    write_safetensors(path, {bad});
    ADD_FAILURE() << "expected an InternalError";
  } catch (const InternalError& e) {
    EXPECT_CONTAINS(std::string(e.what()), path);
    EXPECT_CONTAINS(std::string(e.what()), "tensor 'w'");
  }
  EXPECT_FALSE(fs::exists(path));
  EXPECT_FALSE(fs::exists(path + ".tmp"));
}

TEST(SafetensorsWrite, UnwritableDirectoryIsAModelErrorNamingTheFile) {
  const std::string path = test::temp_dir() + "/no_such_dir/out.safetensors";
  try {
    write_safetensors(path, {make_tensor("w", DType::kF32, {2}, 1)});
    ADD_FAILURE() << "expected a ModelError";
  } catch (const ModelError& e) {
    EXPECT_EQ(std::string(e.what()).rfind(path + ": ", 0), 0u) << e.what();
  }
}

}  // namespace
}  // namespace mustdrop::model
