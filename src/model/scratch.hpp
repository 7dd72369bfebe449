// The block-level scratch of one Context's forward pass (activations between blocks, routing); the
// backend keeps its own (BackendScratch). Arrays only grow: a generation allocates nothing per
// token.
#pragma once
#include <algorithm>
#include <vector>

#include "epwa/backend.hpp"
#include "epwa/memory.hpp"
#include "epwa/model.hpp"

namespace epwa {

struct Context::Scratch {
  ScratchArray<float> x, xn, q, k, v, att, o, router, probs, bias, shared;
  ScratchArray<int32_t> topk;
  ScratchArray<float> topw;
  std::unique_ptr<BackendScratch> backend;
};

}  // namespace epwa
