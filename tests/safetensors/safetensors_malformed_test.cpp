// Every kind of broken safetensors file or index gives an epwa::Error whose message names it.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "epwa/safetensors.hpp"
#include "st_test_util.hpp"

namespace epwa {
namespace {

using test::error_of;
using test::raw_file;
using ::testing::AllOf;
using ::testing::HasSubstr;

// Error message of parsing a hand-made file (header text + `data` bytes) from memory.
std::string parse_error(const std::string& header, size_t data, int64_t len_override = -1) {
  const auto bytes = raw_file(header, data, len_override);
  return error_of([&] { SafetensorsFile::from_bytes(bytes, "bad.safetensors"); });
}

std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  const std::string& offsets) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         ",\"data_offsets\":" + offsets + "}";
}

TEST(SafetensorsMalformed, ValidBaselineLoads) {
  // The cases below differ from this file in one point only.
  const auto bytes = raw_file(
      "{" + entry("a", "F32", "[2]", "[0,8]") + "," + entry("b", "F16", "[2,2]", "[8,16]") + "}",
      16);
  const auto f = SafetensorsFile::from_bytes(bytes);
  EXPECT_EQ(f.tensors().size(), 2u);
}

TEST(SafetensorsMalformed, FileErrorsNameThePath) {
  const auto dir = test::scratch_dir();
  const auto p = dir / "short.safetensors";
  test::write_file(p, std::vector<std::byte>(5));
  EXPECT_THAT(error_of([&] { SafetensorsFile f(p); }),
              AllOf(HasSubstr(p.string()), HasSubstr("shorter than the 8-byte")));
  const auto q = dir / "badjson.safetensors";
  test::write_file(q, raw_file("{\"a\":", 0));
  EXPECT_THAT(error_of([&] { SafetensorsFile f(q); }),
              AllOf(HasSubstr(q.string()), HasSubstr("not valid JSON")));
  EXPECT_THAT(error_of([&] { SafetensorsFile f(dir / "missing.safetensors"); }),
              HasSubstr("missing.safetensors"));
  EXPECT_THAT(error_of([&] { SafetensorsFile f(dir); }), HasSubstr("not a regular file"));
}

TEST(SafetensorsMalformed, HeaderLength) {
  EXPECT_THAT(parse_error("{}", 0, 3), HasSubstr("header length 3 runs past the end"));
  EXPECT_THAT(parse_error("{}", 0, int64_t{1} << 40), HasSubstr("is absurd"));
  EXPECT_EQ(parse_error("{}", 0), "<no error>");  // empty but valid
}

TEST(SafetensorsMalformed, HeaderJson) {
  EXPECT_THAT(parse_error("{\"a\":{", 0), HasSubstr("bad.safetensors: header is not valid JSON"));
  EXPECT_THAT(parse_error("\xff\xfe", 0), HasSubstr("not valid JSON"));
  EXPECT_THAT(parse_error("[1,2]", 0), HasSubstr("header is not a JSON object"));
  EXPECT_THAT(parse_error("42", 0), HasSubstr("header is not a JSON object"));
  EXPECT_THAT(parse_error(std::string(5000, '[') + std::string(5000, ']'), 0),
              HasSubstr("nested too deeply"));
  EXPECT_THAT(parse_error("{\"a\":[1,2]}", 0), HasSubstr("tensor 'a': header entry is not"));
}

TEST(SafetensorsMalformed, Metadata) {
  EXPECT_THAT(parse_error(R"({"__metadata__":{"format":3}})", 0),
              HasSubstr("'__metadata__' value of 'format' is not a string"));
  EXPECT_THAT(parse_error(R"({"__metadata__":"pt"})", 0), HasSubstr("'__metadata__' is not"));
}

TEST(SafetensorsMalformed, MissingFields) {
  EXPECT_THAT(parse_error(R"({"w":{"shape":[2],"data_offsets":[0,8]}})", 8),
              HasSubstr("tensor 'w': header entry has no 'dtype'"));
  EXPECT_THAT(parse_error(R"({"w":{"dtype":"F32","data_offsets":[0,8]}})", 8),
              HasSubstr("tensor 'w': header entry has no 'shape'"));
  EXPECT_THAT(parse_error(R"({"w":{"dtype":"F32","shape":[2]}})", 8),
              HasSubstr("tensor 'w': header entry has no 'data_offsets'"));
  EXPECT_THAT(parse_error(R"({"w":{"dtype":4,"shape":[2],"data_offsets":[0,8]}})", 8),
              HasSubstr("'dtype' is not a string"));
  EXPECT_THAT(parse_error(R"({"w":{"dtype":"F32","shape":2,"data_offsets":[0,8]}})", 8),
              HasSubstr("'shape' is not an array"));
}

TEST(SafetensorsMalformed, Dtypes) {
  EXPECT_THAT(parse_error("{" + entry("x", "F64", "[1]", "[0,8]") + "}", 8),
              HasSubstr("unsupported dtype F64 for tensor 'x'"));
  for (const char* dt : {"I8", "I32", "BOOL", "I64", "F8_E5M2"})
    EXPECT_THAT(parse_error("{" + entry("x", dt, "[1]", "[0,1]") + "}", 1),
                HasSubstr(std::string("unsupported dtype ") + dt + " for tensor 'x'"));
  EXPECT_THAT(parse_error("{" + entry("x", "Q4", "[1]", "[0,1]") + "}", 1),
              HasSubstr("unknown dtype 'Q4' for tensor 'x'"));
}

// U8 tensors (GPT-OSS's MXFP4 blocks and scales) and F8_E4M3 ones (FP8 checkpoints' weights) are
// kept as bytes with their dtype, apart from the weights.
TEST(SafetensorsMalformed, U8AndF8AreBytes) {
  for (const char* dt : {"U8", "F8_E4M3"}) {
    const std::string header = "{" + entry("x", dt, "[2,3]", "[0,6]") + "}";
    std::string file(8, '\0');
    const uint64_t n = header.size();
    for (int i = 0; i < 8; ++i) file[i] = static_cast<char>(n >> (8 * i));
    file += header + "abcdef";
    const auto bytes = std::as_bytes(std::span(file));
    const epwa::SafetensorsFile f = epwa::SafetensorsFile::from_bytes(bytes);
    EXPECT_EQ(f.find("x"), nullptr);
    ASSERT_EQ(f.byte_tensors().size(), 1u);
    EXPECT_EQ(f.byte_tensors()[0].dtype, dt);
    EXPECT_EQ(f.byte_tensors()[0].shape, (std::vector<int64_t>{2, 3}));
    EXPECT_EQ(static_cast<char>(f.byte_tensors()[0].data[5]), 'f');
  }
}

TEST(SafetensorsMalformed, ShapeValues) {
  EXPECT_THAT(parse_error("{" + entry("w", "F32", "[-2]", "[0,8]") + "}", 8),
              HasSubstr("tensor 'w': shape value -2 is not a non-negative integer"));
  EXPECT_THAT(parse_error("{" + entry("w", "F32", "[2.0]", "[0,8]") + "}", 8),
              HasSubstr("shape value 2.0 is not a non-negative integer"));
  EXPECT_THAT(parse_error("{" + entry("w", "F32", "[\"2\"]", "[0,8]") + "}", 8),
              HasSubstr("is not a non-negative integer"));
  EXPECT_THAT(parse_error("{" + entry("w", "F32", "[18446744073709551615]", "[0,8]") + "}", 8),
              HasSubstr("is not a non-negative integer"));
  EXPECT_THAT(parse_error("{" + entry("w", "F32", "[4294967296,4294967296,4]", "[0,8]") + "}", 8),
              HasSubstr("tensor 'w': element count of shape [4294967296,4294967296,4] overflows"));
  EXPECT_THAT(parse_error("{" + entry("w", "F32", "[4611686018427387904]", "[0,8]") + "}", 8),
              HasSubstr("byte size of shape"));
}

TEST(SafetensorsMalformed, Offsets) {
  EXPECT_THAT(parse_error("{" + entry("w", "F32", "[2]", "[0]") + "}", 8),
              HasSubstr("'data_offsets' is not an array of 2 integers"));
  EXPECT_THAT(parse_error("{" + entry("w", "F32", "[2]", "[-8,0]") + "}", 8),
              HasSubstr("are not non-negative integers"));
  EXPECT_THAT(parse_error("{" + entry("w", "F32", "[0]", "[8,0]") + "}", 8),
              HasSubstr("end before they begin"));
  EXPECT_THAT(parse_error("{" + entry("w", "F32", "[2]", "[8,16]") + "}", 8),
              HasSubstr("tensor 'w': 'data_offsets' [8,16] lie outside the file"));
  EXPECT_THAT(parse_error("{" + entry("w", "F32", "[2]", "[0,12]") + "}", 12),
              HasSubstr("tensor 'w': 'data_offsets' span 12 bytes but F32 shape [2] needs 8"));
  // Not contiguous: first tensor not at 0, a gap, an overlap, trailing data.
  EXPECT_THAT(parse_error("{" + entry("w", "F32", "[2]", "[4,12]") + "}", 12),
              HasSubstr("tensor 'w' starts at data offset 4 but the previous tensor ends at 0"));
  EXPECT_THAT(parse_error("{" + entry("a", "F32", "[1]", "[0,4]") + "," +
                              entry("b", "F32", "[1]", "[8,12]") + "}",
                          12),
              HasSubstr("tensor 'b' starts at data offset 8 but the previous tensor ends at 4"));
  EXPECT_THAT(parse_error("{" + entry("a", "F32", "[2]", "[0,8]") + "," +
                              entry("b", "F32", "[2]", "[4,12]") + "}",
                          12),
              HasSubstr("tensor 'b' starts at data offset 4 inside the previous tensor"));
  EXPECT_THAT(parse_error("{" + entry("w", "F32", "[2]", "[0,8]") + "}", 9),
              HasSubstr("1 bytes after the last tensor"));
  // Order in the header does not matter, only the offsets.
  EXPECT_EQ(parse_error("{" + entry("b", "F32", "[1]", "[4,8]") + "," +
                            entry("a", "F32", "[1]", "[0,4]") + "}",
                        8),
            "<no error>");
}

class SafetensorsIndex : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::scratch_dir();
    const std::vector<float> v{1, 2};
    write_safetensors(
        dir_ / "s1.safetensors",
        std::vector<TensorToWrite>{{"a", DType::F32, {2}, std::as_bytes(std::span(v))},
                                   {"b", DType::F32, {2}, std::as_bytes(std::span(v))}});
    write_safetensors(
        dir_ / "s2.safetensors",
        std::vector<TensorToWrite>{{"c", DType::F32, {2}, std::as_bytes(std::span(v))},
                                   {"b", DType::F32, {2}, std::as_bytes(std::span(v))}});
  }
  std::string open_error(const std::string& index_text) {
    test::write_text(dir_ / "model.safetensors.index.json", index_text);
    return error_of([&] { SafetensorsModel m(dir_); });
  }
  std::filesystem::path dir_;
};

TEST_F(SafetensorsIndex, Errors) {
  EXPECT_THAT(open_error(R"({"weight_map":{"a":"s1.safetensors","x":"s1.safetensors"}})"),
              AllOf(HasSubstr("model.safetensors.index.json: tensor 'x' is missing from shard"),
                    HasSubstr("s1.safetensors")));
  EXPECT_THAT(open_error(R"({"weight_map":{"a":"s1.safetensors","c":"s2.safetensors"}})"),
              AllOf(HasSubstr("tensor 'b' appears in both"), HasSubstr("s1.safetensors"),
                    HasSubstr("s2.safetensors")));
  EXPECT_THAT(open_error(R"({"weight_map":{"a":"s3.safetensors"}})"), HasSubstr("s3.safetensors"));
  EXPECT_THAT(open_error(R"({"weight_map":{"a":"../s1.safetensors"}})"),
              HasSubstr("shard name '../s1.safetensors' is not a file name inside the folder"));
  EXPECT_THAT(open_error(R"({"weight_map":{"a":"/etc/passwd"}})"), HasSubstr("shard name"));
  EXPECT_THAT(open_error(R"({"weight_map":{"a":1}})"),
              HasSubstr("'weight_map' entry of 'a' is not a string"));
  EXPECT_THAT(open_error(R"({"metadata":{}})"), HasSubstr("index has no 'weight_map' object"));
  EXPECT_THAT(open_error(R"({"weight_map":{}})"), HasSubstr("'weight_map' is empty"));
  EXPECT_THAT(open_error("{"), HasSubstr("model.safetensors.index.json: not valid JSON"));
  EXPECT_THAT(open_error("[]"), HasSubstr("index is not a JSON object"));
}

TEST_F(SafetensorsIndex, FolderResolution) {
  // Two shards and no index: ambiguous.
  EXPECT_THAT(error_of([&] { SafetensorsModel m(dir_); }), HasSubstr("several .safetensors files"));
  const auto empty = dir_ / "empty";
  std::filesystem::create_directories(empty);
  EXPECT_THAT(error_of([&] { SafetensorsModel m(empty); }), HasSubstr("no .safetensors file"));
  EXPECT_THAT(error_of([&] { SafetensorsModel m(dir_ / "nothing"); }),
              HasSubstr("no such file or folder"));
  // An index that names a subset of a shard's tensors is fine; the shard brings all of them.
  test::write_text(dir_ / "model.safetensors.index.json",
                   R"({"weight_map":{"a":"s1.safetensors"}})");
  SafetensorsModel m(dir_);
  EXPECT_NE(m.find("b"), nullptr);
  EXPECT_EQ(m.find("c"), nullptr);
}

}  // namespace
}  // namespace epwa
