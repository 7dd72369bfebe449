#include "qk_permute.hpp"

#include <cstring>

#include "epwa/error.hpp"

namespace epwa {

namespace {
// GGUF row of HF row (h, j, i) is h * hd + 2 i + j, where the HF row is h * hd + j * hd / 2 + i.
std::vector<std::byte> move_rows(std::span<const std::byte> rows, int64_t n_heads, int64_t hd,
                                 int64_t row_bytes, bool to_gguf) {
  check(hd % 2 == 0, "head dimension " + std::to_string(hd) + " is odd: cannot apply RoPE");
  check(static_cast<int64_t>(rows.size()) == n_heads * hd * row_bytes,
        "Q/K permutation: size mismatch");
  std::vector<std::byte> out(rows.size());
  for (int64_t h = 0; h < n_heads; ++h)
    for (int64_t j = 0; j < 2; ++j)
      for (int64_t i = 0; i < hd / 2; ++i) {
        const int64_t hf = h * hd + j * (hd / 2) + i, gg = h * hd + 2 * i + j;
        const int64_t src = to_gguf ? hf : gg, dst = to_gguf ? gg : hf;
        std::memcpy(out.data() + dst * row_bytes, rows.data() + src * row_bytes, row_bytes);
      }
  return out;
}
}  // namespace

std::vector<std::byte> permute_qk_rows(std::span<const std::byte> rows, int64_t n_heads, int64_t hd,
                                       int64_t row_bytes) {
  return move_rows(rows, n_heads, hd, row_bytes, true);
}
std::vector<std::byte> unpermute_qk_rows(std::span<const std::byte> rows, int64_t n_heads,
                                         int64_t hd, int64_t row_bytes) {
  return move_rows(rows, n_heads, hd, row_bytes, false);
}

}  // namespace epwa
