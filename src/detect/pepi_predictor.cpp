// PEPI detection glue: distributions from a source -> predicted router records.
#include "epwa/error.hpp"
#include "epwa/pepi.hpp"

namespace epwa {

PepiPredictor::PepiPredictor(std::shared_ptr<const Oracle> oracle,
                             std::shared_ptr<DistributionSource> source)
    : oracle_(std::move(oracle)), source_(std::move(source)) {
  check(oracle_ != nullptr && source_ != nullptr, "PEPI predictor: needs an oracle and a source");
}

std::vector<RouterRecord> PepiPredictor::predict(std::span<const int32_t> tokens,
                                                 int64_t prompt_tokens) {
  if (tokens.size() < 2) return {};
  const auto dists = source_->distributions(tokens);
  check(dists.size() + 1 >= tokens.size(),
        "PEPI predictor: the source returned " + std::to_string(dists.size()) +
            " distributions for " + std::to_string(tokens.size()) + " tokens");
  std::vector<RouterRecord> out(tokens.size() - 1);
  // Positions before the prompt's end govern no scored token: skip their (costly) prediction.
  const size_t first = prompt_tokens > 1 ? static_cast<size_t>(prompt_tokens - 1) : 0;
  for (size_t p = 0; p < out.size(); ++p) {
    if (p < first) {
      out[p] = {0, 0.0f};
      continue;
    }
    out[p] = oracle_->predict(dists[p], tokens.first(p + 1));
  }
  return out;
}

std::shared_ptr<PepiPredictor> make_pepi_predictor(const std::filesystem::path& oracle_file,
                                                   std::string_view model_router_hash,
                                                   std::shared_ptr<DistributionSource> source) {
  auto oracle = std::make_shared<const Oracle>(Oracle::load(oracle_file));
  oracle->check_router_hash(model_router_hash);
  return std::make_shared<PepiPredictor>(std::move(oracle), std::move(source));
}

}  // namespace epwa
