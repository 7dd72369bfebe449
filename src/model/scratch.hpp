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

namespace block {
// The rows [begin, begin + n) of a batch that belong to one sequence, at its positions p0 ..., with
// that sequence's cache of the layer.
struct SeqRows {
  int64_t begin, n, p0;
  KvLayer kv;
};
}  // namespace block

struct Context::Scratch {
  ScratchArray<float> x, xn, q, k, v, att, o, router, probs, bias, shared;
  ScratchArray<int32_t> topk;
  ScratchArray<float> topw;
  std::vector<block::SeqRows> seqs;  // the sequences of the batch, with one layer's caches
  std::vector<int64_t> head_rows;    // the rows whose logits are returned
  std::unique_ptr<BackendScratch> backend;
};

}  // namespace epwa
