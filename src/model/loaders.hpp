// Format-specific loaders behind Model::load.
#pragma once
#include <filesystem>
#include <memory>

#include "epwa/model.hpp"

namespace epwa {

std::unique_ptr<Model> load_hf(const std::filesystem::path& path);
std::unique_ptr<Model> load_gguf(const std::filesystem::path& path);

}  // namespace epwa
