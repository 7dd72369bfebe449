// The tensors of a Mixtral checkpoint in HuggingFace Hub naming, with their shapes.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "epwa/config.hpp"

namespace epwa {

struct HfTensor {
  std::string name;
  std::vector<int64_t> shape;
  bool is_router = false;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    return n;
  }
};

std::vector<HfTensor> hf_tensor_list(const ModelConfig& c);

}  // namespace epwa
