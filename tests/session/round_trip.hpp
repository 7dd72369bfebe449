// Generation then detection on one model's router: the watermarked continuation of `prompt` and
// its detection (every pair counted), for the alignment tests of each family.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "epwa/detect.hpp"
#include "epwa/model.hpp"
#include "epwa/session.hpp"
#include "epwa/watermark.hpp"

namespace epwa_test {

struct RoundTrip {
  std::vector<int32_t> generated;
  epwa::DetectionResult detected;
};

inline RoundTrip round_trip(epwa::Model& m, const std::vector<int32_t>& prompt,
                            const epwa::WatermarkConfig& cfg, const std::string& key, uint64_t seed,
                            int32_t tokens) {
  epwa::Watermarker wm(m, key, cfg);
  epwa::GenerateOptions o;
  o.max_new_tokens = tokens;
  o.sampling.temperature = 1.0f;
  o.sampling.seed = seed;
  RoundTrip r;
  r.generated = wm.generate(m, prompt, o);
  std::vector<int32_t> seq = prompt;
  seq.insert(seq.end(), r.generated.begin(), r.generated.end());
  epwa::DetectOptions d;
  d.count_repeats = true;
  r.detected = epwa::detect_tokens(m, epwa::Detector(wm.lists(), d), seq,
                                   static_cast<int64_t>(prompt.size()), cfg.router_layer);
  return r;
}

}  // namespace epwa_test
