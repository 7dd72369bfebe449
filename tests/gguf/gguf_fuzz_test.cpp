// Randomized mutation of valid GGUF files (fixed seed): every mutated or truncated copy either
// opens with views inside the buffer or fails with epwa::Error; nothing crashes, nothing else is
// thrown.
#include <gtest/gtest.h>

#include <random>

#include "epwa/gguf.hpp"
#include "gguf_bytes.hpp"

namespace epwa {
namespace {

// A file with metadata of several shapes (strings, a vocabulary-like array, nested arrays) and
// three tensors, written by GgufWriter and read back as bytes.
std::vector<std::byte> seed_file() {
  GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_u32("llama.block_count", 2);
  w.set_f32("llama.rope.freq_base", 10000.0f);
  w.set_array("tokenizer.ggml.tokens",
              GgufArray(std::vector<std::string>{"<unk>", "<s>", "a", "bc"}));
  w.set_array("tokenizer.ggml.scores", GgufArray(std::vector<float>{0, 0, -1, -2}));
  w.set_array("n", GgufArray(std::vector<GgufArray>{GgufArray(std::vector<bool>{true}),
                                                    GgufArray(std::vector<int64_t>{-1, 2})}));
  std::vector<std::byte> a(4 * 32), b(34 * 2), c(2 * 8);
  w.add_tensor_copy("a", DType::F32, {4, 8}, a);
  w.add_tensor_copy("b", DType::Q8_0, {2, 32}, b);
  w.add_tensor_copy("c", DType::BF16, {8}, c);
  const auto path = std::filesystem::temp_directory_path() / "epwa_gguf_fuzz_seed.gguf";
  w.write(path);
  MappedFile m(path);
  std::vector<std::byte> bytes(m.bytes().begin(), m.bytes().end());
  std::filesystem::remove(path);
  return bytes;
}

// Values that hit boundaries when written over a length, count, type or offset field.
constexpr uint64_t kSpecial[] = {0,
                                 1,
                                 2,
                                 3,
                                 4,
                                 7,
                                 8,
                                 9,
                                 12,
                                 13,
                                 30,
                                 31,
                                 32,
                                 33,
                                 64,
                                 255,
                                 256,
                                 0x7fffffffull,
                                 0xffffffffull,
                                 0x100000000ull,
                                 0x7fffffffffffffffull,
                                 0xffffffffffffffffull};

std::vector<std::byte> mutate(const std::vector<std::byte>& in, std::mt19937_64& rng) {
  std::vector<std::byte> v = in;
  auto pick = [&](size_t n) { return static_cast<size_t>(rng() % std::max<size_t>(n, 1)); };
  const int edits = 1 + static_cast<int>(rng() % 3);
  for (int e = 0; e < edits && !v.empty(); ++e) {
    switch (rng() % 6) {
      case 0:  // flip bits
        v[pick(v.size())] ^= static_cast<std::byte>(1u << (rng() % 8));
        break;
      case 1:  // random byte
        v[pick(v.size())] = static_cast<std::byte>(rng() & 0xff);
        break;
      case 2: {  // boundary value over an 8- or 4-byte field
        const uint64_t x = kSpecial[pick(std::size(kSpecial))];
        const size_t width = rng() % 2 ? 8 : 4;
        if (v.size() < width) break;
        std::memcpy(v.data() + pick(v.size() - width + 1), &x, width);
        break;
      }
      case 3:  // truncate
        v.resize(pick(v.size()));
        break;
      case 4: {  // delete a run
        const size_t at = pick(v.size()), n = std::min<size_t>(1 + pick(16), v.size() - at);
        v.erase(v.begin() + static_cast<std::ptrdiff_t>(at),
                v.begin() + static_cast<std::ptrdiff_t>(at + n));
        break;
      }
      default: {  // insert random bytes
        const size_t at = pick(v.size() + 1), n = 1 + pick(16);
        std::vector<std::byte> ins(n);
        for (auto& b : ins) b = static_cast<std::byte>(rng() & 0xff);
        v.insert(v.begin() + static_cast<std::ptrdiff_t>(at), ins.begin(), ins.end());
        break;
      }
    }
  }
  return v;
}

TEST(GgufFuzz, MutatedFilesOpenOrThrowError) {
  const std::vector<std::byte> seed = seed_file();
  ASSERT_NO_THROW(GgufFile::from_bytes(seed));
  std::mt19937_64 rng(20240607);
  int opened = 0, rejected = 0;
  for (int iter = 0; iter < 6000; ++iter) {
    std::vector<std::byte> v = mutate(seed, rng);
    const size_t size = v.size();
    try {
      const GgufFile f =
          GgufFile::from_bytes(std::move(v), {.allow_unsupported_types = iter % 2 == 1});
      ++opened;
      // Touch every byte of every view: AddressSanitizer builds catch a view outside the buffer.
      unsigned sum = 0;
      for (const auto& t : f.tensors()) {
        ASSERT_LE(t.data.size(), size);
        for (std::byte b : t.data) sum += static_cast<unsigned>(b);
        ASSERT_EQ(static_cast<int64_t>(t.data.size()), dtype_bytes(t.dtype, t.numel()));
      }
      for (const auto& kv : f.metadata()) sum += static_cast<unsigned>(kv.key.size());
      (void)sum;
    } catch (const Error&) {
      ++rejected;
    } catch (const std::exception& e) {
      FAIL() << "iteration " << iter << ": non-epwa exception " << e.what();
    }
  }
  // Both outcomes occur, so the mutations reach past the magic number and also leave some files
  // valid.
  EXPECT_GT(opened, 100);
  EXPECT_GT(rejected, 1000);
}

TEST(GgufFuzz, EveryTruncationIsRejected) {
  const std::vector<std::byte> seed = seed_file();
  // Cutting into the zero padding after the last tensor still leaves a valid file; stop before it.
  const GgufFile f = GgufFile::from_bytes(seed);
  const std::byte* base = f.tensors()[0].data.data() - f.data_offset();
  const auto& last = f.tensors().back().data;
  const size_t end = static_cast<size_t>(last.data() + last.size() - base);
  ASSERT_LT(end, seed.size());
  for (size_t n = 0; n < end; ++n) {
    std::vector<std::byte> v(seed.begin(), seed.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(GgufFile::from_bytes(std::move(v)), Error) << "prefix of " << n << " bytes";
  }
}

}  // namespace
}  // namespace epwa
