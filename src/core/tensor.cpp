#include "epwa/tensor.hpp"

#include <array>

#include "epwa/error.hpp"

namespace epwa {
namespace {
struct DTypeInfo {
  std::string_view name;
  int64_t block;
  int64_t bytes;
};
// Block sizes and byte counts of GGUF's formats (ggml-common.h documents the layouts).
constexpr std::array<DTypeInfo, 12> kInfo{{{"f32", 1, 4},
                                           {"f16", 1, 2},
                                           {"bf16", 1, 2},
                                           {"q8_0", 32, 34},
                                           {"q4_0", 32, 18},
                                           {"q4_1", 32, 20},
                                           {"q5_0", 32, 22},
                                           {"q5_1", 32, 24},
                                           {"q4_k", 256, 144},
                                           {"q5_k", 256, 176},
                                           {"q6_k", 256, 210},
                                           {"mxfp4", 32, 17}}};
const DTypeInfo& info(DType t) { return kInfo.at(static_cast<size_t>(t)); }
}  // namespace

std::string_view dtype_name(DType t) { return info(t).name; }

DType dtype_from_name(std::string_view name) {
  for (size_t i = 0; i < kInfo.size(); ++i)
    if (kInfo[i].name == name) return static_cast<DType>(i);
  throw Error("unknown tensor type '" + std::string(name) + "'");
}

int64_t dtype_block_size(DType t) { return info(t).block; }
int64_t dtype_block_bytes(DType t) { return info(t).bytes; }

int64_t dtype_bytes(DType t, int64_t n) {
  const auto& i = info(t);
  check(n >= 0 && n % i.block == 0, std::string(i.name) + ": " + std::to_string(n) +
                                        " elements is not a multiple of the block size " +
                                        std::to_string(i.block));
  return n / i.block * i.bytes;
}

int64_t TensorView::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

}  // namespace epwa
