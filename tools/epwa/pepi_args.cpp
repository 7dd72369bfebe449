#include "pepi_args.hpp"

#include "common.hpp"
#include "epwa/error.hpp"
#include "epwa/platform.hpp"
#include "epwa/session.hpp"
#include "epwa/tokenizer.hpp"

namespace epwa::cli {

std::filesystem::path default_oracle_path() {
  return path_from_utf8(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe.oracle";
}

void PepiArgs::add(CLI::App& app) {
  app.add_option("--oracle", oracle,
                 "PEPI: oracle file from epwa train-oracle (default: models/epwa-tiny-moe.oracle, "
                 "bundled model only)");
  app.add_option(
      "--api-url", api_url,
      "PEPI: OpenAI-completions server returning prompt log-probs (else the local model)");
  app.add_option("--api-top-k", api_top_k, "PEPI: logprobs K asked from the API")
      ->check(real_number({.lo = 1, .hi = 1000}));
  app.add_option("--api-model", api_model, "PEPI: the API's model name, if it needs one");
  app.add_option("--api-timeout", api_timeout, "PEPI: seconds per API request")
      ->check(real_number({.lo = 0, .lo_open = true}));
}

std::shared_ptr<ExpertPredictor> PepiArgs::predictor(
    Model& model, const std::filesystem::path& model_path) const {
  const std::string hash = router_hash(model);
  std::shared_ptr<const Oracle> o;
  if (!oracle.empty()) {
    o = std::make_shared<const Oracle>(Oracle::load(path_from_utf8(oracle)));
    o->check_router_hash(hash);
  } else {
    // No --oracle: the committed one, which fits the bundled model only (same router hash).
    const auto def = default_oracle_path();
    check(std::filesystem::exists(def), "--method pepi needs --oracle FILE (no bundled oracle at " +
                                            path_to_utf8(def) +
                                            "; train one with epwa train-oracle)");
    o = std::make_shared<const Oracle>(Oracle::load(def));
    check(o->info().router_hash == hash,
          "--method pepi needs --oracle FILE for this model: the bundled oracle " +
              path_to_utf8(def) + " fits the bundled model only (router hash " +
              o->info().router_hash.substr(0, 16) + "..., this model's is " + hash.substr(0, 16) +
              "...; train one with epwa train-oracle)");
  }
  std::shared_ptr<DistributionSource> src;
  if (!api_url.empty()) {
    std::shared_ptr<const Tokenizer> tok;
    try {
      tok = load_tokenizer(model_path);
    } catch (const Error&) {  // token-id keys need no tokenizer
    }
    src = std::make_shared<ApiDistributionSource>(
        ApiOptions{api_url, api_top_k, api_model, api_timeout}, tok);
  } else {
    const int32_t k = o->info().features.full ? 0 : o->info().features.k;
    src = std::make_shared<LocalDistributionSource>(model, k);
  }
  return std::make_shared<PepiPredictor>(std::move(o), std::move(src));
}

}  // namespace epwa::cli
