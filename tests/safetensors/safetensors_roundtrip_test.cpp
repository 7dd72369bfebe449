// Writing then reading safetensors files and sharded checkpoints gives back every byte.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "epwa/half.hpp"
#include "epwa/safetensors.hpp"
#include "st_test_util.hpp"

namespace epwa {
namespace {

using test::error_of;
using ::testing::HasSubstr;

std::vector<std::byte> random_bytes(size_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::vector<std::byte> b(n);
  for (auto& x : b) x = static_cast<std::byte>(rng());
  return b;
}

// Owns the payloads the TensorToWrite spans point at.
struct Fixture {
  std::vector<std::vector<std::byte>> payloads;
  std::vector<TensorToWrite> tensors;

  void add(std::string name, DType t, std::vector<int64_t> shape) {
    int64_t n = 1;
    for (auto d : shape) n *= d;
    payloads.push_back(random_bytes(static_cast<size_t>(dtype_bytes(t, n)),
                                    static_cast<uint32_t>(payloads.size() + 7)));
    tensors.push_back({std::move(name), t, std::move(shape), payloads.back()});
  }
};

Fixture three_dtypes() {
  Fixture f;
  f.add("model.layers.0.w", DType::F32, {3, 5});
  f.add("b_half", DType::F16, {7});
  f.add("a_bf16", DType::BF16, {2, 3, 4});
  f.add("scalar", DType::F32, {});
  f.add("empty", DType::F16, {0, 4});
  return f;
}

void expect_same(const TensorToWrite& w, const TensorView& r) {
  EXPECT_EQ(r.name, w.name);
  EXPECT_EQ(r.dtype, w.dtype) << w.name;
  EXPECT_EQ(r.shape, w.shape) << w.name;
  ASSERT_EQ(r.data.size(), w.bytes.size()) << w.name;
  EXPECT_TRUE(std::equal(r.data.begin(), r.data.end(), w.bytes.begin())) << w.name;
}

TEST(SafetensorsRoundTrip, AllDtypesBitExactSortedByName) {
  const auto dir = test::scratch_dir();
  auto fx = three_dtypes();
  const SafetensorsMetadata meta{{"format", "pt"}, {"epwa", "test"}};
  write_safetensors(dir / "m.safetensors", fx.tensors, meta);

  SafetensorsFile f(dir / "m.safetensors");
  EXPECT_EQ(f.metadata(), meta);
  ASSERT_EQ(f.tensors().size(), fx.tensors.size());
  // File order is name order, with the zero-byte tensor at its name's place.
  std::vector<std::string> names;
  for (const auto& t : f.tensors()) names.push_back(t.name);
  EXPECT_THAT(names,
              ::testing::ElementsAre("a_bf16", "b_half", "empty", "model.layers.0.w", "scalar"));
  for (const auto& w : fx.tensors) {
    const TensorView* r = f.find(w.name);
    ASSERT_NE(r, nullptr) << w.name;
    expect_same(w, *r);
  }
  EXPECT_EQ(f.find("nope"), nullptr);
  EXPECT_EQ(f.data_start() % 8, 0u);
  EXPECT_EQ(f.find("scalar")->numel(), 1);
}

TEST(SafetensorsRoundTrip, HeaderIsSpacePaddedJson) {
  const auto dir = test::scratch_dir();
  auto fx = three_dtypes();
  write_safetensors(dir / "m.safetensors", fx.tensors);
  MappedFile m(dir / "m.safetensors");
  uint64_t len = 0;
  std::memcpy(&len, m.bytes().data(), 8);
  ASSERT_EQ(len % 8, 0u);
  const std::string header(reinterpret_cast<const char*>(m.bytes().data()) + 8, len);
  EXPECT_EQ(header.front(), '{');
  const auto close = header.rfind('}');
  EXPECT_EQ(header.find_first_not_of(' ', close + 1), std::string::npos);
  EXPECT_THAT(header,
              HasSubstr(R"("a_bf16":{"data_offsets":[0,48],"dtype":"BF16","shape":[2,3,4]})"));
  EXPECT_THAT(header,
              ::testing::Not(HasSubstr("__metadata__")));  // nothing asked for, nothing written
}

TEST(SafetensorsRoundTrip, ValuesSurviveConversions) {
  // The bytes are what they claim: known values decode to themselves.
  const auto dir = test::scratch_dir();
  const std::vector<float> vals{1.5f, -2.25f, 0.0f, 65504.0f};
  std::vector<uint16_t> h, b;
  for (float v : vals) h.push_back(f32_to_f16(v)), b.push_back(f32_to_bf16(v));
  const std::vector<TensorToWrite> ts{{"f32", DType::F32, {4}, std::as_bytes(std::span(vals))},
                                      {"f16", DType::F16, {4}, std::as_bytes(std::span(h))},
                                      {"bf16", DType::BF16, {2, 2}, std::as_bytes(std::span(b))}};
  write_safetensors(dir / "v.safetensors", ts);
  SafetensorsModel m(dir / "v.safetensors");
  for (size_t i = 0; i < vals.size(); ++i) {
    float f;
    uint16_t u;
    std::memcpy(&f, m.get("f32").data.data() + 4 * i, 4);
    EXPECT_EQ(f, vals[i]);
    std::memcpy(&u, m.get("f16").data.data() + 2 * i, 2);
    EXPECT_EQ(f16_to_f32(u), vals[i]);
    std::memcpy(&u, m.get("bf16").data.data() + 2 * i, 2);
    EXPECT_EQ(bf16_to_f32(u), bf16_to_f32(f32_to_bf16(vals[i])));
  }
}

TEST(SafetensorsRoundTrip, FromBytesMatchesFile) {
  const auto dir = test::scratch_dir();
  auto fx = three_dtypes();
  write_safetensors(dir / "m.safetensors", fx.tensors);
  MappedFile m(dir / "m.safetensors");
  const auto f = SafetensorsFile::from_bytes(m.bytes(), "buffer");
  EXPECT_EQ(f.tensors().size(), fx.tensors.size());
  for (const auto& w : fx.tensors) expect_same(w, *f.find(w.name));
}

TEST(SafetensorsRoundTrip, MovedFileKeepsViews) {
  const auto dir = test::scratch_dir();
  auto fx = three_dtypes();
  write_safetensors(dir / "m.safetensors", fx.tensors);
  SafetensorsFile a(dir / "m.safetensors");
  SafetensorsFile b = std::move(a);
  std::vector<SafetensorsFile> v;
  v.push_back(std::move(b));
  for (const auto& w : fx.tensors) expect_same(w, *v.front().find(w.name));
}

TEST(SafetensorsWriter, RejectsBadInput) {
  const auto dir = test::scratch_dir();
  const std::vector<std::byte> eight(8);
  const auto err = [&](std::vector<TensorToWrite> ts) {
    return error_of([&] { write_safetensors(dir / "x.safetensors", ts); });
  };
  EXPECT_THAT(err({{"w", DType::F32, {3}, eight}}), HasSubstr("tensor 'w': 8 bytes given"));
  EXPECT_THAT(err({{"w", DType::Q8_0, {32}, eight}}), HasSubstr("tensor 'w' of type q8_0"));
  EXPECT_THAT(err({{"w", DType::F32, {2}, eight}, {"w", DType::F16, {4}, eight}}),
              HasSubstr("'w' is given twice"));
  EXPECT_THAT(err({{"", DType::F32, {2}, eight}}), HasSubstr("empty name"));
  EXPECT_THAT(err({{"__metadata__", DType::F32, {2}, eight}}), HasSubstr("__metadata__"));
  EXPECT_FALSE(std::filesystem::exists(dir / "x.safetensors"));
  EXPECT_FALSE(std::filesystem::exists(dir / "x.safetensors.tmp"));
}

TEST(SafetensorsSharded, WritesIndexAndReadsEveryTensor) {
  const auto dir = test::scratch_dir();
  Fixture fx;
  for (int i = 0; i < 6; ++i) fx.add("t" + std::to_string(i), DType::F32, {16});  // 64 bytes each
  fx.add("big", DType::BF16, {200});                                              // 400 bytes
  const auto files = write_safetensors_sharded(dir, fx.tensors, 150, {{"format", "pt"}});
  // big | t0 t1 | t2 t3 | t4 t5  -> 4 shards and the index
  ASSERT_EQ(files.size(), 5u);
  EXPECT_EQ(files[0].filename(), "model-00001-of-00004.safetensors");
  EXPECT_EQ(files[4].filename(), "model.safetensors.index.json");

  for (const auto& open : {dir, dir / "model.safetensors.index.json"}) {
    SafetensorsModel m(open);
    EXPECT_EQ(m.shards().size(), 4u);
    EXPECT_EQ(m.tensors().size(), fx.tensors.size());
    for (const auto& w : fx.tensors) expect_same(w, m.get(w.name));
    EXPECT_EQ(m.metadata().at("format"), "pt");
    EXPECT_EQ(m.find("absent"), nullptr);
    EXPECT_THAT(error_of([&] { m.get("absent"); }), HasSubstr("tensor 'absent' not found"));
  }
  // A single shard from the same folder is a checkpoint of its own.
  SafetensorsModel one(dir / "model-00002-of-00004.safetensors");
  EXPECT_EQ(one.tensors().size(), 2u);
}

TEST(SafetensorsSharded, SingleShardWritesPlainFile) {
  const auto dir = test::scratch_dir();
  auto fx = three_dtypes();
  const auto files = write_safetensors_sharded(dir / "out", fx.tensors, 1 << 20);
  ASSERT_EQ(files.size(), 1u);
  EXPECT_EQ(files[0].filename(), "model.safetensors");
  SafetensorsModel m(dir / "out");
  for (const auto& w : fx.tensors) expect_same(w, m.get(w.name));
}

}  // namespace
}  // namespace epwa
