// Helpers shared by the subcommands: model path resolution, token lists, output.
#pragma once
#include <CLI/CLI.hpp>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "epwa/model.hpp"

namespace epwa::cli {

// The model options every command shares (--model and, with the loading modes, their flags).
struct ModelArgs {
  std::string model;
  void add(CLI::App& app);
  std::unique_ptr<Model> load() const;
};

// --model flag, else $EPW_MODEL_PATH, else the bundled model.
std::filesystem::path resolve_model_path(const std::string& flag);
// "1,5,9" -> {1, 5, 9}; throws Error on anything else.
std::vector<int32_t> parse_token_list(const std::string& s);
// "0.5,1,2" -> floats; throws Error on anything else.
std::vector<float> parse_float_list(const std::string& s);

}  // namespace epwa::cli
