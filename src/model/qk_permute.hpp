// The row permutation llama.cpp's converter applies to Q and K of LLaMA-rope families (Mixtral:
// GGUF architecture "llama"; docs/GGUF.md).
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace epwa {

// llama.cpp stores the rows of Q and K of each head interleaved (pairs (i, i + hd/2) of the HF
// "rotate_half" layout become rows 2i and 2i + 1). These map whole rows of any type between
// layouts. `rows` holds n_heads * head_dim rows of row_bytes each.
std::vector<std::byte> permute_qk_rows(std::span<const std::byte> rows, int64_t n_heads,
                                       int64_t head_dim,
                                       int64_t row_bytes);  // HF -> GGUF
std::vector<std::byte> unpermute_qk_rows(std::span<const std::byte> rows, int64_t n_heads,
                                         int64_t head_dim, int64_t row_bytes);  // GGUF -> HF

}  // namespace epwa
