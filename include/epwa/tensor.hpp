// Storage types and a non-owning view of a stored tensor, shared by every file format and the
// model.
#pragma once
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace epwa {

// Weight storage types. Values of the quantized types follow GGUF's block layouts.
enum class DType : uint8_t {
  F32,
  F16,
  BF16,
  Q8_0,
  Q4_0,
  Q4_1,
  Q5_0,
  Q5_1,
  Q4_K,
  Q5_K,
  Q6_K,
  MXFP4
};

std::string_view dtype_name(DType t);     // "f32", "f16", "bf16", "q8_0", ...
DType dtype_from_name(std::string_view);  // inverse of dtype_name; throws Error on an unknown name
int64_t dtype_block_size(DType t);        // elements per block (1 for float types)
int64_t dtype_block_bytes(DType t);       // bytes per block
// Bytes of `n` elements; throws Error when n is not a multiple of the block size.
int64_t dtype_bytes(DType t, int64_t n);

// A tensor inside a mapped file. `shape` is row-major, outermost first (PyTorch order): a weight
// matrix of a linear layer is {out_features, in_features} and rows are contiguous.
struct TensorView {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape;
  std::span<const std::byte> data;

  int64_t numel() const;
  int64_t rows() const { return shape.empty() ? 1 : numel() / shape.back(); }
  int64_t cols() const { return shape.empty() ? 1 : shape.back(); }
};

}  // namespace epwa
