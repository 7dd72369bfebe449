// One evaluation text: sampled as `epwa generate` samples it (text tokens only, stop at EOS, which
// is dropped), watermarked when a processor is given.
#pragma once
#include <cstdint>
#include <span>
#include <vector>

#include "epwa/model.hpp"
#include "epwa/watermark.hpp"

namespace epwa::eval {

struct TextSampling {
  int32_t tokens = 200;
  float temperature = 0.8f, top_p = 0.95f;
  std::vector<int32_t> suppress;  // ids that are not text (EOS aside, a stop token)
};

std::vector<int32_t> generate_text(Model& m, std::span<const int32_t> prompt,
                                   WatermarkProcessor* wp, uint64_t seed, const TextSampling& s);

}  // namespace epwa::eval
