// Loads a HuggingFace checkpoint (Hub naming of its family) from safetensors, memory-mapped, no
// copies: every tensor the schema lists, checked against its shape.
#include <memory>
#include <string_view>
#include <unordered_map>

#include "epwa/arch.hpp"
#include "epwa/error.hpp"
#include "epwa/platform.hpp"
#include "epwa/safetensors.hpp"
#include "loaders.hpp"

namespace epwa {

std::unique_ptr<Model> load_hf(const std::filesystem::path& path) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::is_directory(path) ? path : path.parent_path();
  const fs::path config_path = dir / "config.json";
  check(fs::exists(config_path), "no config.json beside " + path_to_utf8(path));
  ModelConfig c = read_hf_config(config_path);
  auto st = std::make_shared<SafetensorsModel>(path);
  // The tensors the family cuts from its own layout, the rest by name.
  const Architecture& arch = architecture(c.family);
  DerivedTensors derived;
  if (arch.derive_hf) derived = arch.derive_hf(c, *st);
  derived = merged(std::move(derived), dequantize_fp8(*st, config_path, c));  // FP8 weights to bf16
  std::unordered_map<std::string_view, const TensorView*> by_name;
  for (const auto& [name, view] : derived.views) by_name.emplace(name, &view);

  ModelWeights w;
  w.layers.resize(c.num_layers);
  for_each_tensor(c, [&](const TensorSpec& s) {
    if (const auto it = by_name.find(s.hf); it != by_name.end()) {
      weight_slot(w, s) = *it->second;
      return;
    }
    if (!s.required && !st->find(s.hf)) {
      w.head = w.embed;  // the head of a tied model is the embedding table
      return;
    }
    weight_slot(w, s) = st->get(s.hf);
  });
  check_weights(c, w);
  auto keep = std::make_shared<
      std::pair<std::shared_ptr<const SafetensorsModel>, std::shared_ptr<const void>>>(
      st, derived.storage);
  return std::make_unique<Model>(std::move(c), std::move(w), std::move(keep), path, "safetensors");
}

}  // namespace epwa
