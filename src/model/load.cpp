#include "epwa/error.hpp"
#include "epwa/model.hpp"
#include "epwa/platform.hpp"
#include "loaders.hpp"

namespace epwa {

std::unique_ptr<Model> Model::load(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  check(fs::exists(path), "model not found: " + path_to_utf8(path));
  if (path.extension() == ".gguf") return load_gguf(path);
  if (fs::is_directory(path) || path.extension() == ".safetensors" || path.extension() == ".json")
    return load_hf(path);
  throw Error("unrecognised model path " + path_to_utf8(path) +
              " (expected a HuggingFace folder, a .safetensors file or a .gguf file)");
}

}  // namespace epwa
