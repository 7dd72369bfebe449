// Shape checks shared by the loaders, so every format fails with the same clear message.
#pragma once
#include <vector>

#include "epwa/config.hpp"
#include "epwa/model.hpp"

namespace epwa {

// Throws Error naming the tensor when its shape differs from `shape`.
void expect_shape(const TensorView& t, const std::vector<int64_t>& shape);
// Checks every tensor of `w` against the config.
void check_weights(const ModelConfig& c, const ModelWeights& w);

}  // namespace epwa
