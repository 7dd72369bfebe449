// The bundled model, loaded once per test program, and the held-out data.
#pragma once
#include <filesystem>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "epwa/model.hpp"
#include "epwa/tokenizer.hpp"

namespace bundled {

inline std::filesystem::path model_dir() {
  return std::filesystem::path(EPWA_SOURCE_DIR) / "models" / "epwa-tiny-moe";
}

inline epwa::Model& model() {
  static std::unique_ptr<epwa::Model> m = epwa::Model::load(model_dir());
  return *m;
}

inline const epwa::Tokenizer& tokenizer() {
  static std::unique_ptr<epwa::Tokenizer> t = epwa::load_tokenizer(model_dir());
  return *t;
}

inline std::vector<std::string> lines(const std::string& name, size_t count) {
  std::ifstream f(std::filesystem::path(EPWA_SOURCE_DIR) / "data" / "heldout" / name);
  std::vector<std::string> out;
  for (std::string s; out.size() < count && std::getline(f, s);)
    if (!s.empty()) out.push_back(s);
  return out;
}

}  // namespace bundled
