// PEPI options of `epwa detect`: the oracle and where the distributions come from.
#pragma once
#include <CLI/CLI.hpp>
#include <filesystem>
#include <memory>
#include <string>

#include "epwa/model.hpp"
#include "epwa/pepi.hpp"

namespace epwa::cli {

// The committed oracle of the bundled model (models/epwa-tiny-moe.oracle).
std::filesystem::path default_oracle_path();

struct PepiArgs {
  std::string oracle, api_url, api_model;
  int32_t api_top_k = 20;
  int32_t api_timeout = 60;
  void add(CLI::App& app);  // --oracle, --api-url, --api-top-k, --api-model, --api-timeout
  // The predictor: loads the oracle (--oracle, else the bundled model's), refuses it unless its
  // router hash is the model's, and reads
  // distributions from the API (--api-url) or else from the local model.
  std::shared_ptr<ExpertPredictor> predictor(Model& model,
                                             const std::filesystem::path& model_path) const;
};

}  // namespace epwa::cli
