// The strength/quality frontier of `epwa eval --frontier` (docs/EVAL.md "Frontier"): watermark
// settings against the same negatives, at several text lengths.
#pragma once
#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <vector>

#include "epwa/eval.hpp"
#include "epwa/model.hpp"
#include "epwa/watermark.hpp"
#include "eval/generation.hpp"

namespace epwa::eval {

struct FrontierInput {
  Model* model = nullptr;
  std::shared_ptr<const GreenLists> lists;
  int32_t layer = 0;  // the watermark layer (resolved)
  TextSampling sampling;
  std::vector<std::vector<int32_t>> prompts;  // BOS + prompt, one per positive
  // Human passages: their first tokens (BOS included) as context, the rest scored.
  std::vector<std::pair<std::vector<int32_t>, std::vector<int32_t>>> human;
  int32_t first_normal = 0;  // the first ordinary token: attacks draw from [first_normal, vocab)
};

// results.json's "frontier": one row per (setting, generation, detection), each with its texts'
// perplexity and, per length, TPR at z = 4 (bootstrap interval), false positives at z = 4 and TPR
// at the empirical FPR 1e-3 threshold.
nlohmann::json run_frontier(const EvalOptions& o, const FrontierInput& in);

}  // namespace epwa::eval
