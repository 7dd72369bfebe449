// Randomized mutation of a valid safetensors file (fixed seed): every copy either loads with views
// inside the buffer or throws epwa::Error; nothing crashes or throws anything else.
#include <gtest/gtest.h>

#include <random>
#include <string_view>

#include "epwa/safetensors.hpp"
#include "st_test_util.hpp"

namespace epwa {
namespace {
using namespace std::literals;

std::vector<std::byte> valid_file() {
  const auto dir = test::scratch_dir();
  const std::vector<float> a{1, 2, 3, 4, 5, 6};
  const std::vector<uint16_t> b{1, 2, 3};
  const std::vector<TensorToWrite> ts{
      {"layers.0.a", DType::F32, {2, 3}, std::as_bytes(std::span(a))},
      {"b", DType::BF16, {3}, std::as_bytes(std::span(b))},
      {"c", DType::F16, {1, 3}, std::as_bytes(std::span(b))},
      {"e", DType::F32, {0}, {}}};
  write_safetensors(dir / "v.safetensors", ts, {{"format", "pt"}});
  MappedFile m(dir / "v.safetensors");
  return {m.bytes().begin(), m.bytes().end()};
}

// Bytes that make mutations land on interesting JSON: digits, structure, signs, quotes.
constexpr std::string_view kJunk = "0123456789-+.eE[]{}\",: \\\xff\x00"sv;

std::vector<std::byte> mutate(const std::vector<std::byte>& in, std::mt19937_64& rng) {
  auto out = in;
  auto pick = [&](size_t n) { return n ? static_cast<size_t>(rng() % n) : 0; };
  const int edits = 1 + static_cast<int>(rng() % 4);
  for (int e = 0; e < edits && !out.empty(); ++e) {
    switch (rng() % 7) {
      case 0:  // flip a bit anywhere
        out[pick(out.size())] ^= static_cast<std::byte>(1u << (rng() % 8));
        break;
      case 1:  // overwrite a header byte with JSON-ish junk
        out[pick(out.size())] = static_cast<std::byte>(kJunk[pick(kJunk.size())]);
        break;
      case 2:  // truncate
        out.resize(pick(out.size() + 1));
        break;
      case 3:  // insert a byte
        out.insert(out.begin() + static_cast<std::ptrdiff_t>(pick(out.size() + 1)),
                   static_cast<std::byte>(kJunk[pick(kJunk.size())]));
        break;
      case 4:  // delete a byte
        out.erase(out.begin() + static_cast<std::ptrdiff_t>(pick(out.size())));
        break;
      case 5:  // perturb the header length
        if (out.size() >= 8) out[pick(8)] = static_cast<std::byte>(rng());
        break;
      case 6:  // append garbage
        out.resize(out.size() + 1 + pick(16), static_cast<std::byte>(rng()));
        break;
    }
  }
  return out;
}

TEST(SafetensorsFuzz, MutatedCopiesLoadOrThrowError) {
  const auto base = valid_file();
  ASSERT_NO_THROW(SafetensorsFile::from_bytes(base));
  std::mt19937_64 rng(20240601);
  int loaded = 0, rejected = 0;
  for (int i = 0; i < 4000; ++i) {
    const auto bytes = mutate(base, rng);
    try {
      const auto f = SafetensorsFile::from_bytes(bytes, "fuzz");
      ++loaded;
      for (const auto& t : f.tensors()) {
        ASSERT_GE(t.data.data(), bytes.data());
        ASSERT_LE(t.data.data() + t.data.size(), bytes.data() + bytes.size());
        ASSERT_EQ(static_cast<int64_t>(t.data.size()), dtype_bytes(t.dtype, t.numel()));
      }
    } catch (const Error& e) {
      ++rejected;
      EXPECT_FALSE(std::string_view(e.what()).empty());
    }
  }
  // Both outcomes occur, so the mutations neither all break the file nor all miss the header.
  EXPECT_GT(loaded, 50);
  EXPECT_GT(rejected, 1000);
}

}  // namespace
}  // namespace epwa
