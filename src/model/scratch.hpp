// The block-level scratch of one Context's forward pass. The activations between blocks live in the
// backend's memory (Backend::buffer, one slot each); the host keeps what it reads back (a watched
// router's decisions) and the batch's bookkeeping. Arrays only grow: a generation allocates nothing
// per token.
#pragma once
#include <algorithm>
#include <vector>

#include "epwa/backend.hpp"
#include "epwa/memory.hpp"
#include "epwa/model.hpp"

namespace epwa {

namespace block {
using epwa::SeqRows;  // include/epwa/backend.hpp
}  // namespace block

// The backend buffer slots of the forward pass's activations.
enum class Slot : int { X, Xn, Q, K, V, Att, O, Router, TopK, TopW, Shared, Logits };

struct Context::Scratch {
  // The host copies of a watched MoE layer's router logits and decisions.
  ScratchArray<float> router, topw;
  ScratchArray<int32_t> topk;
  std::vector<block::SeqRows> seqs;  // the sequences of the batch, with one layer's caches
  std::vector<int64_t> head_rows;    // the rows whose logits are returned
  std::unique_ptr<BackendScratch> backend;

  // `count` values of slot `slot` in the backend's memory.
  template <typename T = float>
  T* buf(const Backend& be, Slot slot, int64_t count) {
    return static_cast<T*>(
        be.buffer(*backend, static_cast<int>(slot), static_cast<size_t>(count) * sizeof(T)));
  }
};

}  // namespace epwa
