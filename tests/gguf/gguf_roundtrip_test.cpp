// GgufWriter -> GgufFile round trips: every metadata type, nested arrays, tensors of every DType,
// alignments, typed getters, streaming producers; and the writer's bytes against a hand-encoded
// file.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>

#include "epwa/gguf.hpp"
#include "epwa/platform.hpp"
#include "gguf_bytes.hpp"

namespace epwa {
namespace {

using ::testing::HasSubstr;
namespace fs = std::filesystem;

fs::path temp_path(const std::string& stem) {
  return fs::temp_directory_path() /
         ("epwa_gguf_" + stem + "_" + std::to_string(::getpid()) + ".gguf");
}

struct TempFile {
  fs::path path;
  explicit TempFile(const std::string& stem) : path(temp_path(stem)) {}
  ~TempFile() {
    std::error_code ec;
    fs::remove(path, ec);
  }
};

std::vector<std::byte> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> v(n);
  for (auto& b : v) b = static_cast<std::byte>(rng() & 0xff);
  return v;
}

std::vector<std::byte> read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::vector<char> c((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::byte> v(c.size());
  std::memcpy(v.data(), c.data(), c.size());
  return v;
}

template <class F>
std::string error_of(F&& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "<no error>";
}

TEST(GgufTypes, GgmlTypeIds) {
  EXPECT_EQ(ggml_type_of(DType::F32), 0u);
  EXPECT_EQ(ggml_type_of(DType::F16), 1u);
  EXPECT_EQ(ggml_type_of(DType::Q4_0), 2u);
  EXPECT_EQ(ggml_type_of(DType::Q4_1), 3u);
  EXPECT_EQ(ggml_type_of(DType::Q5_0), 6u);
  EXPECT_EQ(ggml_type_of(DType::Q5_1), 7u);
  EXPECT_EQ(ggml_type_of(DType::Q8_0), 8u);
  EXPECT_EQ(ggml_type_of(DType::Q4_K), 12u);
  EXPECT_EQ(ggml_type_of(DType::Q5_K), 13u);
  EXPECT_EQ(ggml_type_of(DType::Q6_K), 14u);
  EXPECT_EQ(ggml_type_of(DType::BF16), 30u);
  for (uint32_t id = 0; id < 64; ++id) {
    const auto d = dtype_from_ggml_type(id);
    if (d) {
      EXPECT_EQ(ggml_type_of(*d), id);
    }
  }
  EXPECT_FALSE(dtype_from_ggml_type(9).has_value());   // Q8_1
  EXPECT_FALSE(dtype_from_ggml_type(10).has_value());  // Q2_K
  EXPECT_FALSE(dtype_from_ggml_type(15).has_value());  // Q8_K
}

GgufArray nested_arrays() {
  std::vector<GgufArray> inner{
      GgufArray(std::vector<int32_t>{1, -2, 3}), GgufArray(std::vector<std::string>{"x", ""}),
      GgufArray(std::vector<GgufArray>{GgufArray(std::vector<double>{0.5})}),
      GgufArray(std::vector<float>{})};
  return GgufArray(std::move(inner));
}

std::vector<GgufKV> every_type() {
  return {
      {"t.u8", uint8_t{200}},
      {"t.i8", int8_t{-5}},
      {"t.u16", uint16_t{65000}},
      {"t.i16", int16_t{-32000}},
      {"t.u32", uint32_t{4000000000u}},
      {"t.i32", int32_t{-2000000000}},
      {"t.f32", 1.5e-5f},
      {"t.bool_true", true},
      {"t.bool_false", false},
      {"t.string", std::string("h\xc3\xa9llo\0world", 12)},
      {"t.empty_string", std::string()},
      {"t.u64", uint64_t{0xfedcba9876543210ull}},
      {"t.i64", int64_t{std::numeric_limits<int64_t>::min()}},
      {"t.f64", 3.141592653589793},
      {"a.u8", GgufArray(std::vector<uint8_t>{0, 1, 255})},
      {"a.i8", GgufArray(std::vector<int8_t>{-128, 127})},
      {"a.u16", GgufArray(std::vector<uint16_t>{1, 65535})},
      {"a.i16", GgufArray(std::vector<int16_t>{-1, 2})},
      {"a.u32", GgufArray(std::vector<uint32_t>{7, 8, 9})},
      {"a.i32", GgufArray(std::vector<int32_t>{-7})},
      {"a.f32", GgufArray(std::vector<float>{-0.0f, 1e30f, -2.5f})},
      {"a.bool", GgufArray(std::vector<bool>{true, false, true})},
      {"a.string", GgufArray(std::vector<std::string>{"<s>", "</s>", "\xe2\x96\x81the", ""})},
      {"a.u64", GgufArray(std::vector<uint64_t>{1ull << 63})},
      {"a.i64", GgufArray(std::vector<int64_t>{-1, 1})},
      {"a.f64", GgufArray(std::vector<double>{1e-300})},
      {"a.empty", GgufArray(std::vector<uint32_t>{})},
      {"a.nested", nested_arrays()},
  };
}

TEST(GgufRoundTrip, EveryMetadataType) {
  TempFile tmp("meta");
  GgufWriter w;
  const auto kvs = every_type();
  for (const auto& kv : kvs) w.set(kv.key, kv.value);
  w.write(tmp.path);

  GgufFile f(tmp.path);
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.alignment(), 32u);
  ASSERT_EQ(f.metadata().size(), kvs.size());
  for (size_t i = 0; i < kvs.size(); ++i) {
    EXPECT_EQ(f.metadata()[i].key, kvs[i].key);
    EXPECT_EQ(gguf_type_of(f.metadata()[i].value), gguf_type_of(kvs[i].value)) << kvs[i].key;
    EXPECT_TRUE(f.metadata()[i].value == kvs[i].value) << kvs[i].key;
  }
  EXPECT_EQ(f.get_string("t.string").size(), 12u);
  EXPECT_EQ(f.get_array("a.string").strings()[2], "\xe2\x96\x81the");
  const auto& nested = f.get_array("a.nested");
  EXPECT_EQ(nested.type(), GgufType::Array);
  ASSERT_EQ(nested.size(), 4u);
  const auto& level2 = nested.as<GgufArray>()[2].as<GgufArray>();
  EXPECT_EQ(level2[0].as<double>(), std::vector<double>{0.5});
  EXPECT_EQ(nested.as<GgufArray>()[3].type(), GgufType::F32);
  EXPECT_TRUE(f.tensors().empty());
}

TEST(GgufRoundTrip, SettingAKeyAgainReplacesItInPlace) {
  TempFile tmp("replace");
  GgufWriter w;
  w.set_u32("a", 1);
  w.set_string("b", "x");
  w.set_f32("a", 2.0f);
  w.write(tmp.path);
  GgufFile f(tmp.path);
  ASSERT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.metadata()[0].key, "a");
  EXPECT_EQ(f.get_f32("a"), 2.0f);
}

TEST(GgufGetters, ConvertCheckedAndNameTheKey) {
  TempFile tmp("getters");
  GgufWriter w;
  w.set_u32("llama.block_count", 32);
  w.set_u64("llama.context_length", 32768);
  w.set("big", GgufValue{uint64_t{1} << 40});
  w.set("neg", GgufValue{int32_t{-3}});
  w.set("f64", GgufValue{0.25});
  w.set_string("general.architecture", "llama");
  w.set_bool("flag", true);
  w.set_array("scores", GgufArray(std::vector<float>{0.5f, -1.0f}));
  w.write(tmp.path);
  GgufFile f(tmp.path);

  EXPECT_EQ(f.get_u32("llama.block_count"), 32u);
  EXPECT_EQ(f.get_u64("llama.block_count"), 32u);
  EXPECT_EQ(f.get_u32("llama.context_length"), 32768u);  // u64 on disk, fits in u32
  EXPECT_EQ(f.get_i32("neg"), -3);
  EXPECT_EQ(f.get_i64("big"), int64_t{1} << 40);
  EXPECT_EQ(f.get_f32("f64"), 0.25f);
  EXPECT_EQ(f.get_f64("f64"), 0.25);
  EXPECT_TRUE(f.get_bool("flag"));
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_array("scores").as<float>(), (std::vector<float>{0.5f, -1.0f}));

  EXPECT_THAT(error_of([&] { f.get_u32("big"); }),
              HasSubstr("'big' = 1099511627776 is out of range"));
  EXPECT_THAT(error_of([&] { f.get_u32("neg"); }), HasSubstr("'neg' = -3 is out of range"));
  EXPECT_THAT(error_of([&] { f.get_u32("general.architecture"); }),
              HasSubstr("'general.architecture' is string, not an integer"));
  EXPECT_THAT(error_of([&] { f.get_f32("flag"); }), HasSubstr("'flag' is bool, not a float"));
  EXPECT_THAT(error_of([&] { f.get_string("flag"); }), HasSubstr("'flag' is bool, not string"));
  EXPECT_THAT(error_of([&] { f.get_array("flag"); }), HasSubstr("'flag' is bool, not array"));
  EXPECT_THAT(error_of([&] { f.get_u32("llama.expert_count"); }),
              HasSubstr("missing key 'llama.expert_count'"));
  EXPECT_THAT(error_of([&] { f.get_array("scores").strings(); }),
              HasSubstr("holds f32 items, not string"));
  EXPECT_THAT(error_of([&] { f.get_u32("llama.expert_count"); }), HasSubstr(tmp.path.string()));

  EXPECT_FALSE(f.find_u32("llama.expert_count").has_value());
  EXPECT_EQ(f.find_u32("llama.block_count"), 32u);
  EXPECT_EQ(f.find_f32("missing"), std::nullopt);
  EXPECT_EQ(f.find_string("missing"), nullptr);
  EXPECT_EQ(*f.find_string("general.architecture"), "llama");
  EXPECT_NE(f.find_array("scores"), nullptr);
  EXPECT_THROW(f.find_string("flag"), Error);  // present with the wrong type
  EXPECT_EQ(f.find("missing"), nullptr);
}

struct TensorCase {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
};

std::vector<TensorCase> every_dtype() {
  return {{"token_embd.weight", DType::F32, {5, 7}},
          {"blk.0.attn_norm.weight", DType::F32, {7}},
          {"f16", DType::F16, {2, 3, 4}},
          {"bf16", DType::BF16, {1, 2, 3, 5}},
          {"q8_0", DType::Q8_0, {3, 64}},
          {"q4_0", DType::Q4_0, {2, 32}},
          {"q4_1", DType::Q4_1, {2, 96}},
          {"q5_0", DType::Q5_0, {1, 32}},
          {"q5_1", DType::Q5_1, {4, 32}},
          {"q4_k", DType::Q4_K, {2, 256}},
          {"q5_k", DType::Q5_K, {3, 512}},
          {"blk.0.ffn_down_exps.weight", DType::Q6_K, {2, 3, 256}}};
}

int64_t numel(const std::vector<int64_t>& s) {
  int64_t n = 1;
  for (auto d : s) n *= d;
  return n;
}

void check_tensors_round_trip(uint32_t alignment) {
  TempFile tmp("tensors" + std::to_string(alignment));
  const auto cases = every_dtype();
  std::vector<std::vector<std::byte>> data;
  GgufWriter w;
  if (alignment != 32) w.set_alignment(alignment);
  w.set_string("general.architecture", "llama");
  for (size_t i = 0; i < cases.size(); ++i) {
    const auto& c = cases[i];
    data.push_back(random_bytes(dtype_bytes(c.dtype, numel(c.shape)), 100 + i));
    w.add_tensor(c.name, c.dtype, c.shape, data.back());
  }
  w.write(tmp.path);

  GgufFile f(tmp.path);
  EXPECT_EQ(f.alignment(), alignment);
  EXPECT_EQ(f.data_offset() % alignment, 0u);
  ASSERT_EQ(f.tensors().size(), cases.size());
  const std::byte* base = f.tensors()[0].data.data() - f.data_offset();
  uint64_t end = 0;
  for (size_t i = 0; i < cases.size(); ++i) {
    const TensorView& t = f.tensors()[i];
    EXPECT_EQ(t.name, cases[i].name);
    EXPECT_EQ(t.dtype, cases[i].dtype) << t.name;
    EXPECT_EQ(t.shape, cases[i].shape) << t.name;
    ASSERT_EQ(t.data.size(), data[i].size()) << t.name;
    EXPECT_EQ(std::memcmp(t.data.data(), data[i].data(), data[i].size()), 0) << t.name;
    const auto at = static_cast<uint64_t>(t.data.data() - base);
    EXPECT_EQ(at % alignment, 0u) << t.name;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data.data()) % alignment, 0u) << t.name;
    EXPECT_GE(at, end) << t.name;
    end = at + t.data.size();
    EXPECT_EQ(&f.tensor(t.name), &t);
  }
  // Tensors are packed: each starts at the aligned end of the previous one, and the file ends at
  // the aligned end of the last.
  EXPECT_EQ(fs::file_size(tmp.path), (end + alignment - 1) / alignment * alignment);
  EXPECT_THAT(error_of([&] { f.tensor("output.weight"); }),
              HasSubstr("missing tensor 'output.weight'"));
  EXPECT_EQ(f.find_tensor("output.weight"), nullptr);
}

TEST(GgufRoundTrip, TensorsOfEveryDTypeDefaultAlignment) {
  check_tensors_round_trip(32);
}
TEST(GgufRoundTrip, TensorsOfEveryDTypeAlignment64) {
  check_tensors_round_trip(64);
}
TEST(GgufRoundTrip, TensorsOfEveryDTypeAlignment8) {
  check_tensors_round_trip(8);
}

TEST(GgufRoundTrip, ViewsSurviveMovingTheFile) {
  TempFile tmp("move");
  GgufWriter w;
  const auto bytes = random_bytes(64, 1);
  w.add_tensor_copy("w", DType::F32, {4, 4}, bytes);
  w.write(tmp.path);
  GgufFile a(tmp.path);
  GgufFile b = std::move(a);
  EXPECT_EQ(std::memcmp(b.tensor("w").data.data(), bytes.data(), 64), 0);
  GgufFile m = GgufFile::from_bytes(read_all(tmp.path));
  GgufFile m2 = std::move(m);
  EXPECT_EQ(std::memcmp(m2.tensor("w").data.data(), bytes.data(), 64), 0);
}

// The writer's output equals a file encoded by hand from the specification.
TEST(GgufFormat, WriterMatchesHandEncodedBytes) {
  const float vals[6] = {1, 2, 3, 4, 5, 6};
  test::RawGguf r;
  r.header(2, 3);
  r.kv_str("general.architecture", "llama");
  r.kv_u32("llama.block_count", 2);
  r.str("a").u32(9).u32(8).u64(2).str("x").str("yz");  // array of strings
  r.tensor("w", {3, 2}, 0, 0);                         // row-major {2, 3}, ne = {3, 2}
  r.tensor("h", {4}, 1, 32);                           // 24 bytes of w padded to 32
  r.pad(32).bytes(vals, sizeof vals).pad(32);
  const uint16_t halves[4] = {0x3c00, 0x4000, 0xc000, 0x0001};
  r.bytes(halves, sizeof halves).pad(32);

  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.block_count", 2);
  w.set_array("a", GgufArray(std::vector<std::string>{"x", "yz"}));
  w.add_tensor_copy("w", DType::F32, {2, 3}, std::as_bytes(std::span(vals)));
  w.add_tensor_copy("h", DType::F16, {4}, std::as_bytes(std::span(halves)));
  TempFile tmp("golden");
  w.write(tmp.path);
  EXPECT_EQ(read_all(tmp.path), r.b);

  GgufFile f = GgufFile::from_bytes(r.b);
  EXPECT_EQ(f.tensor("w").shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(f.tensor("w").rows(), 2);
  EXPECT_EQ(f.tensor("w").cols(), 3);
  float got[6];
  std::memcpy(got, f.tensor("w").data.data(), sizeof got);
  EXPECT_EQ(got[5], 6.0f);
}

TEST(GgufFormat, ReadsVersion2) {
  test::RawGguf r;
  r.header(1, 1, 2).kv_u32("llama.block_count", 1).tensor("w", {8}, 0, 0).pad(32).zeros(32);
  GgufFile f = GgufFile::from_bytes(r.b);
  EXPECT_EQ(f.version(), 2u);
  EXPECT_EQ(f.tensor("w").shape, std::vector<int64_t>{8});
}

TEST(GgufFormat, UnsupportedTypesCanBeSkippedOnRequest) {
  test::RawGguf r;
  r.header(2, 1).kv_str("general.architecture", "llama");
  r.tensor("q2k", {256, 2}, 10, 0).tensor("w", {8}, 0, 256);
  r.pad(32).zeros(256 + 32);
  EXPECT_THAT(error_of([&] { GgufFile::from_bytes(r.b); }),
              HasSubstr("tensor 'q2k': unsupported ggml type id 10"));
  GgufFile f = GgufFile::from_bytes(r.b, {.allow_unsupported_types = true});
  ASSERT_EQ(f.unsupported_tensors().size(), 1u);
  EXPECT_EQ(f.unsupported_tensors()[0].name, "q2k");
  EXPECT_EQ(f.unsupported_tensors()[0].ggml_type, 10u);
  EXPECT_EQ(f.unsupported_tensors()[0].shape, (std::vector<int64_t>{2, 256}));
  EXPECT_EQ(f.tensors().size(), 1u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_THAT(error_of([&] { f.tensor("q2k"); }),
              HasSubstr("'q2k' has unsupported ggml type id 10"));
}

TEST(GgufWriterTest, ProducerStreamsChunks) {
  TempFile tmp("producer");
  const auto bytes = random_bytes(4 * 1000, 7);
  GgufWriter w;
  w.add_tensor("p", DType::F32, {10, 100}, [&](const GgufWriter::Emit& emit) {
    for (size_t at = 0; at < bytes.size(); at += 300)
      emit(std::span(bytes).subspan(at, std::min<size_t>(300, bytes.size() - at)));
  });
  w.write(tmp.path);
  GgufFile f(tmp.path);
  ASSERT_EQ(f.tensor("p").data.size(), bytes.size());
  EXPECT_EQ(std::memcmp(f.tensor("p").data.data(), bytes.data(), bytes.size()), 0);
}

TEST(GgufWriterTest, ProducerOfTheWrongSizeFailsAndLeavesNoFile) {
  TempFile tmp("short");
  std::vector<std::byte> chunk(100);
  GgufWriter short_w;
  short_w.add_tensor("p", DType::F32, {64}, [&](const GgufWriter::Emit& emit) { emit(chunk); });
  EXPECT_THAT(error_of([&] { short_w.write(tmp.path); }),
              HasSubstr("'p' produced 100 of its 256 bytes"));
  EXPECT_FALSE(fs::exists(tmp.path));
  EXPECT_FALSE(fs::exists(fs::path(tmp.path.string() + ".tmp")));
  GgufWriter long_w;
  long_w.add_tensor("p", DType::F32, {16}, [&](const GgufWriter::Emit& emit) { emit(chunk); });
  EXPECT_THAT(error_of([&] { long_w.write(tmp.path); }),
              HasSubstr("'p' produced more than its 64 bytes"));
  EXPECT_FALSE(fs::exists(tmp.path));
}

TEST(GgufWriterTest, RejectsBadTensorsAndSettings) {
  GgufWriter w;
  std::vector<std::byte> b(64);
  w.add_tensor("ok", DType::F32, {16}, b);
  EXPECT_THAT(error_of([&] { w.add_tensor("ok", DType::F32, {16}, b); }),
              HasSubstr("'ok' added twice"));
  EXPECT_THAT(error_of([&] { w.add_tensor("x", DType::F32, {8}, b); }),
              HasSubstr("'x' has 64 bytes, f32 of that shape needs 32"));
  EXPECT_THAT(error_of([&] { w.add_tensor("x", DType::F32, {}, b); }), HasSubstr("0 dimensions"));
  EXPECT_THAT(error_of([&] {
                w.add_tensor("x", DType::F32, {1, 1, 1, 1, 16}, b);
              }),
              HasSubstr("5 dimensions"));
  EXPECT_THAT(error_of([&] {
                w.add_tensor("x", DType::F32, {0, 16}, b);
              }),
              HasSubstr("not positive"));
  EXPECT_THAT(error_of([&] {
                w.add_tensor("x", DType::Q8_0, {2, 16}, std::span(b).first(34));
              }),
              HasSubstr("row length 16 is not a multiple of the q8_0 block size 32"));
  EXPECT_THAT(error_of([&] { w.add_tensor(std::string(64, 'n'), DType::F32, {16}, b); }),
              HasSubstr("name must be 1 to 63 bytes"));
  EXPECT_THAT(error_of([&] { w.set_alignment(48); }), HasSubstr("power of two"));
  EXPECT_THAT(error_of([&] { w.set_alignment(4); }), HasSubstr("multiple of 8"));
  EXPECT_THAT(error_of([&] { w.set("general.alignment", GgufValue{uint64_t{64}}); }),
              HasSubstr("must be a u32"));
  EXPECT_THAT(error_of([&] { w.set_u32("", 1); }), HasSubstr("1 to 65535 bytes"));
  EXPECT_EQ(w.tensor_count(), 1u);
  EXPECT_THAT(error_of([&] { w.write("/nonexistent-dir/x.gguf"); }), HasSubstr("cannot create"));
}

// A 96 MiB tensor streamed in 1 MiB chunks must not raise the peak RSS by anything like its size.
TEST(GgufWriterTest, BigTensorIsStreamed) {
  TempFile tmp("big");
  constexpr size_t kChunk = size_t{1} << 20, kChunks = 96;
  std::vector<std::byte> chunk(kChunk, std::byte{0x5a});
  GgufWriter w;
  w.add_tensor("big", DType::F32, {int64_t{kChunks}, int64_t{kChunk / 4}},
               [&](const GgufWriter::Emit& emit) {
                 for (size_t i = 0; i < kChunks; ++i) emit(chunk);
               });
  const uint64_t before = peak_rss_bytes();
  w.write(tmp.path);
  const uint64_t grew = peak_rss_bytes() - before;
  EXPECT_LT(grew, uint64_t{32} << 20);
  GgufFile f(tmp.path);
  EXPECT_EQ(fs::file_size(tmp.path), f.data_offset() + kChunk * kChunks);
  EXPECT_EQ(f.tensor("big").data.size(), kChunk * kChunks);
  EXPECT_EQ(f.tensor("big").data.back(), std::byte{0x5a});
}

}  // namespace
}  // namespace epwa
